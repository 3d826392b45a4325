// Connection lifecycle and reply handling on the I/O thread: connect and
// handshake, lost connections (what is resent, what fails), and the reply
// dispatcher that follows MOVED/ASK, retries TRYAGAIN/CLUSTERDOWN/LOADING and
// reloads scripts on NOSCRIPT.
#include <algorithm>

#include "redis/engine.h"

namespace tiercache::redis::internal {
namespace {

Status ServerError(const std::string& node, const std::string& text) {
  return Status::Internal("server error from " + node + ": " + text);
}

}  // namespace

void Engine::StartConnect(Connection* c, TimePoint now) {
  AssertIoThread();
  c->owner.connect_started = now;
  c->owner.next_connect = now + options_.reconnect_backoff;
  std::string error;
  if (!c->Open(&error)) OnConnectionFailed(c, error);
}

void Engine::OnConnectionReady(Connection* c) {
  AssertIoThread();
  c->BeginHandshake();
  c->owner.handshake_left = 0;
  c->owner.handshake_rejected = false;
  if (!options_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!options_.username.empty()) auth.push_back(options_.username);
    auth.push_back(options_.password);
    c->Write(auth, Connection::InFlight::kHandshake);
    ++c->owner.handshake_left;
  }
  if (options_.read_from_replicas) {
    const std::string_view readonly[] = {"READONLY"};
    c->Write(readonly, Connection::InFlight::kHandshake);
    ++c->owner.handshake_left;
  }
  if (c->owner.handshake_left == 0) {
    GoReady(c);
  } else {
    MarkDirty(c);
  }
}

void Engine::WriteWaiting(Connection* c) {
  AssertIoThread();
  std::deque<Request*> waiting;
  waiting.swap(c->owner.waiting);
  for (Request* req : waiting) {
    if (!req->Live()) {
      Finish(req, Status::Cancelled("abandoned"));
    } else {
      WriteRequest(c, req);
    }
  }
}

void Engine::GoReady(Connection* c) {
  AssertIoThread();
  c->MarkReady();
  c->owner.last_error.clear();
  counters_.reconnects.fetch_add(1, std::memory_order_relaxed);
  WriteWaiting(c);
}

void Engine::OnConnectionFailed(Connection* c, const std::string& reason) {
  AssertIoThread();
  counters_.connection_failures.fetch_add(1, std::memory_order_relaxed);
  DropConnection(c, reason, /*want_refresh=*/true);
}

void Engine::DropConnection(Connection* c, const std::string& reason, bool want_refresh) {
  AssertIoThread();
  TimePoint now = SteadyClock::now();
  std::string why = c->node()->name() + ": " + reason;
  bool rejected = c->owner.handshake_rejected;
  const uint64_t sent_upto = c->sent_upto();  // commands starting at or after it never left
  c->Close();
  c->owner.handshake_left = 0;
  c->owner.handshake_rejected = false;
  c->owner.last_error = why;
  c->owner.next_connect = std::max(c->owner.next_connect, now + options_.reconnect_backoff);
  if (want_refresh && options_.mode == Mode::kCluster) refresh_.Want();
  const std::deque<Connection::InFlight> inflight = c->TakeInFlight();
  std::deque<Request*> waiting;
  waiting.swap(c->owner.waiting);
  for (const Connection::InFlight& e : inflight) {
    if (e.kind != Connection::InFlight::kUser) continue;
    Request* req = e.req;
    if (!req->Live()) {
      Finish(req, Status::Cancelled("abandoned"));
    } else if (req->internal) {
      Finish(req, Status::Unavailable(why));
    } else if (req->idempotent || e.start >= sent_upto) {
      Park(req, now, why);
    } else {
      Finish(req, Status::Unavailable("connection to " + why +
                                      " lost after the command was sent; not retried because it may have run"));
    }
  }
  for (Request* req : waiting) {
    if (!req->Live()) {
      Finish(req, Status::Cancelled("abandoned"));
    } else if (rejected) {
      Finish(req, Status::FailedPrecondition("connection handshake rejected by " + why));
    } else if (req->internal) {
      Finish(req, Status::Unavailable(why));
    } else {
      Park(req, now, why);
    }
  }
}

