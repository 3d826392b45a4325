#include "redis/engine.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

namespace tiercache::redis::internal {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view kAsking = "*1\r\n$6\r\nASKING\r\n";

}  // namespace

Engine::Engine(RedisClientOptions options)
    : options_(std::move(options)),
      retries_(options_.retry_backoff_min, options_.retry_backoff_max),
      refresh_(options_.min_refresh_interval, options_.topology_refresh_interval) {}

Engine::~Engine() {
  if (thread_.joinable()) {
    stop_.store(true, std::memory_order_release);
    queue_.Wake();
    thread_.join();
  }
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

Status Engine::Start() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return Status::Internal("epoll creation failed");
  TIERCACHE_RETURN_IF_ERROR(queue_.Init());
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, queue_.event_fd(), &ev);
  if (options_.mode == Mode::kStandalone) {
    Node* n = EnsureNode(options_.seeds.front());
    n->in_topology = true;
    slots_.AssignAll(n->id());
    for (int s = 0; s < kSlotCount; ++s) PublishSlot(s);
    have_topology_ = true;
  }
  thread_ = std::thread([this] {
    io_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    pthread_setname_np(pthread_self(), "tiercache-redis");  // for top -H, perf, gdb
    Run();
  });
  // Also stored here, so that no caller thread runs unchecked while the new
  // thread has yet to store its id.
  io_thread_.store(thread_.get_id(), std::memory_order_relaxed);
  if (options_.mode == Mode::kStandalone) return Status::Ok();

  // Wait for the first slot map: a control task parks the request in the
  // engine, which finishes it when the first refresh succeeds or fails.
  SyncRequest req(new Request);
  req->deadline = SteadyClock::now() + options_.connect_timeout + options_.command_timeout +
                  options_.min_refresh_interval;
  req->task = [this](Request* r) {
    topology_waiter_ = r;
    if (!refresh_.in_flight()) {  // the I/O thread may have started one already
      refresh_.WantNow();
      MaybeRefresh(SteadyClock::now());
    }
    return false;
  };
  Submit(req);
  Result<Reply> r = AwaitRequest(req.Release(), std::chrono::microseconds(0));
  if (!r.ok()) {
    return Status::Unavailable("cannot fetch the cluster topology from the seeds: " + std::string(r.status().message()));
  }
  return Status::Ok();
}

void Engine::Submit(Request* req) { SubmitBatch(&req, 1); }

void Engine::SubmitOwnWork(Request* req) {
  if (!queue_.Push(&req, 1)) FinishRequest(req, Status::Cancelled("the Redis client is shutting down"));
}

