// The tiered cache against the real Redis Cluster: stampedes across
// processes, the stale-fill race, a dying lease holder, fail-safe serving,
// early refresh at steady load, and a Redis outage.
//
// Some tests start copies of this program as worker processes ("pods"): a
// static initializer sees TIERCACHE_CACHE_ITEST_WORKER, does the worker's job
// and exits before GoogleTest runs.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/json_codec.h"
#include "tiercache/redis/redis_client.h"

extern char** environ;

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using redis::testing::ClusterOptions;
using SteadyClock = std::chrono::steady_clock;

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

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

using ::tiercache::testing::UniqueTag;

// ---- worker processes ------------------------------------------------------

// Stampede worker: THREADS threads call get(KEY) at START_AT (wall ms); the
// loader sleeps 200 ms and counts itself with INCR COUNTER. Exit 0 when every
// thread got the value.
int StampedeWorker() {
  auto client = Client();
  if (!client) return 3;
  CacheOptions o = ClusterCacheOptions(client);
  o.lease.ttl = 3s;
  o.lease.max_wait = 3s;
  // 1,000 threads start at once on a small machine: give L2 calls room, so
  // the test measures the stampede logic rather than CPU starvation (an L2
  // call that times out repeatedly opens the breaker, and then pods load
  // without the lease, by design).
  o.l2_timeout = 1s;
  o.hard_timeout = 5s;
  o.soft_timeout = 5s;
  CounterMetrics metrics;
  o.metrics = &metrics;
  auto cache = MakeCache(o);
  if (!cache) return 3;
  const std::string key = Env("KEY");
  const std::string counter = Env("COUNTER");
  const int threads = std::atoi(Env("THREADS").c_str());
  const int64_t start_at = std::atoll(Env("START_AT").c_str());
  Loader loader = [&](std::string_view k) -> Result<LoadResult> {
    client->Command({"INCR", counter}).status().IgnoreError();
    std::this_thread::sleep_for(200ms);
    return LoadResult{"value-of-" + std::string(k), 1};
  };
  while (WallMs() < start_at) std::this_thread::sleep_for(1ms);
  std::atomic<int> ok{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&] {
      Result<CachedValue> v = cache->Get(key, loader);
      if (v.ok() && v->payload() == "value-of-" + key) ok.fetch_add(1);
    });
  }
  for (auto& t : pool) t.join();
  const CounterMetrics::Snapshot m = metrics.snapshot();
  std::printf("stampede worker: %d/%d callers got the value; lease won %llu, waited %llu, L2 errors %llu\n",
              ok.load(), threads, static_cast<unsigned long long>(m.get(Counter::kLeaseWon, Tier::kL2)),
              static_cast<unsigned long long>(m.get(Counter::kLeaseWait, Tier::kL2)),
              static_cast<unsigned long long>(m.get(Counter::kL2Error, Tier::kL2)));
  return ok.load() == threads ? 0 : 1;
}

// Lease-holder worker: takes the lease of KEY (lease TTL LEASE_MS) and hangs
// in its loader after setting HOLDING, until killed.
int HoldWorker() {
  auto client = Client();
  if (!client) return 3;
  CacheOptions o = ClusterCacheOptions(client);
  o.lease.ttl = std::chrono::milliseconds(std::atoi(Env("LEASE_MS").c_str()));
  o.hard_timeout = 120s;
  o.soft_timeout = 120s;
  o.max_load_age = 120s;
  auto cache = MakeCache(o);
  if (!cache) return 3;
  const std::string holding = Env("HOLDING");
  cache->Get(Env("KEY"), [&](std::string_view) -> Result<LoadResult> {
    client->Command({"SET", holding, "1"}).status().IgnoreError();
    std::this_thread::sleep_for(120s);
    return Status::Internal("should have been killed");
  }).status().IgnoreError();
  return 2;
}

