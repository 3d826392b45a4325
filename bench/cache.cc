// bench_cache (`make bench-cache`): the tiered cache on the local Redis Cluster.
//
//   1. get() throughput (Google Benchmark) and latency (p50/p99) for an L1 hit,
//      an L2 hit (L1 off) and a miss with a 1 ms loader, at 1 and 64 callers.
//   2. Cold stampede: 1,000 callers over 4 pods (4 caches, each with its own
//      client, L1 and single-flight, in this process) on one cold key, loader
//      sleeping 200 ms, 20 repetitions: loader calls per repetition (ideal 1).
//   3. Early refresh at steady load: 200 reads/s for 20 s on one key, TTL 2 s,
//      50 ms loader: loader calls against the ideal (20 s / 2 s = 10), and the
//      read latency p99 against the p99 of L2 hits read at the same pace (a
//      key an hour from expiry, 5 s, same run).
// Baselines measured in the same run, for the ratios: the same L1 reads from
// an L1Cache alone (cache_l1_hit_vs_raw_l1), the client's own GET of the same
// keys (cache_l2_hit_1c_p50_vs_client), and one L2 hit against one GetMany of
// 100 keys in one slot (get_many_100_vs_l2_hit), with the floor that ratio
// stands on: the client's own MGET of those 100 keys against its own GET
// (client_mget_100_vs_get: what Redis and the protocol alone cost for 100
// values against one). Those four single-caller latencies are measured
// interleaved (8 rounds of 250 ms each), so that the machine's load changing
// during the run does not tilt their ratios.
// Ends with RESULT lines. Reads TIERCACHE_REDIS_PORT_BASE (default 7000).
//
// For profiling, TIERCACHE_BENCH_GET_MANY_CALLS=N runs only N GetMany of the
// 100 batch keys and N client MGETs of them (alternated, in blocks of 10),
// each side in a function of its own (GetManyCalls, ClientMGetCalls), and
// prints the thread CPU time per call of each. Instructions per call:
// valgrind --tool=callgrind --collect-atstart=no, one --toggle-collect= per
// side ('*GetManyCalls*', '*ClientMGetCalls*'), then callgrind_annotate
// --inclusive=yes on its output. TIERCACHE_BENCH_SINGLE_CALLER_ONLY=1 runs
// only the four interleaved single-caller latencies and prints their RESULT
// lines (about 10 s: for A/B runs alternating two builds).
// TIERCACHE_BENCH_SIM=cache|raw runs only 200,000 L1 hits through the cache
// or from the L1Cache alone, in SimulatedHits(): instructions per hit, under
// valgrind --tool=callgrind --toggle-collect='*SimulatedHits*' (divide its
// total by the hits the SIM line prints). Like every mode it builds the
// whole fixture first, so it needs the local Redis Cluster up.
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l1_cache.h"
#include "tiercache/redis/redis_client.h"

