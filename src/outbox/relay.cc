// OutboxRelay: owns shards, publishes their unsent rows in seq order, marks
// them sent once acknowledged (outbox.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "outbox/pg.h"
#include "tiercache/outbox.h"

namespace tiercache::outbox {

using std::chrono::steady_clock;

namespace {

constexpr milliseconds kDepthInterval{1000};

// One row read from a shard.
struct Row {
  int64_t id = 0;
  int shard = 0;
  std::string topic, key, payload;
  kafka::Headers headers;
  std::chrono::system_clock::time_point created_at;
};

kafka::Headers ParseHeaders(std::string_view text) {
  kafka::Headers out;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& pair : j) {
    if (pair.is_array() && pair.size() == 2 && pair[0].is_string() && pair[1].is_string()) {
      out.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
    }
  }
  return out;
}

// Waits for every report of one batch.
struct BatchWait {
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = 0;                // GUARDED_BY(mu)
  std::vector<Status> outcome;       // GUARDED_BY(mu)
  std::vector<steady_clock::time_point> acked_at;  // GUARDED_BY(mu)
};

}  // namespace

class OutboxRelay::Impl {
 public:
  explicit Impl(OutboxRelayOptions o) : o(std::move(o)), metrics(this->o.metrics ? this->o.metrics : Metrics::Noop()) {}
  ~Impl() {
    if (wake >= 0) ::close(wake);
  }