bool Engine::OnReply(Connection* c, Connection::InFlight entry, Reply&& reply, TimePoint now) {
  AssertIoThread();
  c->owner.last_read = now;
  if (entry.kind == Connection::InFlight::kDiscard) return true;
  if (entry.kind == Connection::InFlight::kHandshake) return OnHandshakeReply(c, reply);
  HandleReply(c, entry.req, std::move(reply), now);
  // Finishing a request can close `c`: a refresh's callback installs a map
  // that may leave out the very node that answered (a master with no slot
  // lists itself nowhere), and its connections are dropped.
  return c->open();
}

void Engine::HandleReply(Connection* c, Request* req, Reply&& reply, TimePoint now) {
  AssertIoThread();
  if (!req->Live()) {
    Finish(req, Status::Cancelled("abandoned"));
    return;
  }
  if (!reply.IsError()) {
    Finish(req, std::move(reply));
    return;
  }
  const ErrorInfo info = ClassifyError(reply.str, c->node()->endpoint().host);
  switch (info.kind) {
    case ErrorKind::kMoved:
    case ErrorKind::kAsk:
      OnRedirect(c, req, info, reply.str, now);
      return;
    case ErrorKind::kTryAgain:
    case ErrorKind::kClusterDown:
    case ErrorKind::kLoading:
    case ErrorKind::kMasterDown:
      counters_.retries.fetch_add(1, std::memory_order_relaxed);
      if (info.kind != ErrorKind::kTryAgain) refresh_.Want();
      Park(req, now, c->node()->name() + ": " + reply.str);
      return;
    case ErrorKind::kNoScript:
      if (ReloadScript(c, req, now)) return;
      break;
    case ErrorKind::kOther:
      break;
  }
  Finish(req, ServerError(c->node()->name(), reply.str));
}

bool Engine::OnHandshakeReply(Connection* c, const Reply& reply) {
  AssertIoThread();
  if (reply.IsError()) {
    c->owner.handshake_rejected = true;  // AUTH or READONLY refused: not retried
    OnConnectionFailed(c, reply.str);
    return false;
  }
  if (--c->owner.handshake_left == 0) GoReady(c);
  return c->open();  // going ready writes what waited, which may fail
}

void Engine::OnRedirect(Connection* c, Request* req, const ErrorInfo& info, const std::string& error,
                        TimePoint now) {
  AssertIoThread();
  const bool moved = info.kind == ErrorKind::kMoved;
  (moved ? counters_.moved : counters_.ask).fetch_add(1, std::memory_order_relaxed);
  if (++req->redirects > options_.max_redirects) {
    Finish(req, Status::Unavailable("redirects exhausted after " + std::to_string(options_.max_redirects) +
                                    " hops; last: " + error + " from " + c->node()->name()));
    return;
  }
  Node* target = EnsureNode(info.target);
  if (moved) {  // the slot's owner changed: patch the map, refresh it soon
    slots_.Move(info.slot, target->id());
    PublishSlot(info.slot);
    target->in_topology = true;
    refresh_.Want();
  }
  req->target_node = target->id();
  req->asking = !moved;  // ASK: this command only, the map untouched
  Dispatch(req, now);
}

bool Engine::ReloadScript(Connection* c, Request* req, TimePoint now) {
  AssertIoThread();
  if (req->script.empty() || req->script_reloaded) return false;
  req->script_reloaded = true;  // once: a second NOSCRIPT is the server's answer
  req->load_script = true;
  req->target_node = c->node()->id();
  Dispatch(req, now);
  return true;
}

}  // namespace tiercache::redis::internal
