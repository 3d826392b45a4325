// Protocol logic with no I/O, so it is unit-testable: RESP encoding of a
// command, classification of error replies (MOVED/ASK/TRYAGAIN/...), the
// parsing of CLUSTER SLOTS into a topology, and which nodes a topology refresh
// asks in what order. Internal to tiercache_redis.
#ifndef TIERCACHE_SRC_REDIS_PROTOCOL_H_
#define TIERCACHE_SRC_REDIS_PROTOCOL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
  char* Extend(size_t n) {
    if (!on_heap_ && size_ + n <= kInline) {
      char* p = inline_ + size_;
      size_ += n;
      return p;
    }
    return ExtendOnHeap(n);
  }

 private:
  char* ExtendOnHeap(size_t n);

  char inline_[kInline];
  size_t size_ = 0;  // bytes of inline_ in use (while !on_heap_)
  bool on_heap_ = false;
  std::string heap_;
};

// RESP encoding of a command: an array of bulk strings, "*N\r\n", then
// "$len\r\n" + bytes + "\r\n" per argument. Inline, so that a command of
// fixed shape (a GET: std::array{"GET", key}) is encoded with its constant
// parts folded by the compiler.
namespace resp {

[[gnu::always_inline]] inline size_t Digits(size_t n) {
  if (n < 10) return 1;
  if (n < 100) return 2;
  size_t d = 3;
  for (n /= 1000; n > 0; n /= 10) ++d;
  return d;
}

// `n` in decimal at `p`; returns the end. Most lengths have 1 or 2 digits.
[[gnu::always_inline]] inline char* PutLength(char* p, size_t n) {
  if (n < 10) {
    *p = static_cast<char>('0' + n);
    return p + 1;
  }
  if (n < 100) {
    p[0] = static_cast<char>('0' + n / 10);
    p[1] = static_cast<char>('0' + n % 10);
    return p + 2;
  }
  char* end = p + Digits(n);
  for (char* q = end; q != p; n /= 10) *--q = static_cast<char>('0' + n % 10);
  return end;
}

inline char* PutCrlf(char* p) {
  p[0] = '\r';
  p[1] = '\n';
  return p + 2;
}

template <typename Args>
[[gnu::always_inline]] inline size_t EncodedSize(const Args& args) {
  size_t size = 3 + Digits(args.size());
  for (const auto& a : args) size += 5 + Digits(a.size()) + a.size();
  return size;
}

// Writes exactly EncodedSize(args) bytes at `p`.
template <typename Args>
[[gnu::always_inline]] inline void Encode(const Args& args, char* p) {
  *p++ = '*';
  p = PutCrlf(PutLength(p, args.size()));
  for (const auto& a : args) {
    *p++ = '$';
    p = PutCrlf(PutLength(p, a.size()));
    if (!a.empty()) std::memcpy(p, a.data(), a.size());
    p = PutCrlf(p + a.size());
  }
}

}  // namespace resp

// Appends the RESP array of bulk strings for `args` to `out`.
void AppendCommand(std::string& out, const std::vector<std::string>& args);
void AppendCommand(std::string& out, std::span<const std::string_view> args);
void AppendCommand(CommandBytes& out, const std::vector<std::string>& args);
void AppendCommand(CommandBytes& out, std::span<const std::string_view> args);
template <size_t N>
void AppendCommand(CommandBytes& out, const std::array<std::string_view, N>& args) {
  resp::Encode(args, out.Extend(resp::EncodedSize(args)));
}

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
