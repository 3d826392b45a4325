#include "common/raw_cluster.h"

#include <string_view>

namespace tiercache::testing {

RawCluster::RawCluster(std::vector<int> ports) : ports_(std::move(ports)) {}

RawCluster::~RawCluster() {
  for (auto& [port, c] : nodes_) redisFree(c);
}

redisContext* RawCluster::Node(int port) {
  auto it = nodes_.find(port);
  if (it != nodes_.end() && it->second->err == 0) return it->second;
  if (it != nodes_.end()) {
    redisFree(it->second);
    nodes_.erase(it);
  }
  redisContext* c = ConnectLoopback(port, timeval{2, 0});
  if (c != nullptr) nodes_[port] = c;
  return c;
}

redisContext* ConnectLoopback(int port, timeval io_timeout) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, timeval{2, 0});
  if (c == nullptr) return nullptr;
  if (c->err != 0) {
    redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, io_timeout);
  return c;
}

RawReply RawCluster::Command(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  int port = ports_.empty() ? 0 : ports_.front();
  bool asking = false;
  for (int hop = 0; hop < 6; ++hop) {
    redisContext* c = Node(port);
    if (c == nullptr) {
      // Try the next seed.
      if (hop + 1 < static_cast<int>(ports_.size())) port = ports_[hop + 1];
      continue;
    }
    if (asking) RawReply(static_cast<redisReply*>(redisCommand(c, "ASKING")));
    RawReply r(static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r) continue;
    if (r->type == REDIS_REPLY_ERROR) {
      std::string_view err(r->str, r->len);
      bool moved = err.rfind("MOVED ", 0) == 0;
      bool ask = err.rfind("ASK ", 0) == 0;
      if (moved || ask) {
        auto colon = err.rfind(':');
        port = std::stoi(std::string(err.substr(colon + 1)));
        asking = ask;
        continue;
      }
    }
    return r;
  }
  return nullptr;
}

std::string DescribeReply(const redisReply* r) {
  if (r == nullptr) return "(no reply)";
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(r->str, r->len);
    case REDIS_REPLY_ERROR:
      return "(error) " + std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string out = "[";
      for (size_t i = 0; i < r->elements; ++i) out += (i ? ", " : "") + DescribeReply(r->element[i]);
      return out + "]";
    }
    default:
      return "(type " + std::to_string(r->type) + ")";
  }
}

}  // namespace tiercache::testing
