// Protocol logic with no I/O, so it is unit-testable: RESP encoding of a
// command, classification of error replies (MOVED/ASK/TRYAGAIN/...), the
// parsing of CLUSTER SLOTS into a topology, and which nodes a topology refresh
// asks in what order. Internal to tiercache_redis.
#ifndef TIERCACHE_SRC_REDIS_PROTOCOL_H_
#define TIERCACHE_SRC_REDIS_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <span>
#include <string_view>
#include <vector>

#include "tiercache/redis/options.h"
#include "tiercache/redis/reply.h"
#include "tiercache/status.h"

namespace tiercache::redis::internal {

// The RESP bytes of one command, kept inline up to kInline bytes (a GET, a
// DEL or a small SET of a short key: no allocation), on the heap beyond.
class CommandBytes {
 public:
  static constexpr size_t kInline = 96;

  CommandBytes() = default;
  CommandBytes(const CommandBytes&) = delete;
  CommandBytes& operator=(const CommandBytes&) = delete;

  std::string_view view() const { return on_heap_ ? std::string_view(heap_) : std::string_view(inline_, size_); }
  size_t size() const { return on_heap_ ? heap_.size() : size_; }
  bool empty() const { return size() == 0; }
  // Room for `n` more bytes at the end, to be written by the caller.
  char* Extend(size_t n);

 private:
  char inline_[kInline];
  size_t size_ = 0;  // bytes of inline_ in use (while !on_heap_)
  bool on_heap_ = false;
  std::string heap_;
};

// Appends the RESP array of bulk strings for `args` to `out`.
void AppendCommand(std::string& out, const std::vector<std::string>& args);
void AppendCommand(std::string& out, std::span<const std::string_view> args);
void AppendCommand(CommandBytes& out, const std::vector<std::string>& args);
void AppendCommand(CommandBytes& out, std::span<const std::string_view> args);

enum class ErrorKind : uint8_t {
  kOther,        // a command error: returned to the caller
  kMoved,        // MOVED <slot> <host>:<port>
  kAsk,          // ASK <slot> <host>:<port>
  kTryAgain,     // TRYAGAIN (multi-key command during resharding)
  kClusterDown,  // CLUSTERDOWN (e.g. a failover under way)
  kLoading,      // LOADING (the node loads its dataset)
  kMasterDown,   // MASTERDOWN (a replica lost its master)
  kNoScript,     // NOSCRIPT (EVALSHA of an unknown script)
};

struct ErrorInfo {
  ErrorKind kind = ErrorKind::kOther;
  uint16_t slot = 0;  // kMoved, kAsk
  Endpoint target;    // kMoved, kAsk
};

// Classifies an error reply's text. A MOVED/ASK whose address cannot be
// parsed is kOther. An empty host ("MOVED 3999 :6380", sent by nodes that do
// not know their own address) is replaced by `default_host`.
ErrorInfo ClassifyError(std::string_view error, std::string_view default_host);

// Parses "host:port" (the last ':' separates the port). False when malformed.
bool ParseEndpoint(std::string_view text, Endpoint* out);

struct SlotRange {
  uint16_t first = 0;
  uint16_t last = 0;
  Endpoint master;
  std::vector<Endpoint> replicas;
};

// Parses a CLUSTER SLOTS reply. An empty or "?" host in it means the node that
// was asked, `asked_host`. kInternal when the reply has an unexpected shape.
Result<std::vector<SlotRange>> ParseClusterSlots(const Reply& reply, std::string_view asked_host);

// The nodes one topology refresh round asks for CLUSTER SLOTS, each once, in
// order: the known nodes whose connection has not failed (`healthy`, rotated
// left by `rotation` so that rounds spread over them), then the seeds, then
// the known nodes already failing. Ids in several lists keep their first
// place. The seeds come before the failing nodes and are never hidden by
// healthy nodes that answer without a slot map: they are the way back when
// the cluster moved away from every address the client knows.
std::vector<int> RefreshRoundOrder(std::vector<int> healthy, const std::vector<int>& seeds,
                                   const std::vector<int>& failing, size_t rotation);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_PROTOCOL_H_