void Engine::SubmitBatch(Request* const* reqs, size_t n) {
  if (n == 0) return;
  size_t before = outstanding_.fetch_add(n, std::memory_order_relaxed);
  if (before + n > options_.max_outstanding_requests) {
    outstanding_.fetch_sub(n, std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) {
      FinishRequest(reqs[i], Status::ResourceExhausted("more than max_outstanding_requests in flight"));
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) reqs[i]->counted = true;
  if (OnIoThread() && !shutting_down_) {
    // A callback submitting its next request: the I/O thread queues it for
    // itself, with no lock and no wake-up. Run() takes it (DrainSubmissions)
    // before it next waits for events.
    own_submissions_.insert(own_submissions_.end(), reqs, reqs + n);
    return;
  }
  if (!queue_.Push(reqs, n)) {
    outstanding_.fetch_sub(n, std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) FinishRequest(reqs[i], Status::Cancelled("the Redis client is shutting down"));
  }
}

// Sync callers are woken after the whole batch of replies in hand is
// processed (WakeCallers), not one by one: a woken caller often takes this
// CPU at once, and would otherwise leave the remaining replies waiting.
void Engine::Finish(Request* req, Result<Reply>&& r) {
  AssertIoThread();
  if (req->counted) outstanding_.fetch_sub(1, std::memory_order_relaxed);
  FinishRequest(req, std::move(r), &to_wake_);
}

void Engine::Finish(Request* req, Reply&& reply) {
  AssertIoThread();
  TIERCACHE_DCHECK(!reply.IsError());  // errors go through Finish(req, Status)
  if (req->counted) outstanding_.fetch_sub(1, std::memory_order_relaxed);
  FinishRequest(req, std::move(reply), &to_wake_);
}

void Engine::WakeCallers() {
  AssertIoThread();
  for (Request* req : to_wake_) WakeCaller(req);
  to_wake_.clear();
}

void Engine::Run() {
  epoll_event events[64];
  last_activity_ = SteadyClock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    DrainSubmissions();
    FlushDirty();
    WakeCallers();
    TimePoint now = SteadyClock::now();
    if (now >= next_housekeeping_) {
      Housekeeping(now);
      FlushDirty();
      bool busy = outstanding_.load(std::memory_order_relaxed) > 0 || !retries_.empty() || refresh_.in_flight();
      next_housekeeping_ = now + (busy ? milliseconds(2) : milliseconds(100));
    }
    int timeout_ms = 0;
    // A callback run since DrainSubmissions (by Housekeeping, FlushDirty or
    // the events below) may have submitted: take it before waiting.
    if (!own_submissions_.empty()) {
      timeout_ms = 0;
    } else if (now - last_activity_ >= options_.io_busy_poll) {
      if (!queue_.PrepareSleep()) continue;  // a submission came meanwhile
      auto wait = std::chrono::duration_cast<milliseconds>(next_housekeeping_ - now).count() + 1;
      timeout_ms = static_cast<int>(std::clamp<long long>(wait, 1, 100));
    }
    int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
    queue_.Awake();
    if (n > 0) last_activity_ = SteadyClock::now();
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        queue_.ConsumeWake();
        continue;
      }
      auto* c = static_cast<Connection*>(events[i].data.ptr);
      c->OnEvent(events[i].events);
      MaybeLend(c);
    }
    WakeCallers();
  }
  Shutdown();
  WakeCallers();
}

void Engine::DrainSubmissions() {
  AssertIoThread();
  drained_.clear();
  // The I/O thread's own submissions first: they were made before anything
  // still in the queue was taken, which keeps its requests in their order.
  drained_.swap(own_submissions_);
  queue_.TakeAll(&drained_);
  if (drained_.empty()) return;
  last_activity_ = SteadyClock::now();
  TimePoint now = last_activity_;
  for (Request* req : drained_) Dispatch(req, now);
  drained_.clear();
}

Node* Engine::EnsureNode(const Endpoint& e) {
  AssertIoThread();
  std::string name = e.ToString();
  auto it = node_by_name_.find(name);
  if (it != node_by_name_.end()) return nodes_[it->second].get();
  auto node = std::make_unique<Node>(static_cast<int>(nodes_.size()), e, this, options_.connections_per_node);
  node_by_name_[name] = node->id();
  nodes_.push_back(std::move(node));
  return nodes_.back().get();
}

Node* Engine::RouteNode(const Request* req) {
  AssertIoThread();
  if (req->target_node >= 0) return nodes_[req->target_node].get();
  if (!have_topology_) return nullptr;
  if (req->slot < 0) {
    const int m = slots_.NextKeylessMaster();
    return m < 0 ? nullptr : nodes_[m].get();
  }
  const auto slot = static_cast<uint16_t>(req->slot);
  const int m = slots_.Master(slot);
  if (m < 0) return nullptr;
  if (req->read_only && options_.read_from_replicas) {
    if (const int replica = slots_.NextReplica(slot); replica >= 0) {
      Node* r = nodes_[replica].get();
      const Connection* c = r->primary();
      bool backing_off = c->state() == Connection::State::kDisconnected && !c->owner.last_error.empty() &&
                         SteadyClock::now() < c->owner.next_connect;
      if (!backing_off) return r;
    }
  }
  return nodes_[m].get();
}