struct WorkerHook {
  WorkerHook() {
    const std::string mode = Env("TIERCACHE_CACHE_ITEST_WORKER");
    if (mode.empty()) return;
    const int code = mode == "stampede" ? StampedeWorker() : mode == "hold" ? HoldWorker() : 4;
    std::fflush(stdout);
    std::_Exit(code);
  }
} worker_hook;

// Starts this program as a worker with extra environment variables.
pid_t SpawnWorker(const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_strings(extra_env);
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return -1;
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class CacheClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    client_ = Client();
    ASSERT_TRUE(client_ != nullptr);
  }
  std::shared_ptr<redis::RedisClient> client_;
};

// ---- tests -----------------------------------------------------------------

TEST_F(CacheClusterTest, ColdStampedeOfAThousandCallersInFourProcessesLoadsOnce) {
  constexpr int kRepetitions = 20;
  constexpr int kProcesses = 4;
  constexpr int kThreadsEach = 250;
  int max_loads = 0;
  for (int rep = 0; rep < kRepetitions; ++rep) {
    const std::string tag = UniqueTag();
    const std::string key = "stampede:{" + tag + "}:hot";
    const std::string counter = "stampede:{" + tag + "}:loads";
    const int64_t start_at = WallMs() + 400;
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcesses; ++p) {
      pids.push_back(SpawnWorker({"TIERCACHE_CACHE_ITEST_WORKER=stampede", "KEY=" + key, "COUNTER=" + counter,
                                  "THREADS=" + std::to_string(kThreadsEach),
                                  "START_AT=" + std::to_string(start_at)}));
      ASSERT_GT(pids.back(), 0);
    }
    for (pid_t pid : pids) EXPECT_EQ(WaitExit(pid), 0) << "a worker's callers did not all get the value";
    Result<std::optional<std::string>> loads = client_->Get(counter);
    ASSERT_TRUE(loads.ok() && loads->has_value());
    const int n = std::atoi((*loads)->c_str());
    EXPECT_EQ(n, 1) << "repetition " << rep;
    max_loads = std::max(max_loads, n);
  }
  std::printf("cold stampede: %d x %d callers per repetition, %d repetitions, most loads in one: %d\n",
              kProcesses, kThreadsEach, kRepetitions, max_loads);
}

// A loader paused between reading version 1 and filling, while the writer
// commits version 2 and invalidates. Returns how many of `rounds` rounds left
// version 1 in L2.
int StaleFillRounds(const std::shared_ptr<redis::RedisClient>& client, bool fencing, int rounds) {
  CacheOptions o = ClusterCacheOptions(client);
  o.version_fencing = fencing;
  o.use_l1 = false;
  auto cache = MakeCache(o);
  if (!cache) return -1;
  const std::string tag = UniqueTag();
  int stale = 0;
  for (int i = 0; i < rounds; ++i) {
    const std::string key = "race:{" + tag + "}:" + std::to_string(i);
    std::atomic<uint64_t> source{1};
    std::atomic<int> calls{0};
    std::barrier read_done(2), invalidated(2);
    Loader loader = [&](std::string_view k) -> Result<LoadResult> {
      const uint64_t v = source.load();
      if (calls.fetch_add(1) == 0) {
        read_done.arrive_and_wait();
        invalidated.arrive_and_wait();
      }
      return LoadResult{std::string(k) + "@" + std::to_string(v), v};
    };
    std::thread reader([&] { cache->Get(key, loader).status().IgnoreError(); });
    read_done.arrive_and_wait();
    source = 2;
    if (!cache->Invalidate(key, 2).ok()) ++stale;  // count a failed invalidation as a failure
    invalidated.arrive_and_wait();
    reader.join();
    Result<std::optional<std::string>> raw = client->Get(key);
    if (raw.ok() && raw->has_value()) {
      Result<EnvelopeView> e = DecodeEnvelope(**raw);
      if (e.ok() && e->kind == EntryKind::kValue && e->version < 2) ++stale;
    }
  }
  return stale;
}

