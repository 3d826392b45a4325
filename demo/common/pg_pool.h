// PgPool: a bounded pool of libpq connections for the reference services.
//
// Acquire waits for a free connection until the caller's deadline (the
// request's), and opens connections lazily up to `size`. Every connection has
// a statement_timeout (the server ends a query that runs longer) and TCP
// keepalives, so no query blocks a worker for ever. A connection that failed
// is dropped and reopened on next use.
//
// Thread-safety: Acquire from any thread; a Lease is used by one thread.
#ifndef TIERCACHE_DEMO_COMMON_PG_POOL_H_
#define TIERCACHE_DEMO_COMMON_PG_POOL_H_

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "tiercache/status.h"

namespace demo {

struct PgPoolOptions {
  std::string conninfo;                          // required
  int size = 8;                                  // > 0
  std::chrono::milliseconds statement_timeout{2000};
  std::chrono::milliseconds connect_timeout{2000};
};

// A query's rows as text (NULL is "" with null set).
struct PgRows {
  int rows = 0;
  int cols = 0;
  std::vector<std::string> cells;  // row-major
  std::vector<bool> nulls;
  const std::string& at(int r, int c) const { return cells[static_cast<size_t>(r * cols + c)]; }
  bool null_at(int r, int c) const { return nulls[static_cast<size_t>(r * cols + c)]; }
};

class PgPool {
 public:
  explicit PgPool(PgPoolOptions options);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(o.conn_) { o.pool_ = nullptr, o.conn_ = nullptr; }
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    PGconn* get() const { return conn_; }
    // Runs one statement with text parameters. Errors: kUnavailable (the
    // connection broke: it is dropped), kDeadlineExceeded (statement
    // timeout, SQLSTATE 57014), kInternal (other SQL errors; the message
    // has the SQLSTATE).
    tiercache::Result<PgRows> Exec(const std::string& sql, const std::vector<std::string>& params = {});

   private:
    friend class PgPool;
    Lease(PgPool* p, PGconn* c) : pool_(p), conn_(c) {}
    PgPool* pool_ = nullptr;
    PGconn* conn_ = nullptr;
  };

  // Errors: kDeadlineExceeded (no connection free before `deadline`),
  // kUnavailable (cannot connect).
  tiercache::Result<Lease> Acquire(std::chrono::steady_clock::time_point deadline);

  const PgPoolOptions& options() const { return options_; }

 private:
  void Release(PGconn* c);
  PgPoolOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PGconn*> idle_;
  int open_ = 0;  // connections out + idle + being opened
};

}  // namespace demo

#endif  // TIERCACHE_DEMO_COMMON_PG_POOL_H_
