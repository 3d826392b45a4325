#include "redis/protocol.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstring>

namespace tiercache::redis::internal {
namespace {

using resp::Encode;
using resp::EncodedSize;

// The exact size first: one allocation at most, then the bytes in place.
template <typename Args>
void AppendAll(std::string& out, const Args& args) {
  const size_t at = out.size();
  out.resize(at + EncodedSize(args));
  Encode(args, out.data() + at);
}

template <typename Args>
void AppendAll(CommandBytes& out, const Args& args) {
  Encode(args, out.Extend(EncodedSize(args)));
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool ParseInt(std::string_view s, long long* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool ParseRedirect(std::string_view rest, std::string_view default_host, ErrorInfo* info) {
  size_t space = rest.find(' ');
  if (space == std::string_view::npos) return false;
  long long slot = 0;
  if (!ParseInt(rest.substr(0, space), &slot) || slot < 0 || slot > 16383) return false;
  std::string_view addr = rest.substr(space + 1);
  size_t end = addr.find(' ');
  if (end != std::string_view::npos) addr = addr.substr(0, end);
  if (!ParseEndpoint(addr, &info->target)) return false;
  if (info->target.host.empty()) info->target.host = std::string(default_host);
  info->slot = static_cast<uint16_t>(slot);
  return true;
}

Result<Endpoint> NodeOf(const Reply& r, std::string_view asked_host) {
  if (!r.IsArray() || r.elements.size() < 2 || !r.elements[0].IsString() || !r.elements[1].IsInteger()) {
    return Status::Internal("CLUSTER SLOTS: malformed node entry " + r.ToString());
  }
  Endpoint e;
  e.host = r.elements[0].str;
  if (e.host.empty() || e.host == "?") e.host = std::string(asked_host);
  if (r.elements[1].integer <= 0 || r.elements[1].integer > 65535) {
    return Status::Internal("CLUSTER SLOTS: bad port in " + r.ToString());
  }
  e.port = static_cast<int>(r.elements[1].integer);
  return e;
}

}  // namespace

void AppendCommand(std::string& out, const std::vector<std::string>& args) { AppendAll(out, args); }
void AppendCommand(std::string& out, std::span<const std::string_view> args) { AppendAll(out, args); }
void AppendCommand(CommandBytes& out, const std::vector<std::string>& args) { AppendAll(out, args); }
void AppendCommand(CommandBytes& out, std::span<const std::string_view> args) { AppendAll(out, args); }

char* CommandBytes::ExtendOnHeap(size_t n) {
  if (!on_heap_) {
    heap_.reserve(size_ + n);
    heap_.assign(inline_, size_);
    on_heap_ = true;
  }
  const size_t at = heap_.size();
  heap_.resize(at + n);
  return heap_.data() + at;
}

bool ParseEndpoint(std::string_view text, Endpoint* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return false;
  long long port = 0;
  if (!ParseInt(text.substr(colon + 1), &port) || port <= 0 || port > 65535) return false;
  out->host = std::string(text.substr(0, colon));
  out->port = static_cast<int>(port);
  return true;
}

ErrorInfo ClassifyError(std::string_view error, std::string_view default_host) {
  ErrorInfo info;
  if (StartsWith(error, "MOVED ")) {
    if (ParseRedirect(error.substr(6), default_host, &info)) info.kind = ErrorKind::kMoved;
  } else if (StartsWith(error, "ASK ")) {
    if (ParseRedirect(error.substr(4), default_host, &info)) info.kind = ErrorKind::kAsk;
  } else if (StartsWith(error, "TRYAGAIN")) {
    info.kind = ErrorKind::kTryAgain;
  } else if (StartsWith(error, "CLUSTERDOWN")) {
    info.kind = ErrorKind::kClusterDown;
  } else if (StartsWith(error, "LOADING")) {
    info.kind = ErrorKind::kLoading;
  } else if (StartsWith(error, "MASTERDOWN")) {
    info.kind = ErrorKind::kMasterDown;
  } else if (StartsWith(error, "NOSCRIPT")) {
    info.kind = ErrorKind::kNoScript;
  }
  return info;
}

Result<std::vector<SlotRange>> ParseClusterSlots(const Reply& reply, std::string_view asked_host) {
  if (!reply.IsArray()) return Status::Internal("CLUSTER SLOTS: expected an array, got " + reply.ToString());
  std::vector<SlotRange> ranges;
  ranges.reserve(reply.elements.size());
  for (const Reply& entry : reply.elements) {
    if (!entry.IsArray() || entry.elements.size() < 3 || !entry.elements[0].IsInteger() ||
        !entry.elements[1].IsInteger()) {
      return Status::Internal("CLUSTER SLOTS: malformed range " + entry.ToString());
    }
    long long first = entry.elements[0].integer, last = entry.elements[1].integer;
    if (first < 0 || last > 16383 || first > last) {
      return Status::Internal("CLUSTER SLOTS: bad slot range " + entry.ToString());
    }
    SlotRange range;
    range.first = static_cast<uint16_t>(first);
    range.last = static_cast<uint16_t>(last);
    Result<Endpoint> master = NodeOf(entry.elements[2], asked_host);
    if (!master.ok()) return master.status();
    range.master = std::move(*master);
    for (size_t i = 3; i < entry.elements.size(); ++i) {
      Result<Endpoint> replica = NodeOf(entry.elements[i], asked_host);
      if (!replica.ok()) return replica.status();
      range.replicas.push_back(std::move(*replica));
    }
    ranges.push_back(std::move(range));
  }
  return ranges;
}

std::vector<int> RefreshRoundOrder(std::vector<int> healthy, const std::vector<int>& seeds,
                                   const std::vector<int>& failing, size_t rotation) {
  if (!healthy.empty()) {
    std::rotate(healthy.begin(), healthy.begin() + static_cast<std::ptrdiff_t>(rotation % healthy.size()),
                healthy.end());
  }
  std::vector<int> order;
  order.reserve(healthy.size() + seeds.size() + failing.size());
  auto add = [&order](const std::vector<int>& ids) {
    for (int id : ids) {
      if (std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
    }
  };
  add(healthy);
  add(seeds);
  add(failing);
  return order;
}

}  // namespace tiercache::redis::internal
