// posts-service: owns posts. Writes the PostgreSQL primary and, in the same
// transaction, the invalidation event (transactional outbox); an outbox relay
// in this process publishes the events to Kafka (`community.posts.v1`, keyed
// by community id, so a community's events keep their order).
//
//   POST   /communities/:id/posts   {"author","title","body"}   → 201 {"id","community_id","version"}
//   PUT    /posts/:id               {"title"?, "body"?}          → 200 {"id","community_id","version"}
//   DELETE /posts/:id                                            → 200 {"id","community_id","version"}
//   GET    /healthz, /metrics
//
// After the commit, before answering, it also invalidates Redis itself (up to
// 3 attempts, then best-effort; --invalidate-on-write, on by default): the same keys and group floor the
// event will invalidate, with the event's id, so the shared tier is fresh
// even while Kafka is down; the event stays the contract (it reaches every
// pod's L1, and redoes what a failed direct invalidation missed).
//
// Versions (demo/schema.sql): every change bumps the community's
// feed_version and the post takes it, so the event's version orders the post
// and every page of the community's feed.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/feed_keys.h"
#include "common/flags.h"
#include "common/http_server.h"
#include "common/pg_pool.h"
#include "common/process.h"
#include "tiercache/cache.h"
#include "tiercache/events.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/outbox.h"

namespace demo {
namespace {

constexpr size_t kMaxTitle = 300;
constexpr size_t kMaxBody = 16 * 1024;
constexpr size_t kMaxAuthor = 100;

struct Service {
  std::unique_ptr<PgPool> pool;
  std::optional<tiercache::outbox::OutboxWriter> writer;
  std::string topic;
  std::atomic<uint64_t> writes{0}, write_errors{0}, direct_ok{0}, direct_failed{0};
  std::unique_ptr<tiercache::Cache> cache;  // L2 only; null without --invalidate-on-write

  // The event of the transaction in hand, invalidated in L2 after COMMIT.
  struct Pending {
    tiercache::InvalidationEvent event;
  };
  static thread_local std::optional<Pending> pending;

  void InvalidateNow(const tiercache::InvalidationEvent& e) {
    auto targets = MapPostEvent(e);
    if (!cache || !targets.ok()) return;
    std::vector<tiercache::Cache::Invalidation> list;
    for (const auto& k : targets->keys) list.push_back({k, e.version, false});
    for (const auto& g : targets->groups) list.push_back({g, e.version, true, e.event_id});
    // Before the write is acknowledged: a few attempts (a busy or failing-over
    // Redis), then leave it to the event.
    bool ok = false;
    for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
      ok = true;
      for (const auto& r : cache->InvalidateMany(list)) ok = ok && r.ok();
    }
    (ok ? direct_ok : direct_failed).fetch_add(1, std::memory_order_relaxed);
  }

  // Runs `body` in a transaction; commits when it returns 2xx, else rolls back.
  HttpResponse InTransaction(const HttpRequest& req,
                             const std::function<HttpResponse(PgPool::Lease&)>& body) {
    auto lease = pool->Acquire(req.deadline);
    if (!lease.ok()) return Fail(503, lease.status().ToString());
    auto begin = lease->Exec("BEGIN");
    if (!begin.ok()) return Fail(503, begin.status().ToString());
    pending.reset();
    HttpResponse r = body(*lease);
    if (r.status / 100 == 2) {
      auto commit = lease->Exec("COMMIT");
      if (!commit.ok()) return Fail(503, "commit failed: " + commit.status().ToString());
      writes.fetch_add(1, std::memory_order_relaxed);
      if (pending) InvalidateNow(pending->event);
    } else {
      lease->Exec("ROLLBACK").status().IgnoreError();
      write_errors.fetch_add(1, std::memory_order_relaxed);
    }
    return r;
  }

  HttpResponse Fail(int status, const std::string& msg) {
    write_errors.fetch_add(1, std::memory_order_relaxed);
    return JsonError(status, msg);
  }

  // Appends the event of a change and answers with the new version.
  HttpResponse Publish(PgPool::Lease& db, const std::string& type, const std::string& post_id,
                       const std::string& community, const std::string& version, int status) {
    tiercache::InvalidationEvent e;
    e.event_id = RandomId();
    e.type = type;
    e.entity_id = post_id;
    e.partition_key = community;
    e.version = std::stoull(version);
    e.occurred_at = std::chrono::system_clock::now();
    auto payload = tiercache::EncodeEvent(e);
    if (!payload.ok()) return JsonError(500, payload.status().ToString());
    tiercache::outbox::OutboxEvent oe;
    oe.topic = topic;
    oe.key = community;
    oe.payload = std::move(*payload);
    tiercache::Status s = writer->Append(db.get(), {oe});
    if (!s.ok()) return JsonError(503, "outbox: " + s.ToString());
    pending = Pending{e};
    return HttpResponse{status,
                        "{\"id\":" + post_id + ",\"community_id\":" + community + ",\"version\":" + version + "}\n"};
  }

