// The stale-data scenarios of issue 10 against the real Redis Cluster, one
// test per scenario. Each test forces the bad interleaving with gates and
// sleeps, using two or three Cache objects as "pods" that share one
// RedisClient (each pod has its own L1, breakers, loads, leases and fence
// snapshots; only the connections are shared, which these races do not
// depend on).
//
//   1. The fence outlives the tombstone (and a run with fencing off shows the
//      race, so the test can fail).
//   2. A "not found" without a version does not poison a versioned key.
//   3. Unversioned keys are not fenced by the pods' clocks.
//   4. Invalidated copies are never served, not even stale (Get, GetMany,
//      slow / failing loaders, another pod's load in flight).
//   5. A corrupt L2 entry that passes the structural checks (right magic, a
//      huge version, a bad CRC) or fails them never fences.
//   6. GetMany of 3000 keys over many slots: fills pipelined, all stored; a
//      concurrent invalidation of one key refuses that key's fill only.
//
// Timing margins are at least 100 ms; the whole file runs in well under 30 s.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using redis::testing::ClusterOptions;
using SteadyClock = std::chrono::steady_clock;

// ---- helpers -----------------------------------------------------------------

std::shared_ptr<redis::RedisClient> Client() {
  Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(ClusterOptions());
  if (!c.ok()) {
    std::fprintf(stderr, "redis client: %s\n", c.status().ToString().c_str());
    return nullptr;
  }
  return std::shared_ptr<redis::RedisClient>(std::move(*c));
}

CacheOptions ClusterCacheOptions(std::shared_ptr<redis::RedisClient> client) {
  CacheOptions o;
  o.l2 = MakeRedisL2Store(std::move(client));
  o.ttl_jitter = 0;
  return o;
}

std::unique_ptr<Cache> MakeCache(CacheOptions o) {
  Result<std::unique_ptr<Cache>> c = Cache::Create(std::move(o));
  if (!c.ok()) std::fprintf(stderr, "cache: %s\n", c.status().ToString().c_str());
  return c.ok() ? std::move(*c) : nullptr;
}

using ::tiercache::testing::UniqueTag;

// A one-shot event. Wait() is bounded so that a failing test never hangs a
// loader thread (and with it the cache's destructor) for long.
class Gate {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool Wait(std::chrono::milliseconds max = 10s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, max, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Opens gates when the scope ends, so loaders blocked on them return before
// the caches (declared after the gates, destroyed before) wait for them.
class OpenOnExit {
 public:
  explicit OpenOnExit(std::vector<Gate*> gates) : gates_(std::move(gates)) {}
  ~OpenOnExit() {
    for (Gate* g : gates_) g->Open();
  }

 private:
  std::vector<Gate*> gates_;
};

// A versioned in-memory "database" row: what loaders read.
class Row {
 public:
  Row(std::string payload, std::optional<uint64_t> version) : payload_(std::move(payload)), version_(version) {}
  LoadResult Read() {
    std::lock_guard<std::mutex> lock(mu_);
    return LoadResult{payload_, version_};
  }
  void Write(std::string payload, std::optional<uint64_t> version) {
    std::lock_guard<std::mutex> lock(mu_);
    payload_ = std::move(payload);
    version_ = version;
  }

 private:
  std::mutex mu_;
  std::string payload_;
  std::optional<uint64_t> version_;
};

// What Redis holds under a key.
struct Stored {
  bool answered = false;   // the GET succeeded
  bool present = false;    // the key exists
  bool decodable = false;  // a valid envelope (CRC checked)
  EntryKind kind = EntryKind::kValue;
  uint64_t version = 0;
  std::string payload;

  bool IsValueOfVersion(uint64_t v) const { return decodable && kind == EntryKind::kValue && version == v; }
  std::string ToString() const {
    if (!answered) return "<GET failed>";
    if (!present) return "<nil>";
    if (!decodable) return "<undecodable bytes>";
    const char* k = kind == EntryKind::kValue ? "value" : kind == EntryKind::kNegative ? "negative" : "tombstone";
    return std::string(k) + " v" + std::to_string(version) + " '" + payload + "'";
  }
};

Stored FromBytes(const std::optional<std::string>& raw) {
  Stored s;
  s.answered = true;
  if (!raw) return s;
  s.present = true;
  Result<EnvelopeView> e = DecodeEnvelope(*raw);
  if (!e.ok()) return s;
  s.decodable = true;
  s.kind = e->kind;
  s.version = e->version;
  s.payload = std::string(e->payload);
  return s;
}

Stored ReadStored(redis::RedisClient& client, const std::string& key) {
  Result<std::optional<std::string>> raw = client.Get(key);
  if (!raw.ok()) return Stored();
  return FromBytes(*raw);
}

using ::tiercache::testing::Describe;

// Polls `key` in Redis every 2 ms in the background and remembers whether
// it ever held an entry `bad` matches.
class RedisWatch {
 public:
  RedisWatch(std::shared_ptr<redis::RedisClient> client, std::string key, std::function<bool(const Stored&)> bad)
      : client_(std::move(client)), key_(std::move(key)), bad_(std::move(bad)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        Stored s = ReadStored(*client_, key_);
        if (s.answered) polls_.fetch_add(1);
        if (bad_(s)) {
          std::lock_guard<std::mutex> lock(mu_);
          if (!saw_) first_bad_ = s.ToString();
          saw_ = true;
        }
        std::this_thread::sleep_for(2ms);
      }
    });
  }
  ~RedisWatch() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  bool saw() {
    std::lock_guard<std::mutex> lock(mu_);
    return saw_;
  }
  std::string first_bad() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_bad_;
  }
  int polls() const { return polls_.load(); }

 private:
  std::shared_ptr<redis::RedisClient> client_;
  const std::string key_;
  const std::function<bool(const Stored&)> bad_;
  std::atomic<bool> stop_{false};
  std::atomic<int> polls_{0};
  std::mutex mu_;
  bool saw_ = false;
  std::string first_bad_;
  std::thread thread_;
};

