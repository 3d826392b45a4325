// Engine: the I/O side of RedisClient. Internal.
//
// One I/O thread owns every socket, the slot map and all routing state, so
// none of that needs a lock. Caller threads hand requests over through one
// bounded submission queue (a mutex held only to push/swap a vector) and wake
// the I/O thread through an eventfd when it sleeps in epoll_wait; what the
// I/O thread submits itself (an async callback's next request) skips both:
// it is queued in own_submissions_ and taken before the thread waits. The I/O
// thread routes each request to a node connection, appends its RESP bytes to
// the connection's output buffer (so all commands submitted together leave in
// one send: automatic pipelining), and matches replies to requests in order,
// parsing with ReplyReader (reply_reader.h).
//
// A lone synchronous caller may instead borrow an idle connection and do its
// own send/receive (direct.cc); the connection's `owner.lend` state says who may
// touch its socket and reader, and anything unusual is handed back to the
// I/O thread.
//
// Redirections and retries happen on the I/O thread: MOVED patches the slot
// and resends at once; ASK sends ASKING + the command to the target, the map
// untouched; TRYAGAIN/CLUSTERDOWN/LOADING/MASTERDOWN and lost connections park
// the request for an exponential backoff. A request is never retried past its
// deadline nor beyond max_redirects hops. A command that was written to a
// connection that then broke is resent only when marked idempotent.
//
// The parts that own state are classes of their own, each with unit tests:
// SlotMap (slot_map.h: routing, shards, replicas), SubmissionQueue (the
// hand-over and its wake-up), RetryQueue (the parked requests' backoff),
// RefreshSchedule (when to ask for the slot map, and whom), and Connection
// (connection.h: its socket, reader, output and in-flight queue private),
// which reports to the engine through ConnectionObserver and never sees the
// Engine. Methods for the I/O thread only check it (AssertIoThread:
// a DCHECK, on in Debug and the sanitizer builds), and so do Connection's
// (through ConnectionObserver::OnIoThread). SlotMap, RetryQueue and
// RefreshSchedule are members used only by such methods, so they are
// checked where they are called, not in themselves.
#ifndef TIERCACHE_SRC_REDIS_ENGINE_H_
#define TIERCACHE_SRC_REDIS_ENGINE_H_

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/dcheck.h"
#include "redis/connection.h"
#include "redis/protocol.h"
#include "redis/refresh_schedule.h"
#include "redis/request.h"
#include "redis/retry_queue.h"
#include "redis/slot_map.h"
#include "redis/submission_queue.h"
#include "tiercache/redis/options.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis::internal {

// Counters, updated by the I/O thread, read by anyone (relaxed).
struct EngineCounters {
  std::atomic<uint64_t> moved{0}, ask{0}, retries{0}, reconnects{0}, connection_failures{0},
      topology_refreshes{0}, topology_changes{0}, writes{0}, seed_fallbacks{0};
};

class Engine final : public ConnectionObserver {
 public:
  explicit Engine(RedisClientOptions options);
  ~Engine();  // stops and joins the I/O thread; outstanding requests end kCancelled

  // Starts the I/O thread and, in cluster mode, fetches the first slot map.
  // kUnavailable when no seed answers within connect + command timeout.
  Status Start();

  // Hands requests to the I/O thread. Never blocks on I/O. A request rejected
  // at once (queue bound, shutdown) is finished inline in the calling thread.
  void Submit(Request* req);
  void SubmitBatch(Request* const* reqs, size_t n);

  const RedisClientOptions& options() const { return options_; }
  // Any thread: the master node id of `slot` as last published (-1: none).
  int NodeOfSlot(uint16_t slot) const { return slots_.PublishedMaster(slot); }

  // Submits a request its caller will wait for (Await).
  void Submit(SyncRequest& req) {
    Submit(req.ForEngine());
    req.MarkSubmitted();
  }
  // Waits for a request submitted by the calling thread (see AwaitRequest).
  // REQUIRES: req.submitted(), not on the I/O thread (checked: it would wait
  // for itself until the deadline).
  Result<Reply> Await(SyncRequest req) {
    TIERCACHE_DCHECK(req.submitted() && !OnIoThread());
    return AwaitRequest(req.Release(), options_.caller_spin, &spinners_);
  }

  // Runs a single sync request: in the calling thread on an idle connection
  // (direct I/O) when possible, else through the I/O thread.
  // REQUIRES: !req.submitted(), not on the I/O thread (checked).
  Result<Reply> Call(SyncRequest req);

  // I/O thread: takes the connection back from lending; false when a caller
  // has it (it will be handed back through OnConnectionReturned).
  bool Acquire(Connection* c);
  // I/O thread: like Acquire, but leaves a lent connection alone (for
  // readiness events, which the borrower handles by reading its reply).
  bool TryOwn(Connection* c) override;
  // I/O thread: lends the connection out if it is idle.
  void MaybeLend(Connection* c);
  const EngineCounters& counters() const { return counters_; }

  // Runs `fn` on the I/O thread and waits for it (bounded by `timeout`).
  Status RunOnIoThread(std::function<void()> fn, std::chrono::milliseconds timeout);
  // I/O thread only (via RunOnIoThread): test hooks on the slot map.
  void SetSlotOwner(uint16_t slot, const Endpoint& owner);
  std::optional<Endpoint> SlotOwner(uint16_t slot) const;
  // Installs a map in which `masters` share the slots evenly (ApplyTopology).
  // REQUIRES: !masters.empty() (checked).
  void SetTopology(const std::vector<Endpoint>& masters);

