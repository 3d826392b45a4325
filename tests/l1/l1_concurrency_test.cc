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
  auto r = stale ? h.cache->GetStale(Key(key), seconds(1)) : h.cache->Get(Key(key));
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
  auto r = h.cache->GetOrLoad(Key(key), loader, h.clock.Now() + seconds(60));
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
      Status s = h.cache->Set(Key(key), std::make_shared<const std::string>(64, 'v'), f);
      if (!s.ok() && !s.IsAborted()) ++h.unexpected_errors;
    } else if (what < 70) {
      L1Fill f;
      f.version = h.next_version.fetch_add(1);
      Status s = h.cache->SetNegative(Key(key), f);
      if (!s.ok() && !s.IsAborted()) ++h.unexpected_errors;
    } else if (what < 78) {
      if (!h.cache->Invalidate(Key(key), h.next_version.fetch_add(1)).ok()) ++h.unexpected_errors;
    } else if (what < 80 && use_erase) {
      if (!h.cache->Erase(Key(key)).ok()) ++h.unexpected_errors;
    } else if (what < 95) {
      Load(h, key);
    } else if (what < 97) {
      h.cache->PurgeExpired();
    } else {
      h.cache->Stats();  // concurrent with everything else
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
    const L1Stats s = h.cache->Stats();
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
    const L1Stats s = h.cache->Stats();
    EXPECT_LE(s.entries, 8u);
    EXPECT_GT(s.evictions, 0u);
    h.cache->Clear();
    EXPECT_EQ(h.cache->Stats().entries, 0u);
    EXPECT_EQ(h.cache->Stats().bytes, 0u);
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
    ASSERT_TRUE(cache->Set(Key(k), std::make_shared<const std::string>("v"), fill).ok());
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
      if (!cache->Set("writer:" + std::to_string(v % 64), std::make_shared<const std::string>("w"), f)
               .ok()) {
        ++missed;
      }
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < kReads; ++i) {
        auto r = cache->Get(Key((i + t) % kKeys));
        if (!r.ok() || !r->has_value()) ++missed;
      }
    });
  }
  for (auto& t : readers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(missed.load(), 0);
  EXPECT_EQ(cache->Stats().hits, static_cast<std::uint64_t>(kReaders) * kReads);
}


// Read-buffer drains under contention. More threads than CPUs, so threads
// share reader slots and are preempted inside read sections; a few hot keys
// read by most threads, so read buffers fill and readers drain them
// (TryDrain) while other readers, on the same slot too, are inside; a cache
// far smaller than the key set, filled by churners, so nodes are evicted and
// freed all the time; value stripes; short TTLs, stale reads, dead entries
// (DropIfDead), in-place replacements, invalidate / erase / clear / purge.
// Every entry returned is checked against what was stored (a read of a freed
// or reused node shows up here, or in ASan / TSan), kept for a while and
// checked again after its node is long gone. The counters must match exactly
// what the threads were served.
namespace drain_stress {

constexpr int kHotKeys = 8;
constexpr int kColdKeys = 248;
constexpr int kReaders = 10;  // with the churners, six threads per CPU here
constexpr int kChurners = 2;
constexpr int kReaderOps = 12000;
constexpr int kChurnerMinOps = 1000;  // then on until the readers are done
constexpr std::size_t kMaxEntries = 64;
constexpr std::size_t kMaxBytes = 64 * 1024;
constexpr Clock::Duration kMaxStale = milliseconds(20);
constexpr Clock::Duration kCoarseLagUsed = milliseconds(100);
constexpr int kKept = 16;  // entries each thread holds on to

std::string StressKey(int i) { return (i < kHotKeys ? "hot:" : "cold:") + std::to_string(i); }

// The value stored for (key, version): names both, and a filler whose
// length and byte depend on the version.
std::string Payload(int key, std::uint64_t version) {
  std::string s = "k=" + std::to_string(key) + "|v=" + std::to_string(version) + "|";
  s.append(8 + version % 57, static_cast<char>('a' + version % 26));
  return s;
}

// What one thread was served, for the exact counter checks.
struct Served {
  std::uint64_t reads = 0;          // get + get_stale calls (each counted once)
  std::uint64_t nothing = 0;        // returned nullopt: misses
  std::uint64_t get_entries = 0;    // get() returned an entry: hits
  std::uint64_t stale_entries = 0;  // get_stale() returned an entry: hit or stale hit
  std::uint64_t surely_fresh = 0;   // ... expiring after the call ended: a hit
  std::uint64_t surely_stale = 0;   // ... expired before the call began: a stale hit
  std::uint64_t corrupt = 0;        // an entry not matching what was stored
  std::uint64_t expired_as_fresh = 0;
  std::uint64_t too_stale = 0;
  std::uint64_t unexpected_errors = 0;

