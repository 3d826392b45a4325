#include "outbox/pg.h"

#include <poll.h>

#include <cerrno>
#include <cstring>

namespace tiercache::outbox::pg {

Result<ConnPtr> Connect(const std::string& conninfo) {
  std::string info = conninfo;
  if (info.find("connect_timeout") == std::string::npos) info += " connect_timeout=10";
  ConnPtr c(PQconnectdb(info.c_str()));
  if (c == nullptr) return Status::Unavailable("postgresql: out of memory connecting");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c.get());
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return Status::Unavailable("postgresql: cannot connect: " + msg);
  }
  return c;
}

namespace {

Status ResultError(PGconn* conn, const PGresult* r) {
  if (PQstatus(conn) != CONNECTION_OK) {
    return Status::Unavailable(std::string("postgresql: connection lost: ") + PQerrorMessage(conn));
  }
  std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return Status::Internal("postgresql: " + msg + (state ? std::string(" (SQLSTATE ") + state + ")" : ""));
}

// libpq's parallel arrays for `params` (pointing into them).
struct Bound {
  explicit Bound(const std::vector<Param>& params) {
    for (const Param& p : params) {
      values.push_back(p.null ? nullptr : p.value.data());
      lengths.push_back(static_cast<int>(p.value.size()));
      formats.push_back(p.binary ? 1 : 0);
    }
  }
  int n() const { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};

}  // namespace

Result<ResultPtr> Exec(PGconn* conn, std::string_view sql, const std::vector<Param>& params, ExecStatusType ok) {
  const Bound b(params);
  const std::string text(sql);
  ResultPtr r(PQexecParams(conn, text.c_str(), b.n(), nullptr, b.values.data(), b.lengths.data(), b.formats.data(), 0));
  if (r && PQresultStatus(r.get()) == ok) return r;
  return ResultError(conn, r.get());
}

Result<ResultPtr> ExecFor(PGconn* conn, std::string_view sql, const std::vector<Param>& params, ExecStatusType ok,
                          std::chrono::milliseconds timeout, int wake_fd) {
  const Bound b(params);
  const std::string text(sql);
  if (PQsendQueryParams(conn, text.c_str(), b.n(), nullptr, b.values.data(), b.lengths.data(), b.formats.data(), 0) !=
      1) {
    return ResultError(conn, nullptr);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Flush what libpq could not write at once, then wait for the reply.
  for (;;) {
    const int flushed = PQflush(conn);
    if (flushed < 0) return ResultError(conn, nullptr);
    if (flushed == 0 && !PQisBusy(conn)) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::DeadlineExceeded("postgresql: no reply within " + std::to_string(timeout.count()) + " ms");
    pollfd fds[2] = {{PQsocket(conn), static_cast<short>(POLLIN | (flushed == 1 ? POLLOUT : 0)), 0}, {wake_fd, POLLIN, 0}};
    const int n = ::poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return Status::Internal("postgresql: poll failed");
    if (wake_fd >= 0 && (fds[1].revents & POLLIN)) return Status::Cancelled("postgresql: query abandoned (stopping)");
    if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      if (PQconsumeInput(conn) != 1) return ResultError(conn, nullptr);
    }
  }
  ResultPtr first;
  while (PGresult* r = PQgetResult(conn)) {
    if (!first) {
      first.reset(r);
    } else {
      PQclear(r);
    }
  }
  const ExecStatusType st = first ? PQresultStatus(first.get()) : PGRES_FATAL_ERROR;
  if (st == ok) return first;
  return ResultError(conn, first.get());
}

std::string Bytea(const PGresult* r, int row, int col) {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, col)), &n);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

}  // namespace tiercache::outbox::pg
