// OutboxRelay: owns shards, publishes their unsent rows in seq order, marks
// them sent once acknowledged (outbox.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
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
    std::thread t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = std::move(thread);
    }
    if (t.joinable()) t.join();
    conn.reset();  // closes the session: its shard locks go with it
  }

  OutboxRelayStats Stats() {
    std::lock_guard<std::mutex> lock(mu);
    return stats;
  }

 private:
  Status Connect() {
    owned.clear();
    Result<pg::ConnPtr> c = pg::Connect(o.conninfo);
    if (!c.ok()) return c.status();
    Result<pg::ResultPtr> meta = pg::Exec(c->get(), "SELECT shards FROM tiercache_outbox_meta");
    if (!meta.ok()) {
      if (meta.status().message().find("42P01") != std::string_view::npos) {
        return Status::FailedPrecondition("no outbox table: run MigrateOutbox first");
      }
      return meta.status();
    }
    if (PQntuples(meta->get()) != 1) return Status::FailedPrecondition("tiercache_outbox_meta is empty");
    shards = std::stoi(std::string(pg::Cell(meta->get(), 0, 0)));
    TIERCACHE_RETURN_IF_ERROR(pg::Command(c->get(), "LISTEN tiercache_outbox").status());
    conn = std::move(*c);
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
    Result<pg::ResultPtr> r = pg::Exec(conn.get(),
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

  // The oldest unsent rows of the owned shards, by seq. `seq` is global and
  // drawn in commit order within a shard, so the rows taken of each shard are
  // a prefix of its unsent rows, in its commit order (outbox.h).
  Result<std::vector<Row>> Read() {
    std::string shard_list = "{";
    for (int s : owned) shard_list += (shard_list.size() > 1 ? "," : "") + std::to_string(s);
    shard_list += "}";
    Result<pg::ResultPtr> r = pg::Exec(
        conn.get(),
        "SELECT id, topic, key, payload, headers::text, "
        "       (extract(epoch FROM created_at) * 1000000)::bigint, shard "
        "FROM tiercache_outbox WHERE sent_at IS NULL AND shard = ANY($1::int[]) ORDER BY seq LIMIT $2::int",
        {{shard_list}, {std::to_string(o.batch)}});
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
    return rows;
  }

  // Publishes `rows` in order; returns which may be marked sent: per shard,
  // the rows up to its first one the broker did not acknowledge (the rest
  // of that shard is published again later, keeping its order).
  std::vector<bool> Publish(const std::vector<Row>& rows) {
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
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(wait->mu);
        --wait->pending;
        wait->outcome[i] = s;
        break;  // what follows would be published out of order
      }
      ++sent;
    }
    std::unique_lock<std::mutex> lock(wait->mu);
    wait->cv.wait_for(lock, o.publish_timeout + milliseconds(2000), [&] { return wait->pending == 0; });
    std::vector<bool> done(rows.size(), false);
    std::set<int> stopped;  // shards with an unacknowledged row so far
    const auto now_sys = std::chrono::system_clock::now();
    const auto now_steady = steady_clock::now();
    for (size_t i = 0; i < rows.size(); ++i) {
      if (stopped.count(rows[i].shard) != 0) continue;
      if (i >= sent || !wait->outcome[i].ok()) {
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

  Status Mark(const std::vector<Row>& rows, const std::vector<bool>& done) {
    std::string ids = "{";
    for (size_t i = 0; i < rows.size(); ++i) {
      if (done[i]) ids += (ids.size() > 1 ? "," : "") + std::to_string(rows[i].id);
    }
    ids += "}";
    return pg::Command(conn.get(), "UPDATE tiercache_outbox SET sent_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
                       {{ids}})
        .status();
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
      const std::vector<bool> done = Publish(*rows);
      const size_t acked = static_cast<size_t>(std::count(done.begin(), done.end(), true));
      if (acked > 0) {
        if (o.after_publish) o.after_publish(acked);
        TIERCACHE_RETURN_IF_ERROR(Mark(*rows, done));
        Count([](OutboxRelayStats& s, uint64_t n) { s.published += n, ++s.batches; }, acked);
      }
      if (acked < rows->size()) {
        Count([](OutboxRelayStats& s, uint64_t) { ++s.publish_errors; });
        metrics->AddRelayError(/*kafka=*/true);
        return Status::Aborted("Kafka did not acknowledge the whole batch");
      }
      if (rows->size() < o.batch) return Status::Ok();
    }
  }

  void Housekeeping() {
    const auto now = steady_clock::now();
    if (now >= next_depth) {
      next_depth = now + kDepthInterval;
      Result<pg::ResultPtr> r = pg::Exec(
          conn.get(),
          "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)) * 1000, 0)::bigint "
          "FROM tiercache_outbox WHERE sent_at IS NULL");
      if (r.ok()) {
        metrics->SetOutboxDepth(std::stoll(std::string(pg::Cell(r->get(), 0, 0))),
                                milliseconds(std::stoll(std::string(pg::Cell(r->get(), 0, 1)))));
      }
    }
    if (now >= next_retention && !owned.empty()) {
      next_retention = now + o.retention_interval;
      Result<pg::ResultPtr> r = pg::Exec(
          conn.get(),
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

  // Sleeps until a NOTIFY, Stop, or `d`. False when stopping.
  bool Wait(milliseconds d) {
    if (stop.load()) return false;
    pollfd fds[2] = {{wake, POLLIN, 0}, {conn ? PQsocket(conn.get()) : -1, POLLIN, 0}};
    const int n = ::poll(fds, conn ? 2 : 1, static_cast<int>(std::max<int64_t>(d.count(), 0)));
    if (n > 0 && (fds[1].revents & POLLIN) && conn) {
      PQconsumeInput(conn.get());
      while (PGnotify* note = PQnotifies(conn.get())) PQfreemem(note);
    }
    return !stop.load();
  }

  void Loop() {
    milliseconds backoff = o.backoff_min;
    while (!stop.load()) {
      if (!conn) {
        Status s = Connect();
        if (!s.ok()) {
          Count([](OutboxRelayStats& st, uint64_t) { ++st.db_errors; });
          metrics->AddRelayError(/*kafka=*/false);
          if (!Wait(backoff)) break;
          backoff = std::min(backoff * 2, o.backoff_max);
          continue;
        }
      }
      // Notifications that arrived while we worked: the round reads them all.
      PQconsumeInput(conn.get());
      while (PGnotify* note = PQnotifies(conn.get())) PQfreemem(note);
      Status s = Status::Ok();
      if (steady_clock::now() >= next_claim) {
        next_claim = steady_clock::now() + o.claim_interval;
        s = Claim();
      }
      if (s.ok()) s = Round();
      if (s.ok()) Housekeeping();
      if (s.ok()) {
        backoff = o.backoff_min;
        if (!Wait(std::min(o.poll_interval, std::chrono::duration_cast<milliseconds>(
                                                 std::max(next_claim - steady_clock::now(), steady_clock::duration(0)))))) {
          break;
        }
        continue;
      }
      if (!s.IsAborted()) {  // the database: start over with a new session
        Count([](OutboxRelayStats& st, uint64_t) { ++st.db_errors; });
        metrics->AddRelayError(/*kafka=*/false);
        if (PQstatus(conn.get()) != CONNECTION_OK) {
          conn.reset();
          std::lock_guard<std::mutex> lock(mu);
          stats.shards_owned = 0;
        }
      }
      if (!Wait(backoff)) break;
      backoff = std::min(backoff * 2, o.backoff_max);
    }
  }

  const OutboxRelayOptions o;
  Metrics* const metrics;
  std::unique_ptr<kafka::Publisher> publisher;
  int wake = -1;
  std::atomic<bool> stop{false};

  std::mutex mu;
  bool started = false;       // GUARDED_BY(mu)
  std::thread thread;         // GUARDED_BY(mu)
  OutboxRelayStats stats;     // GUARDED_BY(mu)

  // The relay's thread only (and Stop, after joining it).
  pg::ConnPtr conn;
  int shards = 0;
  std::set<int> owned;
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
