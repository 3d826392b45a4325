// Many threads mixing every cache operation on a few keys with short TTLs,
// over the in-memory L2: run under ASan+UBSan and TSan in CI. Checks that
// nothing crashes or races, every call ends within its hard timeout, and no
// value older than an invalidation's version survives it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "tiercache/cache.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

TEST(CacheConcurrencyTest, MixedOperationsStayConsistent) {
  CacheOptions o;
  o.l2 = MakeInMemoryL2Store();
  o.ttl = 30ms;
  o.negative_ttl = 20ms;
  o.l1.default_ttl = 10ms;
  o.l1.max_entries = 64;
  o.max_stale = 50ms;
  o.soft_timeout = 20ms;
  o.hard_timeout = 500ms;
  o.lease.ttl = 200ms;
  o.lease.max_wait = 100ms;
  o.early_refresh_beta = 2.0;
  auto made = Cache::Create(o);
  ASSERT_TRUE(made.ok());
  Cache& cache = **made;

  constexpr int kKeys = 8;
  std::vector<std::atomic<uint64_t>> source(kKeys);  // the "database" version per key
  for (auto& v : source) v = 1;
  auto key_of = [](int k) { return "k{" + std::to_string(k) + "}"; };
  Loader loader = [&](std::string_view key) -> Result<LoadResult> {
    const int k = key[2] - '0';
    const uint64_t v = source[k].load();
    std::this_thread::sleep_for(std::chrono::microseconds(200 + (v % 5) * 100));
    if (v % 7 == 0) return Status::Unavailable("flaky source");
    if (v % 11 == 0) return LoadResult{std::nullopt, v};
    return LoadResult{std::string(key) + "@" + std::to_string(v), v};
  };

  std::atomic<bool> stop{false};
  std::atomic<int> slow_calls{0}, calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      while (!stop.load()) {
        const int k = static_cast<int>(rng() % kKeys);
        const auto t0 = std::chrono::steady_clock::now();
        switch (rng() % 10) {
          case 0: {  // a writer: bump the source, then invalidate at that version
            const uint64_t v = source[k].fetch_add(1) + 1;
            cache.Invalidate(key_of(k), v).IgnoreError();
            break;
          }
          case 1:
            cache.Set(key_of(k), "set", source[k].load()).IgnoreError();
            break;
          case 2: {
            std::vector<std::string> keys{key_of(k), key_of((k + 1) % kKeys)};
            auto r = cache.GetMany(keys, [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
              std::vector<LoadResult> out;
              for (const auto& key : ks) {
                Result<LoadResult> one = loader(key);
                out.push_back(one.ok() ? *one : LoadResult{});
              }
              return out;
            });
            (void)r;
            break;
          }
          case 3:
            (void)cache.GetAsync(key_of(k), loader).get();
            break;
          default: {
            Result<CachedValue> v = cache.Get(key_of(k), loader);
            (void)v;
          }
        }
        if (std::chrono::steady_clock::now() - t0 > 1500ms) slow_calls.fetch_add(1);
        calls.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(2s);
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_GT(calls.load(), 100);
  EXPECT_EQ(slow_calls.load(), 0) << "a call ran far past its hard timeout";

  // Quiesce: after a final invalidation at a new version, no reader sees an
  // older version.
  for (int k = 0; k < kKeys; ++k) {
    const uint64_t v = source[k].fetch_add(1) + 1;
    ASSERT_TRUE(cache.Invalidate(key_of(k), v).ok());
    Result<CachedValue> got = cache.Get(key_of(k), loader);
    if (got.ok() && !got->stale()) {
      EXPECT_GE(got->version(), v) << key_of(k);
    }
  }
}

}  // namespace
}  // namespace tiercache