  Status Init() {
    if (o.conninfo.empty()) return Status::InvalidArgument("OutboxRelayOptions::conninfo is empty");
    if (o.batch < 1 || o.batch > 100000) return Status::InvalidArgument("OutboxRelayOptions::batch must be in [1, 100000]");
    for (milliseconds d : {o.poll_interval, o.claim_interval, o.publish_timeout, o.backoff_min, o.backoff_max,
                           o.retention_interval}) {
      if (d <= milliseconds::zero()) return Status::InvalidArgument("OutboxRelayOptions: every interval must be > 0");
    }
    if (o.backoff_min > o.backoff_max) return Status::InvalidArgument("OutboxRelayOptions: backoff_min > backoff_max");
    if (o.max_shards < 0) return Status::InvalidArgument("OutboxRelayOptions::max_shards must be >= 0");
    if (o.db_timeout <= milliseconds::zero()) return Status::InvalidArgument("OutboxRelayOptions::db_timeout must be > 0");
    if (o.retention <= std::chrono::seconds::zero()) {
      return Status::InvalidArgument("OutboxRelayOptions::retention must be > 0");
    }
    kafka::PublisherOptions po = o.publisher;
    if (po.delivery_timeout > o.publish_timeout) po.delivery_timeout = o.publish_timeout;
    if (po.linger >= po.delivery_timeout) po.linger = milliseconds(0);
    Result<std::unique_ptr<kafka::Publisher>> p = kafka::Publisher::Create(po);
    if (!p.ok()) return p.status();
    publisher = std::move(*p);
    TIERCACHE_RETURN_IF_ERROR(Connect());
    wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) return Status::Internal("eventfd failed");
    return Status::Ok();
  }

  Status Start() {
    std::lock_guard<std::mutex> lock(mu);
    if (started) return Status::FailedPrecondition("OutboxRelay already started");
    started = true;
    thread = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  void Stop() {
    stop.store(true);
    if (wake >= 0) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake, &one, sizeof one);
    }
    // Every caller returns only once the thread has ended (it closes the
    // connection itself, releasing the shards).
    std::lock_guard<std::mutex> stopping(stop_mu);
    std::thread t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = std::move(thread);
    }
    if (t.joinable()) t.join();
    if (!started_thread()) conn.reset();  // never started: close it here
  }

  bool started_thread() {
    std::lock_guard<std::mutex> lock(mu);
    return started;
  }

  OutboxRelayStats Stats() {
    std::lock_guard<std::mutex> lock(mu);
    return stats;
  }

 private:
  // A statement on the relay's connection, bounded by db_timeout and
  // abandoned on Stop (then the connection is closed: its state is unknown).
  Result<pg::ResultPtr> Q(std::string_view sql, const std::vector<pg::Param>& params = {},
                          ExecStatusType ok = PGRES_TUPLES_OK) {
    Result<pg::ResultPtr> r = pg::ExecFor(conn.get(), sql, params, ok, o.db_timeout, wake);
    if (!r.ok()) conn_broken = true;
    return r;
  }
  Result<pg::ResultPtr> QC(std::string_view sql, const std::vector<pg::Param>& params = {}) {
    return Q(sql, params, PGRES_COMMAND_OK);
  }

  Status Connect() {
    owned.clear();
    conn_broken = false;
    std::string info = o.conninfo;
    if (info.find("connect_timeout") == std::string::npos) {
      info += " connect_timeout=" + std::to_string(std::max<int64_t>(2, o.db_timeout.count() / 1000));
    }
    Result<pg::ConnPtr> c = pg::Connect(info);
    if (!c.ok()) return c.status();
    conn = std::move(*c);
    Result<pg::ResultPtr> meta = Q("SELECT shards FROM tiercache_outbox_meta");
    if (!meta.ok()) {
      if (meta.status().message().find("42P01") != std::string_view::npos) {
        return Status::FailedPrecondition("no outbox table: run MigrateOutbox first");
      }
      return meta.status();
    }
    if (PQntuples(meta->get()) != 1) return Status::FailedPrecondition("tiercache_outbox_meta is empty");
    shards = std::stoi(std::string(pg::Cell(meta->get(), 0, 0)));
    TIERCACHE_RETURN_IF_ERROR(QC("LISTEN tiercache_outbox").status());
    next_claim = steady_clock::now();
    return Status::Ok();
  }

  void Count(void (*fn)(OutboxRelayStats&, uint64_t), uint64_t n = 1) {
    std::lock_guard<std::mutex> lock(mu);
    fn(stats, n);
  }

  // Takes free shards (session advisory locks), up to max_shards.
  Status Claim() {
    const int want = o.max_shards > 0 ? o.max_shards : shards;
    if (static_cast<int>(owned.size()) >= want) return Status::Ok();
    std::string mine = "{";
    for (int s : owned) mine += (mine.size() > 1 ? "," : "") + std::to_string(s);
    mine += "}";
    Result<pg::ResultPtr> r = Q(
                                       "SELECT s FROM generate_series(0, $1::int - 1) s "
                                       "WHERE NOT (s = ANY($2::int[])) AND pg_try_advisory_lock($3::int, s) LIMIT $4::int",
                                       {{std::to_string(shards)},
                                        {mine},
                                        {std::to_string(pg::kRelayLockSpace)},
                                        {std::to_string(want - static_cast<int>(owned.size()))}});
    if (!r.ok()) return r.status();
    for (int i = 0; i < PQntuples(r->get()); ++i) owned.insert(std::stoi(std::string(pg::Cell(r->get(), i, 0))));
    std::lock_guard<std::mutex> lock(mu);
    stats.shards_owned = static_cast<int>(owned.size());
    return Status::Ok();
  }

  // Unsent rows of the owned shards, each shard's in seq order (its commit
  // order, outbox.h), interleaved across shards (the first of every shard,
  // then the second, ...) so that a shard stuck behind a row Kafka will not
  // take cannot fill every batch; the rows taken of a shard are a prefix
  // of its unsent rows.
  Result<std::vector<Row>> Read() {
    if (per_shard == 0) per_shard = std::max<size_t>(1, o.batch / std::max<size_t>(owned.size(), 1));
    std::string shard_list = "{";
    for (int s : owned) shard_list += (shard_list.size() > 1 ? "," : "") + std::to_string(s);
    shard_list += "}";
    Result<pg::ResultPtr> r = Q(
        "SELECT o.id, o.topic, o.key, o.payload, o.headers::text, "
        "       (extract(epoch FROM o.created_at) * 1000000)::bigint, o.shard "
        "FROM unnest($1::int[]) AS s(shard) CROSS JOIN LATERAL ("
        "  SELECT t.*, row_number() OVER (ORDER BY t.seq) AS rn FROM ("
        "    SELECT * FROM tiercache_outbox WHERE shard = s.shard AND sent_at IS NULL ORDER BY seq LIMIT $2::int) t"
        ") o ORDER BY o.rn, o.seq LIMIT $3::int",
        {{shard_list}, {std::to_string(per_shard)}, {std::to_string(o.batch)}});
    if (!r.ok()) return r.status();
    std::vector<Row> rows(static_cast<size_t>(PQntuples(r->get())));
    for (int i = 0; i < PQntuples(r->get()); ++i) {
      Row& row = rows[static_cast<size_t>(i)];
      row.id = std::stoll(std::string(pg::Cell(r->get(), i, 0)));
      row.topic = pg::Cell(r->get(), i, 1);
      row.key = pg::Cell(r->get(), i, 2);
      row.payload = pg::Bytea(r->get(), i, 3);
      row.headers = ParseHeaders(pg::Cell(r->get(), i, 4));
      row.created_at = std::chrono::system_clock::time_point(
          std::chrono::microseconds(std::stoll(std::string(pg::Cell(r->get(), i, 5)))));
      row.shard = std::stoi(std::string(pg::Cell(r->get(), i, 6)));
    }
    // The next read takes about `batch` rows in all: an even share of the
    // shards that had rows this time (all of it when one shard has a backlog).
    std::map<int, size_t> active;  // rows per shard
    for (const Row& row : rows) ++active[row.shard];
    // More may wait when the batch is full or a shard gave all it was asked.
    more = rows.size() >= o.batch;
    for (const auto& [shard, n] : active) more = more || n >= per_shard;
    per_shard = (o.batch + std::max<size_t>(active.size(), 1) - 1) / std::max<size_t>(active.size(), 1);
    return rows;
  }

  // Publishes `rows` in order; returns which may be marked sent: per shard,
  // the rows up to its first one the broker did not acknowledge (the rest
  // of that shard is published again later, keeping its order).
  // A row Kafka refuses for good (kInvalidArgument: too large for the
  // broker or the topic, an invalid topic) is set aside as dead-lettered
  // (`dead` gets its reason) so that it does not block its shard forever.
  std::vector<bool> Publish(const std::vector<Row>& rows, std::vector<std::string>* dead) {
    auto wait = std::make_shared<BatchWait>();
    wait->outcome.assign(rows.size(), Status::DeadlineExceeded("not acknowledged in time"));
    wait->acked_at.resize(rows.size());
    size_t sent = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      {
        std::lock_guard<std::mutex> lock(wait->mu);
        ++wait->pending;
      }
      Status s = publisher->Publish(rows[i].topic, rows[i].key, rows[i].payload,
                                    [wait, i](const Result<kafka::Delivery>& d) {
                                      std::lock_guard<std::mutex> lock(wait->mu);
                                      wait->outcome[i] = d.status();
                                      wait->acked_at[i] = steady_clock::now();
                                      if (--wait->pending == 0) wait->cv.notify_all();
                                    },
                                    rows[i].headers);
      if (!s.ok()) {  // refused at once (too large, queue full): the shard stops here
        std::lock_guard<std::mutex> lock(wait->mu);
        --wait->pending;
        wait->outcome[i] = s;
        continue;
      }
      ++sent;
    }
    std::unique_lock<std::mutex> lock(wait->mu);
    wait->cv.wait_for(lock, o.publish_timeout + milliseconds(2000), [&] { return wait->pending == 0; });
    std::vector<bool> done(rows.size(), false);
    dead->assign(rows.size(), std::string());
    std::set<int> stopped;  // shards with an unacknowledged row so far
    const auto now_sys = std::chrono::system_clock::now();
    const auto now_steady = steady_clock::now();
    for (size_t i = 0; i < rows.size(); ++i) {
      if (stopped.count(rows[i].shard) != 0) continue;
      if (wait->outcome[i].IsInvalidArgument()) {
        done[i] = true;
        (*dead)[i] = std::string(wait->outcome[i].message());
        continue;
      }
      if (!wait->outcome[i].ok()) {
        stopped.insert(rows[i].shard);
        continue;
      }
      done[i] = true;
      // The ack's wall time: now, less how long ago the ack came.
      const auto acked_wall = now_sys - (now_steady - wait->acked_at[i]);
      metrics->ObserveOutboxPublishLag(acked_wall - rows[i].created_at);
    }
    return done;
  }

  Status Mark(const std::vector<Row>& rows, const std::vector<bool>& done, const std::vector<std::string>& dead) {
    std::string ids = "{";
    for (size_t i = 0; i < rows.size(); ++i) {
      if (done[i] && dead[i].empty()) ids += (ids.size() > 1 ? "," : "") + std::to_string(rows[i].id);
    }
    ids += "}";
    if (ids.size() > 2) {
      TIERCACHE_RETURN_IF_ERROR(
          QC("UPDATE tiercache_outbox SET sent_at = clock_timestamp() WHERE id = ANY($1::bigint[])", {{ids}}).status());
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      if (dead[i].empty()) continue;
      TIERCACHE_RETURN_IF_ERROR(QC("UPDATE tiercache_outbox SET sent_at = clock_timestamp(), error = $2 WHERE id = $1::bigint",
                                   {{std::to_string(rows[i].id)}, {dead[i]}})
                                    .status());
      Count([](OutboxRelayStats& s, uint64_t) { ++s.dead_lettered; });
      metrics->AddRelayError(/*kafka=*/true);
    }
    return Status::Ok();
  }

  // Publishes what the owned shards hold, a batch at a time: one read, one
  // publish of the whole batch, one wait, one mark. kUnavailable /
  // kInternal: the database failed; kAborted: Kafka did not acknowledge
  // part of a batch (retried later).
  Status Round() {
    if (owned.empty()) return Status::Ok();
    for (;;) {
      if (stop.load()) return Status::Ok();
      Result<std::vector<Row>> rows = Read();
      if (!rows.ok()) return rows.status();
      if (rows->empty()) return Status::Ok();
      std::vector<std::string> dead;
      const std::vector<bool> done = Publish(*rows, &dead);
      const size_t acked = static_cast<size_t>(std::count(done.begin(), done.end(), true));
      if (acked > 0) {
        if (o.after_publish) o.after_publish(acked);
        TIERCACHE_RETURN_IF_ERROR(Mark(*rows, done, dead));
        Count([](OutboxRelayStats& s, uint64_t n) { s.published += n, ++s.batches; }, acked);
      }
      if (acked < rows->size()) {
        Count([](OutboxRelayStats& s, uint64_t) { ++s.publish_errors; });
        metrics->AddRelayError(/*kafka=*/true);
        return Status::Aborted("Kafka did not acknowledge the whole batch");
      }
      // A fair read may return fewer than `batch` rows with more waiting;
      // otherwise end the round (claims and housekeeping run between rounds).
      if (!more) return Status::Ok();
    }
  }

  // Runs after every round, also one Kafka failed (Loop). The depth gauges
  // cover the whole table (every shard, owned or not), at most once per
  // kDepthInterval; their query reads only unsent rows, through the partial
  // index tiercache_outbox_unsent (a sequential scan only when the planner
  // finds most of the table unsent). A failed statement leaves the gauges
  // as they were and marks the connection broken (counted by Loop).
  void Housekeeping() {
    const auto now = steady_clock::now();
    if (now >= next_depth) {
      next_depth = now + kDepthInterval;
      Result<pg::ResultPtr> r = Q(
          "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)) * 1000, 0)::bigint "
          "FROM tiercache_outbox WHERE sent_at IS NULL");
      if (!r.ok()) return;
      metrics->SetOutboxDepth(std::stoll(std::string(pg::Cell(r->get(), 0, 0))),
                              milliseconds(std::stoll(std::string(pg::Cell(r->get(), 0, 1)))));
    }
    if (now >= next_retention && !owned.empty()) {
      next_retention = now + o.retention_interval;
      Result<pg::ResultPtr> r = Q(
          "WITH gone AS (DELETE FROM tiercache_outbox WHERE id IN ("
          "  SELECT id FROM tiercache_outbox WHERE sent_at < clock_timestamp() - make_interval(secs => $1::double precision) "
          "  LIMIT 10000) RETURNING 1) SELECT count(*) FROM gone",
          {{std::to_string(o.retention.count())}});
      if (r.ok()) {
        const uint64_t n = std::stoull(std::string(pg::Cell(r->get(), 0, 0)));
        Count([](OutboxRelayStats& s, uint64_t k) { s.deleted += k; }, n);
        if (n == 10000) next_retention = now;  // more to delete
      }
    }
  }

  // Reads what the socket holds and discards every notification libpq has
  // queued (they name no row: a round reads every owned shard). True if
  // there was one.
  bool DrainNotifies() {
    PQconsumeInput(conn.get());
    bool any = false;
    while (PGnotify* note = PQnotifies(conn.get())) {
      PQfreemem(note);
      any = true;
    }
    return any;
  }

  // Sleeps until Stop, `d`, or (with `notified`) a NOTIFY. False when
  // stopping. A backoff (notified == false) is not cut short by commits:
  // their notifications stay queued for the drain at the top of Loop.
  //
  // A NOTIFY that came while a statement of the round or the housekeeping
  // ran is no longer on the socket: libpq read it into its input buffer
  // with the statement's reply (e.g. the server sends the notifications
  // that came during Mark's UPDATE at that transaction's end). Polling the
  // socket alone would sleep all of `d` with a commit waiting, so the
  // queued notifications are taken first, and any of them ends the wait at
  // once: one more round reads that commit.
  // - No wake-up is lost: a notification is taken either here or by the
  //   drain at the top of Loop, in both cases before the next round's Read,
  //   which sees its commit (a NOTIFY is delivered after its transaction
  //   committed). One that comes after that drain is queued in libpq or on
  //   the socket, and the Wait after that round finds it.
  // - No busy loop: the notifications taken here are gone, and the relay's
  //   own statements send none, so the extra round leaves none behind
  //   unless a writer commits meanwhile (which needs that round anyway).
  bool Wait(milliseconds d, bool notified = true) {
    if (stop.load()) return false;
    const bool listen = notified && conn && !conn_broken;
    if (listen && DrainNotifies()) return !stop.load();
    pollfd fds[2] = {{wake, POLLIN, 0}, {listen ? PQsocket(conn.get()) : -1, POLLIN, 0}};
    const int n = ::poll(fds, listen ? 2 : 1, static_cast<int>(std::max<int64_t>(d.count(), 0)));
    if (n > 0 && (fds[1].revents & POLLIN) && conn) DrainNotifies();
    return !stop.load();
  }

  void Loop() {
    milliseconds backoff = o.backoff_min;
    while (!stop.load()) {
      if (!conn) {
        Status s = Connect();
        if (!s.ok()) {
          if (stop.load()) break;  // abandoned by Stop: not the database's failure
          Count([](OutboxRelayStats& st, uint64_t) { ++st.db_errors; });
          metrics->AddRelayError(/*kafka=*/false);
          if (!Wait(backoff)) break;
          backoff = std::min(backoff * 2, o.backoff_max);
          continue;
        }
      }
      // Notifications that came so far (during a backoff, or after Wait
      // took its own): the round below reads their commits, so drop them.
      // Later ones are left for the next Wait (see there).
      conn_broken = false;
      DrainNotifies();
      Status s = Status::Ok();
      if (steady_clock::now() >= next_claim) {
        next_claim = steady_clock::now() + o.claim_interval;
        s = Claim();
      }
      if (s.ok()) s = Round();
      // Housekeeping (the depth gauges first) after every round, whatever
      // became of its batches on Kafka (kAborted): during a Kafka outage is
      // when the oldest unsent age matters. Not after a database failure:
      // the gauges keep their value and the error is counted below.
      if ((s.ok() || s.IsAborted()) && !stop.load()) {
        Housekeeping();
        if (conn_broken) s = Status::Unavailable("postgresql: housekeeping statement failed");
      }
      if (s.ok()) {
        backoff = o.backoff_min;
        if (!Wait(std::min(o.poll_interval, std::chrono::duration_cast<milliseconds>(
                                                 std::max(next_claim - steady_clock::now(), steady_clock::duration(0)))))) {
          break;
        }
        continue;
      }
      // A statement that failed once Stop was called was (most likely)
      // abandoned by it (pg::ExecFor's kCancelled): not counted, so that
      // stopping a relay whose statement waits (a lock, a slow depth query)
      // does not trip the alert on database errors.
      if (!s.IsAborted() && stop.load()) break;
      if (!s.IsAborted()) {  // the database: start over with a new session
        Count([](OutboxRelayStats& st, uint64_t) { ++st.db_errors; });
        metrics->AddRelayError(/*kafka=*/false);
        if (conn_broken || PQstatus(conn.get()) != CONNECTION_OK) {
          conn.reset();  // its shard locks go with the session
          owned.clear();
          std::lock_guard<std::mutex> lock(mu);
          stats.shards_owned = 0;
        }
      }
      if (!Wait(backoff, /*notified=*/false)) break;
      backoff = std::min(backoff * 2, o.backoff_max);
    }
    conn.reset();  // on this thread: no statement of it can be running
  }

  const OutboxRelayOptions o;
  Metrics* const metrics;
  std::unique_ptr<kafka::Publisher> publisher;
  int wake = -1;
  std::atomic<bool> stop{false};

  std::mutex stop_mu;  // serializes Stop
  std::mutex mu;
  bool started = false;       // GUARDED_BY(mu)
  std::thread thread;         // GUARDED_BY(mu)
  OutboxRelayStats stats;     // GUARDED_BY(mu)

  // The relay's thread only (and Stop, after joining it).
  pg::ConnPtr conn;
  bool conn_broken = false;  // a statement failed or was abandoned: reconnect
  int shards = 0;
  std::set<int> owned;
  size_t per_shard = 0;  // rows read per shard (Read); 0: not set yet
  bool more = false;     // the last read may have left rows behind
  steady_clock::time_point next_claim{}, next_depth{}, next_retention{};
};

Result<std::unique_ptr<OutboxRelay>> OutboxRelay::Create(OutboxRelayOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  TIERCACHE_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<OutboxRelay>(new OutboxRelay(std::move(impl)));
}

OutboxRelay::OutboxRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OutboxRelay::~OutboxRelay() { Stop(); }
Status OutboxRelay::Start() { return impl_->Start(); }
void OutboxRelay::Stop() { impl_->Stop(); }
OutboxRelayStats OutboxRelay::stats() const { return impl_->Stats(); }

}  // namespace tiercache::outbox
