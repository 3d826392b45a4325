// feeds-service: the read path of community feeds, one process per pod.
//
//   GET /communities/:id/posts?page=N   → {"community_id","page","feed_version","total","posts":[...]}
//   GET /posts/:id                      → the post
//   GET /healthz, /metrics
//
// With the cache (--cache=on, the default) every read goes L1 → Redis Cluster
// → a loader reading the PostgreSQL **replica**:
//   feed:{community:C}:page:N   the page's post ids        (group feed:{community:C})
//   counters:{community:C}:posts  the post count             (group feed:{community:C})
//   posts:{community:C}:ID      one post; a page's posts come in one GetMany,
//                               so one MGET in the community's slot
//   postmap:{post:ID}           the post's community (for GET /posts/:id)
// and the process consumes community.posts.v1: the group consumer applies each
// event to Redis (the post's key at the event's version, the community's feed
// group with the event's version as floor), the L1 follower to this pod's L1.
//
// A lagging replica: when the cache refuses a fill because the replica is
// older than an invalidation already seen (kAborted: version fence or group
// floor), the read falls back to the primary for that key. A "not found" from
// the replica is confirmed on the primary before it is cached (a lagging
// replica cannot tell "not yet" from "never").
//
// With --cache=off every read queries the replica directly (the seed's design).
#include <array>
#include <atomic>
#include <mutex>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

#include "common/feed_keys.h"
#include "common/flags.h"
#include "common/http_server.h"
#include "common/pg_pool.h"
#include "common/process.h"
#include "tiercache/cache.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/kafka/l1_follower.h"
#include "tiercache/kafka/publisher.h"
#include "tiercache/redis/redis_client.h"

namespace demo {
namespace {

using tiercache::CachedValue;
using tiercache::LoadResult;
using tiercache::Result;
using tiercache::Status;
using tiercache::StatusCode;
using tiercache::GetOptions;
using std::chrono::milliseconds;

constexpr int kPageSize = 20;
constexpr int kMaxPage = 50;

const char* kPageSql =
    "SELECT c.feed_version, coalesce((SELECT string_agg(id::text, ',' ORDER BY id DESC) FROM "
    "(SELECT id FROM posts WHERE community_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3) p), '') "
    "FROM communities c, (SELECT demo_read_delay()) AS brownout WHERE c.id = $1";
const char* kCountSql =
    "SELECT c.feed_version, c.post_count FROM communities c, (SELECT demo_read_delay()) AS brownout "
    "WHERE c.id = $1";
const char* kPostsSql =
    "SELECT p.id, p.community_id, p.version, p.author, p.title, p.body, "
    "to_char(p.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
    "FROM posts p, (SELECT demo_read_delay()) AS brownout WHERE p.community_id = $1 AND p.id = ANY($2::bigint[])";
const char* kPostMapSql =
    "SELECT p.community_id, p.version FROM posts p, (SELECT demo_read_delay()) AS brownout WHERE p.id = $1";

std::string PostJson(const PgRows& r, int row) {
  return "{\"id\":" + r.at(row, 0) + ",\"community_id\":" + r.at(row, 1) + ",\"version\":" + r.at(row, 2) +
         ",\"author\":\"" + JsonEscape(r.at(row, 3)) + "\",\"title\":\"" + JsonEscape(r.at(row, 4)) +
         "\",\"body\":\"" + JsonEscape(r.at(row, 5)) + "\",\"updated_at\":\"" + r.at(row, 6) + "\"}";
}

// "posts:{community:42}:7" → ("42", "7"); false if not of that shape.
bool SplitPostKey(std::string_view key, std::string* community, std::string* id) {
  constexpr std::string_view kPrefix = "posts:{community:";
  if (key.substr(0, kPrefix.size()) != kPrefix) return false;
  auto close = key.find("}:", kPrefix.size());
  if (close == std::string_view::npos) return false;
  *community = std::string(key.substr(kPrefix.size(), close - kPrefix.size()));
  *id = std::string(key.substr(close + 2));
  return !community->empty() && !id->empty();
}

// Communities written in the last `window`, as this pod learns from the
// event stream (its L1 follower sees every event), or whose keys the replica
// was just found to be behind on (a fill refused by the fence). A load of such a
// community's keys goes to the primary straight away: the replica probably
// has not replayed the write yet, and a read from it would only be refused by
// the cache's version fence (and retried) before falling back to the primary
// anyway. Correctness does not depend on this table (the fences do that); it
// saves the wasted replica queries. Fixed size: a collision forgets a write,
// which costs one refused fill, nothing more.
class RecentWrites {
 public:
  explicit RecentWrites(milliseconds window) : window_(window) {}
  void Note(std::string_view community) {
    std::lock_guard<std::mutex> l(mu_);
    Slot& s = slots_[std::hash<std::string_view>()(community) % slots_.size()];
    s.community.assign(community);
    s.at = Clock::now();
  }
  bool Recent(std::string_view community) const {
    if (window_.count() <= 0) return false;
    std::lock_guard<std::mutex> l(mu_);
    const Slot& s = slots_[std::hash<std::string_view>()(community) % slots_.size()];
    return s.community == community && Clock::now() - s.at < window_;
  }

