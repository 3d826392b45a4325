// RawCluster: a deliberately simple Redis Cluster client for tests, on plain
// hiredis: it sends a command to a node and follows MOVED/ASK (up to 5 hops),
// so tests can check server state independently of tiercache's own client.
// Not thread-safe: one per thread.
#ifndef TIERCACHE_TESTS_COMMON_RAW_CLUSTER_H_
#define TIERCACHE_TESTS_COMMON_RAW_CLUSTER_H_

#include <hiredis/hiredis.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tiercache::testing {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RawReply = std::unique_ptr<redisReply, ReplyDeleter>;

class RawCluster {
 public:
  explicit RawCluster(std::vector<int> ports);
  ~RawCluster();
  RawCluster(const RawCluster&) = delete;
  RawCluster& operator=(const RawCluster&) = delete;

  // Sends `args` (binary-safe) and follows redirections. Returns null only
  // when no node could be reached; a Redis error is a REDIS_REPLY_ERROR reply.
  RawReply Command(const std::vector<std::string>& args);

 private:
  redisContext* Node(int port);
  std::vector<int> ports_;
  std::map<int, redisContext*> nodes_;
};

// A hiredis connection to 127.0.0.1:port (2 s to connect, `io_timeout` per
// command), or null. The caller owns it (redisFree).
redisContext* ConnectLoopback(int port, timeval io_timeout);

// Renders a reply for assertion messages.
std::string DescribeReply(const redisReply* r);

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_COMMON_RAW_CLUSTER_H_