// A pod whose clock runs `offset` ahead of (or behind) the real one.
class SkewedClock final : public Clock {
 public:
  explicit SkewedClock(Duration offset) : offset_(offset) {}
  TimePoint Now() const noexcept override { return Clock::Real()->Now() + offset_; }
  TimePoint CoarseNow() const noexcept override { return Clock::Real()->CoarseNow() + offset_; }
  WallTimePoint WallNow() const noexcept override {
    return Clock::Real()->WallNow() + std::chrono::duration_cast<WallTimePoint::duration>(offset_);
  }

 private:
  const Duration offset_;
};

// A valid envelope as a pod would write it, expiring in a minute.
std::string Envelope(EntryKind kind, uint64_t version, std::string_view payload) {
  EnvelopeView e;
  e.kind = kind;
  e.codec_id = kCodecBytes;
  e.version = version;
  e.written_at = std::chrono::system_clock::now();
  e.expires_at = e.written_at + 60s;
  e.payload = payload;
  Result<std::string> bytes = EncodeEnvelope(e);
  return bytes.ok() ? *bytes : std::string();
}

Loader Returning(std::string payload, std::optional<uint64_t> version, std::atomic<int>* calls = nullptr) {
  return [payload, version, calls](std::string_view) -> Result<LoadResult> {
    if (calls) calls->fetch_add(1);
    return LoadResult{payload, version};
  };
}

Loader Failing(std::atomic<int>* calls = nullptr) {
  return [calls](std::string_view) -> Result<LoadResult> {
    if (calls) calls->fetch_add(1);
    return Status::Unavailable("database brownout");
  };
}

class ConsistencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    client_ = Client();
    ASSERT_TRUE(client_ != nullptr);
  }
  std::shared_ptr<redis::RedisClient> client_;
};

// ---- 1. the fence outlives the tombstone ---------------------------------------

struct FenceRun {
  Result<CachedValue> a_get = Status::Internal("not run");
  Stored after_tombstone_ttl;  // Redis 400 ms after the invalidation
  bool loader_returned = false;
  Result<CachedValue> c_get = Status::Internal("not run");
  Stored final_stored;
  bool redis_held_v1 = false;
  std::string redis_v1_seen;
  int polls = 0;
};

// Pod A's loader reads v1 and blocks; A's get times out; pod B invalidates at
// version 2 (the row now holds v2); 400 ms later (the 300 ms tombstone is
// gone) A's loader returns v1; then pod C gets the key.
FenceRun RunFenceOutlivesTombstone(const std::shared_ptr<redis::RedisClient>& client, bool fencing) {
  FenceRun out;
  const std::string key = "fence-ttl:{" + UniqueTag() + "}:k";
  Row row("v1", 1);
  Gate started, release, returned;
  std::atomic<int> a_calls{0};
  Loader a_loader = [&](std::string_view) -> Result<LoadResult> {
    LoadResult r = row.Read();
    if (a_calls.fetch_add(1) == 0) {
      started.Open();
      release.Wait();
      returned.Open();
    }
    return r;
  };
  CacheOptions o = ClusterCacheOptions(client);
  o.tombstone_ttl = 300ms;
  o.hard_timeout = 100ms;
  o.soft_timeout = 100ms;
  o.version_fencing = fencing;
  auto a = MakeCache(o);
  auto b = MakeCache(o);
  auto c = MakeCache(o);
  OpenOnExit open_gates({&release});
  if (!a || !b || !c) return out;
  RedisWatch watch(client, key, [](const Stored& s) { return s.IsValueOfVersion(1); });

  out.a_get = a->Get(key, a_loader);  // times out after 100 ms; the load goes on
  if (!started.Wait(2s)) return out;
  row.Write("v2", 2);
  if (Status s = b->Invalidate(key, 2); !s.ok()) {
    std::fprintf(stderr, "invalidate: %s\n", s.ToString().c_str());
    return out;
  }
  std::this_thread::sleep_for(400ms);  // tombstone_ttl 300 ms + 100 ms
  out.after_tombstone_ttl = ReadStored(*client, key);
  release.Open();
  out.loader_returned = returned.Wait(2s);
  std::this_thread::sleep_for(150ms);  // its fill (and a reload) have run
  out.c_get = c->Get(key, Returning("v2", 2));
  out.final_stored = ReadStored(*client, key);
  watch.Stop();
  out.redis_held_v1 = watch.saw();
  out.redis_v1_seen = watch.first_bad();
  out.polls = watch.polls();
  return out;
}