 private:
  struct Slot {
    std::string community;
    Clock::time_point at{};
  };
  milliseconds window_;
  mutable std::mutex mu_;
  std::array<Slot, 4096> slots_{};
};

class Feeds {
 public:
  Feeds(const Flags& f) : flags_(f) {}

  Status Init() {
    use_cache_ = flags_.Bool("cache", true);
    recent_ = std::make_unique<RecentWrites>(milliseconds(flags_.Int("primary-window-ms", 1000)));
    pod_ = flags_.Str("pod", "feeds");
    hard_timeout_ = milliseconds(flags_.Int("deadline-ms", 2000));
    soft_timeout_ = milliseconds(flags_.Int("soft-timeout-ms", 300));
    auto pool = [&](const std::string& dsn, int size) {
      return std::make_unique<PgPool>(PgPoolOptions{dsn, size, milliseconds(flags_.Int("statement-timeout-ms", 2000)),
                                                    milliseconds(2000)});
    };
    replica_ = pool(flags_.Str("pg-replica", "host=127.0.0.1 port=15443 dbname=demo user=feeds"),
                    static_cast<int>(flags_.Int("replica-pool", 8)));
    primary_ = pool(flags_.Str("pg-primary", "host=127.0.0.1 port=15442 dbname=demo user=feeds"),
                    static_cast<int>(flags_.Int("primary-pool", 4)));
    if (!use_cache_) return Status::Ok();

    auto seeds = ParseHostPorts(flags_.Str("redis", "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"));
    if (!seeds.ok()) return Status::InvalidArgument("--redis: " + std::string(seeds.status().message()));
    tiercache::redis::RedisClientOptions ro;
    for (auto& [h, p] : *seeds) ro.seeds.push_back({h, p});
    auto client = tiercache::redis::RedisClient::Create(ro);
    if (!client.ok()) return client.status();

    tiercache::CacheOptions co;
    co.l2 = tiercache::MakeRedisL2Store(std::shared_ptr<tiercache::redis::RedisClient>(std::move(*client)));
    co.l1.max_entries = static_cast<size_t>(flags_.Int("l1-entries", 50000));
    co.l1.default_ttl = milliseconds(flags_.Int("l1-ttl-ms", 30000));
    co.ttl = milliseconds(flags_.Int("ttl-ms", 600000));  // a backstop: events invalidate
    co.negative_ttl = milliseconds(5000);
    co.soft_timeout = milliseconds(flags_.Int("soft-timeout-ms", 300));
    co.hard_timeout = hard_timeout_;
    co.max_load_age = std::max(hard_timeout_, milliseconds(10000));
    co.loader_threads = static_cast<int>(flags_.Int("loader-threads", 8));
    co.metrics = &metrics_;
    // Off only to show what the fences prevent (tests/demo/demo_itest.sh).
    co.version_fencing = flags_.Bool("fencing", true);
    auto cache = tiercache::Cache::Create(co);
    if (!cache.ok()) return cache.status();
    cache_ = std::move(*cache);

    std::string brokers = flags_.Str("brokers", "127.0.0.1:9092");
    std::string topic = flags_.Str("topic", "community.posts.v1");
    tiercache::kafka::PublisherOptions po;
    po.brokers = brokers;
    po.client_id = pod_ + "-dead-letters";
    auto dlq = tiercache::kafka::Publisher::Create(po);
    if (!dlq.ok()) return dlq.status();
    dead_letters_ = std::move(*dlq);
    auto mapper = MapPostEvent;
    tiercache::kafka::InvalidationConsumerOptions io;
    io.brokers = brokers;
    io.group_id = flags_.Str("group-id", "feeds-service");
    io.topics = {topic};
    io.dead_letter_topic = topic + ".dead-letters";
    io.client_id = pod_ + "-invalidation";
    io.metrics = &metrics_;
    auto consumer = tiercache::kafka::InvalidationConsumer::Create(io, cache_.get(), mapper, dead_letters_.get());
    if (!consumer.ok()) return consumer.status();
    consumer_ = std::move(*consumer);
    tiercache::kafka::L1FollowerOptions fo;
    fo.brokers = brokers;
    fo.topics = {topic};
    fo.client_id = pod_ + "-l1-follower";
    fo.metrics = &metrics_;
    fo.on_dropped = [this](const tiercache::InvalidationEvent& e, std::chrono::system_clock::time_point) {
      recent_->Note(e.partition_key);
    };
    auto follower = tiercache::kafka::L1Follower::Create(fo, cache_.get(), mapper);
    if (!follower.ok()) return follower.status();
    follower_ = std::move(*follower);
    TIERCACHE_RETURN_IF_ERROR(consumer_->Start());
    TIERCACHE_RETURN_IF_ERROR(follower_->Start());
    return Status::Ok();
  }