  void Add(const Served& o) {
    reads += o.reads;
    nothing += o.nothing;
    get_entries += o.get_entries;
    stale_entries += o.stale_entries;
    surely_fresh += o.surely_fresh;
    surely_stale += o.surely_stale;
    corrupt += o.corrupt;
    expired_as_fresh += o.expired_as_fresh;
    too_stale += o.too_stale;
    unexpected_errors += o.unexpected_errors;
  }
};

// True when `e` is something this test stored under `key`.
bool Intact(const L1Entry& e, int key) {
  switch (e.kind) {
    case L1EntryKind::kValue:
      return e.value != nullptr && *e.value == Payload(key, e.version);
    case L1EntryKind::kNegative:
      return e.value == nullptr;
    case L1EntryKind::kTombstone:
      return false;  // never returned
  }
  return false;
}

struct Stress {
  // Coarse reading behind the precise one, so both branches of the hit
  // path's clock check run.
  FakeClock clock{kCoarseLagUsed};
  std::unique_ptr<L1Cache> cache;
  std::atomic<std::uint64_t> next_version{1};
  std::atomic<int> readers_running{kReaders};
};

class StressThread {
 public:
  StressThread(Stress& h, unsigned seed) : h_(h), rng_(seed) {}

  // Mostly hot keys, so read buffers fill between writers.
  void RunReader() {
    for (int op = 0; op < kReaderOps; ++op) {
      // Time moves by kReaders * kReaderOps / 16 ms in all: short-lived
      // entries expire, die and are dropped.
      if (op % 16 == 0) h_.clock.Advance(milliseconds(1));
      const int key = Pick(950);
      if (rng_() % 1000 < 2) {
        Write(key);
      } else {
        Read(key);
      }
    }
    h_.readers_running.fetch_sub(1);
    CheckKept();
  }

  // Mostly fills of cold keys, so the cache evicts all the time; between
  // writes, a few reads.
  void RunChurner() {
    for (int op = 0; op < kChurnerMinOps || h_.readers_running.load() > 0; ++op) {
      if (op % 4 == 0) h_.clock.Advance(milliseconds(1));
      if (op % 4 == 3) {
        Read(Pick(500));
      } else {
        Write(Pick(150));
      }
    }
    CheckKept();
  }

  const Served& served() const { return out_; }

 private:
  int Pick(unsigned hot_per_mille) {
    return rng_() % 1000 < hot_per_mille ? static_cast<int>(rng_() % kHotKeys)
                                         : kHotKeys + static_cast<int>(rng_() % kColdKeys);
  }

  void Read(int key) {
    const bool stale = rng_() % 5 == 0;
    const Clock::Duration bound = milliseconds(rng_() % 30);  // the cache caps it at kMaxStale
    const Clock::TimePoint before = h_.clock.Now();
    auto r = stale ? h_.cache->GetStale(StressKey(key), bound) : h_.cache->Get(StressKey(key));
    const Clock::TimePoint after = h_.clock.Now();
    if (!r.ok()) {
      ++out_.unexpected_errors;
      return;
    }
    ++out_.reads;
    if (!r->has_value()) {
      ++out_.nothing;
      return;
    }
    const L1Entry& e = **r;
    if (!Intact(e, key)) ++out_.corrupt;
    if (!stale) {
      ++out_.get_entries;
      if (e.expiry <= before) ++out_.expired_as_fresh;
    } else {
      ++out_.stale_entries;
      if (e.expiry < before - std::min(bound, kMaxStale)) ++out_.too_stale;
      if (e.expiry > after) ++out_.surely_fresh;
      if (e.expiry <= before) ++out_.surely_stale;
    }
    // Hold on to it: its node may be replaced, evicted and freed meanwhile.
    auto& [kept_key, kept_entry] = kept_[kept_next_];
    if (kept_entry.value != nullptr && !Intact(kept_entry, kept_key)) ++out_.corrupt;
    kept_key = key;
    kept_entry = e;
    kept_next_ = (kept_next_ + 1) % kKept;
  }