TEST_F(CacheClusterTest, StaleFillRaceNeverLeavesOldDataWithFencing) {
  EXPECT_EQ(StaleFillRounds(client_, /*fencing=*/true, 1000), 0);
}

TEST_F(CacheClusterTest, StaleFillRaceShowsWithoutFencing) {
  EXPECT_EQ(StaleFillRounds(client_, /*fencing=*/false, 50), 50);
}

TEST_F(CacheClusterTest, KilledLeaseHolderIsReplacedAfterTheLeaseTtl) {
  const std::string tag = UniqueTag();
  const std::string key = "holder:{" + tag + "}:k";
  const std::string holding = "holder:{" + tag + "}:holding";
  constexpr auto kLease = 1500ms;
  pid_t pid = SpawnWorker({"TIERCACHE_CACHE_ITEST_WORKER=hold", "KEY=" + key, "HOLDING=" + holding,
                           "LEASE_MS=" + std::to_string(kLease.count())});
  ASSERT_GT(pid, 0);
  const auto t_spawn = SteadyClock::now();
  bool held = false;
  while (!held && SteadyClock::now() - t_spawn < 10s) {
    Result<std::optional<std::string>> h = client_->Get(holding);
    held = h.ok() && h->has_value();
    if (!held) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(held) << "the worker never took the lease";
  const auto t_held = SteadyClock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  WaitExit(pid);

  CacheOptions o = ClusterCacheOptions(client_);
  o.hard_timeout = 400ms;
  o.soft_timeout = 400ms;
  o.lease.max_wait = 300ms;
  o.lease.on_wait_timeout = LeaseWaitTimeoutAction::kFail;
  auto cache = MakeCache(o);
  ASSERT_TRUE(cache != nullptr);
  std::atomic<int> loads{0};
  Loader loader = [&](std::string_view) -> Result<LoadResult> {
    loads.fetch_add(1);
    return LoadResult{"fresh", 1};
  };
  std::chrono::milliseconds worst{0};
  bool loaded = false;
  auto loaded_after = 0ms;
  while (!loaded && SteadyClock::now() - t_held < 10s) {
    const auto t0 = SteadyClock::now();
    Result<CachedValue> v = cache->Get(key, loader);
    worst = std::max(worst, std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0));
    if (v.ok()) {
      loaded = true;
      loaded_after = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t_held);
      EXPECT_EQ(v->payload(), "fresh");
    } else {
      EXPECT_TRUE(v.status().IsDeadlineExceeded()) << v.status().ToString();
    }
  }
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loads.load(), 1);
  EXPECT_LE(worst, 400ms + 150ms) << "a caller waited past its deadline";
  EXPECT_GE(loaded_after, kLease - 300ms) << "loaded before the dead holder's lease expired";
  EXPECT_LE(loaded_after, kLease + 1000ms);
  std::printf("lease holder killed: next load %lld ms after, slowest call %lld ms\n",
              static_cast<long long>(loaded_after.count()), static_cast<long long>(worst.count()));
}

TEST_F(CacheClusterTest, FailingOrSlowLoaderServesStaleWithinTheSoftTimeout) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.ttl = 300ms;
  o.l1.default_ttl = 100ms;
  o.soft_timeout = 100ms;
  o.max_stale = 30s;
  auto cache = MakeCache(o);
  const std::string key = "failsafe:{" + UniqueTag() + "}:k";
  ASSERT_TRUE(cache->Get(key, [](std::string_view) -> Result<LoadResult> { return LoadResult{"v1", 1}; }).ok());
  std::this_thread::sleep_for(400ms);

  Result<CachedValue> v = cache->Get(key, [](std::string_view) -> Result<LoadResult> {
    return Status::Unavailable("database brownout");
  });
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(v->stale());
  EXPECT_EQ(v->payload(), "v1");

  const auto t0 = SteadyClock::now();
  v = cache->Get(key, [](std::string_view) -> Result<LoadResult> {
    std::this_thread::sleep_for(1s);
    return LoadResult{"v2", 2};
  });
  const auto took = SteadyClock::now() - t0;
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->stale());
  EXPECT_LT(took, 100ms + 100ms);
}