TEST_F(ConsistencyTest, FenceOutlivesTheTombstone) {
  FenceRun r = RunFenceOutlivesTombstone(client_, /*fencing=*/true);
  EXPECT_TRUE(!r.a_get.ok() && r.a_get.status().IsDeadlineExceeded()) << "pod A: " << Describe(r.a_get);
  EXPECT_FALSE(r.after_tombstone_ttl.IsValueOfVersion(1)) << r.after_tombstone_ttl.ToString();
  EXPECT_TRUE(r.after_tombstone_ttl.answered && !r.after_tombstone_ttl.present)
      << "the tombstone should be gone after tombstone_ttl: " << r.after_tombstone_ttl.ToString();
  ASSERT_TRUE(r.loader_returned);
  ASSERT_TRUE(r.c_get.ok()) << Describe(r.c_get);
  EXPECT_EQ(r.c_get->version(), 2u) << "pod C: " << Describe(r.c_get);
  EXPECT_EQ(r.c_get->payload(), "v2");
  EXPECT_FALSE(r.redis_held_v1) << "Redis held " << r.redis_v1_seen << " after the invalidation";
  EXPECT_FALSE(r.final_stored.IsValueOfVersion(1)) << r.final_stored.ToString();
  EXPECT_GT(r.polls, 50);
  std::printf("fence outlives tombstone: pod C got %s; Redis finally %s (%d polls)\n", Describe(r.c_get).c_str(),
              r.final_stored.ToString().c_str(), r.polls);
}

TEST_F(ConsistencyTest, FenceOutlivesTheTombstoneShowsWithoutFencing) {
  FenceRun r = RunFenceOutlivesTombstone(client_, /*fencing=*/false);
  ASSERT_TRUE(r.loader_returned);
  ASSERT_TRUE(r.c_get.ok()) << Describe(r.c_get);
  EXPECT_EQ(r.c_get->version(), 1u) << "without fencing the old value should come back: " << Describe(r.c_get);
  EXPECT_EQ(r.c_get->payload(), "v1");
  EXPECT_TRUE(r.redis_held_v1) << "Redis never held v1 without fencing";
  std::printf("without fencing: pod C got %s\n", Describe(r.c_get).c_str());
}

// ---- 2. "not found" without a version -----------------------------------------

TEST_F(ConsistencyTest, NotFoundWithoutVersionDoesNotPoisonAVersionedKey) {
  const std::string tag = UniqueTag();
  CacheOptions o = ClusterCacheOptions(client_);
  std::atomic<int> not_found_calls{0};
  Loader not_found = [&](std::string_view) -> Result<LoadResult> {
    not_found_calls.fetch_add(1);
    return LoadResult{std::nullopt, std::nullopt};
  };
  auto a = MakeCache(o);
  auto c = MakeCache(o);
  ASSERT_TRUE(a && c);

  // Invalidate(k, 1) after an unversioned negative takes effect.
  const std::string k1 = "notfound:{" + tag + "}:1";
  Result<CachedValue> v = a->Get(k1, not_found);
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_FALSE(v->found());
  Stored s = ReadStored(*client_, k1);
  EXPECT_TRUE(s.decodable && s.kind == EntryKind::kNegative) << s.ToString();
  EXPECT_LT(s.version, 1u) << "a versionless not-found must not outrank version 1: " << s.ToString();
  ASSERT_TRUE(a->Invalidate(k1, 1).ok());
  s = ReadStored(*client_, k1);
  EXPECT_TRUE(s.decodable && s.kind == EntryKind::kTombstone && s.version == 1)
      << "Invalidate(k, 1) changed nothing: " << s.ToString();
  std::atomic<int> v1_calls{0};
  v = a->Get(k1, Returning("row-v1", 1, &v1_calls));
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_TRUE(v->found()) << Describe(v);
  EXPECT_EQ(v->version(), 1u);
  EXPECT_EQ(v->payload(), "row-v1");
  v = c->Get(k1, Returning("row-v1", 1, &v1_calls));
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_TRUE(v->found() && v->version() == 1u) << "another pod: " << Describe(v);
  EXPECT_EQ(v1_calls.load(), 1) << "the other pod should have found version 1 in L2";

  // Set(k, "x", 1) after an unversioned negative is accepted.
  const std::string k2 = "notfound:{" + tag + "}:2";
  v = a->Get(k2, not_found);
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_FALSE(v->found());
  Status set = a->Set(k2, "x", 1);
  EXPECT_TRUE(set.ok()) << set.ToString();
  s = ReadStored(*client_, k2);
  EXPECT_TRUE(s.IsValueOfVersion(1) && s.payload == "x") << s.ToString();
  v = c->Get(k2, Failing());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_TRUE(v->found() && v->payload() == "x" && v->version() == 1u) << Describe(v);
  v = a->Get(k2, Failing());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_TRUE(v->found() && v->payload() == "x") << Describe(v);
}