void Engine::Dispatch(Request* req, TimePoint now) {
  AssertIoThread();
  if (req->task) {
    auto task = std::move(req->task);
    if (task(req)) Finish(req, Reply::Nil());
    return;
  }
  if (!req->Live() || shutting_down_) {
    Finish(req, Status::Cancelled(shutting_down_ ? "the Redis client is shutting down" : "abandoned"));
    return;
  }
  if (now >= req->deadline) {
    const std::string* node = req->node_name.load(std::memory_order_relaxed);
    Finish(req, Status::DeadlineExceeded("deadline exceeded waiting for " + (node ? *node : std::string("a node")) +
                                         (req->last_error.empty() ? std::string() : "; last error: " + req->last_error)));
    return;
  }
  Node* n = RouteNode(req);
  if (n == nullptr) {
    refresh_.Want();
    Park(req, now, have_topology_ ? "slot " + std::to_string(req->slot) + " is not covered" : "no topology yet");
    return;
  }
  req->node_name.store(&n->name(), std::memory_order_release);
  Connection* c = n->Pick();
  if (c->state() == Connection::State::kReady) {
    if (Acquire(c)) {
      WriteRequest(c, req);
    } else {
      c->owner.waiting.push_back(req);  // written when the borrower hands it back
    }
    return;
  }
  c->owner.waiting.push_back(req);
  if (c->state() == Connection::State::kDisconnected && now >= c->owner.next_connect) StartConnect(c, now);
}

void Engine::WriteRequest(Connection* c, Request* req) {
  AssertIoThread();
  if (c->inflight().empty()) c->owner.last_read = SteadyClock::now();
  if (req->asking) {
    c->Write(kAsking, Connection::InFlight::kDiscard);
    req->asking = false;
  }
  if (req->load_script) {
    const std::string_view load[] = {"SCRIPT", "LOAD", req->script};
    c->Write(load, Connection::InFlight::kDiscard);
    req->load_script = false;
  }
  c->Write(req->cmd.view(), Connection::InFlight::kUser, req);
  MarkDirty(c);
}

void Engine::MarkDirty(Connection* c) {
  AssertIoThread();
  if (c->owner.dirty) return;
  c->owner.dirty = true;
  dirty_.push_back(c);
}

void Engine::FlushDirty() {
  AssertIoThread();
  while (!dirty_.empty()) {
    flushing_.clear();
    flushing_.swap(dirty_);  // the two vectors trade buffers: no allocation per pass
    for (Connection* c : flushing_) {
      c->owner.dirty = false;
      c->Flush();
      MaybeLend(c);
    }
  }
  flushing_.clear();
}

void Engine::Park(Request* req, TimePoint now, const std::string& why) {
  AssertIoThread();
  req->last_error = why;
  req->target_node = -1;  // routed again by slot: a redirection does not outlive a retry
  req->asking = false;
  if (!retries_.Park(req, now)) Finish(req, Status::Unavailable(why + " (no time left to retry before the deadline)"));
}

void Engine::RetryParked(TimePoint now, bool all) {
  AssertIoThread();
  for (Request* req : retries_.TakeDue(now, all)) Dispatch(req, now);
}

void Engine::SweepExpired(TimePoint now) {
  AssertIoThread();
  // Collect first: an expiry callback may dispatch (topology refresh) and so
  // change the queues being walked. Each collected request is held by a
  // reference of its own: an earlier callback may finish and free a later
  // one (a dispatch whose connection fails at once finishes what waited on
  // it), and its block may already serve another request. The node's name
  // is copied for the same reason.
  std::vector<std::pair<Request*, std::string>> expired;
  auto check = [&](Request* req, const Node* n) {
    if (req->IsAsync() && now >= req->deadline && req->Live()) {
      req->Ref();
      expired.emplace_back(req, n->name());
    }
  };
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node* node = nodes_[i].get();
    for (const auto& c : node->connections()) {
      for (const auto& e : c->inflight()) {
        if (e.kind == Connection::InFlight::kUser) check(e.req, node);
      }
      for (Request* req : c->owner.waiting) check(req, node);
    }
  }
  for (auto& [req, name] : expired) {
    ExpireRequest(req, Status::DeadlineExceeded("deadline exceeded waiting for " + name));  // no-op unless live
    req->Unref();
  }
}

