// Request: one command travelling through the engine, shared by the caller
// that submitted it and the I/O thread that runs it. Internal.
//
// Ownership: reference counted. A synchronous caller holds one reference and
// the engine one; an asynchronous request is held by the engine only. The
// engine drops its reference exactly once, when the request leaves its queues
// (Finish). Completion is decided by one compare-and-swap on `state`:
// kPending -> kDone (the engine delivered a result) or kPending -> kAbandoned
// (the caller gave up at its deadline, or the deadline sweep expired an async
// request). Whoever loses the race does nothing more. (An async request's
// state is changed by the I/O thread alone, which may then skip the CAS.)
#ifndef TIERCACHE_SRC_REDIS_REQUEST_H_
#define TIERCACHE_SRC_REDIS_REQUEST_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/dcheck.h"
#include "redis/protocol.h"
#include "tiercache/redis/reply.h"
#include "tiercache/status.h"

namespace tiercache::redis::internal {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using ReplyCallback = std::function<void(Result<Reply>)>;
using StringCallback = std::function<void(Result<std::optional<std::string>>)>;

struct Request final {
  enum State : int32_t { kPending = 0, kDone = 1, kAbandoned = 2 };

  // Every call allocates one request and frees it when it completes: the
  // blocks are recycled through a small free list per thread (at most
  // kPooledPerThread blocks; beyond, and for a thread's first requests, the
  // global allocator). Only memory is pooled: a block is reused only after
  // `delete`, i.e. after the last reference was dropped, as with malloc.
  // The sanitizer builds pool nothing, so that they see every lifetime.
  static constexpr size_t kPooledPerThread = 64;  // 28 KiB of 448-byte blocks
  static void* operator new(size_t size);
  static void operator delete(void* block) noexcept;
  // Blocks in the calling thread's free list (for tests).
  static size_t PooledBlocksForTesting();

  // What to send: one RESP-encoded command.
  CommandBytes cmd;
  // Routing: slot of the key, or -1 (keyless: any master).
  int slot = -1;
  bool idempotent = false;
  bool read_only = false;
  bool internal = false;  // created by the engine (topology refresh)
  bool counted = false;   // counted in the engine's outstanding bound
  TimePoint deadline;

  // Engine-private (I/O thread only).
  int target_node = -1;         // forced by MOVED/ASK, else -1 (route by slot)
  bool asking = false;          // send ASKING first (ASK redirection)
  bool load_script = false;     // send SCRIPT LOAD <script> first (NOSCRIPT)
  bool script_reloaded = false; // SCRIPT LOAD already tried once
  int redirects = 0;
  int attempts = 0;             // retries after TRYAGAIN/CLUSTERDOWN/lost connection
  TimePoint retry_at;
  std::string last_error;
  std::string script;           // body, for EVALSHA requests (NOSCRIPT recovery)
  // A control task run on the I/O thread instead of a command. Returns true
  // when the engine should finish the request (with nil); false when the task
  // kept the request to finish later.
  std::function<bool(Request*)> task;

  // Node name (immutable string owned by the engine) last routed to; read by
  // the caller for its deadline message.
  std::atomic<const std::string*> node_name{nullptr};

  // Completion.
  std::atomic<int32_t> state{kPending};
  std::atomic<int32_t> caller_sleeping{0};
  std::atomic<int32_t> refs{1};
  // A sync request's result: set by FinishRequest before `state` becomes
  // kDone, read by its caller only after it sees kDone. Empty until then
  // (and for async requests, whose callbacks take their result directly).
  std::optional<Result<Reply>> result;
  // Async requests have one of these, run once on the I/O thread. A GET's
  // caller gets its string directly (ToOptionalString), with no wrapper.
  ReplyCallback callback;
  StringCallback string_callback;

  bool IsAsync() const { return callback != nullptr || string_callback != nullptr; }