TEST_F(CacheClusterTest, EarlyRefreshAtSteadyLoadKeepsCallersOffTheLoader) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.use_l1 = false;  // every read is an L2 read: the worst case for refresh timing
  o.ttl = 2s;
  auto cache = MakeCache(o);
  const std::string key = "xfetch:{" + UniqueTag() + "}:k";
  std::atomic<int> loads{0};
  Loader loader = [&](std::string_view) -> Result<LoadResult> {
    loads.fetch_add(1);
    std::this_thread::sleep_for(50ms);
    return LoadResult{"value", 1};
  };
  const auto start = SteadyClock::now();
  int waited_on_loader = 0;
  int reads = 0;
  for (auto next = start; SteadyClock::now() - start < 20s; next += 5ms) {  // 200 reads/s
    std::this_thread::sleep_until(next);
    Result<CachedValue> v = cache->Get(key, loader);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ++reads;
    if (SteadyClock::now() - start > 500ms && v->source() == ValueSource::kLoader) ++waited_on_loader;
  }
  std::printf("early refresh: %d reads, %d loads (ideal 10), %d reads waited on a loader after warm-up\n", reads,
              loads.load(), waited_on_loader);
  EXPECT_LE(loads.load(), 12);
  EXPECT_GE(loads.load(), 9);
  EXPECT_EQ(waited_on_loader, 0);
}

// Stops every master (SIGSTOP) for a while; always resumes them.
class MastersStopped {
 public:
  explicit MastersStopped(const std::vector<int>& master_ports) {
    for (int port : master_ports) {
      const int pid = redis::testing::ProcessInfoOf(port).pid;
      if (pid > 0 && ::kill(pid, SIGSTOP) == 0) pids_.push_back(pid);
    }
  }
  ~MastersStopped() { Resume(); }
  void Resume() {
    for (int pid : pids_) ::kill(pid, SIGCONT);
    pids_.clear();
  }
  size_t stopped() const { return pids_.size(); }

 private:
  std::vector<int> pids_;
};