TEST_F(ConsistencyTest, NotFoundWithoutVersionIsNeverServedAfterInvalidateEvenStale) {
  const std::string key = "notfound:{" + UniqueTag() + "}:stale";
  CacheOptions o = ClusterCacheOptions(client_);
  o.negative_ttl = 100ms;
  o.max_stale = 30s;
  o.early_refresh_beta = 0;
  Loader not_found = [](std::string_view) -> Result<LoadResult> { return LoadResult{std::nullopt, std::nullopt}; };
  auto a = MakeCache(o);
  auto b = MakeCache(o);
  auto d = MakeCache(o);
  ASSERT_TRUE(a && b && d);
  Result<CachedValue> v = a->Get(key, not_found);
  ASSERT_TRUE(v.ok() && !v->found()) << Describe(v);
  v = b->Get(key, not_found);  // pod B holds the negative in its L1 too
  ASSERT_TRUE(v.ok() && !v->found()) << Describe(v);
  EXPECT_EQ(v->source(), ValueSource::kL2);
  std::this_thread::sleep_for(250ms);  // negative_ttl 100 ms + 150 ms: stale everywhere

  // Control: before the invalidation the stale negative IS served when the
  // loader fails (so the checks below can fail).
  v = d->Get(key, Failing());
  EXPECT_TRUE(v.ok() && !v->found() && v->stale()) << "control (fail-safe on a stale negative): " << Describe(v);

  ASSERT_TRUE(a->Invalidate(key, 1).ok());
  for (Cache* pod : {a.get(), b.get(), d.get()}) {
    v = pod->Get(key, Failing());
    EXPECT_FALSE(v.ok() && !v->found()) << "the invalidated negative was served: " << Describe(v);
    EXPECT_TRUE(!v.ok() && v.status().IsUnavailable()) << Describe(v);
  }
  Result<std::vector<Result<CachedValue>>> many =
      b->GetMany({key}, [](const std::vector<std::string>&) -> Result<std::vector<LoadResult>> {
        return Status::Unavailable("database brownout");
      });
  ASSERT_TRUE(many.ok());
  EXPECT_FALSE((*many)[0].ok() && !(*many)[0]->found()) << "GetMany: " << Describe((*many)[0]);
  // And the row created at version 1 is found.
  v = b->Get(key, Returning("row-v1", 1));
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_TRUE(v->found() && v->version() == 1u) << Describe(v);
}

// ---- 3. unversioned keys are not fenced by pod clocks ---------------------------

TEST_F(ConsistencyTest, UnversionedLoadOnAPodWhoseClockIsAheadLosesToALaterInvalidate) {
  const std::string key = "skew:{" + UniqueTag() + "}:ahead";
  SkewedClock ahead(50ms);
  Row row("old", std::nullopt);
  Gate started, release;
  std::atomic<int> b_calls{0}, a_calls{0};
  Loader b_loader = [&](std::string_view) -> Result<LoadResult> {
    LoadResult r = row.Read();
    if (b_calls.fetch_add(1) == 0) {
      started.Open();
      release.Wait();
    }
    return r;
  };
  Loader a_loader = [&](std::string_view) -> Result<LoadResult> {
    a_calls.fetch_add(1);
    return row.Read();
  };
  CacheOptions oa = ClusterCacheOptions(client_);
  oa.early_refresh_beta = 0;
  CacheOptions ob = oa;
  ob.clock = &ahead;
  ob.hard_timeout = 2s;
  ob.soft_timeout = 2s;
  auto a = MakeCache(oa);
  auto b = MakeCache(ob);
  OpenOnExit open_gates({&release});
  ASSERT_TRUE(a && b);
  RedisWatch watch(client_, key, [](const Stored& s) { return s.decodable && s.payload == "old"; });

  Result<CachedValue> b_got = Status::Internal("not run");
  std::thread tb([&] { b_got = b->Get(key, b_loader); });
  const bool b_loading = started.Wait(2s);
  row.Write("new", std::nullopt);
  const Status inv = a->Invalidate(key);  // within a few ms of B's load start: inside B's 50 ms lead
  release.Open();
  tb.join();
  ASSERT_TRUE(b_loading);
  ASSERT_TRUE(inv.ok()) << inv.ToString();

  Stored s = ReadStored(*client_, key);
  EXPECT_NE(s.payload, "old") << "B's old value was stored after A's invalidation: " << s.ToString();
  Result<CachedValue> v = a->Get(key, a_loader);
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->payload(), "new") << "pod A: " << Describe(v);
  v = b->Get(key, b_loader);
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->payload(), "new") << "pod B: " << Describe(v);
  watch.Stop();
  EXPECT_FALSE(watch.saw()) << "Redis held " << watch.first_bad();
  std::printf("clock ahead: B's own get returned %s; A loaded %d time(s), B %d\n", Describe(b_got).c_str(),
              a_calls.load(), b_calls.load());
}

