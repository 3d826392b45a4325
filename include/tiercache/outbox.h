// The transactional outbox (PostgreSQL): a row change and its events commit
// or roll back together, and a relay publishes the committed events to Kafka
// in commit order per partition key, at least once.
//
// The table (MigrateOutbox creates it; docs/outbox.md):
//   tiercache_outbox(id, shard, seq, topic, key, payload, headers, created_at, sent_at)
//   tiercache_outbox_meta(shards)        the number of shards, fixed at creation
//
// Writing. OutboxWriter::Append runs in the CALLER's open transaction on the
// caller's connection: the events become rows of that transaction, so they
// commit with the row change or vanish with its rollback. Each event goes to
// a shard, hash(key) mod shards (FNV-1a), and Append takes the shard's
// transaction-level advisory lock before it draws the event's `seq` from a
// sequence. The lock is held until the transaction ends, so within a shard
// transactions draw their seqs in commit order and a row is visible only
// after every row of a lower seq of its shard has committed or rolled back.
// Per shard, seq order is therefore commit order, and since every event of a
// key lives in one shard, so is the key's order. (Commit order is neither id
// nor xid order under concurrency; this is why the relay needs no snapshot
// arithmetic.) The cost: transactions appending to the same shard commit one
// after the other from the moment they append; append as the transaction's
// last statement. One Append locks its shards in ascending order, so two
// transactions that each append once never deadlock each other on them; a
// transaction that appends twice, or updates rows after appending, can
// (PostgreSQL aborts one with SQLSTATE 40P01, in the status: retry it). A
// NOTIFY on commit wakes the relays (so an outbox transaction cannot be
// prepared for two-phase commit).
//
// Relaying. OutboxRelay (a thread in any service, or the standalone
// `tiercache-outbox-relay`) owns shards through session-level advisory locks
// (pg_try_advisory_lock): one relay per shard at a time; a second relay
// takes over the shards of one that died (its connection closed) within
// `claim_interval`. Per owned shard it reads unsent rows in seq order, in
// bounded batches, publishes them through the idempotent Publisher in that
// order, and marks them sent only after the broker acknowledged them. A batch
// is marked, per shard, up to its first unacknowledged row; the rest is
// published again. So every committed event reaches Kafka at least once, and
// per key, once repeats of events already seen are dropped, in commit order
// (a retry may repeat an earlier event after a later one: same event id,
// consumers ignore it by version). A row Kafka refuses for good (too large
// for the broker or topic, an invalid topic) is dead-lettered: marked sent
// with its error in the `error` column and counted, so that it does not
// block its shard; the shards are read fairly, so a shard stuck behind an
// unavailable partition does not hold up the others. While Kafka is down the relay backs
// off and the outbox grows; it drains when the broker is back. A retention
// pass deletes rows sent more than `retention` ago.
//
// Thread-safety: OutboxWriter is immutable after Create and may be used from
// any thread (each call on the caller's connection, which the caller owns and
// must not share during the call). OutboxRelay: Start/Stop/stats from any
// thread. No lock of the relay is held across PostgreSQL or Kafka calls.
// Ownership: the caller owns its PGconn; the relay owns its connections.
#ifndef TIERCACHE_OUTBOX_H_
#define TIERCACHE_OUTBOX_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tiercache/kafka/publisher.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

// libpq's connection type, as libpq-fe.h declares it; the header itself
// stays private to the outbox component.
typedef struct pg_conn PGconn;

namespace tiercache::outbox {

using std::chrono::milliseconds;

// Creates the outbox's tables, sequence and index if they do not exist
// (idempotent; safe to run from every service at start-up, serialized by an
// advisory lock). `shards` is fixed when the table is first created; a later
// call with another number keeps the stored one. Blocks on the database.
// Errors: kInvalidArgument (shards not in [1, 4096]), kUnavailable (cannot
// connect), kInternal (SQL error, with the server's message).
Status MigrateOutbox(const std::string& conninfo, int shards = 64);

// The DDL MigrateOutbox runs, for users who migrate with their own tools.
std::string OutboxDdl(int shards = 64);

// One event to append.
struct OutboxEvent {
  std::string topic;    // e.g. "community.posts.v1"
  std::string key;      // the partition key (e.g. the community id): Kafka message key, and the shard
  std::string payload;  // the encoded event (EncodeEvent), bytes
  kafka::Headers headers;  // Kafka headers, in order
};

// The shard of `key` for `shards` shards (FNV-1a 64 of the key's bytes).
int ShardOf(std::string_view key, int shards);

class OutboxWriter {
 public:
  // Reads the number of shards from tiercache_outbox_meta on `conn`.
  // Errors: kFailedPrecondition (no outbox table: run MigrateOutbox),
  // kUnavailable (connection bad), kInternal.
  // `max_payload_bytes`: the largest payload Append takes (the relay's
  // publisher must accept it: PublisherOptions::max_message_bytes).
  static Result<OutboxWriter> Create(PGconn* conn, size_t max_payload_bytes = 1000000);