TEST_F(CacheClusterTest, RedisOutageIsServedFromL1AndTheLoaderThenL2Returns) {
  const auto ports = ::tiercache::testing::RedisClusterPorts();
  ASSERT_TRUE(redis::testing::WaitClusterHealthy(ports, 30));
  const std::string tag = UniqueTag();
  CacheOptions o = ClusterCacheOptions(client_);
  o.soft_timeout = 200ms;
  o.hard_timeout = 1s;
  o.breaker_failure_threshold = 3;
  o.breaker_open_duration = 500ms;
  CounterMetrics metrics;
  o.metrics = &metrics;
  auto cache = MakeCache(o);
  // Written before the outage by another pod: in L2, not in this cache's L1.
  auto other = MakeCache(ClusterCacheOptions(client_));
  const std::string shared_key = "outage:{" + tag + "}:shared";
  ASSERT_TRUE(other->Set(shared_key, "from-l2", 1).ok());
  Loader loader = [](std::string_view k) -> Result<LoadResult> {
    std::this_thread::sleep_for(5ms);
    return LoadResult{"loaded:" + std::string(k), 1};
  };

  std::vector<double> latencies_ms;
  {
    MastersStopped stopped(redis::testing::MasterPorts(ports));
    ASSERT_EQ(stopped.stopped(), 3u);
    const auto start = SteadyClock::now();
    for (int i = 0; SteadyClock::now() - start < 3s; ++i) {
      const std::string key = "outage:{" + tag + "}:" + std::to_string(i % 100);
      const auto t0 = SteadyClock::now();
      Result<CachedValue> v = cache->Get(key, loader);
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count());
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      std::this_thread::sleep_for(5ms);
    }
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double p99 = latencies_ms[latencies_ms.size() * 99 / 100];
  std::printf("redis outage: %zu gets, p99 %.1f ms, max %.1f ms, breaker opened %llu times\n", latencies_ms.size(),
              p99, latencies_ms.back(),
              static_cast<unsigned long long>(metrics.snapshot().get(Counter::kBreakerOpened, Tier::kL2)));
  EXPECT_LE(p99, 200.0 + 5.0 + 20.0) << "p99 during the outage above soft timeout + loader time";
  EXPECT_GE(metrics.snapshot().get(Counter::kBreakerOpened, Tier::kL2), 1u);

  ASSERT_TRUE(redis::testing::WaitClusterHealthy(ports, 30));
  bool back_to_l2 = false;
  for (int i = 0; i < 100 && !back_to_l2; ++i) {
    Result<CachedValue> v = cache->Get(shared_key, loader);
    back_to_l2 = v.ok() && v->source() == ValueSource::kL2 && v->payload() == "from-l2";
    if (!back_to_l2) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(back_to_l2) << "the same cache did not return to L2 after the restart";
}

TEST_F(CacheClusterTest, CorruptOrForeignPayloadInRedisIsCountedAndOverwritten) {
  CounterMetrics metrics;
  CacheOptions o = ClusterCacheOptions(client_);
  o.use_l1 = false;
  o.metrics = &metrics;
  auto cache = MakeCache(o);
  const std::string tag = UniqueTag();
  const std::string corrupt = "corrupt:{" + tag + "}:1";
  const std::string foreign = "corrupt:{" + tag + "}:2";
  ASSERT_TRUE(client_->Set(corrupt, std::string("TC\x01\x00garbage", 11)).ok());
  ASSERT_TRUE(client_->Set(foreign, "{\"legacy\":\"json from the old service\"}").ok());
  int loads = 0;
  Loader loader = [&](std::string_view k) -> Result<LoadResult> {
    ++loads;
    return LoadResult{"fresh:" + std::string(k), 1};
  };
  for (const std::string& k : {corrupt, foreign}) {
    Result<CachedValue> v = cache->Get(k, loader);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->payload(), "fresh:" + k);
  }
  EXPECT_EQ(loads, 2);
  EXPECT_EQ(metrics.snapshot().get(Counter::kDecodeError, Tier::kL2), 2u);
  for (const std::string& k : {corrupt, foreign}) {
    Result<std::optional<std::string>> raw = client_->Get(k);
    ASSERT_TRUE(raw.ok() && raw->has_value());
    EXPECT_TRUE(DecodeEnvelope(**raw).ok()) << "not overwritten with an envelope";
    EXPECT_EQ(cache->Get(k, loader)->source(), ValueSource::kL2);
  }
}

TEST_F(CacheClusterTest, NegativeEntriesAreSharedThroughRedis) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.negative_ttl = 500ms;
  auto a = MakeCache(o);
  auto b = MakeCache(o);
  const std::string key = "negative:{" + UniqueTag() + "}:ghost";
  std::atomic<int> loads{0};
  Loader missing = [&](std::string_view) -> Result<LoadResult> {
    loads.fetch_add(1);
    return LoadResult{std::nullopt, 1};
  };
  Result<CachedValue> v = a->Get(key, missing);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->found());
  v = b->Get(key, missing);  // another pod: from L2
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->found());
  EXPECT_EQ(v->source(), ValueSource::kL2);
  EXPECT_EQ(loads.load(), 1);
  std::this_thread::sleep_for(600ms);
  EXPECT_FALSE(b->Get(key, missing)->found());
  EXPECT_EQ(loads.load(), 2) << "the negative entry outlived negative_ttl";
}

