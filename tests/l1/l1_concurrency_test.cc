// Many threads mixing get / get_stale / set / set_negative / invalidate /
// erase / get_or_load while a FakeClock moves time forward. Checks the rules
// that must hold under any interleaving: bounds, no expired entry served as
// fresh, versions never going backwards, one load per key at a time.
// Runs in CI under TSan and ASan+UBSan; sized to finish in seconds there.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/l1_cache.h"

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kKeys = 32;
constexpr int kThreads = 6;
constexpr int kOpsPerThread = 20000;

std::string Key(int i) { return "posts:{community:" + std::to_string(i % 4) + "}:" + std::to_string(i); }

struct Harness {
  FakeClock clock;
  std::unique_ptr<L1Cache> cache;
  std::atomic<std::uint64_t> next_version{1};
  std::array<std::atomic<int>, kKeys> loading{};  // loaders running per key
  std::atomic<int> overlapping_loads{0};
  std::atomic<int> expired_served{0};
  std::atomic<int> version_regressions{0};
  std::atomic<int> unexpected_errors{0};
};

std::unique_ptr<L1Cache> MakeCache(Clock* clock, L1Policy policy, std::size_t entries,
                                   Clock::Duration max_stale) {
  L1Options o;
  o.clock = clock;
  o.policy = policy;
  o.max_entries = entries;
  o.num_shards = 4;
  o.default_ttl = milliseconds(50);
  o.negative_ttl = milliseconds(20);
  o.tombstone_ttl = max_stale;
  o.max_stale = max_stale;
  o.ttl_jitter = 0.2;
  auto r = L1Cache::Create(o);
  return r.ok() ? std::move(*r) : nullptr;
}

// Reads one key and checks what it got against what this thread saw before.
void CheckedRead(Harness& h, int key, bool stale, std::vector<std::uint64_t>* seen) {
  const Clock::TimePoint before = h.clock.Now();
  auto r = stale ? h.cache->get_stale(Key(key), seconds(1)) : h.cache->get(Key(key));
  if (!r.ok()) {
    ++h.unexpected_errors;
    return;
  }
  if (!r->has_value()) return;
  const L1Entry& e = **r;
  if (!stale && e.expiry <= before) ++h.expired_served;
  if (e.version < (*seen)[key]) ++h.version_regressions;
  (*seen)[key] = e.version;
}

void Load(Harness& h, int key) {
  L1Loader loader = [&h, key]() -> Result<L1Loaded> {
    if (h.loading[key].fetch_add(1) != 0) ++h.overlapping_loads;
    std::this_thread::yield();
    const std::uint64_t v = h.next_version.fetch_add(1);
    h.loading[key].fetch_sub(1);
    if (v % 7 == 0) return Status::Unavailable("simulated loader failure");
    return L1Loaded{std::make_shared<const std::string>("loaded"), v, milliseconds(0)};
  };
  auto r = h.cache->get_or_load(Key(key), loader, h.clock.Now() + seconds(60));
  if (!r.ok() && !r.status().IsUnavailable() && !r.status().IsAborted()) ++h.unexpected_errors;
}

// `erase` lifts the version guard, so version checks are off when it is used.
void Worker(Harness& h, unsigned seed, bool use_erase, std::vector<std::uint64_t>* seen) {
  std::mt19937 rng(seed);
  for (int op = 0; op < kOpsPerThread; ++op) {
    const int key = static_cast<int>(rng() % kKeys);
    const unsigned what = rng() % 100;
    if (what < 40) {
      CheckedRead(h, key, false, seen);
    } else if (what < 50) {
      CheckedRead(h, key, true, seen);
    } else if (what < 65) {
      L1Fill f;
      // Mostly new versions; sometimes a deliberately old one.
      f.version = rng() % 4 == 0 ? rng() % 8 : h.next_version.fetch_add(1);
      Status s = h.cache->set(Key(key), std::make_shared<const std::string>(64, 'v'), f);
      if (!s.ok() && !s.IsAborted()) ++h.unexpected_errors;
    } else if (what < 70) {
      L1Fill f;
      f.version = h.next_version.fetch_add(1);
      Status s = h.cache->set_negative(Key(key), f);
      if (!s.ok() && !s.IsAborted()) ++h.unexpected_errors;
    } else if (what < 78) {
      if (!h.cache->invalidate(Key(key), h.next_version.fetch_add(1)).ok()) ++h.unexpected_errors;
    } else if (what < 80 && use_erase) {
      if (!h.cache->erase(Key(key)).ok()) ++h.unexpected_errors;
    } else if (what < 95) {
      Load(h, key);
    } else if (what < 97) {
      h.cache->purge_expired();
    } else {
      h.cache->stats();  // concurrent with everything else
    }
  }
}