TEST_F(ConsistencyTest, UnversionedLoadsOnAPodWhoseClockIsBehindSucceedAndAreCached) {
  const std::string tag = UniqueTag();
  SkewedClock behind(-50ms);
  CacheOptions oa = ClusterCacheOptions(client_);
  oa.early_refresh_beta = 0;
  CacheOptions ob = oa;
  ob.clock = &behind;
  auto a = MakeCache(oa);
  auto b = MakeCache(ob);
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 10; ++i) {
    const std::string key = "skew:{" + tag + "}:behind:" + std::to_string(i);
    if (i % 2 == 1) {
      ASSERT_TRUE(a->Set(key, "older", std::nullopt).ok());
    }
    ASSERT_TRUE(a->Invalidate(key).ok());  // a tombstone by A's clock, just before B's load
    std::atomic<int> b_calls{0}, a_calls{0};
    Result<CachedValue> v = b->Get(key, Returning("val", std::nullopt, &b_calls));
    ASSERT_TRUE(v.ok()) << "key " << i << ": " << Describe(v);
    EXPECT_EQ(v->payload(), "val");
    EXPECT_EQ(v->source(), ValueSource::kLoader);
    v = b->Get(key, Returning("val", std::nullopt, &b_calls));
    ASSERT_TRUE(v.ok()) << Describe(v);
    EXPECT_EQ(v->source(), ValueSource::kL1) << "key " << i << ": B's load was not cached";
    EXPECT_EQ(b_calls.load(), 1);
    v = a->Get(key, Returning("val", std::nullopt, &a_calls));
    ASSERT_TRUE(v.ok()) << Describe(v);
    EXPECT_EQ(v->source(), ValueSource::kL2) << "key " << i << ": B's load is not in L2";
    EXPECT_EQ(a_calls.load(), 0);
  }
}

// ---- 4. invalidated copies are never served, not even stale -----------------------

class InvalidatedCopies : public ConsistencyTest {
 protected:
  void SetUp() override {
    ConsistencyTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tag_ = UniqueTag();
    CacheOptions ob = ClusterCacheOptions(client_);
    ob.ttl = 100ms;  // L2's copy expires too: without the tombstone, v1 would be a servable stale copy
    ob.l1.default_ttl = 50ms;
    ob.max_stale = 30s;
    ob.soft_timeout = 50ms;
    ob.hard_timeout = 1s;
    ob.early_refresh_beta = 0;
    b_ = MakeCache(ob);
    a_ = MakeCache(ClusterCacheOptions(client_));
    ASSERT_TRUE(a_ && b_);
  }

  // Pod B holds v1 in its L1 past the L1 TTL (and L2's copy is expired);
  // then pod A invalidates at version 2 unless `invalidate` is false.
  void Prime(const std::string& key, bool invalidate = true) {
    Result<CachedValue> v = b_->Get(key, Returning("v1", 1));
    ASSERT_TRUE(v.ok() && v->version() == 1u) << Describe(v);
    std::this_thread::sleep_for(200ms);  // past L1 (50 ms) and L2 (100 ms) expiry, + 100 ms
    if (invalidate) {
      ASSERT_TRUE(a_->Invalidate(key, 2).ok());
    }
  }

  std::string Key(const std::string& name) { return "invalidated:{" + tag_ + "}:" + name; }

  std::string tag_;
  std::unique_ptr<Cache> a_;
  std::unique_ptr<Cache> b_;
};

bool IsV1(const Result<CachedValue>& r) { return r.ok() && (r->version() == 1u || r->payload() == "v1"); }

TEST_F(InvalidatedCopies, ControlWithoutInvalidationTheStaleCopyIsServed) {
  const std::string key = Key("control");
  Prime(key, /*invalidate=*/false);
  Result<CachedValue> v = b_->Get(key, Failing());
  EXPECT_TRUE(v.ok() && v->stale() && v->version() == 1u) << "the fail-safe itself: " << Describe(v);
}

TEST_F(InvalidatedCopies, SlowLoaderDoesNotServeTheInvalidatedCopy) {
  const std::string key = Key("slow");
  Prime(key);
  const auto t0 = SteadyClock::now();
  Result<CachedValue> v = b_->Get(key, [](std::string_view) -> Result<LoadResult> {
    std::this_thread::sleep_for(300ms);
    return LoadResult{"v2", 2};
  });
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0);
  EXPECT_FALSE(IsV1(v)) << "served the invalidated copy: " << Describe(v);
  EXPECT_TRUE(!v.ok() || (v->version() == 2u && !v->stale())) << Describe(v);
  std::printf("slow loader after invalidation: %s after %lld ms\n", Describe(v).c_str(),
              static_cast<long long>(took.count()));
}

TEST_F(InvalidatedCopies, FailingLoaderDoesNotServeTheInvalidatedCopy) {
  const std::string key = Key("failing");
  Prime(key);
  Result<CachedValue> v = b_->Get(key, Failing());
  EXPECT_FALSE(IsV1(v)) << "served the invalidated copy: " << Describe(v);
  EXPECT_FALSE(v.ok()) << Describe(v);
}

TEST_F(InvalidatedCopies, AnotherPodsLoadInFlightDoesNotServeTheInvalidatedCopy) {
  const std::string key = Key("inflight");
  Prime(key);
  Gate started;
  std::thread ta([&] {
    a_->Get(key, [&](std::string_view) -> Result<LoadResult> {
         started.Open();
         std::this_thread::sleep_for(300ms);
         return LoadResult{"v2", 2};
       })
        .status()
        .IgnoreError();
  });
  const bool a_loading = started.Wait(2s);  // A holds the lease and loads v2
  std::atomic<int> b_calls{0};
  Result<CachedValue> v = b_->Get(key, Returning("v2", 2, &b_calls));
  ta.join();
  ASSERT_TRUE(a_loading);
  EXPECT_FALSE(IsV1(v)) << "served the invalidated copy while A loaded: " << Describe(v);
  EXPECT_TRUE(!v.ok() || v->version() == 2u) << Describe(v);
  std::printf("another pod's load in flight: B got %s (B loaded %d time(s))\n", Describe(v).c_str(),
              b_calls.load());
}

