// Small RAII and error helpers over libpq for the outbox. Internal.
#ifndef TIERCACHE_OUTBOX_PG_H_
#define TIERCACHE_OUTBOX_PG_H_

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/status.h"

namespace tiercache::outbox::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

// Advisory lock namespaces (the two-int form): 'tc' then a small number.
inline constexpr int kShardLockSpace = 0x74630001;    // writers, per shard, transaction-level
inline constexpr int kRelayLockSpace = 0x74630002;    // relays, per shard, session-level
inline constexpr int kMigrateLockSpace = 0x74630003;  // MigrateOutbox

// A statement parameter: text, or binary (bytea).
struct Param {
  std::string value;
  bool binary = false;
  bool null = false;
};

// Connects (blocking, with connect_timeout from the conninfo, 10 s if it has
// none). Errors: kUnavailable with libpq's message.
Result<ConnPtr> Connect(const std::string& conninfo);

// Runs `sql` with `params`; `ok` is the status a success has
// (PGRES_COMMAND_OK or PGRES_TUPLES_OK). Errors: kUnavailable when the
// connection is bad, kInternal with the server's message (and SQLSTATE)
// otherwise.
Result<ResultPtr> Exec(PGconn* conn, std::string_view sql, const std::vector<Param>& params = {},
                       ExecStatusType ok = PGRES_TUPLES_OK);

// Exec without blocking past `timeout` or a readable `wake_fd` (-1: none):
// the query is sent and its reply awaited with poll(). Errors as Exec, and
// kDeadlineExceeded (timeout) or kCancelled (woken); after either the
// connection is in an unknown state: close it.
Result<ResultPtr> ExecFor(PGconn* conn, std::string_view sql, const std::vector<Param>& params,
                          ExecStatusType ok, std::chrono::milliseconds timeout, int wake_fd);
inline Result<ResultPtr> Command(PGconn* conn, std::string_view sql, const std::vector<Param>& params = {}) {
  return Exec(conn, sql, params, PGRES_COMMAND_OK);
}

// The value of a result cell (empty for NULL).
inline std::string_view Cell(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
}

// Decodes a bytea cell in text form ("\x..." hex).
std::string Bytea(const PGresult* r, int row, int col);

}  // namespace tiercache::outbox::pg

#endif  // TIERCACHE_OUTBOX_PG_H_
