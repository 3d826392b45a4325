// Direct I/O: a sync call finds the connection of its slot idle, borrows it,
// and sends and receives in the calling thread, saving the two thread
// hand-offs of the queued path (the 1-caller latency). Anything unusual —
// a redirection, a retryable error, a broken connection — returns the
// connection and falls back to the I/O thread, which owns all recovery.
#include <sys/epoll.h>

#include "redis/engine.h"

namespace tiercache::redis::internal {

using Owner = Connection::Owner;  // its lending states

bool Engine::Acquire(Connection* c) {
  AssertIoThread();
  for (;;) {
    int s = c->owner.lend.load(std::memory_order_acquire);
    if (s == Owner::kOwned) return true;
    if (s == Owner::kReclaim || s == Owner::kReturning) return false;
    int next = s == Owner::kLendable ? Owner::kOwned : Owner::kReclaim;
    if (c->owner.lend.compare_exchange_weak(s, next, std::memory_order_acq_rel)) return next == Owner::kOwned;
  }
}

bool Engine::TryOwn(Connection* c) {
  AssertIoThread();
  int s = c->owner.lend.load(std::memory_order_acquire);
  if (s == Owner::kOwned) return true;
  if (s != Owner::kLendable) return false;
  return c->owner.lend.compare_exchange_strong(s, Owner::kOwned, std::memory_order_acq_rel);
}

void Engine::MaybeLend(Connection* c) {
  AssertIoThread();
  if (!options_.direct_io || c->state() != Connection::State::kReady || !c->inflight().empty() || c->has_unsent() ||
      !c->owner.waiting.empty() || c->owner.lend.load(std::memory_order_relaxed) != Owner::kOwned) {
    return;
  }
  c->owner.lend.store(Owner::kLendable, std::memory_order_release);
}

void Engine::PublishSlot(int slot) {
  AssertIoThread();
  const int m = slots_.Master(static_cast<uint16_t>(slot));
  direct_conn_[slot].store(m < 0 ? nullptr : nodes_[m]->primary(), std::memory_order_release);
}

void Engine::GiveBack(Connection* c, bool need_io_thread) {
  if (!need_io_thread) {
    int s = Owner::kBorrowed;
    if (c->owner.lend.compare_exchange_strong(s, Owner::kLendable, std::memory_order_acq_rel)) return;
    // kReclaim: the I/O thread queued work behind us; hand over with a task.
  }
  // Not kOwned yet: until the task below has queued the orphan reply (or
  // closed the socket), the I/O thread must neither write nor lend it.
  c->owner.lend.store(Owner::kReturning, std::memory_order_release);
  auto* task = new Request;
  task->deadline = SteadyClock::now() + std::chrono::hours(1);
  task->task = [this, c](Request*) {
    OnConnectionReturned(c);
    return true;
  };
  // The engine's own work: not held to max_outstanding_requests, whose
  // refusal would leave the connection kReturning (unusable) for good.
  SubmitOwnWork(task);  // if refused (shutdown), the connection is closed anyway
}

void Engine::OnConnectionReturned(Connection* c) {
  AssertIoThread();
  c->owner.lend.store(Owner::kOwned, std::memory_order_release);
  if (c->owner.borrow_broken) {
    c->owner.borrow_broken = false;
    c->owner.orphan_replies = 0;
    OnConnectionFailed(c, c->owner.borrow_error);
    return;
  }
  if (!c->node()->in_topology) {
    // The node left the slot map while a caller had this connection, so
    // ApplyTopology could not close it: close it now rather than at the next
    // refresh (up to topology_refresh_interval away). Orphan replies die with
    // it; requests queued here are routed again.
    c->owner.orphan_replies = 0;
    DropConnection(c, "node is no longer in the cluster topology", /*want_refresh=*/false);
    return;
  }
  c->ExpectOrphanReplies(c->owner.orphan_replies);
  c->owner.orphan_replies = 0;
  if (!c->inflight().empty()) {
    c->owner.last_read = SteadyClock::now();
    // A reply that arrived while the connection was lent raised no new edge.
    if (!c->OnEvent(EPOLLIN)) return;
  }
  if (c->state() == Connection::State::kReady) WriteWaiting(c);
  MaybeLend(c);
}

bool Engine::TryDirect(Request* req, Result<Reply>* out) {
  if (!options_.direct_io || req->slot < 0 || (req->read_only && options_.read_from_replicas)) return false;
  // Only a lone caller goes direct: with concurrent callers, pipelining
  // through the I/O thread is what scales, and a borrowed connection would
  // hold their commands back for a round trip. spinners_ counts the callers
  // now waiting or borrowing.
  if (spinners_.fetch_add(1, std::memory_order_acq_rel) != 0) {
    spinners_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  struct Leave {
    std::atomic<int>* n;
    ~Leave() { n->fetch_sub(1, std::memory_order_relaxed); }
  } leave{&spinners_};
  Connection* c = direct_conn_[req->slot].load(std::memory_order_acquire);
  if (c == nullptr) return false;
  int s = Owner::kLendable;
  if (!c->owner.lend.compare_exchange_strong(s, Owner::kBorrowed, std::memory_order_acq_rel)) return false;
  req->node_name.store(&c->node()->name(), std::memory_order_relaxed);

  return ExchangeDirect(c, req, out);
}

bool Engine::ExchangeDirect(Connection* c, Request* req, Result<Reply>* out) {
  TIERCACHE_DCHECK(c->owner.lend.load(std::memory_order_relaxed) == Owner::kBorrowed && !OnIoThread());
  Reply reply;
  std::string error;
  const DirectResult result = c->Exchange(req->cmd.view(), req->deadline, &reply, &error);
  switch (result) {
    case DirectResult::kReply:
      break;
    case DirectResult::kNotSentInTime:
    case DirectResult::kNotSentBroken:
      c->owner.borrow_broken = result == DirectResult::kNotSentBroken;
      c->owner.borrow_error = error;
      GiveBack(c, c->owner.borrow_broken);
      return false;  // nothing left: the queued path retries or times out
    case DirectResult::kTimedOut:
      c->owner.orphan_replies = 1;
      GiveBack(c, true);
      *out = Status::DeadlineExceeded("deadline exceeded waiting for " + c->node()->name());
      return true;
    case DirectResult::kBrokenAfterSend:
      c->owner.borrow_broken = true;
      c->owner.borrow_error = error;
      GiveBack(c, true);
      if (req->idempotent) return false;  // resend through the I/O thread
      *out = Status::Unavailable("connection to " + c->node()->name() + ": " + error +
                                 " after the command was sent; not retried because it may have run");
      return true;
  }
  GiveBack(c, false);
  if (reply.IsError() && ClassifyError(reply.str, c->node()->endpoint().host).kind != ErrorKind::kOther) {
    return false;  // a redirection or a retryable state: it did not run; the I/O thread follows it
  }
  *out = reply.IsError() ? Result<Reply>(Status::Internal("server error from " + c->node()->name() + ": " + reply.str))
                         : Result<Reply>(std::move(reply));
  return true;
}

Result<Reply> Engine::Call(SyncRequest req) {
  TIERCACHE_DCHECK(!req.submitted() && !OnIoThread());
  Result<Reply> direct = Status::Internal("unset");
  if (TryDirect(req.operator->(), &direct)) return direct;  // the handle frees the request, never submitted
  Submit(req);
  return Await(std::move(req));
}

}  // namespace tiercache::redis::internal