TEST_F(InvalidatedCopies, GetManyDoesNotServeTheInvalidatedCopy) {
  const std::string slow_key = Key("many-slow");
  const std::string failing_key = Key("many-failing");
  Prime(slow_key);
  Prime(failing_key);
  Result<std::vector<Result<CachedValue>>> many =
      b_->GetMany({slow_key}, [](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
        std::this_thread::sleep_for(300ms);
        return std::vector<LoadResult>(ks.size(), LoadResult{"v2", 2});
      });
  ASSERT_TRUE(many.ok());
  EXPECT_FALSE(IsV1((*many)[0])) << "GetMany, slow loader: " << Describe((*many)[0]);
  EXPECT_TRUE(!(*many)[0].ok() || (*many)[0]->version() == 2u) << Describe((*many)[0]);
  many = b_->GetMany({failing_key}, [](const std::vector<std::string>&) -> Result<std::vector<LoadResult>> {
    return Status::Unavailable("database brownout");
  });
  ASSERT_TRUE(many.ok());
  EXPECT_FALSE(IsV1((*many)[0])) << "GetMany, failing loader: " << Describe((*many)[0]);
  EXPECT_FALSE((*many)[0].ok()) << Describe((*many)[0]);
}

// Beyond the brief's list: Invalidate(key) WITHOUT a version over a
// versioned entry ("drops every copy", cache.h). The invalidate script then
// writes a tombstone at the stored version + 1.
TEST_F(InvalidatedCopies, UnversionedInvalidateOfAVersionedKeyDoesNotServeTheOldCopy) {
  const std::string key = Key("unversioned-invalidate");
  Prime(key, /*invalidate=*/false);
  ASSERT_TRUE(a_->Invalidate(key).ok());
  Stored s = ReadStored(*client_, key);
  EXPECT_TRUE(s.decodable && s.kind == EntryKind::kTombstone)
      << "the tombstone written over a versioned entry does not decode: " << s.ToString();
  Result<CachedValue> v = b_->Get(key, Failing());
  EXPECT_FALSE(IsV1(v)) << "served the invalidated copy: " << Describe(v);
}

// ---- 5. corrupt entries never fence ---------------------------------------------

constexpr uint64_t kHugeVersion = 0xFFFFFFFFFFFFFFF0ULL;

// A value envelope of version kHugeVersion, well-formed but for its CRC.
std::string BadCrcEnvelope(EntryKind kind) {
  std::string e = Envelope(kind, kHugeVersion, "poison");
  e[kEnvelopeHeaderSize] ^= 0x20;  // a payload byte
  return e;
}

// The same with a length field that does not match the bytes.
std::string BadLengthEnvelope() {
  std::string e = Envelope(EntryKind::kValue, kHugeVersion, "poison");
  e[39] = static_cast<char>(e[39] + 1);
  return e;
}

