// bench_redis: GET of a 200-byte value through RedisClient on the local
// cluster — 1 caller, 64 sync caller threads, 64 requests in flight through
// the async API — and, in the same run, redis-benchmark --cluster with
// -c 1, -c 64 and -c 64 -P 16 for comparison. Both sides read 200-byte
// values (redis-benchmark's keys are stored first). Prints RESULT lines last.
//
// Environment: TIERCACHE_REDIS_PORT_BASE (7000), BENCH_REDIS_SECONDS (3, per
// threaded phase), BENCH_REDIS_ONLY=sync|async (one phase alone, no
// redis-benchmark). Client options for A/B runs, defaulting to the library's:
// BENCH_CALLER_SPIN_US, BENCH_IO_BUSY_POLL_US, BENCH_DIRECT_IO,
// BENCH_CONNECTIONS_PER_NODE, BENCH_COALESCE_WRITES.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/redis/redis_client.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using tiercache::redis::Endpoint;
using tiercache::redis::RedisClient;
using tiercache::redis::RedisClientOptions;

constexpr int kKeys = 1000;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

std::string Key(int i) { return "bench:get:" + std::to_string(i); }

// The keys, built once: the harness should cost as little per call as
// redis-benchmark's does, so the figures are the client's.
const std::vector<std::string>& Keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> v;
    for (int i = 0; i < kKeys; ++i) v.push_back(Key(i));
    return v;
  }();
  return keys;
}

struct Figures {
  double ops = 0, p50_us = 0, p99_us = 0;
};

Figures Summarize(std::vector<int64_t>& lat_ns, double seconds) {
  Figures f;
  if (lat_ns.empty()) return f;
  std::sort(lat_ns.begin(), lat_ns.end());
  f.ops = static_cast<double>(lat_ns.size()) / seconds;
  f.p50_us = static_cast<double>(lat_ns[lat_ns.size() / 2]) / 1000.0;
  f.p99_us = static_cast<double>(lat_ns[lat_ns.size() * 99 / 100]) / 1000.0;
  return f;
}

void Print(const char* name, const Figures& f, int64_t errors) {
  std::printf("%-28s %10.0f ops/s  p50 %7.1f us  p99 %7.1f us  errors %lld\n", name, f.ops, f.p50_us, f.p99_us,
              static_cast<long long>(errors));
}

Figures OneCaller(RedisClient& client, int n, int64_t* errors) {
  std::vector<int64_t> lat;
  lat.reserve(n);
  for (int i = 0; i < 2000; ++i) (void)client.Get(Keys()[i % kKeys]).ok();
  auto begin = Clock::now();
  for (int i = 0; i < n; ++i) {
    const std::string& key = Keys()[i % kKeys];
    auto start = Clock::now();
    auto r = client.Get(key);
    lat.push_back((Clock::now() - start).count());
    if (!r.ok() || !r->has_value()) ++*errors;
  }
  return Summarize(lat, std::chrono::duration<double>(Clock::now() - begin).count());
}