  void Write(int key) {
    const unsigned what = rng_() % 1000;
    if (what < 800) {
      L1Fill f;
      // Mostly new versions (a present key is replaced in place); some old.
      f.version = rng_() % 8 == 0 ? rng_() % 16 : h_.next_version.fetch_add(1);
      // Long TTLs take the coarse-clock hit path; short ones expire soon.
      const bool long_ttl = rng_() % 8 < (key < kHotKeys ? 7u : 4u);
      f.ttl = long_ttl ? std::chrono::hours(1) : milliseconds(1 + rng_() % 40);
      // Some fills are capped: soon, or dead on arrival.
      const unsigned cap = rng_() % 32;
      if (cap == 0) f.not_after = Clock::TimePoint::min();
      if (cap == 1) f.not_after = h_.clock.Now() + milliseconds(rng_() % 20);
      Status s = rng_() % 10 == 0
                     ? h_.cache->SetNegative(StressKey(key), f)
                     : h_.cache->Set(StressKey(key),
                                     std::make_shared<const std::string>(Payload(key, f.version)), f);
      if (!s.ok() && !s.IsAborted()) ++out_.unexpected_errors;
    } else if (what < 880) {
      const Clock::Duration ttl = milliseconds(rng_() % 10);  // 0: the default
      if (!h_.cache->Invalidate(StressKey(key), h_.next_version.fetch_add(1), ttl).ok()) {
        ++out_.unexpected_errors;
      }
    } else if (what < 940) {
      if (!h_.cache->Erase(StressKey(key)).ok()) ++out_.unexpected_errors;
    } else if (what < 980) {
      h_.cache->PurgeExpired();
    } else if (what < 985) {
      h_.cache->Clear();
    } else {
      const L1Stats s = h_.cache->Stats();  // concurrent with everything else
      if (s.entries > kMaxEntries || s.bytes > kMaxBytes) ++out_.unexpected_errors;
    }
  }

  void CheckKept() {
    for (const auto& [key, e] : kept_) {
      if (e.value != nullptr && !Intact(e, key)) ++out_.corrupt;
    }
  }

  Stress& h_;
  std::mt19937 rng_;
  Served out_;
  std::array<std::pair<int, L1Entry>, kKept> kept_{};
  int kept_next_ = 0;
};

}  // namespace drain_stress