  static std::optional<std::string> Field(const nlohmann::json& j, const char* name, size_t max,
                                          std::string* error) {
    if (!j.contains(name)) return std::nullopt;
    if (!j[name].is_string()) {
      *error = std::string(name) + " must be a string";
      return std::nullopt;
    }
    std::string v = j[name].get<std::string>();
    if (v.size() > max || v.find('\0') != std::string::npos) {
      *error = std::string(name) + " is longer than " + std::to_string(max) + " bytes or has a NUL";
      return std::nullopt;
    }
    return v;
  }

  static tiercache::Result<nlohmann::json> ParseBody(const std::string& body) {
    nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return tiercache::Status::InvalidArgument("the body must be a JSON object");
    }
    return j;
  }

  HttpResponse Create(const HttpRequest& req) {
    auto j = ParseBody(req.body);
    if (!j.ok()) return Fail(400, std::string(j.status().message()));
    std::string err;
    auto author = Field(*j, "author", kMaxAuthor, &err);
    auto title = Field(*j, "title", kMaxTitle, &err);
    auto body = Field(*j, "body", kMaxBody, &err);
    if (!err.empty()) return Fail(400, err);
    if (!author || !title || !body || author->empty() || title->empty()) {
      return Fail(400, "author, title and body are required (author and title non-empty)");
    }
    const std::string& community = req.matches[0];
    return InTransaction(req, [&](PgPool::Lease& db) {
      auto v = db.Exec(
          "UPDATE communities SET feed_version = feed_version + 1, post_count = post_count + 1 "
          "WHERE id = $1 RETURNING feed_version",
          {community});
      if (!v.ok()) return JsonError(503, v.status().ToString());
      if (v->rows == 0) return JsonError(404, "no community " + community);
      auto id = db.Exec(
          "INSERT INTO posts (community_id, author, title, body, version) VALUES ($1, $2, $3, $4, $5) "
          "RETURNING id",
          {community, *author, *title, *body, v->at(0, 0)});
      if (!id.ok()) return JsonError(503, id.status().ToString());
      return Publish(db, "post.created", id->at(0, 0), community, v->at(0, 0), 201);
    });
  }

  // PUT and DELETE: lock the post's row, then its community's.
  HttpResponse Change(const HttpRequest& req, bool remove) {
    std::optional<std::string> title, body;
    if (!remove) {
      auto j = ParseBody(req.body);
      if (!j.ok()) return Fail(400, std::string(j.status().message()));
      std::string err;
      title = Field(*j, "title", kMaxTitle, &err);
      body = Field(*j, "body", kMaxBody, &err);
      if (!err.empty()) return Fail(400, err);
      if (!title && !body) return Fail(400, "nothing to change: give title and/or body");
    }
    const std::string& post = req.matches[0];
    return InTransaction(req, [&](PgPool::Lease& db) {
      auto row = db.Exec("SELECT community_id FROM posts WHERE id = $1 FOR UPDATE", {post});
      if (!row.ok()) return JsonError(503, row.status().ToString());
      if (row->rows == 0) return JsonError(404, "no post " + post);
      std::string community = row->at(0, 0);
      auto v = db.Exec(std::string("UPDATE communities SET feed_version = feed_version + 1") +
                           (remove ? ", post_count = post_count - 1" : "") + " WHERE id = $1 RETURNING feed_version",
                       {community});
      if (!v.ok()) return JsonError(503, v.status().ToString());
      std::string version = v->at(0, 0);
      std::string sql = "DELETE FROM posts WHERE id = $1";
      std::vector<std::string> params = {post};
      if (!remove) {
        params.push_back(version);
        sql = "UPDATE posts SET version = $2, updated_at = now()";
        if (title) params.push_back(*title), sql += ", title = $" + std::to_string(params.size());
        if (body) params.push_back(*body), sql += ", body = $" + std::to_string(params.size());
        sql += " WHERE id = $1";
      }
      auto done = db.Exec(sql, params);
      if (!done.ok()) return JsonError(503, done.status().ToString());
      return Publish(db, remove ? "post.deleted" : "post.updated", post, community, version, 200);
    });
  }
};

thread_local std::optional<Service::Pending> Service::pending;