TEST_F(ConsistencyTest, CorruptEntryWithAHugeVersionDoesNotFence) {
  const std::string tag = UniqueTag();
  struct Case {
    const char* name;
    std::string bytes;
    bool structurally_valid;
  };
  const std::vector<Case> cases = {
      {"bad-crc-value", BadCrcEnvelope(EntryKind::kValue), true},
      {"bad-crc-tombstone", BadCrcEnvelope(EntryKind::kTombstone), true},
      {"bad-length-value", BadLengthEnvelope(), false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // The bytes are what the case says they are.
    ASSERT_FALSE(DecodeEnvelope(c.bytes).ok());
    ASSERT_EQ(DecodeEnvelope(c.bytes, /*verify_checksum=*/false).ok(), c.structurally_valid);
    const std::string key = "corrupt:{" + tag + "}:" + c.name;
    redis::SetOptions px;
    px.ttl = 60s;
    ASSERT_TRUE(client_->Set(key, c.bytes, px).ok());

    auto a = MakeCache(ClusterCacheOptions(client_));
    auto b = MakeCache(ClusterCacheOptions(client_));
    ASSERT_TRUE(a && b);
    std::atomic<int> calls{0};
    Result<CachedValue> v = a->Get(key, Returning("v1", 1, &calls));
    ASSERT_TRUE(v.ok()) << Describe(v);
    EXPECT_EQ(v->version(), 1u);
    EXPECT_EQ(v->payload(), "v1");
    Stored s = ReadStored(*client_, key);
    EXPECT_TRUE(s.IsValueOfVersion(1) && s.payload == "v1") << "Redis holds " << s.ToString();
    v = b->Get(key, Returning("v1", 1, &calls));
    ASSERT_TRUE(v.ok()) << Describe(v);
    EXPECT_EQ(v->source(), ValueSource::kL2) << Describe(v);
    EXPECT_EQ(v->version(), 1u);
    EXPECT_EQ(calls.load(), 1);
  }
}

// Beyond Get: the other writers of L2 (GetMany's fills, Set, Invalidate) must
// not be fenced by such an entry either.
TEST_F(ConsistencyTest, CorruptEntryWithAHugeVersionDoesNotFenceGetManySetOrInvalidate) {
  const std::string tag = UniqueTag();
  const std::string poison = BadCrcEnvelope(EntryKind::kValue);
  redis::SetOptions px;
  px.ttl = 60s;
  auto a = MakeCache(ClusterCacheOptions(client_));
  auto b = MakeCache(ClusterCacheOptions(client_));
  ASSERT_TRUE(a && b);

  {
    SCOPED_TRACE("GetMany");
    const std::string key = "corrupt:{" + tag + "}:getmany";
    ASSERT_TRUE(client_->Set(key, poison, px).ok());
    Result<std::vector<Result<CachedValue>>> many =
        a->GetMany({key}, [](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
          return std::vector<LoadResult>(ks.size(), LoadResult{"v1", 1});
        });
    ASSERT_TRUE(many.ok());
    EXPECT_TRUE((*many)[0].ok() && (*many)[0]->version() == 1u) << Describe((*many)[0]);
    Stored s = ReadStored(*client_, key);
    EXPECT_TRUE(s.IsValueOfVersion(1)) << "Redis holds " << s.ToString();
  }
  {
    SCOPED_TRACE("Set");
    const std::string key = "corrupt:{" + tag + "}:set";
    ASSERT_TRUE(client_->Set(key, poison, px).ok());
    Status set = a->Set(key, "x", 1);
    EXPECT_TRUE(set.ok()) << set.ToString();
    Stored s = ReadStored(*client_, key);
    EXPECT_TRUE(s.IsValueOfVersion(1)) << "Redis holds " << s.ToString();
  }
  {
    SCOPED_TRACE("Invalidate");
    const std::string key = "corrupt:{" + tag + "}:invalidate";
    ASSERT_TRUE(client_->Set(key, poison, px).ok());
    Result<std::optional<std::string>> epoch_before = client_->Get(FenceKeyFor(key));
    ASSERT_TRUE(a->Invalidate(key, 2).ok());
    Result<std::optional<std::string>> epoch_after = client_->Get(FenceKeyFor(key));
    ASSERT_TRUE(epoch_before.ok() && epoch_after.ok());
    EXPECT_TRUE(epoch_after->has_value() && *epoch_after != *epoch_before)
        << "the invalidation did not replace the fence epoch: loads in flight are not fenced";
    // The corrupt entry (high version) made the invalidation a no-op that
    // raised the key's version floor to 2; the entry is then removed as
    // corrupt. What must hold: the corrupt entry is gone, and an older load
    // (version 1) can no longer fill, whatever the entry's fate.
    Stored s = ReadStored(*client_, key);
    EXPECT_TRUE(!s.present || (s.decodable && s.kind == EntryKind::kTombstone && s.version == 2))
        << "Redis holds " << s.ToString();
    Result<CachedValue> v1 = b->Get(key, [](std::string_view) -> Result<LoadResult> {
      return LoadResult{std::string("v1"), 1};
    });
    EXPECT_FALSE(v1.ok() && v1->version() == 1u) << "a version below the invalidation was served";
    EXPECT_FALSE(ReadStored(*client_, key).IsValueOfVersion(1)) << "a version below the invalidation was stored";
  }
}

// What a swallowed invalidation costs: a batch load in flight reads v1 (its
// fence snapshot taken while the corrupt entry was stored); Invalidate(k, 2)
// returns OK; another pod's get removes the corrupt entry; the batch's v1
// must still be refused.
TEST_F(ConsistencyTest, CorruptEntryDoesNotSwallowAnInvalidationOfALoadInFlight) {
  const std::string key = "corrupt:{" + UniqueTag() + "}:swallow";
  Row row("v1", 1);
  Gate started, release;
  BatchLoader batch = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    std::vector<LoadResult> out(ks.size(), row.Read());
    started.Open();
    release.Wait();
    return out;
  };
  CacheOptions o = ClusterCacheOptions(client_);
  o.hard_timeout = 2s;
  o.soft_timeout = 2s;
  auto p = MakeCache(o);
  auto w = MakeCache(o);
  auto q = MakeCache(o);
  OpenOnExit open_gates({&release});
  ASSERT_TRUE(p && w && q);
  redis::SetOptions px;
  px.ttl = 60s;
  ASSERT_TRUE(client_->Set(key, BadCrcEnvelope(EntryKind::kValue), px).ok());

  Result<std::vector<Result<CachedValue>>> got = Status::Internal("not run");
  std::thread tp([&] { got = p->GetMany({key}, batch); });
  const bool loading = started.Wait(3s);
  row.Write("v2", 2);
  const Status inv = w->Invalidate(key, 2);
  Result<CachedValue> qv = q->Get(key, Failing());  // removes the corrupt entry on its way
  release.Open();
  tp.join();
  ASSERT_TRUE(loading);
  ASSERT_TRUE(inv.ok()) << inv.ToString();
  ASSERT_TRUE(got.ok());
  Stored s = ReadStored(*client_, key);
  EXPECT_FALSE(s.IsValueOfVersion(1)) << "v1, read before Invalidate(k, 2) returned, was stored after it";
  EXPECT_FALSE((*got)[0].ok() && (*got)[0]->version() == 1u && (*got)[0]->source() != ValueSource::kLoader)
      << Describe((*got)[0]);
  Result<CachedValue> v = q->Get(key, Returning("v2", 2));
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->version(), 2u) << "a pod read " << Describe(v) << " after the invalidation";
  std::printf("corrupt entry + invalidation: pod Q's first get %s; batch got %s; Redis then %s\n",
              Describe(qv).c_str(), Describe((*got)[0]).c_str(), s.ToString().c_str());
}