  void Ref() { refs.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    // A count of 1 is ours alone: nobody else can take a reference (that
    // needs one), so the decrement needs no atomic read-modify-write.
    if (refs.load(std::memory_order_acquire) == 1 || refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  bool Live() const { return state.load(std::memory_order_acquire) == kPending; }
};

// A request its caller waits for, as an owning handle: it takes the
// caller's reference and the engine's together (no count set by hand).
// ForEngine() hands the engine its reference (Submit / SubmitBatch); the
// caller's goes to Engine::Await, or both to Engine::Call. A handle dropped
// before that gives them back: unsubmitted, the request is freed;
// submitted, it is abandoned (the engine finishes it and frees it).
// Not thread-safe: one caller thread owns it.
class SyncRequest {
 public:
  SyncRequest() = default;
  // REQUIRES: `fresh` new (one reference), not submitted (checked). Takes it.
  explicit SyncRequest(Request* fresh) : req_(fresh) {
    TIERCACHE_DCHECK(fresh->refs.load(std::memory_order_relaxed) == 1 && fresh->Live());
    req_->refs.store(2, std::memory_order_relaxed);
  }
  SyncRequest(SyncRequest&& o) noexcept : req_(std::exchange(o.req_, nullptr)), submitted_(o.submitted_) {}
  SyncRequest& operator=(SyncRequest&& o) noexcept {
    if (this != &o) {
      Drop();
      req_ = std::exchange(o.req_, nullptr);
      submitted_ = o.submitted_;
    }
    return *this;
  }
  SyncRequest(const SyncRequest&) = delete;
  SyncRequest& operator=(const SyncRequest&) = delete;
  ~SyncRequest() { Drop(); }

  Request* operator->() const { return req_; }
  explicit operator bool() const { return req_ != nullptr; }
  bool submitted() const { return submitted_; }
  // The request for Submit / SubmitBatch, with the engine's reference;
  // MarkSubmitted() once it is queued (an exception in between leaves the
  // handle owning both references).
  // REQUIRES: not submitted yet (checked).
  Request* ForEngine() const {
    TIERCACHE_DCHECK(req_ != nullptr && !submitted_);
    return req_;
  }
  void MarkSubmitted() {
    TIERCACHE_DCHECK(req_ != nullptr && !submitted_);
    submitted_ = true;
  }
  // The request with the references still held, for Engine::Await (the
  // caller's) or Engine::Call (both, unsubmitted). Empties the handle.
  Request* Release() { return std::exchange(req_, nullptr); }

 private:
  void Drop() {
    if (req_ == nullptr) return;
    Request* r = std::exchange(req_, nullptr);
    if (!submitted_) {
      r->Unref();  // the engine's, never given
      r->Unref();  // the caller's: freed
      return;
    }
    int32_t pending = Request::kPending;
    r->state.compare_exchange_strong(pending, Request::kAbandoned, std::memory_order_acq_rel);
    r->Unref();  // the caller's; the engine drops its own when it finishes it
  }

  Request* req_ = nullptr;
  bool submitted_ = false;
};

// A GET's reply as its value: nullopt for nil; kInternal for any other type.
Result<std::optional<std::string>> ToOptionalString(Result<Reply>&& r);

// Engine side: delivers `r` unless the request was abandoned, wakes a sleeping
// caller or runs the callback, and drops the engine's reference.
// Completes `req` with `r` (unless it was abandoned) and drops the engine's
// reference. An async request runs its callback here. A sync caller asleep
// on it is woken at once, or, when `wake_later` is given, the request is
// appended there with a reference held and WakeCaller() must follow.
// `r` is moved from only when it is delivered.
void FinishRequest(Request* req, Result<Reply>&& r, std::vector<Request*>* wake_later = nullptr);
// The same for a reply (not an error reply: those are the engine's to turn
// into a Status first).
void FinishRequest(Request* req, Reply&& reply, std::vector<Request*>* wake_later = nullptr);
// Wakes the caller of a request deferred by FinishRequest and drops the
// reference it held.
void WakeCaller(Request* req);

// Engine side, async requests only: completes a still-pending request with
// `s` (its deadline passed) without dropping the engine's reference.
void ExpireRequest(Request* req, const Status& s);

// Caller side: waits until the request completes or its deadline passes.
// It first spins up to `spin`, but only when no other caller of the same
// client is waiting (`spinners` counts the waiters): with one caller, spinning
// saves a futex sleep/wake per call; with many, it would only burn the CPU
// the I/O thread and the server need. Returns the result, or
// DeadlineExceeded naming the node last tried. Drops the caller's reference.
Result<Reply> AwaitRequest(Request* req, std::chrono::microseconds spin, std::atomic<int>* spinners = nullptr);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_REQUEST_H_