  void Stop() {
    if (follower_) follower_->Stop();
    if (consumer_) consumer_->Stop();
  }

  HttpResponse Page(const HttpRequest& req) {
    const std::string& community = req.matches[0];
    std::string page_s = req.param("page");
    int page = 1;
    if (!page_s.empty()) {
      if (!AllDigits(page_s) || page_s.size() > 3) return JsonError(400, "page must be a number in [1, 50]");
      page = std::stoi(page_s);
    }
    if (page < 1 || page > kMaxPage) return JsonError(400, "page must be a number in [1, 50]");
    std::string group = FeedGroup(community);
    std::string page_key = PageKey(community, page);
    auto ids_v = Read(page_key, group, community, [this, community, page](PgPool& db) { return LoadPage(db, community, page); }, req.deadline);
    if (!ids_v.ok()) return ErrorResponse(ids_v.status());
    if (!ids_v->found) return JsonError(404, "no community " + community);
    auto count_v = Read(CounterKey(community), group, community,
                        [this, community](PgPool& db) { return LoadCount(db, community); }, req.deadline);
    if (!count_v.ok()) return ErrorResponse(count_v.status());

    // payload "feed_version|id,id,..."
    const std::string& p = ids_v->payload;
    auto bar = p.find('|');
    std::string ids_csv = bar == std::string::npos ? "" : p.substr(bar + 1);
    std::vector<std::string> keys;
    std::stringstream ss(ids_csv);
    for (std::string id; std::getline(ss, id, ',');) {
      if (!id.empty()) keys.push_back(PostKey(community, id));
    }
    std::string out = "{\"community_id\":" + community + ",\"page\":" + std::to_string(page) +
                      ",\"feed_version\":" + std::to_string(ids_v->version) + ",\"total\":" +
                      (count_v->found ? count_v->payload : "0") + ",\"posts\":[";
    if (!keys.empty()) {
      auto posts = ReadMany(keys, community, req.deadline);
      if (!posts.ok()) return ErrorResponse(posts.status());
      bool first = true;
      for (auto& v : *posts) {
        if (!v.found) continue;  // deleted since the page was read
        if (!first) out += ',';
        first = false;
        out += v.payload;
      }
    }
    out += "]}\n";
    return HttpResponse{200, std::move(out)};
  }

