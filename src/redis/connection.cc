// Connection (connection.h): non-blocking connect, reading replies through
// a ReplyReader, flushing the output buffer, and the direct exchange
// of a borrowed connection. I/O thread only, except Exchange.
#include "redis/connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>

#include "redis/protocol.h"
#include "redis/reply_reader.h"

namespace tiercache::redis::internal {
namespace {

bool Resolve(const Endpoint& e, sockaddr_storage* addr, socklen_t* len, std::string* error) {
  sockaddr_in v4{};
  if (inet_pton(AF_INET, e.host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(e.port));
    std::memcpy(addr, &v4, sizeof(v4));
    *len = sizeof(v4);
    return true;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    *error = "cannot resolve " + e.host + ": " + gai_strerror(rc);
    return false;
  }
  std::memcpy(addr, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

// Waits for `events` on fd until `deadline`; false on timeout.
bool PollUntil(int fd, short events, TimePoint deadline) {
  for (;;) {
    auto left = deadline - SteadyClock::now();
    if (left <= std::chrono::nanoseconds::zero()) return false;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    pollfd p{fd, events, 0};
    int rc = ::ppoll(&p, 1, &ts, nullptr);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let the next call report the error
  }
}

}  // namespace

Node::Node(int id, Endpoint endpoint, ConnectionObserver* observer, int connections)
    : id_(id), endpoint_(std::move(endpoint)), name_(endpoint_.ToString()) {
  for (int i = 0; i < std::max(connections, 1); ++i) conns_.push_back(std::make_unique<Connection>(observer, this));
}

void Connection::SetEvents(bool want_write) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET | (want_write ? EPOLLOUT : 0u);
  ev.data.ptr = this;
  epoll_ctl(observer_->epoll_fd(), EPOLL_CTL_MOD, fd_, &ev);
  want_write_ = want_write;
}

bool Connection::Open(std::string* error) {
  TIERCACHE_DCHECK(observer_->OnIoThread() && fd_ < 0 && inflight_.empty());
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (!Resolve(node_->endpoint(), &addr, &len, error)) return false;
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len);
  if (rc != 0 && errno != EINPROGRESS) {
    *error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  fd_ = fd;
  reader_.Reset();
  epoll_event ev{};
  // Edge-triggered: a connection lent to a caller (direct I/O) must not keep
  // waking the I/O thread while the caller reads its reply.
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.ptr = this;
  epoll_ctl(observer_->epoll_fd(), EPOLL_CTL_ADD, fd, &ev);
  want_write_ = true;
  state_ = State::kConnecting;
  return true;
}

void Connection::Close() {
  if (fd_ >= 0) {
    TIERCACHE_DCHECK(observer_->OnIoThread());
    epoll_ctl(observer_->epoll_fd(), EPOLL_CTL_DEL, fd_, nullptr);
    ::close(fd_);
    fd_ = -1;
  }
  reader_.Reset();
  out_.clear();
  out_base_ = 0;
  want_write_ = false;
  state_ = State::kDisconnected;
}

void Connection::BeginHandshake() {
  TIERCACHE_DCHECK(observer_->OnIoThread() && fd_ >= 0);
  state_ = State::kHandshake;
}

void Connection::MarkReady() {
  TIERCACHE_DCHECK(observer_->OnIoThread() && fd_ >= 0);
  state_ = State::kReady;
}

void Connection::Write(std::string_view resp, InFlight::Kind kind, Request* req) {
  TIERCACHE_DCHECK(observer_->OnIoThread() && (kind != InFlight::kUser || req != nullptr));
  inflight_.push_back({req, kind, stream_end()});
  out_.append(resp);
}

void Connection::Write(std::span<const std::string_view> args, InFlight::Kind kind) {
  TIERCACHE_DCHECK(observer_->OnIoThread());
  inflight_.push_back({nullptr, kind, stream_end()});
  AppendCommand(out_, args);
}

void Connection::ExpectOrphanReplies(int n) {
  TIERCACHE_DCHECK(observer_->OnIoThread());
  // Offset 0: sent long ago, so HoldForReplies sees a reply due.
  for (; n > 0; --n) inflight_.push_back({nullptr, InFlight::kDiscard, 0});
}

std::deque<Connection::InFlight> Connection::TakeInFlight() {
  TIERCACHE_DCHECK(observer_->OnIoThread());
  std::deque<InFlight> taken;
  taken.swap(inflight_);
  return taken;
}

// Write coalescing (RedisClientOptions::coalesce_writes): hold the buffer
// while commands already sent on this connection await replies; the reply
// path flushes it (OnEvent). Never while a partial write is draining
// (want_write_): the server cannot answer a command it has half of. Without
// one, everything before out_base_ was sent whole, and in-flight entries are
// in stream order, so the oldest tells: it starts before out_base_ iff a
// sent command's reply is still due.
bool Connection::HoldForReplies(bool coalesce) const {
  return coalesce && !want_write_ && !inflight_.empty() && inflight_.front().start < out_base_ &&
         out_.size() < kCoalesceMaxBytes;
}

bool Connection::Flush() {
  TIERCACHE_DCHECK(observer_->OnIoThread());
  if (fd_ < 0) return false;
  if (state_ == State::kConnecting) return true;
  if (out_.empty()) {
    if (want_write_) SetEvents(false);
    return true;
  }
  if (HoldForReplies(observer_->coalesce_writes())) return true;
  observer_->CountWrite();
  size_t sent = 0;
  while (sent < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    out_.erase(0, sent);
    out_base_ += sent;
    observer_->OnConnectionFailed(this, std::string("send: ") + std::strerror(errno));
    return false;
  }
  out_.erase(0, sent);
  out_base_ += sent;
  bool need = !out_.empty();
  if (need != want_write_) SetEvents(need);
  return true;
}

bool Connection::OnEvent(uint32_t events) {
  TIERCACHE_DCHECK(observer_->OnIoThread());
  if (!observer_->TryOwn(this)) return true;  // lent to a caller, who reads its reply
  if (state_ == State::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return true;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      observer_->OnConnectionFailed(this, std::string("connect: ") + std::strerror(err));
      return false;
    }
    SetEvents(false);
    observer_->OnConnectionReady(this);  // sends the handshake, or goes ready
    return fd_ >= 0;
  }
  if ((events & EPOLLOUT) && !Flush()) return false;
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) return true;
  return ReadReplies();
}

