// Socket side of a node connection: non-blocking connect, handshake
// (AUTH, READONLY), reading replies through hiredis's redisReader, and
// flushing the output buffer. Runs on the I/O thread only.
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <new>

#include "redis/connection_io.h"
#include "redis/reply_reader.h"
#include "redis/engine.h"

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

void SetEvents(Connection* c, bool want_write) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET | (want_write ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(c->observer->epoll_fd(), EPOLL_CTL_MOD, c->fd, &ev);
  c->want_write = want_write;
}

// Reads what the socket holds and hands out every whole reply (ConnOnEvent's
// EPOLLIN side). False when the connection is closed afterwards.
bool ReadReplies(Connection* c);
// The replies complete in c->reader, in order, to the observer. False when
// the stream is broken (*error says why) or the observer closed the
// connection (*error empty).
bool HandOutReplies(Connection* c, std::string* error);

}  // namespace

bool ConnOpen(Connection* c, std::string* error) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (!Resolve(c->node->endpoint, &addr, &len, error)) return false;
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
  c->fd = fd;
  c->reader = NewReplyReader();
  epoll_event ev{};
  // Edge-triggered: a connection lent to a caller (direct I/O) must not keep
  // waking the I/O thread while the caller reads its reply.
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.ptr = c;
  epoll_ctl(c->observer->epoll_fd(), EPOLL_CTL_ADD, fd, &ev);
  c->want_write = true;
  c->state = Connection::State::kConnecting;
  return true;
}

void ConnClose(Connection* c) {
  if (c->fd >= 0) {
    epoll_ctl(c->observer->epoll_fd(), EPOLL_CTL_DEL, c->fd, nullptr);
    ::close(c->fd);
    c->fd = -1;
  }
  if (c->reader != nullptr) {
    redisReaderFree(c->reader);
    c->reader = nullptr;
  }
  c->out.clear();
  c->out_base = 0;
  c->want_write = false;
  c->handshake_left = 0;
  c->state = Connection::State::kDisconnected;
}

// Write coalescing (RedisClientOptions::coalesce_writes): hold the buffer
// while commands already sent on this connection await replies; the reply
// path flushes it (ConnOnEvent). Never while a partial write is draining
// (want_write): the server cannot answer a command it has half of. Without
// one, everything before out_base was sent whole, and in-flight entries are
// in stream order, so the oldest tells: it starts before out_base iff a sent
// command's reply is still due.
bool HoldForReplies(const Connection& c, bool coalesce) {
  return coalesce && !c.want_write && !c.inflight.empty() && c.inflight.front().start < c.out_base &&
         c.out.size() < kCoalesceMaxBytes;
}

bool ConnFlush(Connection* c) {
  if (c->fd < 0) return false;
  if (c->state == Connection::State::kConnecting) return true;
  if (c->out.empty()) {
    if (c->want_write) SetEvents(c, false);
    return true;
  }
  if (HoldForReplies(*c, c->observer->coalesce_writes())) return true;
  c->observer->CountWrite();
  size_t sent = 0;
  while (sent < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + sent, c->out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    c->out.erase(0, sent);
    c->out_base += sent;
    c->observer->OnConnectionFailed(c, std::string("send: ") + std::strerror(errno));
    return false;
  }
  c->out.erase(0, sent);
  c->out_base += sent;
  bool need = !c->out.empty();
  if (need != c->want_write) SetEvents(c, need);
  return true;
}

bool ConnOnEvent(Connection* c, uint32_t events) {
  if (!c->observer->TryOwn(c)) return true;  // lent to a caller, who reads its reply
  if (c->state == Connection::State::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return true;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      c->observer->OnConnectionFailed(c, std::string("connect: ") + std::strerror(err));
      return false;
    }
    SetEvents(c, false);
    c->observer->OnConnectionReady(c);  // sends the handshake, or goes ready
    return c->fd >= 0;
  }
  if ((events & EPOLLOUT) && !ConnFlush(c)) return false;
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) return true;
  return ReadReplies(c);
}

namespace {

bool ReadReplies(Connection* c) {
  char buf[64 * 1024];
  std::string error;
  for (;;) {
    ssize_t n = ::recv(c->fd, buf, sizeof(buf), 0);
    if (n > 0) {
      if (!FeedReplies(c->reader, buf, static_cast<size_t>(n), &error) || !HandOutReplies(c, &error)) {
        if (!error.empty()) c->observer->OnConnectionFailed(c, error);
        return false;
      }
      // Commands held for these replies (HoldForReplies) may go now. Here,
      // after every chunk: a chunk that fills buf is followed by EAGAIN, and
      // that return must not leave them waiting for a reply nobody owes.
      if (!c->out.empty()) c->observer->MarkDirty(c);
      if (static_cast<size_t>(n) < sizeof(buf)) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    c->observer->OnConnectionFailed(c, n == 0 ? "connection closed by server" : std::string("recv: ") + std::strerror(errno));
    return false;
  }
}

bool HandOutReplies(Connection* c, std::string* error) {
  const TimePoint now = SteadyClock::now();  // one clock read per recv, not per reply
  for (Reply reply;;) {
    switch (NextReply(c->reader, &reply, error)) {
      case ReplyState::kNeedMore:
        return true;
      case ReplyState::kProtocolError:
        return false;
      case ReplyState::kReply:
        break;
    }
    if (c->inflight.empty()) {
      *error = "reply without a request";
      return false;
    }
    const Connection::InFlight entry = c->inflight.front();
    c->inflight.pop_front();
    if (!c->observer->OnReply(c, entry, std::move(reply), now)) {
      error->clear();  // the observer closed the connection itself
      return false;
    }
  }
}

}  // namespace

namespace {

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

DirectResult DirectExchange(Connection* c, const std::string& cmd, TimePoint deadline, Reply* reply,
                            std::string* error) {
  size_t sent = 0;
  while (sent < cmd.size()) {
    ssize_t n = ::send(c->fd, cmd.data() + sent, cmd.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (!again) *error = std::string("send: ") + std::strerror(errno);
    if (!again || !PollUntil(c->fd, POLLOUT, deadline)) {
      if (again) *error = "deadline exceeded while sending";
      if (sent > 0) return DirectResult::kBrokenAfterSend;  // a partial command: the stream is lost
      return again ? DirectResult::kNotSentInTime : DirectResult::kNotSentBroken;
    }
  }
  char buf[16 * 1024];
  for (;;) {
    switch (NextReply(c->reader, reply, error)) {
      case ReplyState::kReply:
        return DirectResult::kReply;
      case ReplyState::kProtocolError:
        return DirectResult::kBrokenAfterSend;
      case ReplyState::kNeedMore:
        break;
    }
    if (!PollUntil(c->fd, POLLIN, deadline)) return DirectResult::kTimedOut;
    ssize_t n = ::recv(c->fd, buf, sizeof(buf), 0);
    if (n > 0) {
      if (!FeedReplies(c->reader, buf, static_cast<size_t>(n), error)) return DirectResult::kBrokenAfterSend;
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    *error = n == 0 ? "connection closed by server" : std::string("recv: ") + std::strerror(errno);
    return DirectResult::kBrokenAfterSend;
  }
}

}  // namespace tiercache::redis::internal