  HttpResponse Post(const HttpRequest& req) {
    const std::string& id = req.matches[0];
    auto map = Read(PostMapKey(id), "", "", [this, id](PgPool& db) { return LoadPostMap(db, id); }, req.deadline);
    if (!map.ok()) return ErrorResponse(map.status());
    if (!map->found) return JsonError(404, "no post " + id);
    std::string key = PostKey(map->payload, id);
    auto post = Read(key, "", map->payload, [this, key](PgPool& db) { return LoadPost(db, key); }, req.deadline);
    if (!post.ok()) return ErrorResponse(post.status());
    if (!post->found) return JsonError(404, "no post " + id);
    return HttpResponse{200, post->payload + "\n"};
  }

  std::string ExtraMetrics() const {
    std::string out;
    auto line = [&](const std::string& name, const std::string& labels, uint64_t v) {
      out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(v) + "\n";
    };
    out += "# TYPE demo_feeds_primary_fallbacks_total counter\n";
    line("demo_feeds_primary_fallbacks_total", "pod=\"" + pod_ + "\"", fallbacks_.load());
    out += "# TYPE demo_feeds_routed_to_primary_total counter\n";
    line("demo_feeds_routed_to_primary_total", "pod=\"" + pod_ + "\"", routed_.load());
    out += "# TYPE demo_feeds_uncached_primary_reads_total counter\n";
    line("demo_feeds_uncached_primary_reads_total", "pod=\"" + pod_ + "\"", uncached_.load());
    out += "# TYPE demo_feeds_negative_confirms_total counter\n";
    line("demo_feeds_negative_confirms_total", "pod=\"" + pod_ + "\"", negative_confirms_.load());
    if (!use_cache_) return out;
    auto snap = metrics_.snapshot();
    out += "# TYPE tiercache_hits_total counter\n";
    for (auto tier : {tiercache::Tier::kL1, tiercache::Tier::kL2}) {
      std::string labels = "tier=\"" + std::string(tiercache::TierName(tier)) + "\"";
      line("tiercache_hits_total", labels, snap.get(tiercache::Counter::kHit, tier) +
                                               snap.get(tiercache::Counter::kNegativeHit, tier) +
                                               snap.get(tiercache::Counter::kStaleServe, tier));
      line("tiercache_misses_total", labels, snap.get(tiercache::Counter::kMiss, tier));
    }
    out += "# TYPE tiercache_loads_total counter\n";
    line("tiercache_loads_total", "", snap.get(tiercache::Counter::kLoad, tiercache::Tier::kLoader));
    line("tiercache_refused_fills_total", "", snap.get(tiercache::Counter::kRefusedFill, tiercache::Tier::kL2));
    line("tiercache_l2_errors_total", "", snap.get(tiercache::Counter::kL2Error, tiercache::Tier::kL2));
    line("tiercache_l1_fenced", "", snap.l1_fenced ? 1 : 0);
    out += "# TYPE tiercache_l1_fences_total counter\n";
    for (int c = 0; c < tiercache::kL1FenceCauseCount; ++c) {
      line("tiercache_l1_fences_total",
           "cause=\"" + std::string(tiercache::L1FenceCauseName(static_cast<tiercache::L1FenceCause>(c))) + "\"",
           snap.l1_fences[static_cast<size_t>(c)]);
    }
    if (follower_) {
      auto fs = follower_->stats();
      line("demo_feeds_follower_behind_ms", "", static_cast<uint64_t>(std::max<int64_t>(fs.behind_ms, 0)));
      line("demo_feeds_follower_events_total", "", fs.events);
    }
    // Invalidation lag (event occurred_at → applied) per stage, in the
    // library's power-of-two microsecond buckets: bucket b counts lags below
    // 2^b µs (cumulative, as Prometheus wants).
    out += "# TYPE tiercache_invalidation_lag_seconds histogram\n";
    for (auto stage : {tiercache::InvalidationStage::kL2, tiercache::InvalidationStage::kL1}) {
      const auto& buckets = snap.lag_us_buckets[static_cast<int>(stage)];
      std::string st = "stage=\"" + std::string(tiercache::InvalidationStageName(stage)) + "\"";
      uint64_t cum = 0;
      for (int b = 0; b < tiercache::CounterMetrics::kLatencyBuckets; ++b) {
        cum += buckets[static_cast<size_t>(b)];
        if (b < 10 || b > 25) continue;  // 1 ms .. 33 s
        char le[32];
        std::snprintf(le, sizeof le, "%g", static_cast<double>(uint64_t{1} << b) / 1e6);
        line("tiercache_invalidation_lag_seconds_bucket", st + ",le=\"" + le + "\"", cum);
      }
      line("tiercache_invalidation_lag_seconds_count", st, cum);
    }
    return out;
  }