void RunWorkers(Harness& h, bool use_erase) {
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!stop.load()) {
      h.clock.Advance(milliseconds(3));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> threads;
  std::vector<std::vector<std::uint64_t>> seen(kThreads, std::vector<std::uint64_t>(kKeys, 0));
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back(Worker, std::ref(h), 1234u + t, use_erase, &seen[t]);
  }
  for (auto& t : threads) t.join();
  stop = true;
  ticker.join();
}

// Entries never die during the run (huge max_stale and tombstone TTL, room for
// every key): a thread must never see a key's version go backwards.
TEST(L1ConcurrencyTest, MixedOperationsKeepVersionsMonotonicAndNeverServeExpired) {
  for (L1Policy policy : {L1Policy::kLru, L1Policy::kTinyLfu}) {
    Harness h;
    h.cache = MakeCache(&h.clock, policy, 4 * kKeys, std::chrono::hours(24 * 300));
    ASSERT_NE(h.cache, nullptr);
    RunWorkers(h, /*use_erase=*/false);
    EXPECT_EQ(h.version_regressions.load(), 0);
    EXPECT_EQ(h.expired_served.load(), 0);
    EXPECT_EQ(h.overlapping_loads.load(), 0) << "single-flight: one load per key at a time";
    EXPECT_EQ(h.unexpected_errors.load(), 0);
    const L1Stats s = h.cache->stats();
    EXPECT_LE(s.entries, static_cast<std::uint64_t>(kKeys));
    EXPECT_GT(s.hits + s.stale_hits, 0u);
    EXPECT_GT(s.refused_fills, 0u) << "old versions were offered and must be refused";
  }
}

// A cache far smaller than the key space, with erase and short retention:
// constant eviction and expiry under contention must keep the bounds.
TEST(L1ConcurrencyTest, EvictionUnderContentionKeepsBounds) {
  for (L1Policy policy : {L1Policy::kLru, L1Policy::kTinyLfu}) {
    Harness h;
    h.cache = MakeCache(&h.clock, policy, 8, milliseconds(30));
    ASSERT_NE(h.cache, nullptr);
    RunWorkers(h, /*use_erase=*/true);
    EXPECT_EQ(h.expired_served.load(), 0);
    EXPECT_EQ(h.overlapping_loads.load(), 0);
    EXPECT_EQ(h.unexpected_errors.load(), 0);
    const L1Stats s = h.cache->stats();
    EXPECT_LE(s.entries, 8u);
    EXPECT_GT(s.evictions, 0u);
    h.cache->clear();
    EXPECT_EQ(h.cache->stats().entries, 0u);
    EXPECT_EQ(h.cache->stats().bytes, 0u);
  }
}

// Hits are counted without a lock (folded from per-thread slots by writers);
// the total must still be exact while writers keep folding.
TEST(L1ConcurrencyTest, HitCountIsExactUnderConcurrentWrites) {
  FakeClock clock;
  auto cache = MakeCache(&clock, L1Policy::kTinyLfu, 1024, std::chrono::hours(1));
  ASSERT_NE(cache, nullptr);
  L1Fill fill;
  fill.ttl = std::chrono::hours(1);
  for (int k = 0; k < kKeys; ++k) {
    ASSERT_TRUE(cache->set(Key(k), std::make_shared<const std::string>("v"), fill).ok());
  }
  constexpr int kReaders = 4;
  constexpr int kReads = 20000;
  std::atomic<int> missed{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::uint64_t v = 1;
    while (!stop.load()) {
      L1Fill f = fill;
      f.version = v++;
      if (!cache->set("writer:" + std::to_string(v % 64), std::make_shared<const std::string>("w"), f)
               .ok()) {
        ++missed;
      }
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < kReads; ++i) {
        auto r = cache->get(Key((i + t) % kKeys));
        if (!r.ok() || !r->has_value()) ++missed;
      }
    });
  }
  for (auto& t : readers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(missed.load(), 0);
  EXPECT_EQ(cache->stats().hits, static_cast<std::uint64_t>(kReaders) * kReads);
}

}  // namespace
}  // namespace tiercache
