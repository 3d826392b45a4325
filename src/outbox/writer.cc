// OutboxWriter: events appended in the caller's transaction (outbox.h).
#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "outbox/pg.h"
#include "tiercache/outbox.h"

namespace tiercache::outbox {

int ShardOf(std::string_view key, int shards) {
  uint64_t h = 14695981039346656037ULL;  // FNV-1a 64
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return static_cast<int>(h % static_cast<uint64_t>(std::max(shards, 1)));
}

Result<OutboxWriter> OutboxWriter::Create(PGconn* conn, size_t max_payload_bytes) {
  if (max_payload_bytes == 0 || max_payload_bytes > (size_t{1} << 30)) {
    return Status::InvalidArgument("OutboxWriter::Create: max_payload_bytes must be in [1, 1 GiB]");
  }
  if (conn == nullptr) return Status::InvalidArgument("OutboxWriter::Create: null connection");
  Result<pg::ResultPtr> r = pg::Exec(conn, "SELECT shards FROM tiercache_outbox_meta");
  if (!r.ok()) {
    if (r.status().message().find("42P01") != std::string_view::npos) {  // undefined_table
      return Status::FailedPrecondition("no outbox table: run MigrateOutbox first");
    }
    return r.status();
  }
  if (PQntuples(r->get()) != 1) return Status::FailedPrecondition("tiercache_outbox_meta is empty: run MigrateOutbox");
  return OutboxWriter(std::stoi(std::string(pg::Cell(r->get(), 0, 0))), max_payload_bytes);
}

Status OutboxWriter::Append(PGconn* conn, const std::vector<OutboxEvent>& events) const {
  if (conn == nullptr) return Status::InvalidArgument("OutboxWriter::Append: null connection");
  if (PQstatus(conn) != CONNECTION_OK) return Status::Unavailable("OutboxWriter::Append: connection is bad");
  switch (PQtransactionStatus(conn)) {
    case PQTRANS_INTRANS:
      break;
    case PQTRANS_INERROR:
      return Status::InvalidArgument("OutboxWriter::Append: the transaction is aborted (roll it back)");
    default:
      return Status::InvalidArgument("OutboxWriter::Append: no transaction open on the connection (BEGIN first)");
  }
  if (events.empty()) return Status::Ok();
  std::vector<int> shard(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const OutboxEvent& e = events[i];
    if (e.topic.empty() || e.key.empty()) return Status::InvalidArgument("outbox event with an empty topic or key");
    // Text parameters end at a NUL: the stored key would differ from the
    // one its shard was computed from.
    auto has_nul = [](std::string_view s) { return s.find('\0') != std::string_view::npos; };
    if (has_nul(e.topic) || has_nul(e.key)) return Status::InvalidArgument("outbox event topic or key contains a NUL byte");
    for (const auto& [name, value] : e.headers) {
      if (has_nul(name) || has_nul(value)) return Status::InvalidArgument("outbox event header contains a NUL byte");
    }
    if (e.payload.size() > max_payload_) {
      return Status::InvalidArgument("outbox event payload of " + std::to_string(e.payload.size()) +
                                     " bytes exceeds " + std::to_string(max_payload_));
    }
    shard[i] = ShardOf(e.key, shards_);
  }
  // Shards in ascending order (no deadlock between two appends); within a
  // shard, the caller's order.
  std::vector<size_t> order(events.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return shard[a] < shard[b]; });
  int locked = -1;
  for (size_t i : order) {
    const OutboxEvent& e = events[i];
    if (shard[i] != locked) {
      // Held to the end of the transaction: seqs of a shard are drawn in
      // commit order (outbox.h).
      TIERCACHE_RETURN_IF_ERROR(pg::Exec(conn, "SELECT pg_advisory_xact_lock($1::int, $2::int)",
                                         {{std::to_string(pg::kShardLockSpace)}, {std::to_string(shard[i])}})
                                    .status());
      locked = shard[i];
    }
    nlohmann::json headers = nlohmann::json::array();
    for (const auto& [name, value] : e.headers) headers.push_back({name, value});
    std::string headers_text;
    try {
      headers_text = headers.dump();
    } catch (const std::exception& ex) {  // invalid UTF-8 in a header
      return Status::InvalidArgument(std::string("outbox event header is not valid UTF-8: ") + ex.what());
    }
    TIERCACHE_RETURN_IF_ERROR(pg::Command(conn,
                                          "INSERT INTO tiercache_outbox (shard, seq, topic, key, payload, headers) "
                                          "VALUES ($1::int, nextval('tiercache_outbox_seq'), $2, $3, $4, $5::jsonb)",
                                          {{std::to_string(shard[i])},
                                           {e.topic},
                                           {e.key},
                                           {e.payload, /*binary=*/true},
                                           {headers_text}})
                                  .status());
  }
  // Delivered to the relays' LISTEN when (and only if) the transaction commits.
  return pg::Exec(conn, "SELECT pg_notify('tiercache_outbox', '')").status();
}

}  // namespace tiercache::outbox