 private:
  // What a read returns to a handler.
  struct Value {
    bool found = false;
    uint64_t version = 0;
    std::string payload;
  };
  using LoadFn = std::function<Result<LoadResult>(PgPool& db)>;

  // Through the cache (replica, then the primary for a key the replica is
  // behind on), or straight from the replica without it.
  PgPool& Route(const std::string& community) {
    if (!community.empty() && recent_->Recent(community)) {
      routed_.fetch_add(1, std::memory_order_relaxed);
      return *primary_;
    }
    return *replica_;
  }

  // `community`: the key's community when known ("" otherwise), for routing.
  // The request's deadline as the cache's hard timeout (and a soft timeout
  // no later than it).
  GetOptions Deadline(Clock::time_point deadline) const {
    tiercache::GetOptions opt;
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    left = std::max(left, milliseconds(1));
    opt.hard_timeout = left;
    opt.soft_timeout = std::min(left, soft_timeout_);
    return opt;
  }

  Result<Value> Read(const std::string& key, const std::string& group, const std::string& community,
                     const LoadFn& load, Clock::time_point deadline) {
    if (!use_cache_) {
      auto r = load(*replica_);
      if (!r.ok()) return r.status();
      return Value{r->payload.has_value(), r->version.value_or(0), r->payload.value_or("")};
    }
    tiercache::GetOptions opt = Deadline(deadline);
    opt.group = group;
    auto got = cache_->Get(key, [this, load, community](std::string_view) { return load(Route(community)); }, opt);
    if (!got.ok() && got.status().code() == StatusCode::kAborted) {
      // The replica is behind an invalidation of this key: read the primary,
      // and send this community's next loads there too for a while (renewed
      // as long as the replica keeps lagging).
      fallbacks_.fetch_add(1, std::memory_order_relaxed);
      if (!community.empty()) recent_->Note(community);
      opt = Deadline(deadline);
      opt.group = group;
      got = cache_->Get(key, [this, load](std::string_view) { return load(*primary_); }, opt);
    }
    if (!got.ok() && got.status().code() == StatusCode::kAborted) {
      // The key keeps changing under the cache (its fills keep being
      // refused): answer from the source of truth, uncached.
      uncached_.fetch_add(1, std::memory_order_relaxed);
      auto r = load(*primary_);
      if (!r.ok()) return r.status();
      return Value{r->payload.has_value(), r->version.value_or(0), r->payload.value_or("")};
    }
    if (!got.ok()) return got.status();
    return Value{got->found(), got->version(), std::string(got->payload())};
  }