bool Connection::ReadReplies() {
  char buf[64 * 1024];
  std::string error;
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      reader_.Feed(buf, static_cast<size_t>(n));
      if (!HandOutReplies(&error)) {
        if (!error.empty()) observer_->OnConnectionFailed(this, error);
        return false;
      }
      // Commands held for these replies (HoldForReplies) may go now. Here,
      // after every chunk: a chunk that fills buf is followed by EAGAIN, and
      // that return must not leave them waiting for a reply nobody owes.
      if (!out_.empty()) observer_->MarkDirty(this);
      if (static_cast<size_t>(n) < sizeof(buf)) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    observer_->OnConnectionFailed(
        this, n == 0 ? "connection closed by server" : std::string("recv: ") + std::strerror(errno));
    return false;
  }
}

bool Connection::HandOutReplies(std::string* error) {
  const TimePoint now = SteadyClock::now();  // one clock read per recv, not per reply
  for (Reply reply;;) {
    switch (reader_.Next(&reply, error)) {
      case ReplyState::kNeedMore:
        return true;
      case ReplyState::kProtocolError:
        return false;
      case ReplyState::kReply:
        break;
    }
    if (inflight_.empty()) {
      *error = "reply without a request";
      return false;
    }
    const InFlight entry = inflight_.front();
    inflight_.pop_front();
    if (!observer_->OnReply(this, entry, std::move(reply), now)) {
      error->clear();  // the observer closed the connection itself
      return false;
    }
  }
}

DirectResult Connection::Exchange(std::string_view cmd, TimePoint deadline, Reply* reply, std::string* error) {
  TIERCACHE_DCHECK(!observer_->OnIoThread() && inflight_.empty() && out_.empty());
  size_t sent = 0;
  while (sent < cmd.size()) {
    ssize_t n = ::send(fd_, cmd.data() + sent, cmd.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (!again) *error = std::string("send: ") + std::strerror(errno);
    if (!again || !PollUntil(fd_, POLLOUT, deadline)) {
      if (again) *error = "deadline exceeded while sending";
      if (sent > 0) return DirectResult::kBrokenAfterSend;  // a partial command: the stream is lost
      return again ? DirectResult::kNotSentInTime : DirectResult::kNotSentBroken;
    }
  }
  char buf[16 * 1024];
  for (;;) {
    switch (reader_.Next(reply, error)) {
      case ReplyState::kReply:
        return DirectResult::kReply;
      case ReplyState::kProtocolError:
        return DirectResult::kBrokenAfterSend;
      case ReplyState::kNeedMore:
        break;
    }
    if (!PollUntil(fd_, POLLIN, deadline)) return DirectResult::kTimedOut;
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      reader_.Feed(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    *error = n == 0 ? "connection closed by server" : std::string("recv: ") + std::strerror(errno);
    return DirectResult::kBrokenAfterSend;
  }
}

}  // namespace tiercache::redis::internal