  // Appends `events` to the transaction open on `conn` (REQUIRES: BEGIN was
  // issued and the transaction is not aborted). Blocks on the database;
  // waits for the shard locks of other transactions that appended to the
  // same shards until they end. On an error the caller's transaction is
  // aborted (roll it back). Errors: kInvalidArgument (empty topic or key, a
  // NUL byte in the topic, key or a header, a header not valid UTF-8, a
  // payload over max_payload_bytes, no transaction open), kUnavailable,
  // kInternal (with the SQLSTATE; 40P01: a deadlock, retry).
  Status Append(PGconn* conn, const std::vector<OutboxEvent>& events) const;

  int shards() const { return shards_; }

 private:
  OutboxWriter(int shards, size_t max_payload) : shards_(shards), max_payload_(max_payload) {}
  int shards_;
  size_t max_payload_;
};

struct OutboxRelayOptions {
  std::string conninfo;                     // required: libpq connection string
  kafka::PublisherOptions publisher;        // required: brokers (idempotence is forced)
  size_t batch = 1000;                      // rows read, published and marked at a time per shard; [1, 100000]
  milliseconds poll_interval{1000};         // fallback when no NOTIFY arrives
  milliseconds claim_interval{2000};        // how often unowned shards are tried
  milliseconds publish_timeout{10000};      // a batch not acknowledged by then is retried
  milliseconds db_timeout{10000};           // each PostgreSQL statement (and connecting); then reconnect
  milliseconds backoff_min{100}, backoff_max{5000};  // while Kafka or PostgreSQL fail
  std::chrono::seconds retention{3600};     // sent rows are deleted after this
  milliseconds retention_interval{60000};
  int max_shards = 0;                       // most shards this relay owns; 0: all it can get
  // Not owned; null: Metrics::Noop(). SetOutboxDepth (the whole table) is
  // called after every round, at most once a second, also when Kafka failed
  // the round; not when PostgreSQL did (AddRelayError(false) instead).
  Metrics* metrics = nullptr;
  // Test hook: called after a batch was acknowledged, before it is marked
  // sent (e.g. to kill the process there). Runs on the relay's thread.
  std::function<void(size_t rows)> after_publish;
};

struct OutboxRelayStats {
  uint64_t published = 0;       // rows acknowledged by the broker and marked sent
  uint64_t batches = 0;
  uint64_t publish_errors = 0;  // batches (or parts) not acknowledged: retried
  uint64_t db_errors = 0;
  uint64_t dead_lettered = 0;   // rows Kafka refused for good: marked with their error, not retried
  uint64_t deleted = 0;         // by retention
  int shards_owned = 0;
};

class OutboxRelay {
 public:
  // Validates and connects (the shard claim happens on Start). Errors:
  // kInvalidArgument, kUnavailable (PostgreSQL), kFailedPrecondition (no
  // outbox table), and the Publisher's errors.
  static Result<std::unique_ptr<OutboxRelay>> Create(OutboxRelayOptions options);
  ~OutboxRelay();  // Stop()
  OutboxRelay(const OutboxRelay&) = delete;
  OutboxRelay& operator=(const OutboxRelay&) = delete;

  // Starts the relay's thread. Errors: kFailedPrecondition if started twice.
  Status Start();
  // Stops the thread, abandoning the statement or batch in flight: returns
  // within about max(publish_timeout, db_timeout) (a connection attempt
  // that has begun), usually at once. Releases the shards. Idempotent; a
  // concurrent caller returns only once the thread has ended.
  void Stop();
  OutboxRelayStats stats() const;

  class Impl;

 private:
  explicit OutboxRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Depth and age of what is not sent yet (for `tiercache outbox status` and
// the metrics). Errors: kUnavailable, kInternal.
struct OutboxStatus {
  int64_t unsent = 0;
  std::chrono::milliseconds oldest_unsent_age{0};
  int64_t sent_retained = 0;
};
Result<OutboxStatus> GetOutboxStatus(const std::string& conninfo);

}  // namespace tiercache::outbox

#endif  // TIERCACHE_OUTBOX_H_