TEST_F(CacheClusterTest, GetManySpansSlotsInOneLoaderCall) {
  auto cache = MakeCache(ClusterCacheOptions(client_));
  auto other = MakeCache(ClusterCacheOptions(client_));
  const std::string tag = UniqueTag();
  std::vector<std::string> keys;
  for (int i = 0; i < 200; ++i) keys.push_back("many:{" + tag + ":" + std::to_string(i) + "}:post");
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(other->Set(keys[i], "stored:" + keys[i], 1).ok());
  int calls = 0;
  size_t asked = 0;
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    ++calls;
    asked = ks.size();
    std::vector<LoadResult> out;
    for (const auto& k : ks) out.push_back(LoadResult{"loaded:" + k, 1});
    return out;
  };
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader);
  ASSERT_TRUE(got.ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE((*got)[i].ok()) << i << ": " << (*got)[i].status().ToString();
    EXPECT_EQ((*got)[i]->payload(), (i < 100 ? "stored:" : "loaded:") + keys[i]);
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(asked, 100u);
  // Everything is now in L2 for a third pod.
  auto third = MakeCache(ClusterCacheOptions(client_));
  got = third->GetMany(keys, loader);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(calls, 1);
}

// The usual batch, 100 keys of one hash tag, is read with one MGET: every
// value it returns still goes through the envelope's checks. A payload byte
// flipped in Redis (only the CRC is wrong), bytes of another library and a
// value of another codec are each a decode error, loaded instead; the rest
// are served from L2, in order.
TEST_F(CacheClusterTest, GetManyInOneSlotChecksEveryValueOfTheMget) {
  const std::string tag = UniqueTag();
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) keys.push_back("many:{" + tag + "}:" + std::to_string(i));
  auto writer = MakeCache(ClusterCacheOptions(client_));
  for (const std::string& k : keys) ASSERT_TRUE(writer->Set(k, "stored:" + k, 1).ok());
  Result<std::optional<std::string>> stored = client_->Get(keys[3]);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  std::string flipped = **stored;
  flipped[flipped.size() - kEnvelopeTrailerSize - 1] ^= 0x01;
  ASSERT_FALSE(DecodeEnvelope(flipped).ok());
  ASSERT_TRUE(DecodeEnvelope(flipped, /*verify_checksum=*/false).ok()) << "only the CRC is wrong";
  ASSERT_TRUE(client_->Set(keys[3], flipped).ok());
  ASSERT_TRUE(client_->Set(keys[50], "{\"legacy\":\"json from the old service\"}").ok());
  CacheOptions json = ClusterCacheOptions(client_);
  json.codec_id = kCodecJson;
  ASSERT_TRUE(MakeCache(json)->Set(keys[99], "\"json\"", 2).ok());

  CounterMetrics metrics;
  CacheOptions o = ClusterCacheOptions(client_);
  o.use_l1 = false;
  o.metrics = &metrics;
  auto cache = MakeCache(o);
  std::vector<std::string> asked;
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    asked.insert(asked.end(), ks.begin(), ks.end());
    std::vector<LoadResult> out;
    for (const auto& k : ks) out.push_back(LoadResult{"loaded:" + k, 3});
    return out;
  };
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE((*got)[i].ok()) << keys[i] << ": " << (*got)[i].status().ToString();
    const bool bad = i == 3 || i == 50 || i == 99;
    EXPECT_EQ((*got)[i]->source(), bad ? ValueSource::kLoader : ValueSource::kL2) << keys[i];
    EXPECT_EQ((*got)[i]->payload(), (bad ? "loaded:" : "stored:") + keys[i]);
  }
  EXPECT_EQ(asked, (std::vector<std::string>{keys[3], keys[50], keys[99]}));
  EXPECT_EQ(metrics.snapshot().get(Counter::kDecodeError, Tier::kL2), 3u);
  EXPECT_EQ(metrics.snapshot().get(Counter::kHit, Tier::kL2), 97u);
}