int Main(int argc, char** argv) {
  BlockTerminationSignals();
  auto flags = Flags::Parse(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "posts-service: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  const Flags& f = *flags;
  Service svc;
  std::string conninfo = f.Str("pg", "host=127.0.0.1 port=15442 dbname=demo user=posts");
  std::string brokers = f.Str("brokers", "127.0.0.1:9092");
  svc.topic = f.Str("topic", "community.posts.v1");

  tiercache::Status m = tiercache::outbox::MigrateOutbox(conninfo, static_cast<int>(f.Int("outbox-shards", 16)));
  if (!m.ok()) {
    Log("posts-service", "cannot prepare the outbox: " + m.ToString());
    return 1;
  }
  svc.pool = std::make_unique<PgPool>(PgPoolOptions{conninfo, static_cast<int>(f.Int("pool", 16)),
                                                    std::chrono::milliseconds(f.Int("statement-timeout-ms", 2000)),
                                                    std::chrono::milliseconds(2000)});
  {
    auto lease = svc.pool->Acquire(Clock::now() + std::chrono::seconds(5));
    if (!lease.ok()) {
      Log("posts-service", lease.status().ToString());
      return 1;
    }
    auto w = tiercache::outbox::OutboxWriter::Create(lease->get());
    if (!w.ok()) {
      Log("posts-service", "outbox writer: " + w.status().ToString());
      return 1;
    }
    svc.writer.emplace(*w);
  }

  if (f.Bool("invalidate-on-write", true)) {
    auto seeds = ParseHostPorts(f.Str("redis", "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"));
    if (!seeds.ok()) {
      Log("posts-service", "--redis: " + seeds.status().ToString());
      return 2;
    }
    tiercache::redis::RedisClientOptions ro;
    for (auto& [h, p] : *seeds) ro.seeds.push_back({h, p});
    auto client = tiercache::redis::RedisClient::Create(ro);
    if (!client.ok()) {
      Log("posts-service", "redis: " + client.status().ToString());
      return 1;
    }
    tiercache::CacheOptions co;
    co.use_l1 = false;
    co.l2_timeout = std::chrono::milliseconds(500);
    co.breaker_failure_threshold = 50;  // a writer: keep trying, the retries are bounded
    co.l2 = tiercache::MakeRedisL2Store(std::shared_ptr<tiercache::redis::RedisClient>(std::move(*client)));
    auto cache = tiercache::Cache::Create(co);
    if (!cache.ok()) {
      Log("posts-service", "cache: " + cache.status().ToString());
      return 1;
    }
    svc.cache = std::move(*cache);
  }

  std::unique_ptr<tiercache::outbox::OutboxRelay> relay;
  if (f.Bool("relay", true)) {
    tiercache::outbox::OutboxRelayOptions ro;
    ro.conninfo = conninfo;
    ro.publisher.brokers = brokers;
    ro.publisher.client_id = "posts-service-relay";
    ro.poll_interval = std::chrono::milliseconds(200);
    // After a Kafka outage the backlog goes out within half a second: pods'
    // L1 followers trust their L1 again as soon as they caught up with the
    // brokers, and cannot see what still waits here.
    ro.backoff_max = std::chrono::milliseconds(500);
    auto r = tiercache::outbox::OutboxRelay::Create(ro);
    if (!r.ok()) {
      Log("posts-service", "outbox relay: " + r.status().ToString());
      return 1;
    }
    relay = std::move(*r);
    if (auto s = relay->Start(); !s.ok()) {
      Log("posts-service", "outbox relay: " + s.ToString());
      return 1;
    }
  }

  HttpServerOptions ho;
  ho.port = static_cast<int>(f.Int("port", 8080));
  ho.host = f.Str("host", "127.0.0.1");
  ho.workers = static_cast<int>(f.Int("workers", 32));
  ho.request_deadline = std::chrono::milliseconds(f.Int("deadline-ms", 3000));
  ho.service = "posts";
  HttpServer http(ho);
  http.Post(R"(/communities/([1-9]\d{0,17})/posts)", [&](const HttpRequest& r) { return svc.Create(r); });
  http.Put(R"(/posts/([1-9]\d{0,17}))", [&](const HttpRequest& r) { return svc.Change(r, false); });
  http.Delete(R"(/posts/([1-9]\d{0,17}))", [&](const HttpRequest& r) { return svc.Change(r, true); });
  http.SetExtraMetrics([&] {
    std::string out;
    out += "# TYPE demo_posts_writes_total counter\ndemo_posts_writes_total " +
           std::to_string(svc.writes.load()) + "\n";
    out += "# TYPE demo_posts_write_errors_total counter\ndemo_posts_write_errors_total " +
           std::to_string(svc.write_errors.load()) + "\n";
    out += "# TYPE demo_posts_direct_invalidations_total counter\n";
    out += "demo_posts_direct_invalidations_total{result=\"ok\"} " + std::to_string(svc.direct_ok.load()) + "\n";
    out += "demo_posts_direct_invalidations_total{result=\"failed\"} " + std::to_string(svc.direct_failed.load()) + "\n";
    if (relay) {
      auto st = relay->stats();
      out += "# TYPE demo_outbox_published_total counter\ndemo_outbox_published_total " +
             std::to_string(st.published) + "\n";
      out += "# TYPE demo_outbox_publish_errors_total counter\ndemo_outbox_publish_errors_total " +
             std::to_string(st.publish_errors) + "\n";
    }
    return out;
  });
  if (auto s = http.Start(); !s.ok()) {
    Log("posts-service", s.ToString());
    return 1;
  }
  Log("posts-service", "listening on " + ho.host + ":" + std::to_string(ho.port) + " (primary: " + conninfo +
                           ", brokers: " + brokers + ")");
  std::string sig = WaitForTermination();
  Log("posts-service", sig + ": stopping");
  http.Stop();
  if (relay) relay->Stop();
  return 0;
}

}  // namespace
}  // namespace demo

int main(int argc, char** argv) { return demo::Main(argc, argv); }