// ---- 6. GetMany of thousands of keys over many slots ------------------------------

std::vector<std::string> ManyKeys(const std::string& prefix, int n) {
  std::vector<std::string> keys;
  keys.reserve(n);
  for (int i = 0; i < n; ++i) keys.push_back(prefix + ":{" + std::to_string(i) + "}:k");
  return keys;
}

TEST_F(ConsistencyTest, GetManyOfThreeThousandKeysFillsThemAll) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.hard_timeout = 2s;
  auto a = MakeCache(o);
  ASSERT_TRUE(a);
  const std::vector<std::string> keys = ManyKeys("bulk:" + UniqueTag(), 3000);
  std::atomic<int> calls{0};
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    calls.fetch_add(1);
    std::vector<LoadResult> out;
    out.reserve(ks.size());
    for (const auto& k : ks) out.push_back(LoadResult{"val:" + k, 1});
    return out;
  };
  const auto t0 = SteadyClock::now();
  Result<std::vector<Result<CachedValue>>> got = a->GetMany(keys, loader);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0);
  ASSERT_TRUE(got.ok());
  int ok = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if ((*got)[i].ok() && (*got)[i]->payload() == "val:" + keys[i]) {
      ++ok;
    } else if (ok + 5 > static_cast<int>(i)) {  // print the first few failures only
      ADD_FAILURE() << keys[i] << ": " << Describe((*got)[i]);
    }
  }
  EXPECT_EQ(ok, 3000);
  EXPECT_EQ(calls.load(), 1);
  Result<std::vector<std::optional<std::string>>> raw = client_->MGet(keys);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  int stored = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const Stored s = FromBytes((*raw)[i]);
    if (s.IsValueOfVersion(1) && s.payload == "val:" + keys[i]) ++stored;
  }
  EXPECT_EQ(stored, 3000) << "not every loaded key was filled into Redis";
  std::printf("GetMany of 3000 keys: %d ok, %d stored in Redis, %lld ms\n", ok, stored,
              static_cast<long long>(took.count()));
}

TEST_F(ConsistencyTest, GetManyRefusesTheFillOfAKeyInvalidatedDuringTheBatchLoad) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.hard_timeout = 2s;
  o.soft_timeout = 2s;
  const std::vector<std::string> keys = ManyKeys("bulk:" + UniqueTag(), 3000);
  const std::string victim = keys[1234];
  std::mutex db_mu;
  std::map<std::string, uint64_t> db;  // versions that differ from 1
  Gate started, release;
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    std::vector<LoadResult> out;
    out.reserve(ks.size());
    {
      std::lock_guard<std::mutex> lock(db_mu);
      for (const auto& k : ks) {
        auto it = db.find(k);
        const uint64_t v = it == db.end() ? 1 : it->second;
        out.push_back(LoadResult{"val:" + k + "@" + std::to_string(v), v});
      }
    }
    started.Open();
    release.Wait();
    return out;
  };
  auto a = MakeCache(o);  // fencing on (the default)
  auto b = MakeCache(ClusterCacheOptions(client_));
  OpenOnExit open_gates({&release});
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->l1() != nullptr);

  Result<std::vector<Result<CachedValue>>> got = Status::Internal("not run");
  std::thread ta([&] { got = a->GetMany(keys, loader); });
  const bool loading = started.Wait(3s);
  {
    std::lock_guard<std::mutex> lock(db_mu);
    db[victim] = 2;
  }
  const Status inv = b->Invalidate(victim, 2);
  release.Open();
  ta.join();
  ASSERT_TRUE(loading);
  ASSERT_TRUE(inv.ok()) << inv.ToString();
  ASSERT_TRUE(got.ok());

  const Result<CachedValue>& vr = (*got)[1234];
  EXPECT_TRUE(vr.ok() ? vr->version() == 2u : vr.status().IsAborted())
      << "the invalidated key: " << Describe(vr);
  Stored s = ReadStored(*client_, victim);
  EXPECT_FALSE(s.decodable && s.kind != EntryKind::kTombstone && s.version < 2)
      << "the old version was stored after the invalidation: " << s.ToString();
  // The pod's own L1 must not hold the old version either.
  Result<CachedValue> again = a->Get(victim, Returning("val:" + victim + "@2", 2));
  ASSERT_TRUE(again.ok()) << Describe(again);
  EXPECT_EQ(again->version(), 2u) << Describe(again);

  int ok = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i == 1234) continue;
    if ((*got)[i].ok() && (*got)[i]->version() == 1u) ++ok;
  }
  EXPECT_EQ(ok, 2999);
  Result<std::vector<std::optional<std::string>>> raw = client_->MGet(keys);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  int stored = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i != 1234 && FromBytes((*raw)[i]).IsValueOfVersion(1)) ++stored;
  }
  EXPECT_EQ(stored, 2999);
  std::printf("GetMany with a concurrent invalidation: victim %s, Redis %s; others %d ok, %d stored\n",
              Describe(vr).c_str(), s.ToString().c_str(), ok, stored);
}

}  // namespace
}  // namespace tiercache