  // ConnectionObserver (connection.cc; topology.cc).
  void OnConnectionReady(Connection* c) override;
  void OnConnectionFailed(Connection* c, const std::string& reason) override;
  // `now`: when the bytes holding the reply were read (one clock read per
  // recv, not per reply).
  bool OnReply(Connection* c, Connection::InFlight entry, Reply&& reply, TimePoint now) override;
  void MarkDirty(Connection* c) override;
  void CountWrite() override { counters_.writes.fetch_add(1, std::memory_order_relaxed); }
  int epoll_fd() const override { return epoll_fd_; }
  bool OnIoThread() const override {
    return io_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
  bool coalesce_writes() const override { return options_.coalesce_writes; }

 private:
  friend struct TopologyAccess;

  // Every method that touches the I/O thread's state starts with this: on
  // any other thread it fails a DCHECK (src/common/dcheck.h). Before the
  // thread runs, the thread calling Start() sets things up.
  void AssertIoThread() const {
    const std::thread::id io = io_thread_.load(std::memory_order_relaxed);
    TIERCACHE_DCHECK(io == std::thread::id() || io == std::this_thread::get_id());
  }

  void Run();
  // Hands the I/O thread work of the engine's own (a connection handed back
  // by a borrower): never refused for max_outstanding_requests, which bounds
  // callers' requests only. Refused (finished kCancelled) at shutdown only.
  void SubmitOwnWork(Request* req);
  void DrainSubmissions();
  void Dispatch(Request* req, TimePoint now);
  void WriteRequest(Connection* c, Request* req);
  void FlushDirty();
  void Housekeeping(TimePoint now);
  // Closes `c` if its node left the slot map and it has been idle for
  // kDepartedIdleClose (Housekeeping).
  static constexpr std::chrono::milliseconds kDepartedIdleClose{1000};
  void CloseIfDeparted(Connection* c, TimePoint now);
  void Park(Request* req, TimePoint now, const std::string& why);
  void RetryParked(TimePoint now, bool all);
  void SweepExpired(TimePoint now);
  void Shutdown();
  void DropConnection(Connection* c, const std::string& reason, bool want_refresh);
  bool TryDirect(Request* req, Result<Reply>* out);
  // TryDirect's exchange on the borrowed `c`, and its hand-back.
  bool ExchangeDirect(Connection* c, Request* req, Result<Reply>* out);
  void GiveBack(Connection* c, bool need_io_thread);
  void OnConnectionReturned(Connection* c);
  // OnReply's cases: a handshake reply, or a request's.
  bool OnHandshakeReply(Connection* c, const Reply& reply);
  void HandleReply(Connection* c, Request* req, Reply&& reply, TimePoint now);
  void OnRedirect(Connection* c, Request* req, const ErrorInfo& info, const std::string& error, TimePoint now);
  // NOSCRIPT: sends the script again with the command, once; false when it
  // was sent already (the error is the caller's).
  bool ReloadScript(Connection* c, Request* req, TimePoint now);
  void PublishSlot(int slot);
  void GoReady(Connection* c);
  // Writes the requests that waited for `c` to become ready; abandoned ones
  // finish as kCancelled.
  void WriteWaiting(Connection* c);
  void Finish(Request* req, Result<Reply>&& r);
  void Finish(Request* req, Reply&& reply);  // REQUIRES: !reply.IsError()
  void WakeCallers();
  Node* EnsureNode(const Endpoint& e);
  Node* RouteNode(const Request* req);
  void StartConnect(Connection* c, TimePoint now);

  // Topology (topology.cc).
  void MaybeRefresh(TimePoint now);
  // Lists the nodes a refresh round asks, in order, and begins the round.
  void PlanRefreshRound();
  // Sends CLUSTER SLOTS to the round's next candidate.
  void StartRefresh(TimePoint now);
  void OnRefreshReply(int node_id, Result<Reply> r);
  void ApplyTopology(const std::vector<SlotRange>& ranges);

  RedisClientOptions options_;
  EngineCounters counters_;
  int epoll_fd_ = -1;
  std::thread thread_;
  std::atomic<std::thread::id> io_thread_{};  // set by the I/O thread when it starts

  SubmissionQueue queue_;
  std::atomic<size_t> outstanding_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> spinners_{0};

  // ---- I/O thread only ----
  std::vector<Request*> drained_;
  // Requests the I/O thread submitted itself (from a callback), not yet
  // dispatched; unbounded only in the sense that outstanding_ bounds them.
  std::vector<Request*> own_submissions_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unordered_map<std::string, int> node_by_name_;
  SlotMap slots_;  // its PublishedMaster is read by caller threads (NodeOfSlot)
  // Read by caller threads for direct I/O: the connection serving each slot.
  std::array<std::atomic<Connection*>, kSlotCount> direct_conn_{};
  RetryQueue retries_;
  std::vector<Connection*> dirty_;
  std::vector<Connection*> flushing_;  // FlushDirty's batch
  std::vector<Request*> to_wake_;  // finished; their callers wake at the end of the loop pass
  bool have_topology_ = false;
  std::vector<std::string> logged_masters_;  // sorted: the masters the last topology line named
  bool shutting_down_ = false;
  RefreshSchedule refresh_;
  // The nodes of the current refresh round that are in it only as seeds
  // (sorted): a map one of them gives is a seed fallback.
  std::vector<int> round_seed_only_;
  TimePoint next_housekeeping_{};
  TimePoint last_activity_{};

  Request* topology_waiter_ = nullptr;  // Start() waits on it for the first map
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_ENGINE_H_