Figures SyncThreads(RedisClient& client, int threads, std::chrono::seconds duration, int64_t* errors) {
  std::vector<std::vector<int64_t>> lat(threads);
  std::atomic<int64_t> errs{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  auto begin = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      lat[t].reserve(200000);
      for (int i = t; !stop.load(std::memory_order_relaxed); i += threads) {
        const std::string& key = Keys()[i % kKeys];
        auto start = Clock::now();
        auto r = client.Get(key);
        lat[t].push_back((Clock::now() - start).count());
        if (!r.ok() || !r->has_value()) errs.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop.store(true);
  for (auto& w : workers) w.join();
  double secs = std::chrono::duration<double>(Clock::now() - begin).count();
  std::vector<int64_t> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  *errors = errs.load();
  return Summarize(all, secs);
}

// `inflight` GETs kept in flight: each completion (on the I/O thread) records
// its latency and issues the next.
Figures Async(RedisClient& client, int inflight, std::chrono::seconds duration, int64_t* errors) {
  struct State {
    RedisClient* client;
    std::atomic<bool> stop{false};
    std::atomic<int> active{0};
    std::atomic<int64_t> errs{0};
    std::atomic<uint64_t> counter{0};
    std::vector<int64_t> lat;  // appended by the I/O thread only
  };
  // Outlives every callback: Async() returns only once all chains stopped.
  // A raw pointer keeps the callback small enough for std::function's
  // inline storage: the harness allocates nothing per call.
  auto owned = std::make_unique<State>();
  State* st = owned.get();
  st->client = &client;
  st->lat.reserve(5000000);
  // One clock read per call, as redis-benchmark does: a completion's time
  // is also the start of the call its callback issues next.
  struct Issuer {
    static void Issue(State* st, Clock::time_point start) {
      if (st->stop.load(std::memory_order_relaxed)) {
        st->active.fetch_sub(1);
        return;
      }
      uint64_t i = st->counter.fetch_add(1, std::memory_order_relaxed);
      st->client->GetAsync(Keys()[i % kKeys], {}, [st, start](tiercache::Result<std::optional<std::string>> r) {
        auto now = Clock::now();
        st->lat.push_back((now - start).count());
        if (!r.ok() || !r->has_value()) st->errs.fetch_add(1);
        Issue(st, now);
      });
    }
  };
  auto begin = Clock::now();
  st->active.store(inflight);
  for (int i = 0; i < inflight; ++i) Issuer::Issue(st, Clock::now());
  std::this_thread::sleep_for(duration);
  st->stop.store(true);
  while (st->active.load() > 0) std::this_thread::sleep_for(1ms);
  double secs = std::chrono::duration<double>(Clock::now() - begin).count();
  *errors = st->errs.load();
  return Summarize(st->lat, secs);
}

// redis-benchmark -t get reads keys it does not write: with nothing stored
// under them its GETs get nil (a 5-byte reply), not a 200-byte value. This
// stores its keys (key:{tag}:__rand_int__, one per master) with 200-byte
// values first, so both sides read the same value size. True on success.
bool PrepareRedisBenchmarkKeys(int port) {
  std::string cmd = "redis-benchmark --cluster -h 127.0.0.1 -p " + std::to_string(port) +
                    " -t set -d 200 --csv -n 3000 -c 3 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  char line[512];
  bool ok = false;
  while (std::fgets(line, sizeof(line), p) != nullptr) ok = ok || std::strncmp(line, "\"SET\"", 5) == 0;
  return pclose(p) == 0 && ok;
}

// Runs redis-benchmark and parses its CSV line: rps, p50 (ms -> us), p99.
Figures RedisBenchmark(int port, const std::string& extra, int n) {
  std::string cmd = "redis-benchmark --cluster -h 127.0.0.1 -p " + std::to_string(port) +
                    " -t get -d 200 --csv -n " + std::to_string(n) + " " + extra + " 2>/dev/null";
  Figures f;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return f;
  char line[512];
  while (std::fgets(line, sizeof(line), p) != nullptr) {
    double rps, avg, mn, p50, p95, p99, mx;
    if (std::sscanf(line, "\"GET\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &rps, &avg, &mn, &p50, &p95,
                    &p99, &mx) == 7) {
      f.ops = rps;
      f.p50_us = p50 * 1000.0;
      f.p99_us = p99 * 1000.0;
    }
  }
  pclose(p);
  return f;
}

}  // namespace

int main() {
  int base = EnvInt("TIERCACHE_REDIS_PORT_BASE", 7000);
  auto seconds = std::chrono::seconds(EnvInt("BENCH_REDIS_SECONDS", 3));
  RedisClientOptions o;
  for (int i = 0; i < 6; ++i) o.seeds.push_back(Endpoint{"127.0.0.1", base + i});
  o.command_timeout = 2000ms;
  o.caller_spin = std::chrono::microseconds(EnvInt("BENCH_CALLER_SPIN_US", 100));
  o.io_busy_poll = std::chrono::microseconds(EnvInt("BENCH_IO_BUSY_POLL_US", 0));
  o.direct_io = EnvInt("BENCH_DIRECT_IO", 1) != 0;
  o.connections_per_node = EnvInt("BENCH_CONNECTIONS_PER_NODE", 1);
  o.coalesce_writes = EnvInt("BENCH_COALESCE_WRITES", 1) != 0;
  auto created = RedisClient::Create(o);
  if (!created.ok()) {
    std::fprintf(stderr, "bench_redis: %s\n", created.status().ToString().c_str());
    return 1;
  }
  auto& client = **created;
  std::vector<std::vector<std::string>> sets;
  for (int i = 0; i < kKeys; ++i) sets.push_back({"SET", Key(i), std::string(200, 'v')});
  for (const auto& r : client.Pipeline(sets)) {
    if (!r.ok()) {
      std::fprintf(stderr, "bench_redis: preload: %s\n", r.status().ToString().c_str());
      return 1;
    }
  }

  // For profiling one phase alone: BENCH_REDIS_ONLY=async or sync.
  if (const char* only = std::getenv("BENCH_REDIS_ONLY"); only && *only) {
    int64_t e = 0;
    if (std::string(only) == "async") Print("tiercache GET 64 async", Async(client, 64, seconds, &e), e);
    if (std::string(only) == "sync") Print("tiercache GET 64 sync", SyncThreads(client, 64, seconds, &e), e);
    return 0;
  }

  if (!PrepareRedisBenchmarkKeys(base)) {
    std::fprintf(stderr, "bench_redis: redis-benchmark -t set (storing its keys) failed\n");
    return 1;
  }

  // Each figure is measured next to its redis-benchmark counterpart, so both
  // see the same machine load, in 5 rounds (figures on a small shared VM
  // swing by a third from run to run). Each reported figure is the median
  // round (by p50 for the 1-caller pair, by ops/s for the others), and each
  // ratio is the median of the rounds' ratios.
  constexpr int kRounds = 5;
  int64_t e1 = 0, e64 = 0, ea = 0, ed = 0;
  std::vector<Figures> ones, rb1s, syncs, rb64s, asyncs, rbps, deeps;
  std::vector<double> r1, r64, rp, rp_deep, r_async_c64;
  for (int round = 0; round < kRounds; ++round) {
    int64_t e = 0;
    ones.push_back(OneCaller(client, 10000, &e));
    e1 += e;
    rb1s.push_back(RedisBenchmark(base, "-c 1", 10000));
    syncs.push_back(SyncThreads(client, 64, seconds, &e));
    e64 += e;
    rb64s.push_back(RedisBenchmark(base, "-c 64", 300000));
    asyncs.push_back(Async(client, 64, seconds, &e));
    ea += e;
    rbps.push_back(RedisBenchmark(base, "-c 64 -P 16", 2000000));
    // redis-benchmark -c 64 -P 16 keeps 64 x 16 = 1,024 GETs in flight, 16
    // times the 64 above; this is the same depth.
    deeps.push_back(Async(client, 1024, seconds, &e));
    ed += e;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    r1.push_back(ratio(ones.back().p50_us, rb1s.back().p50_us));
    r64.push_back(ratio(syncs.back().ops, rb64s.back().ops));
    rp.push_back(ratio(asyncs.back().ops, rbps.back().ops));
    rp_deep.push_back(ratio(deeps.back().ops, rbps.back().ops));
    r_async_c64.push_back(ratio(asyncs.back().ops, rb64s.back().ops));
    std::printf("round %d: 1c p50 %.1f us vs rb %.1f us; sync64 %.0f vs rb c64 %.0f ops/s; "
                "async64 %.0f, async1024 %.0f vs rb c64 P16 %.0f ops/s\n",
                round + 1, ones.back().p50_us, rb1s.back().p50_us, syncs.back().ops,
                rb64s.back().ops, asyncs.back().ops, deeps.back().ops, rbps.back().ops);
  }
  auto median_by = [](std::vector<Figures> v, double Figures::*field) {
    std::sort(v.begin(), v.end(), [field](const Figures& a, const Figures& b) { return a.*field < b.*field; });
    return v[v.size() / 2];
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  Figures one = median_by(ones, &Figures::p50_us), rb1 = median_by(rb1s, &Figures::p50_us);
  Figures sync64 = median_by(syncs, &Figures::ops), rb64 = median_by(rb64s, &Figures::ops);
  Figures async64 = median_by(asyncs, &Figures::ops), rbp = median_by(rbps, &Figures::ops);
  Figures async1024 = median_by(deeps, &Figures::ops);
  Print("tiercache GET 1 caller", one, e1);
  Print("redis-benchmark -c 1", rb1, 0);
  Print("tiercache GET 64 sync", sync64, e64);
  Print("redis-benchmark -c 64", rb64, 0);
  Print("tiercache GET 64 async", async64, ea);
  Print("tiercache GET 1024 async", async1024, ed);
  Print("redis-benchmark -c 64 -P 16", rbp, 0);

  std::printf("RESULT redis_get_1c_p50 %.1f us\n", one.p50_us);
  std::printf("RESULT redis_get_1c_p99 %.1f us\n", one.p99_us);
  std::printf("RESULT redis_get_1c_ops %.0f ops/s\n", one.ops);
  std::printf("RESULT redis_get_sync64_ops %.0f ops/s\n", sync64.ops);
  std::printf("RESULT redis_get_sync64_p50 %.1f us\n", sync64.p50_us);
  std::printf("RESULT redis_get_sync64_p99 %.1f us\n", sync64.p99_us);
  std::printf("RESULT redis_get_async64_ops %.0f ops/s\n", async64.ops);
  std::printf("RESULT redis_get_async64_p50 %.1f us\n", async64.p50_us);
  std::printf("RESULT redis_get_async64_p99 %.1f us\n", async64.p99_us);
  std::printf("RESULT redis_get_async1024_ops %.0f ops/s\n", async1024.ops);
  std::printf("RESULT redis_get_async1024_p50 %.1f us\n", async1024.p50_us);
  std::printf("RESULT rb_get_c1_p50 %.1f us\n", rb1.p50_us);
  std::printf("RESULT rb_get_c1_ops %.0f ops/s\n", rb1.ops);
  std::printf("RESULT rb_get_c64_ops %.0f ops/s\n", rb64.ops);
  std::printf("RESULT rb_get_c64_p16_ops %.0f ops/s\n", rbp.ops);
  std::printf("RESULT redis_get_1c_p50_vs_rb %.2f x\n", median(r1));
  std::printf("RESULT redis_get_async64_vs_rb_p16 %.2f x\n", median(rp));
  // The same comparison at the same depth (1,024 in flight on both sides),
  // and the 64 async GETs against redis-benchmark's 64 in flight (-c 64).
  std::printf("RESULT redis_get_async1024_vs_rb_p16 %.2f x\n", median(rp_deep));
  std::printf("RESULT redis_get_async64_vs_rb_c64 %.2f x\n", median(r_async_c64));
  std::printf("RESULT redis_get_sync64_vs_rb_c64 %.2f x\n", median(r64));
  std::printf("RESULT redis_get_errors %lld calls\n", static_cast<long long>(e1 + e64 + ea + ed));
  return 0;
}