  Result<std::vector<Value>> ReadMany(const std::vector<std::string>& keys, const std::string& community,
                                      Clock::time_point deadline) {
    std::vector<Value> out(keys.size());
    if (!use_cache_) {
      auto r = LoadPosts(*replica_, keys);
      if (!r.ok()) return r.status();
      for (size_t i = 0; i < keys.size(); ++i) {
        out[i] = Value{(*r)[i].payload.has_value(), (*r)[i].version.value_or(0), (*r)[i].payload.value_or("")};
      }
      return out;
    }
    auto got = cache_->GetMany(
        keys, [this, community](const std::vector<std::string>& ks) { return LoadPosts(Route(community), ks); },
        Deadline(deadline));
    if (!got.ok()) return got.status();
    for (size_t i = 0; i < keys.size(); ++i) {
      auto& r = (*got)[i];
      if (!r.ok() && r.status().code() == StatusCode::kAborted) {
        fallbacks_.fetch_add(1, std::memory_order_relaxed);
        recent_->Note(community);
        std::string key = keys[i];
        r = cache_->Get(key, [this, key](std::string_view) { return LoadPost(*primary_, key); }, Deadline(deadline));
      }
      if (!r.ok() && r.status().code() == StatusCode::kAborted) {
        uncached_.fetch_add(1, std::memory_order_relaxed);
        auto direct = LoadPost(*primary_, keys[i]);
        if (!direct.ok()) return direct.status();
        out[i] = Value{direct->payload.has_value(), direct->version.value_or(0), direct->payload.value_or("")};
        continue;
      }
      if (!r.ok()) return r.status();
      out[i] = Value{r->found(), r->version(), std::string(r->payload())};
    }
    return out;
  }

  Result<PgRows> Query(PgPool& db, const char* sql, const std::vector<std::string>& params) {
    auto lease = db.Acquire(Clock::now() + hard_timeout_);
    if (!lease.ok()) return lease.status();
    return lease->Exec(sql, params);
  }
  bool IsReplica(const PgPool& db) const { return &db == replica_.get(); }

  Result<LoadResult> LoadPage(PgPool& db, const std::string& community, int page) {
    auto r = Query(db, kPageSql, {community, std::to_string(kPageSize), std::to_string((page - 1) * kPageSize)});
    if (!r.ok()) return r.status();
    if (r->rows == 0) {
      if (use_cache_ && IsReplica(db)) return ConfirmMissing([&] { return LoadPage(*primary_, community, page); });
      return LoadResult{};
    }
    return LoadResult{r->at(0, 0) + "|" + r->at(0, 1), std::stoull(r->at(0, 0))};
  }

  Result<LoadResult> LoadCount(PgPool& db, const std::string& community) {
    auto r = Query(db, kCountSql, {community});
    if (!r.ok()) return r.status();
    if (r->rows == 0) {
      if (use_cache_ && IsReplica(db)) return ConfirmMissing([&] { return LoadCount(*primary_, community); });
      return LoadResult{};
    }
    return LoadResult{r->at(0, 1), std::stoull(r->at(0, 0))};
  }

  Result<LoadResult> LoadPostMap(PgPool& db, const std::string& id) {
    auto r = Query(db, kPostMapSql, {id});
    if (!r.ok()) return r.status();
    if (r->rows == 0) {
      if (use_cache_ && IsReplica(db)) return ConfirmMissing([&] { return LoadPostMap(*primary_, id); });
      return LoadResult{};
    }
    return LoadResult{r->at(0, 0), std::stoull(r->at(0, 1))};
  }

  // Posts of one community by key, in order; one query.
  Result<std::vector<LoadResult>> LoadPosts(PgPool& db, const std::vector<std::string>& keys) {
    std::vector<LoadResult> out(keys.size());
    if (keys.empty()) return out;
    std::string community, id, ids = "{";
    std::vector<std::string> wanted(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      std::string c;
      if (!SplitPostKey(keys[i], &c, &wanted[i]) || !AllDigits(wanted[i]) || !AllDigits(c)) {
        return Status::InvalidArgument("not a post key: " + keys[i]);
      }
      if (!community.empty() && c != community) return Status::InvalidArgument("posts of two communities in one load");
      community = c;
      ids += (i ? "," : "") + wanted[i];
    }
    ids += "}";
    auto r = Query(db, kPostsSql, {community, ids});
    if (!r.ok()) return r.status();
    std::unordered_map<std::string, int> row_of;
    for (int i = 0; i < r->rows; ++i) row_of[r->at(i, 0)] = i;
    std::vector<std::string> missing;
    for (size_t i = 0; i < keys.size(); ++i) {
      auto it = row_of.find(wanted[i]);
      if (it == row_of.end()) {
        missing.push_back(keys[i]);
        continue;
      }
      out[i] = LoadResult{PostJson(*r, it->second), std::stoull(r->at(it->second, 2))};
    }
    if (!missing.empty() && use_cache_ && IsReplica(db)) {
      negative_confirms_.fetch_add(1, std::memory_order_relaxed);
      auto confirmed = LoadPosts(*primary_, missing);
      if (!confirmed.ok()) return confirmed.status();
      size_t j = 0;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (!out[i].payload && j < missing.size() && keys[i] == missing[j]) out[i] = (*confirmed)[j++];
      }
    }
    return out;
  }

