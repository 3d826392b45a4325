// Socket side of a node connection: non-blocking connect, handshake
// (AUTH, READONLY), reading replies through hiredis's redisReader, and
// flushing the output buffer. Runs on the I/O thread only.
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "redis/connection_io.h"
#include "redis/engine.h"

namespace tiercache::redis::internal {
namespace {

Reply Convert(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_STRING: return Reply::String(std::string(r->str, r->len));
    case REDIS_REPLY_STATUS: return Reply::StatusReply(std::string(r->str, r->len));
    case REDIS_REPLY_ERROR: return Reply::Error(std::string(r->str, r->len));
    case REDIS_REPLY_INTEGER: return Reply::Integer(r->integer);
    case REDIS_REPLY_ARRAY: {
      std::vector<Reply> elements;
      elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) elements.push_back(Convert(r->element[i]));
      return Reply::Array(std::move(elements));
    }
    default: return Reply::Nil();
  }
}

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
  ev.events = EPOLLIN | (want_write ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(c->engine->epoll_fd(), EPOLL_CTL_MOD, c->fd, &ev);
  c->want_write = want_write;
}

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
  c->reader = redisReaderCreate();
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  epoll_ctl(c->engine->epoll_fd(), EPOLL_CTL_ADD, fd, &ev);
  c->want_write = true;
  c->state = Connection::State::kConnecting;
  return true;
}

void ConnClose(Connection* c) {
  if (c->fd >= 0) {
    epoll_ctl(c->engine->epoll_fd(), EPOLL_CTL_DEL, c->fd, nullptr);
    ::close(c->fd);
    c->fd = -1;
  }
  if (c->reader != nullptr) {
    redisReaderFree(c->reader);
    c->reader = nullptr;
  }
  c->out.clear();
  c->want_write = false;
  c->handshake_left = 0;
  c->state = Connection::State::kDisconnected;
}

void ConnFlush(Connection* c) {
  if (c->fd < 0 || c->state == Connection::State::kConnecting) return;
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
    c->engine->OnConnectionFailed(c, std::string("send: ") + std::strerror(errno));
    return;
  }
  c->out.erase(0, sent);
  bool need = !c->out.empty();
  if (need != c->want_write) SetEvents(c, need);
}

void ConnOnEvent(Connection* c, uint32_t events) {
  if (c->state == Connection::State::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      c->engine->OnConnectionFailed(c, std::string("connect: ") + std::strerror(err));
      return;
    }
    SetEvents(c, false);
    c->engine->OnConnectionReady(c);  // sends the handshake, or goes ready
    return;
  }
  if (events & EPOLLOUT) {
    ConnFlush(c);
    if (c->fd < 0) return;
  }
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) return;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(c->fd, buf, sizeof(buf), 0);
    if (n > 0) {
      if (redisReaderFeed(c->reader, buf, static_cast<size_t>(n)) != REDIS_OK) {
        c->engine->OnConnectionFailed(c, "protocol error");
        return;
      }
      // Hand out every complete reply, in order.
      for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(c->reader, &raw) != REDIS_OK) {
          c->engine->OnConnectionFailed(c, std::string("protocol error: ") + c->reader->errstr);
          return;
        }
        if (raw == nullptr) break;
        Reply reply = Convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        if (c->inflight.empty()) {
          c->engine->OnConnectionFailed(c, "reply without a request");
          return;
        }
        Connection::InFlight entry = c->inflight.front();
        c->inflight.pop_front();
        c->engine->OnReply(c, entry, std::move(reply));
        if (c->fd < 0) return;  // the reply handler closed the connection
      }
      if (static_cast<size_t>(n) < sizeof(buf)) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c->engine->OnConnectionFailed(c, n == 0 ? "connection closed by server" : std::string("recv: ") + std::strerror(errno));
    return;
  }
}

}  // namespace tiercache::redis::internal
