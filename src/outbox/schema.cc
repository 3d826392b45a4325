// The outbox's tables (docs/outbox.md) and their migration.
#include <string>

#include "outbox/pg.h"
#include "tiercache/outbox.h"

namespace tiercache::outbox {

std::string OutboxDdl(int shards) {
  return R"sql(
CREATE TABLE IF NOT EXISTS tiercache_outbox_meta (
  one    boolean PRIMARY KEY DEFAULT true CHECK (one),
  shards integer NOT NULL CHECK (shards BETWEEN 1 AND 4096)
);
INSERT INTO tiercache_outbox_meta (shards) VALUES ()sql" +
         std::to_string(shards) + R"sql() ON CONFLICT DO NOTHING;
CREATE SEQUENCE IF NOT EXISTS tiercache_outbox_seq;
CREATE TABLE IF NOT EXISTS tiercache_outbox (
  id         bigserial PRIMARY KEY,
  shard      integer NOT NULL,
  seq        bigint NOT NULL,          -- commit order within the shard (outbox.h)
  topic      text NOT NULL,
  key        text NOT NULL,
  payload    bytea NOT NULL,
  headers    jsonb NOT NULL DEFAULT '[]',  -- [[name, value], ...]
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  sent_at    timestamptz,
  error      text                      -- set when Kafka refused the row for good (dead-lettered)
);
ALTER TABLE tiercache_outbox ADD COLUMN IF NOT EXISTS error text;
CREATE INDEX IF NOT EXISTS tiercache_outbox_unsent ON tiercache_outbox (shard, seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS tiercache_outbox_sent ON tiercache_outbox (sent_at) WHERE sent_at IS NOT NULL;
)sql";
}

Status MigrateOutbox(const std::string& conninfo, int shards) {
  if (shards < 1 || shards > 4096) return Status::InvalidArgument("MigrateOutbox: shards must be in [1, 4096]");
  Result<pg::ConnPtr> conn = pg::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  PGconn* c = conn->get();
  // "already exists, skipping" notices are expected on every run after the first.
  pg::Command(c, "SET client_min_messages = warning").status().IgnoreError();
  // One migration at a time (concurrent CREATE ... IF NOT EXISTS can still
  // collide in the catalogs); the lock goes with the session.
  TIERCACHE_RETURN_IF_ERROR(
      pg::Exec(c, "SELECT pg_advisory_lock($1::int, 0)", {{std::to_string(pg::kMigrateLockSpace)}}).status());
  Status s = pg::Command(c, "BEGIN").status();
  if (s.ok()) {
    pg::ResultPtr r(PQexec(c, OutboxDdl(shards).c_str()));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      s = Status::Internal(std::string("postgresql: outbox migration failed: ") + PQresultErrorMessage(r.get()));
      pg::Command(c, "ROLLBACK").status().IgnoreError();
    } else {
      s = pg::Command(c, "COMMIT").status();
    }
  }
  pg::Exec(c, "SELECT pg_advisory_unlock($1::int, 0)", {{std::to_string(pg::kMigrateLockSpace)}})
      .status()
      .IgnoreError();
  return s;
}

Result<OutboxStatus> GetOutboxStatus(const std::string& conninfo) {
  Result<pg::ConnPtr> conn = pg::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  Result<pg::ResultPtr> r = pg::Exec(
      conn->get(),
      "SELECT count(*) FILTER (WHERE sent_at IS NULL), "
      "       coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE sent_at IS NULL)) * 1000, 0)::bigint, "
      "       count(*) FILTER (WHERE sent_at IS NOT NULL) "
      "FROM tiercache_outbox");
  if (!r.ok()) return r.status();
  OutboxStatus out;
  out.unsent = std::stoll(std::string(pg::Cell(r->get(), 0, 0)));
  out.oldest_unsent_age = std::chrono::milliseconds(std::stoll(std::string(pg::Cell(r->get(), 0, 1))));
  out.sent_retained = std::stoll(std::string(pg::Cell(r->get(), 0, 2)));
  return out;
}

}  // namespace tiercache::outbox