  Result<LoadResult> LoadPost(PgPool& db, const std::string& key) {
    auto r = LoadPosts(db, {key});
    if (!r.ok()) return r.status();
    return std::move((*r)[0]);
  }

  Result<LoadResult> ConfirmMissing(const std::function<Result<LoadResult>()>& on_primary) {
    negative_confirms_.fetch_add(1, std::memory_order_relaxed);
    return on_primary();
  }

  static HttpResponse ErrorResponse(const Status& s) {
    int code = s.code() == StatusCode::kDeadlineExceeded ? 504 : 503;
    return JsonError(code, s.ToString());
  }

  const Flags& flags_;
  bool use_cache_ = true;
  std::string pod_;
  milliseconds hard_timeout_{2000}, soft_timeout_{300};
  std::unique_ptr<PgPool> replica_, primary_;
  tiercache::CounterMetrics metrics_;
  std::unique_ptr<tiercache::Cache> cache_;
  std::unique_ptr<tiercache::kafka::Publisher> dead_letters_;
  std::unique_ptr<tiercache::kafka::InvalidationConsumer> consumer_;
  std::unique_ptr<tiercache::kafka::L1Follower> follower_;
  std::unique_ptr<RecentWrites> recent_;
  std::atomic<uint64_t> fallbacks_{0}, negative_confirms_{0}, routed_{0}, uncached_{0};
};

int Main(int argc, char** argv) {
  BlockTerminationSignals();
  auto flags = Flags::Parse(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "feeds-service: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  const Flags& f = *flags;
  std::string name = f.Str("pod", "feeds");
  Feeds feeds(f);
  if (Status s = feeds.Init(); !s.ok()) {
    Log(name, "cannot start: " + s.ToString());
    return 1;
  }
  HttpServerOptions ho;
  ho.port = static_cast<int>(f.Int("port", 8081));
  ho.host = f.Str("host", "127.0.0.1");
  ho.workers = static_cast<int>(f.Int("workers", 128));
  ho.request_deadline = milliseconds(f.Int("deadline-ms", 2000));
  ho.service = name;
  HttpServer http(ho);
  // Canonical ids only (no leading zero): "/posts/07" would name another
  // cache key than the one the events invalidate.
  http.Get(R"(/communities/([1-9]\d{0,17})/posts)", [&](const HttpRequest& r) { return feeds.Page(r); });
  http.Get(R"(/posts/([1-9]\d{0,17}))", [&](const HttpRequest& r) { return feeds.Post(r); });
  http.SetExtraMetrics([&] { return feeds.ExtraMetrics(); });
  if (Status s = http.Start(); !s.ok()) {
    Log(name, s.ToString());
    return 1;
  }
  Log(name, "listening on " + ho.host + ":" + std::to_string(ho.port) +
                (f.Bool("cache", true) ? " (tiercache on)" : " (cache off: every read queries the replica)"));
  std::string sig = WaitForTermination();
  Log(name, sig + ": stopping");
  http.Stop();
  feeds.Stop();
  return 0;
}

}  // namespace
}  // namespace demo

int main(int argc, char** argv) { return demo::Main(argc, argv); }