// Keys of several tags, interleaved, untagged keys and keys whose braces do
// not make a tag: each key's slot is its own (a slot remembered from the
// previous key's tag must never be reused for another tag), so every value
// comes back from L2, in order, whatever the mix of one-slot and
// many-slot batches.
TEST_F(CacheClusterTest, GetManyOfInterleavedTagsReadsEveryKeyFromItsSlot) {
  const std::string tag = UniqueTag();
  const std::vector<std::string> mixed = {
      "mix:{" + tag + ":a}:1", "mix:{" + tag + ":b}:1", "mix:{" + tag + ":a}:2",
      "mix:" + tag + ":plain:1", "mix:" + tag + ":plain:2", "mix:{}:{" + tag + ":a}:3",
      "mix:{" + tag + ":a", "mix:{" + tag + ":a}:4", "mix:{" + tag + ":b}:2",
  };
  auto writer = MakeCache(ClusterCacheOptions(client_));
  for (const std::string& k : mixed) ASSERT_TRUE(writer->Set(k, "stored:" + k, 1).ok());
  CacheOptions o = ClusterCacheOptions(client_);
  o.use_l1 = false;
  auto cache = MakeCache(o);
  int calls = 0;
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    ++calls;
    std::vector<LoadResult> out;
    for (const auto& k : ks) out.push_back(LoadResult{"loaded:" + k, 2});
    return out;
  };
  // The whole mix, then each pair of neighbours (two tags, or one tag and
  // its own slot), then runs of one tag with another tag's key last.
  std::vector<std::vector<std::string>> batches = {mixed};
  for (size_t i = 0; i + 1 < mixed.size(); ++i) batches.push_back({mixed[i], mixed[i + 1]});
  batches.push_back({mixed[0], mixed[2], mixed[7], mixed[1]});
  batches.push_back({mixed[1], mixed[8], mixed[0]});
  for (const auto& batch : batches) {
    Result<std::vector<Result<CachedValue>>> got = cache->GetMany(batch, loader);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->size(), batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      ASSERT_TRUE((*got)[i].ok()) << batch[i] << ": " << (*got)[i].status().ToString();
      EXPECT_EQ((*got)[i]->source(), ValueSource::kL2) << batch[i];
      EXPECT_EQ((*got)[i]->payload(), "stored:" + batch[i]);
    }
  }
  EXPECT_EQ(calls, 0);
}

struct Post {
  int64_t id = 0;
  std::string title;
  int64_t version = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Post, id, title, version)

TEST_F(CacheClusterTest, TypedJsonCacheRoundTripsThroughRedis) {
  CacheOptions o = ClusterCacheOptions(client_);
  o.use_l1 = false;
  auto made = TypedCache<JsonCodec<Post>>::Create(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  auto& cache = **made;
  const std::string key = "posts:{community:" + UniqueTag() + "}:7";
  using Typed = TypedCache<JsonCodec<Post>>;
  Typed::TypedLoader loader = [](std::string_view) -> Result<Typed::Loaded> {
    return Typed::Loaded{Post{7, "hello", 3}, 3};
  };
  Result<Typed::Got> first = cache.Get(key, loader);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  Result<Typed::Got> second = cache.Get(key, loader);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->source, ValueSource::kL2);
  ASSERT_TRUE(second->value.has_value());
  EXPECT_EQ(second->value->title, "hello");
  EXPECT_EQ(second->version, 3u);
  Result<std::optional<std::string>> raw = client_->Get(key);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  EXPECT_EQ(DecodeEnvelope(**raw)->codec_id, kCodecJson);
  EXPECT_EQ(DecodeEnvelope(**raw)->payload, R"({"id":7,"title":"hello","version":3})");
}

}  // namespace
}  // namespace tiercache
