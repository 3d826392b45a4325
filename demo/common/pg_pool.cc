#include "common/pg_pool.h"

#include <cstring>

namespace demo {

PgPool::PgPool(PgPoolOptions options) : options_(std::move(options)) {}

PgPool::~PgPool() {
  std::lock_guard<std::mutex> lock(mu_);
  for (PGconn* c : idle_) PQfinish(c);
}

PgPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Release(conn_);
}

void PgPool::Release(PGconn* c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (c != nullptr && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE) {
    idle_.push_back(c);
  } else {
    if (c != nullptr) PQfinish(c);
    --open_;
  }
  cv_.notify_one();
}

tiercache::Result<PgPool::Lease> PgPool::Acquire(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      PGconn* c = idle_.back();
      idle_.pop_back();
      return Lease(this, c);
    }
    if (open_ < options_.size) break;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && open_ >= options_.size) {
      return tiercache::Status::DeadlineExceeded("no database connection free before the deadline");
    }
  }
  ++open_;
  lock.unlock();
  // Connect without the lock (network I/O).
  std::string conninfo = options_.conninfo + " connect_timeout=" +
                         std::to_string(std::max<int64_t>(1, (options_.connect_timeout.count() + 999) / 1000)) +
                         " keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=2" +
                         " options='-c statement_timeout=" + std::to_string(options_.statement_timeout.count()) + "'";
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    PQfinish(c);
    Release(nullptr);
    return tiercache::Status::Unavailable("cannot connect to the database: " + msg);
  }
  return Lease(this, c);
}

tiercache::Result<PgRows> PgPool::Lease::Exec(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(), nullptr,
                               nullptr, 0);
  ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    std::string msg = PQresultErrorMessage(res);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    PQclear(res);
    if (PQstatus(conn_) != CONNECTION_OK) {
      return tiercache::Status::Unavailable("database connection lost: " + msg);
    }
    if (state != nullptr && std::strcmp(state, "57014") == 0) {
      return tiercache::Status::DeadlineExceeded("database statement timeout: " + msg);
    }
    return tiercache::Status::Internal(std::string("database error ") + (state ? state : "?") + ": " + msg);
  }
  PgRows rows;
  rows.rows = PQntuples(res);
  rows.cols = PQnfields(res);
  rows.cells.reserve(static_cast<size_t>(rows.rows * rows.cols));
  for (int r = 0; r < rows.rows; ++r) {
    for (int c = 0; c < rows.cols; ++c) {
      bool null = PQgetisnull(res, r, c) != 0;
      rows.nulls.push_back(null);
      rows.cells.emplace_back(null ? "" : std::string(PQgetvalue(res, r, c), static_cast<size_t>(PQgetlength(res, r, c))));
    }
  }
  PQclear(res);
  return rows;
}

}  // namespace demo