namespace {

using namespace std::chrono_literals;
using tiercache::Cache;
using tiercache::CacheOptions;
using tiercache::CachedValue;
using tiercache::LoadResult;
using tiercache::GetOptions;
using tiercache::Loader;
using tiercache::Result;
using SteadyClock = std::chrono::steady_clock;

std::shared_ptr<tiercache::redis::RedisClient> NewClient() {
  tiercache::redis::RedisClientOptions o;
  const char* base = std::getenv("TIERCACHE_REDIS_PORT_BASE");
  const int port = base ? std::atoi(base) : 7000;
  for (int i = 0; i < 6; ++i) o.seeds.push_back({"127.0.0.1", port + i});
  auto c = tiercache::redis::RedisClient::Create(o);
  if (!c.ok()) {
    std::fprintf(stderr, "bench_cache: cannot reach the Redis Cluster: %s\n", c.status().ToString().c_str());
    std::exit(2);
  }
  return std::shared_ptr<tiercache::redis::RedisClient>(std::move(*c));
}

// Default options (early refresh on, β = 1), except TTLs of an hour: every
// hit of the run stays a hit of its tier, and no read comes near an expiry
// (so early refresh only checks, it never reloads).
std::unique_ptr<Cache> NewCache(std::shared_ptr<tiercache::redis::RedisClient> client, bool use_l1,
                                int loader_threads = 4) {
  CacheOptions o;
  o.l2 = tiercache::MakeRedisL2Store(std::move(client));
  o.use_l1 = use_l1;
  o.loader_threads = loader_threads;
  o.ttl = std::chrono::hours(1);
  o.l1.default_ttl = std::chrono::hours(1);
  auto c = Cache::Create(o);
  if (!c.ok()) std::exit(2);
  return std::move(*c);
}

std::string Tag() {
  static std::mt19937_64 rng(std::random_device{}());
  return std::to_string(rng() % 1000000000000ULL);
}

const Loader kValueLoader = [](std::string_view) -> Result<LoadResult> {
  return LoadResult{std::string(200, 'v'), 1};
};
const Loader kOneMsLoader = [](std::string_view) -> Result<LoadResult> {
  std::this_thread::sleep_for(1ms);
  return LoadResult{std::string(200, 'v'), 1};
};

constexpr int kHotKeys = 1000;
constexpr int kBatchKeys = 100;

std::unique_ptr<tiercache::L1Cache> NewRawL1() {
  tiercache::L1Options o;  // the tiered cache's L1 options, as NewCache sets them
  o.default_ttl = std::chrono::hours(1);
  auto c = tiercache::L1Cache::Create(o);
  if (!c.ok()) std::exit(2);
  return std::move(*c);
}

struct Fixture {
  std::shared_ptr<tiercache::redis::RedisClient> client = NewClient();
  std::unique_ptr<Cache> with_l1 = NewCache(client, true);
  std::unique_ptr<Cache> l2_only = NewCache(client, false);
  std::unique_ptr<Cache> for_misses = NewCache(client, true, 64);
  // The baseline of cache_l1_hit_vs_raw_l1: an L1Cache alone, holding the
  // same keys with values of the same size as the tiered cache's L1 entries.
  std::unique_ptr<tiercache::L1Cache> raw_l1 = NewRawL1();
  std::string tag = Tag();
  std::atomic<uint64_t> miss_seq{0};
  std::vector<std::string> keys;
  std::vector<std::string> batch_keys;  // kBatchKeys in one hash slot
  Fixture() {
    tiercache::L1Fill fill;
    fill.version = 1;
    for (int i = 0; i < kHotKeys; ++i) {
      keys.push_back("bench:{" + tag + ":" + std::to_string(i % 64) + "}:" + std::to_string(i));
      Result<CachedValue> v = with_l1->Get(keys.back(), kValueLoader);
      const size_t stored = v.ok() ? v->payload().size() + tiercache::kEnvelopeHeaderSize +
                                         tiercache::kEnvelopeTrailerSize
                                   : 244;
      (void)raw_l1->Set(keys.back(), std::make_shared<const std::string>(stored, 'v'), fill);
    }
    for (int i = 0; i < kBatchKeys; ++i) {
      batch_keys.push_back("bench:{" + tag + ":batch}:" + std::to_string(i));
      (void)l2_only->Get(batch_keys.back(), kValueLoader);
    }
  }
};
Fixture* g_fixture = nullptr;

// ---- 1. throughput with Google Benchmark ------------------------------------

void BM_L1Hit(benchmark::State& state) {
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    Result<CachedValue> v = g_fixture->with_l1->Get(g_fixture->keys[i++ % kHotKeys], kValueLoader);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_L1Hit)->Threads(1)->Threads(64)->UseRealTime()->MinTime(1.0);

// The same reads, in the same order, from the L1Cache alone.
void BM_RawL1Hit(benchmark::State& state) {
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    auto v = g_fixture->raw_l1->Get(g_fixture->keys[i++ % kHotKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawL1Hit)->Threads(1)->UseRealTime()->MinTime(1.0);

void BM_L2Hit(benchmark::State& state) {
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    Result<CachedValue> v = g_fixture->l2_only->Get(g_fixture->keys[i++ % kHotKeys], kValueLoader);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_L2Hit)->Threads(1)->Threads(64)->UseRealTime()->MinTime(1.0);

void BM_MissWith1msLoader(benchmark::State& state) {
  for (auto _ : state) {
    const std::string key = "bench:{" + g_fixture->tag + "}:miss:" + std::to_string(g_fixture->miss_seq++);
    Result<CachedValue> v = g_fixture->for_misses->Get(key, kOneMsLoader);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MissWith1msLoader)->Threads(1)->Threads(64)->UseRealTime()->MinTime(1.0);

// Keeps items_per_second of every run, by name.
class Collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> rates;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto it = r.counters.find("items_per_second");
      if (it != r.counters.end()) rates[r.benchmark_name()] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// ---- latency percentiles ------------------------------------------------------

struct Latency {
  double ops_per_s = 0, p50_us = 0, p99_us = 0;
};

// `callers` threads call `op(thread, i)` for `duration`.
template <typename Op>
Latency Measure(int callers, std::chrono::milliseconds duration, Op op) {
  std::vector<std::vector<double>> per(callers);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const auto t0 = SteadyClock::now();
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const auto a = SteadyClock::now();
        op(t, i);
        per[t].push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - a).count());
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& th : threads) th.join();
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Latency l;
  if (all.empty()) return l;
  l.ops_per_s = static_cast<double>(all.size()) / secs;
  l.p50_us = all[all.size() / 2];
  l.p99_us = all[all.size() * 99 / 100];
  return l;
}

// Runs each of `ops` (one caller, this thread) for `slice` in turn,
// `rounds` times; one Latency per op over all its rounds.
std::vector<Latency> MeasureInterleaved(const std::vector<std::function<void(uint64_t)>>& ops, int rounds,
                                        std::chrono::milliseconds slice) {
  std::vector<std::vector<double>> per(ops.size());
  std::vector<double> busy_s(ops.size(), 0);
  std::vector<uint64_t> next(ops.size(), 0);
  for (int r = 0; r < rounds; ++r) {
    for (size_t o = 0; o < ops.size(); ++o) {
      const auto t0 = SteadyClock::now();
      for (auto now = t0; now - t0 < slice;) {
        const auto a = SteadyClock::now();
        ops[o](next[o]++);
        now = SteadyClock::now();
        per[o].push_back(std::chrono::duration<double, std::micro>(now - a).count());
      }
      busy_s[o] += std::chrono::duration<double>(SteadyClock::now() - t0).count();
    }
  }
  std::vector<Latency> out(ops.size());
  for (size_t o = 0; o < ops.size(); ++o) {
    std::vector<double>& all = per[o];
    if (all.empty()) continue;
    std::sort(all.begin(), all.end());
    out[o].ops_per_s = static_cast<double>(all.size()) / busy_s[o];
    out[o].p50_us = all[all.size() / 2];
    out[o].p99_us = all[all.size() * 99 / 100];
  }
  return out;
}

// ---- 2. cold stampede -------------------------------------------------------------

int ColdStampedeMaxLoads(int repetitions) {
  std::vector<std::unique_ptr<Cache>> pods;
  for (int p = 0; p < 4; ++p) {
    CacheOptions o;
    o.l2 = tiercache::MakeRedisL2Store(NewClient());
    o.lease.max_wait = 3s;
    o.hard_timeout = 5s;
    o.soft_timeout = 5s;
    o.l2_timeout = 1s;
    pods.push_back(std::move(*Cache::Create(o)));
  }
  int max_loads = 0;
  for (int rep = 0; rep < repetitions; ++rep) {
    const std::string key = "stampede:{" + Tag() + "}:cold";
    std::atomic<int> loads{0}, ok{0};
    Loader loader = [&](std::string_view) -> Result<LoadResult> {
      loads.fetch_add(1);
      std::this_thread::sleep_for(200ms);
      return LoadResult{"value", 1};
    };
    std::atomic<bool> go{false};
    std::vector<std::thread> callers;
    for (int c = 0; c < 1000; ++c) {
      Cache* pod = pods[c % 4].get();
      callers.emplace_back([&, pod] {
        while (!go.load()) std::this_thread::yield();
        if (pod->Get(key, loader).ok()) ok.fetch_add(1);
      });
    }
    go = true;
    for (auto& t : callers) t.join();
    if (ok.load() != 1000) std::printf("stampede repetition %d: only %d of 1000 callers got the value\n", rep, ok.load());
    max_loads = std::max(max_loads, loads.load());
  }
  return max_loads;
}

// ---- 3. early refresh at steady load -----------------------------------------------

struct EarlyRefresh {
  int loads = 0;
  int waited = 0;
  double p99_us = 0;
  // The same paced reads of a key far from expiry (no refresh): the L2-hit
  // p99 under the same conditions (a read every 5 ms after a sleep, not a
  // tight loop), measured in the same run.
  double paced_l2_hit_p99_us = 0;
};

// Reads `key` every 5 ms for `duration`; latencies after the first 500 ms.
std::vector<double> PacedReads(Cache& cache, const std::string& key, const Loader& loader,
                               const GetOptions& options, std::chrono::milliseconds duration,
                               int* waited) {
  std::vector<double> lat;
  const auto start = SteadyClock::now();
  for (auto next = start; SteadyClock::now() - start < duration; next += 5ms) {
    std::this_thread::sleep_until(next);
    const auto a = SteadyClock::now();
    Result<CachedValue> v = cache.Get(key, loader, options);
    const double us = std::chrono::duration<double, std::micro>(SteadyClock::now() - a).count();
    if (SteadyClock::now() - start > 500ms) {
      lat.push_back(us);
      if (v.ok() && v->source() == tiercache::ValueSource::kLoader) ++*waited;
    }
  }
  std::sort(lat.begin(), lat.end());
  return lat;
}

double P99(const std::vector<double>& sorted) { return sorted.empty() ? 0 : sorted[sorted.size() * 99 / 100]; }

EarlyRefresh SteadyLoad(std::chrono::seconds duration) {
  CacheOptions o;
  o.l2 = tiercache::MakeRedisL2Store(NewClient());
  o.use_l1 = false;  // every read goes to L2: the hardest case for refresh timing
  o.ttl = 2s;
  o.ttl_jitter = 0;
  auto cache = std::move(*Cache::Create(o));
  const std::string key = "xfetch:{" + Tag() + "}:k";
  std::atomic<int> loads{0};
  Loader loader = [&](std::string_view) -> Result<LoadResult> {
    loads.fetch_add(1);
    std::this_thread::sleep_for(50ms);
    return LoadResult{"value", 1};
  };
  EarlyRefresh out;
  out.p99_us = P99(PacedReads(*cache, key, loader, {}, duration, &out.waited));
  out.loads = loads.load();
  // Baseline: a key cached for an hour, so no read comes near its expiry.
  const std::string steady_key = "xfetch:{" + Tag() + "}:steady";
  GetOptions hour;
  hour.ttl = std::chrono::hours(1);
  Loader steady_loader = [](std::string_view) -> Result<LoadResult> { return LoadResult{"value", 1}; };
  int ignored = 0;
  (void)cache->Get(steady_key, steady_loader, hour);
  out.paced_l2_hit_p99_us = P99(PacedReads(*cache, steady_key, steady_loader, hour, 5000ms, &ignored));
  return out;
}

const tiercache::BatchLoader kBatchLoader = [](const std::vector<std::string>& ks) {
  return Result<std::vector<LoadResult>>(std::vector<LoadResult>(ks.size(), LoadResult{std::string(200, 'v'), 1}));
};

double ThreadCpuUs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

// The two sides of TIERCACHE_BENCH_GET_MANY_CALLS, apart for a profiler.
// Each returns how many of its calls failed.
__attribute__((noinline)) int GetManyCalls(Fixture& f, int n) {
  int failed = 0;
  for (int i = 0; i < n; ++i) {
    Result<std::vector<Result<CachedValue>>> r = f.l2_only->GetMany(f.batch_keys, kBatchLoader);
    if (!r.ok() || r->size() != f.batch_keys.size() ||
        !std::all_of(r->begin(), r->end(), [](const auto& v) { return v.ok() && v->source() == tiercache::ValueSource::kL2; })) {
      ++failed;
    }
  }
  return failed;
}
__attribute__((noinline)) int ClientMGetCalls(Fixture& f, int n) {
  int failed = 0;
  for (int i = 0; i < n; ++i) {
    auto r = f.client->MGet(f.batch_keys);
    if (!r.ok() || r->size() != f.batch_keys.size()) ++failed;
  }
  return failed;
}

int GetManyOnly(Fixture& f, int n) {
  double get_many_us = 0, mget_us = 0;
  int failed = 0;
  for (int done = 0; done < n; done += 10) {
    const int block = std::min(10, n - done);
    double t0 = ThreadCpuUs();
    failed += GetManyCalls(f, block);
    double t1 = ThreadCpuUs();
    failed += ClientMGetCalls(f, block);
    double t2 = ThreadCpuUs();
    get_many_us += t1 - t0;
    mget_us += t2 - t1;
  }
  std::printf("%d calls each: GetMany %.1f us CPU per call, client MGET %.1f us (%.2f x); %d failed or not from L2\n",
              n, get_many_us / n, mget_us / n, mget_us > 0 ? get_many_us / mget_us : 0.0, failed);
  return failed == 0 ? 0 : 1;
}

// Simulation mode (TIERCACHE_BENCH_SIM=cache|raw): kSimHits L1 hits in
// BM_L1Hit's (cache) or BM_RawL1Hit's (raw) order, after one uncollected pass
// over the keys, in one call of SimulatedHits, the only code callgrind
// collects in (--toggle-collect='*SimulatedHits*'): instructions per hit
// that the machine's other load does not move. Prints "SIM <case> <hits>
// <not from L1>".
constexpr size_t kSimHits = 200'000;

[[gnu::noinline]] size_t SimulatedHits(bool raw, size_t hits) {
  size_t not_l1 = 0;
  for (size_t i = 0; i < hits; ++i) {
    const std::string& key = g_fixture->keys[i % kHotKeys];
    if (raw) {
      auto v = g_fixture->raw_l1->Get(key);
      benchmark::DoNotOptimize(v);
      if (!v.ok() || !v->has_value()) ++not_l1;
    } else {
      Result<CachedValue> v = g_fixture->with_l1->Get(key, kValueLoader);
      benchmark::DoNotOptimize(v);
      if (!v.ok() || v->source() != tiercache::ValueSource::kL1) ++not_l1;
    }
  }
  return not_l1;
}

int Simulate(const std::string& which) {
  if (which != "cache" && which != "raw") {
    std::fprintf(stderr, "TIERCACHE_BENCH_SIM: cache or raw, not '%s'\n", which.c_str());
    return 2;
  }
  const bool raw = which == "raw";
  for (size_t i = 0; i < kHotKeys; ++i) {  // uncollected: every key read once
    if (raw) {
      (void)g_fixture->raw_l1->Get(g_fixture->keys[i]);
    } else {
      (void)g_fixture->with_l1->Get(g_fixture->keys[i], kValueLoader);
    }
  }
  const size_t not_l1 = SimulatedHits(raw, kSimHits);
  std::printf("SIM %s %zu %zu\n", which.c_str(), kSimHits, not_l1);
  return not_l1 == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Fixture fixture;
  g_fixture = &fixture;
  if (const char* n = std::getenv("TIERCACHE_BENCH_GET_MANY_CALLS")) return GetManyOnly(fixture, std::atoi(n));
  if (const char* sim = std::getenv("TIERCACHE_BENCH_SIM")) return Simulate(sim);
  const bool single_caller_only = std::getenv("TIERCACHE_BENCH_SINGLE_CALLER_ONLY") != nullptr;
  Collector collector;
  if (!single_caller_only) benchmark::RunSpecifiedBenchmarks(&collector);

  std::printf("\n-- latency (2 s each)\n");
  auto l1_1 = Measure(1, single_caller_only ? 0s : 2s, [&](int t, uint64_t i) {
    (void)fixture.with_l1->Get(fixture.keys[(t * 7919 + i) % kHotKeys], kValueLoader);
  });
  // The four single-caller latencies the ratios compare (an L2 hit, the
  // client's own GET of the same keys, one GetMany of kBatchKeys keys in one
  // slot with L1 off, the client's own MGET of those keys) are measured
  // interleaved, 8 rounds of 250 ms each (2 s each in all): a change in the
  // shared machine's load during the run weighs on all four alike.
  std::vector<std::function<void(uint64_t)>> single = {
      [&](uint64_t i) { (void)fixture.l2_only->Get(fixture.keys[i % kHotKeys], kValueLoader); },
      [&](uint64_t i) { (void)fixture.client->Get(fixture.keys[i % kHotKeys]); },
      [&](uint64_t) { (void)fixture.l2_only->GetMany(fixture.batch_keys, kBatchLoader); },
      [&](uint64_t) { (void)fixture.client->MGet(fixture.batch_keys); },
  };
  const std::vector<Latency> one_caller = MeasureInterleaved(single, 8, 250ms);
  const Latency& l2_1 = one_caller[0];
  const Latency& client_1 = one_caller[1];
  const Latency& many_1 = one_caller[2];
  const Latency& client_mget = one_caller[3];
  if (single_caller_only) {
    std::printf("RESULT cache_l2_hit_1c_p50 %.1f us\n", l2_1.p50_us);
    std::printf("RESULT client_get_1c_p50 %.1f us\n", client_1.p50_us);
    std::printf("RESULT get_many_100_1c_p50 %.1f us\n", many_1.p50_us);
    std::printf("RESULT client_mget_100_1c_p50 %.1f us\n", client_mget.p50_us);
    std::printf("RESULT get_many_100_vs_l2_hit %.2f x\n", l2_1.p50_us > 0 ? many_1.p50_us / l2_1.p50_us : 0.0);
    std::printf("RESULT client_mget_100_vs_get %.2f x\n",
                client_1.p50_us > 0 ? client_mget.p50_us / client_1.p50_us : 0.0);
    std::printf("RESULT get_many_100_vs_client_mget %.2f x\n",
                client_mget.p50_us > 0 ? many_1.p50_us / client_mget.p50_us : 0.0);
    return 0;
  }
  auto l2_64 = Measure(64, 2s, [&](int t, uint64_t i) {
    (void)fixture.l2_only->Get(fixture.keys[(t * 7919 + i) % kHotKeys], kValueLoader);
  });
  auto miss_1 = Measure(1, 2s, [&](int, uint64_t) {
    (void)fixture.for_misses->Get("bench:{" + fixture.tag + "}:lm:" + std::to_string(fixture.miss_seq++),
                                  kOneMsLoader);
  });
  auto miss_64 = Measure(64, 2s, [&](int, uint64_t) {
    (void)fixture.for_misses->Get("bench:{" + fixture.tag + "}:lm:" + std::to_string(fixture.miss_seq++),
                                  kOneMsLoader);
  });
  auto row = [](const char* name, const Latency& l) {
    std::printf("%-24s %12.0f ops/s  p50 %8.1f us  p99 %8.1f us\n", name, l.ops_per_s, l.p50_us, l.p99_us);
  };
  row("l1 hit, 1 caller", l1_1);
  row("l2 hit, 1 caller", l2_1);
  row("client GET, 1 caller", client_1);
  row("get_many 100, 1 caller", many_1);
  row("client MGET 100, 1 caller", client_mget);
  row("l2 hit, 64 callers", l2_64);
  row("miss 1ms, 1 caller", miss_1);
  row("miss 1ms, 64 callers", miss_64);

  std::printf("\n-- cold stampede: 1000 callers over 4 pods, loader 200 ms, 20 repetitions\n");
  const int stampede_max = ColdStampedeMaxLoads(20);
  std::printf("most loader calls in one repetition: %d (ideal 1)\n", stampede_max);

  std::printf("\n-- early refresh: 200 reads/s for 20 s, TTL 2 s, loader 50 ms, L1 off\n");
  EarlyRefresh er = SteadyLoad(20s);
  std::printf("loader calls: %d (ideal 10); reads that waited on a loader after warm-up: %d; "
              "read p99 %.1f us vs L2-hit p99 %.1f us\n",
              er.loads, er.waited, er.p99_us, l2_1.p99_us);

  // Run names look like "BM_L1Hit/min_time:1.000/real_time/threads:64".
  auto rate = [&](const std::string& bench, const std::string& threads) {
    for (const auto& [name, r] : collector.rates) {
      if (name.rfind(bench + "/", 0) == 0 && name.size() >= threads.size() &&
          name.compare(name.size() - threads.size(), threads.size(), threads) == 0) {
        return r;
      }
    }
    return 0.0;
  };
  std::printf("\n");
  std::printf("RESULT cache_l1_hit_1t %.0f ops/s\n", rate("BM_L1Hit", "/threads:1"));
  std::printf("RESULT cache_l1_hit_64c %.0f ops/s\n", rate("BM_L1Hit", "/threads:64"));
  std::printf("RESULT cache_l2_hit_1c %.0f ops/s\n", rate("BM_L2Hit", "/threads:1"));
  std::printf("RESULT cache_l2_hit_64c %.0f ops/s\n", rate("BM_L2Hit", "/threads:64"));
  std::printf("RESULT cache_miss_1ms_1c %.0f ops/s\n", rate("BM_MissWith1msLoader", "/threads:1"));
  std::printf("RESULT cache_miss_1ms_64c %.0f ops/s\n", rate("BM_MissWith1msLoader", "/threads:64"));
  const double raw_l1 = rate("BM_RawL1Hit", "/threads:1");
  std::printf("RESULT raw_l1_hit_1t %.0f ops/s\n", raw_l1);
  std::printf("RESULT cache_l1_hit_vs_raw_l1 %.2f x\n", raw_l1 > 0 ? rate("BM_L1Hit", "/threads:1") / raw_l1 : 0.0);
  std::printf("RESULT client_get_1c_p50 %.1f us\n", client_1.p50_us);
  std::printf("RESULT cache_l2_hit_1c_p50_vs_client %.2f x\n",
              client_1.p50_us > 0 ? l2_1.p50_us / client_1.p50_us : 0.0);
  std::printf("RESULT get_many_100_1c_p50 %.1f us\n", many_1.p50_us);
  std::printf("RESULT get_many_100_vs_l2_hit %.2f x\n", l2_1.p50_us > 0 ? many_1.p50_us / l2_1.p50_us : 0.0);
  std::printf("RESULT client_mget_100_1c_p50 %.1f us\n", client_mget.p50_us);
  std::printf("RESULT client_mget_100_vs_get %.2f x\n",
              client_1.p50_us > 0 ? client_mget.p50_us / client_1.p50_us : 0.0);
  std::printf("RESULT get_many_100_vs_client_mget %.2f x\n",
              client_mget.p50_us > 0 ? many_1.p50_us / client_mget.p50_us : 0.0);
  std::printf("RESULT cache_l1_hit_1c_p50 %.2f us\n", l1_1.p50_us);
  std::printf("RESULT cache_l2_hit_1c_p50 %.1f us\n", l2_1.p50_us);
  std::printf("RESULT cache_l2_hit_1c_p99 %.1f us\n", l2_1.p99_us);
  std::printf("RESULT cache_l2_hit_64c_p99 %.1f us\n", l2_64.p99_us);
  std::printf("RESULT cache_miss_1ms_1c_p50 %.1f us\n", miss_1.p50_us);
  std::printf("RESULT cache_miss_1ms_64c_p99 %.1f us\n", miss_64.p99_us);
  std::printf("RESULT stampede_cold_loads_max %d calls\n", stampede_max);
  std::printf("RESULT early_refresh_loads %d calls\n", er.loads);
  std::printf("RESULT early_refresh_ideal %d calls\n", 10);
  std::printf("RESULT early_refresh_waited_reads %d reads\n", er.waited);
  std::printf("RESULT early_refresh_p99 %.1f us\n", er.p99_us);
  std::printf("RESULT paced_l2_hit_p99 %.1f us\n", er.paced_l2_hit_p99_us);
  // Against L2 hits read at the same pace (the issue's "within 2x the L2-hit
  // p99"); the tight-loop cache_l2_hit_1c_p99 above is not comparable: a
  // read after a 5 ms sleep also pays for waking the client's I/O thread.
  std::printf("RESULT early_refresh_p99_vs_l2_hit_p99 %.2f x\n",
              er.paced_l2_hit_p99_us > 0 ? er.p99_us / er.paced_l2_hit_p99_us : 0.0);
  return 0;
}