// A node that left the slot map keeps a connection that had commands in
// flight when the map was installed (ApplyTopology). It is closed once idle
// for kDepartedIdleClose: soon after its last reply, yet not after every
// ASKed command when the node is a new one importing its first slot (such a
// node is in no CLUSTER SLOTS reply either).
void Engine::CloseIfDeparted(Connection* c, TimePoint now) {
  if (c->node()->in_topology || !c->inflight().empty() || c->has_unsent() || !c->owner.waiting.empty() ||
      now - c->owner.last_read < kDepartedIdleClose || !Acquire(c)) {
    return;
  }
  DropConnection(c, "node is no longer in the cluster topology", /*want_refresh=*/false);
}

void Engine::Housekeeping(TimePoint now) {
  AssertIoThread();
  SweepExpired(now);
  RetryParked(now, /*all=*/false);
  auto stall_limit = std::max<std::chrono::nanoseconds>(options_.command_timeout * 2, milliseconds(1000));
  for (size_t i = 0; i < nodes_.size(); ++i) {
    for (auto& conn : nodes_[i]->connections()) {
      Connection* c = conn.get();
      switch (c->state()) {
        case Connection::State::kConnecting:
        case Connection::State::kHandshake:
          if (now - c->owner.connect_started > options_.connect_timeout) OnConnectionFailed(c, "connect timeout");
          break;
        case Connection::State::kReady:
          if (!c->inflight().empty() && now - c->owner.last_read > stall_limit) {
            OnConnectionFailed(c, "no reply within " +
                                      std::to_string(std::chrono::duration_cast<milliseconds>(stall_limit).count()) +
                                      " ms");
          } else {
            CloseIfDeparted(c, now);
          }
          break;
        case Connection::State::kDisconnected:
          if (!c->owner.waiting.empty() && now >= c->owner.next_connect) StartConnect(c, now);
          break;
      }
    }
  }
  MaybeRefresh(now);
}

void Engine::Shutdown() {
  AssertIoThread();
  shutting_down_ = true;
  std::vector<Request*> pending = queue_.Close();
  pending.insert(pending.end(), own_submissions_.begin(), own_submissions_.end());
  own_submissions_.clear();
  Status cancelled = Status::Cancelled("the Redis client is shutting down");
  for (Request* req : pending) {
    if (req->task) req->task = nullptr;
    Finish(req, cancelled);
  }
  for (Request* req : retries_.TakeDue(TimePoint::max(), /*all=*/true)) Finish(req, cancelled);
  if (topology_waiter_ != nullptr) {
    Finish(topology_waiter_, cancelled);
    topology_waiter_ = nullptr;
  }
  for (auto& node : nodes_) {
    for (auto& c : node->connections()) {
      c->Close();
      for (const auto& e : c->TakeInFlight()) {
        if (e.kind == Connection::InFlight::kUser) Finish(e.req, cancelled);
      }
      for (Request* req : c->owner.waiting) Finish(req, cancelled);
      c->owner.waiting.clear();
    }
  }
}

}  // namespace tiercache::redis::internal

namespace tiercache::redis::internal {

Status Engine::RunOnIoThread(std::function<void()> fn, std::chrono::milliseconds timeout) {
  SyncRequest req(new Request);
  req->deadline = SteadyClock::now() + timeout;
  req->task = [fn = std::move(fn)](Request*) {
    fn();
    return true;
  };
  Submit(req);
  Result<Reply> r = AwaitRequest(req.Release(), std::chrono::microseconds(0));
  return r.ok() ? Status::Ok() : r.status();
}


}  // namespace tiercache::redis::internal