TEST(L1ConcurrencyTest, ReadBufferDrainsWithSharedSlotsAndConstantEvictionStayExact) {
  using namespace drain_stress;
  for (L1Policy policy : {L1Policy::kLru, L1Policy::kTinyLfu}) {
    SCOPED_TRACE(policy == L1Policy::kLru ? "LRU" : "TinyLFU");
    Stress h;
    L1Options o;
    o.clock = &h.clock;
    o.policy = policy;
    o.max_entries = kMaxEntries;
    o.max_bytes = kMaxBytes;
    o.num_shards = 4;
    o.value_stripes = 4;
    o.default_ttl = milliseconds(30);
    o.negative_ttl = milliseconds(10);
    o.tombstone_ttl = milliseconds(5);
    o.max_stale = kMaxStale;
    auto created = L1Cache::Create(o);
    ASSERT_TRUE(created.ok());
    h.cache = std::move(*created);
    ASSERT_EQ(h.cache->shard_count(), 4u);

    std::vector<std::unique_ptr<StressThread>> workers;
    std::vector<std::thread> threads;
    for (int t = 0; t < kReaders + kChurners; ++t) {
      workers.push_back(std::make_unique<StressThread>(h, 777u + 31u * t));
      StressThread* w = workers.back().get();
      threads.emplace_back([w, t] { t < kReaders ? w->RunReader() : w->RunChurner(); });
    }
    for (auto& t : threads) t.join();
    Served all;
    for (const auto& w : workers) all.Add(w->served());
    EXPECT_EQ(all.corrupt, 0u);
    EXPECT_EQ(all.expired_as_fresh, 0u);
    EXPECT_EQ(all.too_stale, 0u);
    EXPECT_EQ(all.unexpected_errors, 0u);

    // Every read counted once, as what it returned.
    const L1Stats s = h.cache->Stats();
    EXPECT_EQ(s.hits + s.misses + s.stale_hits, all.reads);
    EXPECT_EQ(s.misses, all.nothing);
    EXPECT_EQ(s.hits + s.stale_hits, all.get_entries + all.stale_entries);
    EXPECT_GE(s.hits, all.get_entries + all.surely_fresh);
    EXPECT_GE(s.stale_hits, all.surely_stale);
    EXPECT_LE(s.entries, kMaxEntries);
    EXPECT_LE(s.bytes, kMaxBytes);
    EXPECT_GT(s.evictions, 0u);

    // Quiescent: every hit counted, across many full buffers.
    L1Fill fill;
    fill.version = h.next_version.fetch_add(1);
    fill.ttl = std::chrono::hours(1);
    for (int k = 0; k < kHotKeys; ++k) {
      const L1Value v = std::make_shared<const std::string>(Payload(k, fill.version));
      ASSERT_TRUE(h.cache->Set(StressKey(k), v, fill).ok());
    }
    constexpr int kQuietReads = 1000;
    for (int i = 0; i < kQuietReads; ++i) {
      auto r = h.cache->Get(StressKey(i % kHotKeys));
      ASSERT_TRUE(r.ok() && r->has_value());
      ASSERT_TRUE(Intact(**r, i % kHotKeys));
    }
    EXPECT_EQ(h.cache->Stats().hits, s.hits + kQuietReads);

    // Everything is dead two hours on: purging drops exactly what is there.
    h.clock.Advance(std::chrono::hours(2));
    const std::uint64_t present = h.cache->Stats().entries;
    EXPECT_EQ(h.cache->PurgeExpired(), present);
    EXPECT_EQ(h.cache->Stats().entries, 0u);
    EXPECT_EQ(h.cache->Stats().bytes, 0u);
  }
}

// A fill capped (not_after) at the earliest time point is dead on arrival:
// readers racing with its refills must never be served it. The hit path's
// "far from expiry" test must neither overflow computing expiry - now
// (UBSan) nor, wrapping around, take that expiry for one far in the future.
TEST(L1ConcurrencyTest, FillCappedAtTheEarliestTimeIsNeverServed) {
  FakeClock clock;
  auto cache = MakeCache(&clock, L1Policy::kLru, 64, seconds(1));
  ASSERT_NE(cache, nullptr);
  L1Fill first;
  first.version = 1;
  first.not_after = Clock::TimePoint::min();
  ASSERT_TRUE(cache->Set("capped", std::make_shared<const std::string>("dead"), first).ok());
  auto alone = cache->Get("capped");  // no writer: the lock-free path
  ASSERT_TRUE(alone.ok());
  EXPECT_FALSE(alone->has_value());
  constexpr int kReaders = 4;
  constexpr int kReads = 500;
  std::atomic<int> served{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (std::uint64_t v = 2; !stop.load(); ++v) {
      L1Fill f;
      f.version = v;
      f.not_after = Clock::TimePoint::min();
      if (!cache->Set("capped", std::make_shared<const std::string>("dead"), f).ok()) ++served;
      f.version = ++v;
      if (!cache->SetNegative("capped", f).ok()) ++served;
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < kReads; ++i) {
        auto r = i % 2 == t % 2 ? cache->Get("capped") : cache->GetStale("capped", seconds(1));
        if (!r.ok() || r->has_value()) ++served;
      }
    });
  }
  for (auto& t : readers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(served.load(), 0);
  const L1Stats s = cache->Stats();
  EXPECT_EQ(s.misses, static_cast<std::uint64_t>(kReaders) * kReads + 1);
  EXPECT_EQ(s.hits + s.stale_hits, 0u);
}

}  // namespace
}  // namespace tiercache
