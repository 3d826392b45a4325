// Value stripes (L1Options::value_stripes) are made only for entries read
// from more than one CPU: the read buffers' drains (readers may be inside)
// decide, and the node is replaced by a striped copy in an exclusive
// section. Threads are pinned to two CPUs whose reader slots differ (and pick
// different stripes), so the tests know which reference each read gets:
// reads from one CPU make none; reads from two make them; an overwrite drops
// them with the old value, so no reader is ever served the old value through
// a stripe; values served through stripes outlive the cache; and readers
// racing with drains that make stripes and writers that take them away are
// always served what was stored (ASan / TSan too). Needs two such CPUs, as
// CI has: under CI (CI set) they fail without them, elsewhere they skip.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tiercache/l1_cache.h"

namespace tiercache {
namespace {

constexpr std::size_t kStripes = 4;

// Two CPUs this process may run on whose reader slots (CPU mod 16) differ
// and whose stripes (slot mod kStripes) differ, the first one's being the
// node's own reference (0); empty when there are none.
std::vector<int> TwoCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return {};
  int own = -1, other = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    if (own < 0 && c % 16 % kStripes == 0) own = c;
    if (other < 0 && c % 16 % kStripes != 0) other = c;
  }
  if (own < 0 || other < 0) return {};
  return {own, other};
}

// Runs `fn` on a thread pinned to `cpu`; false when the pin failed.
bool OnCpu(int cpu, const std::function<void()>& fn) {
  bool pinned = false;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    if (pinned) fn();
  });
  t.join();
  return pinned;
}

L1Value V(const std::string& s) { return std::make_shared<const std::string>(s); }

L1Fill Version(std::uint64_t v) {
  L1Fill f;
  f.version = v;
  f.ttl = std::chrono::hours(1);
  return f;
}

bool SameOwner(const L1Value& a, const L1Value& b) { return !a.owner_before(b) && !b.owner_before(a); }

class ValueStripesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cpus_ = TwoCpus();
    if (cpus_.size() == 2) return;
    if (std::getenv("CI") != nullptr) FAIL() << "no two CPUs to pin to (one with stripe 0, one without)";
    GTEST_SKIP() << "this process may not run on two CPUs whose reader slots use different stripes";
  }
  std::unique_ptr<L1Cache> Make(std::size_t stripes, std::size_t max_entries = L1Options{}.max_entries) {
    L1Options o;
    o.num_shards = 1;  // so any write drains every reader slot of the key's shard
    o.max_entries = max_entries;
    o.value_stripes = stripes;
    auto r = L1Cache::Create(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }
  // `key`'s value as read by a thread on CPU number `which` (0 or 1).
  L1Value ReadOn(int which, L1Cache& c, const std::string& key, int times = 1) {
    L1Value out;
    EXPECT_TRUE(OnCpu(cpus_[which], [&] {
      for (int i = 0; i < times; ++i) {
        auto r = c.Get(key);
        if (r.ok() && r->has_value()) out = (*r)->value;
      }
    }));
    return out;
  }
  // An exclusive section in the shard: drains every reader slot.
  static void Drain(L1Cache& c) { ASSERT_TRUE(c.Set("other", V("x"), Version(1)).ok()); }

  std::vector<int> cpus_;
};

TEST_F(ValueStripesTest, ReadsFromOneCpuMakeNone) {
  auto c = Make(kStripes);
  L1Value a = V("a");
  ASSERT_TRUE(c->Set("k", a, Version(1)).ok());
  // Far more reads than a read buffer holds: its reader drains it many times.
  EXPECT_EQ(*ReadOn(1, *c, "k", 1000), "a");
  Drain(*c);
  EXPECT_EQ(a.use_count(), 2) << "the test's and the node's references only";
}

TEST_F(ValueStripesTest, ReadsFromTwoCpusMakeThemAndEachCpuGetsItsOwnReference) {
  auto c = Make(kStripes);
  L1Value a = V("a");
  ASSERT_TRUE(c->Set("k", a, Version(1)).ok());
  EXPECT_EQ(*ReadOn(0, *c, "k"), "a");
  EXPECT_EQ(*ReadOn(1, *c, "k"), "a");
  Drain(*c);
  EXPECT_EQ(a.use_count(), static_cast<long>(2 + kStripes - 1)) << "the test, the node and its stripes";
  const L1Value on_own = ReadOn(0, *c, "k");
  const L1Value on_other = ReadOn(1, *c, "k");
  EXPECT_EQ(on_own.get(), a.get());
  EXPECT_EQ(on_other.get(), a.get());
  EXPECT_TRUE(SameOwner(on_own, a));
  EXPECT_FALSE(SameOwner(on_other, a)) << "the second CPU bumps a stripe's count, not the value's";
}

// With no writer at all, the readers' own drains stripe the entry: the
// drain that notices the second CPU leaves it pending, and its caller runs
// the exclusive section that replaces the node. Many more reads than a read
// buffer holds, so that each CPU's reader drains its buffer itself.
TEST_F(ValueStripesTest, ReadersAloneStripeAnEntryWithoutAnyWriter) {
  auto c = Make(kStripes);
  L1Value a = V("a");
  ASSERT_TRUE(c->Set("k", a, Version(1)).ok());
  EXPECT_EQ(*ReadOn(0, *c, "k", 500), "a");
  EXPECT_EQ(a.use_count(), 2) << "one CPU so far";
  EXPECT_EQ(*ReadOn(1, *c, "k", 500), "a");
  EXPECT_EQ(a.use_count(), static_cast<long>(2 + kStripes - 1)) << "not striped by the readers' drains";
  EXPECT_FALSE(SameOwner(ReadOn(1, *c, "k"), a));
  EXPECT_TRUE(SameOwner(ReadOn(0, *c, "k"), a));
}

// A shard stripes at most max(128, max_entries / 64) entries at once, so
// reads from several CPUs cannot make every entry pay for stripes; an entry
// that leaves makes room for another.
TEST_F(ValueStripesTest, AShardStripesABoundedNumberOfEntries) {
  constexpr int kKeys = 300;
  auto c = Make(kStripes, 1000);  // bound: 128
  std::vector<L1Value> values;
  for (int i = 0; i < kKeys; ++i) {
    values.push_back(V("v" + std::to_string(i)));
    ASSERT_TRUE(c->Set("k" + std::to_string(i), values.back(), Version(1)).ok());
  }
  const auto read_all = [&](int which) {
    ASSERT_TRUE(OnCpu(cpus_[which], [&] {
      for (int pass = 0; pass < 2; ++pass) {
        for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(c->Get("k" + std::to_string(i)).ok());
      }
    }));
  };
  const auto striped = [&] {
    Drain(*c);
    int n = 0;
    for (const L1Value& v : values) n += v.use_count() > 2 ? 1 : 0;
    return n;
  };
  read_all(0);
  read_all(1);
  read_all(0);
  EXPECT_EQ(striped(), 128);
  // Ten striped entries go: ten others may be striped in their place.
  int erased = 0;
  for (int i = 0; i < kKeys && erased < 10; ++i) {
    if (values[i].use_count() > 2) {
      ASSERT_TRUE(c->Erase("k" + std::to_string(i)).ok());
      ++erased;
    }
  }
  EXPECT_EQ(striped(), 118);
  read_all(1);
  read_all(0);
  EXPECT_EQ(striped(), 128);
}

// The bound holds when a drain that leaves entries to stripe runs its
// section and the section's own drains (of the other CPU's slot, holding
// hits not yet applied) would stripe more: those count the pending ones.
// A and B are the two CPUs; a read buffer holds 64 hits.
TEST_F(ValueStripesTest, TheBoundHoldsWhenASectionsOwnDrainsStripeToo) {
  constexpr int kKeys = 320;
  auto c = Make(kStripes, 1000);  // bound: 128
  std::vector<L1Value> values;
  for (int i = 0; i < kKeys; ++i) {
    values.push_back(V("v" + std::to_string(i)));
    ASSERT_TRUE(c->Set("k" + std::to_string(i), values.back(), Version(1)).ok());
  }
  const auto read = [&](int which, int from, int to) {
    ASSERT_TRUE(OnCpu(cpus_[which], [&] {
      for (int i = from; i < to; ++i) ASSERT_TRUE(c->Get("k" + std::to_string(i)).ok());
    }));
  };
  const auto striped = [&] {
    int n = 0;
    for (const L1Value& v : values) n += v.use_count() > 2 ? 1 : 0;
    return n;
  };
  read(0, 0, 128);    // A: keys 0-127 last read by A (two drains)
  read(1, 128, 320);  // B: keys 128-319 last read by B (three drains)
  read(0, 128, 192);  // A: one drain, 64 entries read by both: striped
  ASSERT_EQ(striped(), 64);
  read(1, 0, 40);     // B: 40 hits on A's keys, left in B's buffer
  // A: 64 more entries to stripe, up to the bound; the section's drain of
  // B's buffer finds 40 more read by both, and must stripe none of them.
  read(0, 192, 256);
  EXPECT_EQ(striped(), 128);
}

// A writer's exclusive section drains every buffer; the stripings those
// drains find are made inside the section, at most 16 of them (the rest are
// noted again by later drains, which stripe them outside it).
TEST_F(ValueStripesTest, AWritersSectionStripesAtMostSixteen) {
  constexpr int kKeys = 64;
  auto c = Make(kStripes);
  std::vector<L1Value> values;
  for (int i = 0; i < kKeys; ++i) {
    values.push_back(V("v" + std::to_string(i)));
    ASSERT_TRUE(c->Set("k" + std::to_string(i), values.back(), Version(1)).ok());
  }
  const auto read = [&](int which, int to) {
    ASSERT_TRUE(OnCpu(cpus_[which], [&] {
      for (int i = 0; i < to; ++i) ASSERT_TRUE(c->Get("k" + std::to_string(i)).ok());
    }));
  };
  const auto striped = [&] {
    int n = 0;
    for (const L1Value& v : values) n += v.use_count() > 2 ? 1 : 0;
    return n;
  };
  read(0, 64);  // A: one full buffer, drained: every key last read by A
  read(1, 60);  // B: 60 hits left in B's buffer
  Drain(*c);    // a writer's section drains them: 60 keys read by both
  EXPECT_EQ(striped(), 16);
  read(0, 64);  // A's drain notes the other 44 again and stripes them
  EXPECT_EQ(striped(), 60);
}

// Once a TinyLFU shard's sketch runs (it is half full), only entries the
// sketch knows to be hot are striped: one read from each CPU is not enough,
// dozens are.
TEST_F(ValueStripesTest, WithTheSketchRunningOnlyHotEntriesAreStriped) {
  auto c = Make(kStripes, 1000);
  for (int i = 0; i < 600; ++i) ASSERT_TRUE(c->Set("fill" + std::to_string(i), V("f"), Version(1)).ok());
  L1Value cold = V("cold"), hot = V("hot");
  ASSERT_TRUE(c->Set("cold", cold, Version(1)).ok());
  ASSERT_TRUE(c->Set("hot", hot, Version(1)).ok());
  for (int round = 0; round < 4; ++round) {
    for (int which = 0; which < 2; ++which) {
      if (round == 0) ReadOn(which, *c, "cold");
      ReadOn(which, *c, "hot", 20);
      Drain(*c);
    }
  }
  EXPECT_EQ(cold.use_count(), 2) << "an entry read once from each CPU was striped";
  EXPECT_EQ(hot.use_count(), static_cast<long>(2 + kStripes - 1)) << "the hot entry was not striped";
}

// The stripes reference the value they were made for: an overwrite must take
// them away with it, or the second CPU would go on reading the old value.
TEST_F(ValueStripesTest, AnOverwriteDropsTheOldValuesStripesAndNoCpuReadsTheOldValue) {
  auto c = Make(kStripes);
  L1Value a = V("a"), b = V("b"), d = V("d");
  ASSERT_TRUE(c->Set("k", a, Version(1)).ok());
  ReadOn(0, *c, "k");
  ReadOn(1, *c, "k");
  Drain(*c);
  ASSERT_EQ(a.use_count(), static_cast<long>(2 + kStripes - 1));

  ASSERT_TRUE(c->Set("k", b, Version(2)).ok());
  EXPECT_EQ(a.use_count(), 1) << "the overwrite kept a stripe of the old value";
  EXPECT_EQ(b.use_count(), 2);
  // The old value's last drained hit came from the second CPU: a hit from
  // the first one alone must not count as a second CPU for the new value.
  EXPECT_EQ(*ReadOn(0, *c, "k"), "b");
  Drain(*c);
  EXPECT_EQ(b.use_count(), 2) << "no stripes until the new value is read from two CPUs";
  EXPECT_EQ(*ReadOn(1, *c, "k"), "b");
  Drain(*c);
  EXPECT_EQ(b.use_count(), static_cast<long>(2 + kStripes - 1)) << "striped again";
  EXPECT_EQ(*ReadOn(1, *c, "k"), "b");

  ASSERT_TRUE(c->Invalidate("k", 3, std::chrono::seconds(30)).ok());
  EXPECT_EQ(b.use_count(), 1) << "the tombstone kept a stripe of the value";
  EXPECT_EQ(ReadOn(1, *c, "k"), nullptr);
  ASSERT_TRUE(c->Set("k", d, Version(3)).ok());
  EXPECT_EQ(*ReadOn(1, *c, "k"), "d");
  EXPECT_EQ(*ReadOn(0, *c, "k"), "d");
}

// A value served through a stripe keeps the bytes alive after the cache,
// its node and the stripes' array are gone (ASan checks the reads).
TEST_F(ValueStripesTest, ValuesServedThroughStripesOutliveTheCache) {
  auto c = Make(kStripes);
  L1Value v = V("striped");
  const std::string* bytes = v.get();
  ASSERT_TRUE(c->Set("k", std::move(v), Version(1)).ok());
  ReadOn(0, *c, "k");
  ReadOn(1, *c, "k");
  Drain(*c);
  const L1Value own = ReadOn(0, *c, "k");
  const L1Value other = ReadOn(1, *c, "k");
  ASSERT_FALSE(SameOwner(own, other)) << "not striped";
  c.reset();
  for (const L1Value& g : {own, other}) {
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g.get(), bytes);
    EXPECT_EQ(*g, "striped");
  }
}

TEST_F(ValueStripesTest, OneStripeMeansNone) {
  auto c = Make(1);
  L1Value a = V("a");
  ASSERT_TRUE(c->Set("k", a, Version(1)).ok());
  ReadOn(0, *c, "k");
  ReadOn(1, *c, "k");
  Drain(*c);
  EXPECT_EQ(a.use_count(), 2);
  EXPECT_TRUE(SameOwner(ReadOn(1, *c, "k"), a));
}

// Two readers pinned to the two CPUs read a few hot keys as fast as they
// can (their buffers fill, their drains make stripes while the other reads)
// while a writer overwrites the keys but the first (taking the stripes away)
// and erases them. Every value served must be the one stored for the
// version served; the first key, never written again, must have been
// striped meanwhile (decided by a drain with the other CPU's reader inside).
TEST_F(ValueStripesTest, ReadersRacingWithDrainsAndOverwritesAreServedWhatWasStored) {
  auto c = Make(kStripes);
  constexpr int kKeys = 4;
  auto payload = [](int key, std::uint64_t version) {
    return "k" + std::to_string(key) + "v" + std::to_string(version);
  };
  const L1Value first = V(payload(0, 1));
  ASSERT_TRUE(c->Set("hot:0", first, Version(1)).ok());
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, served{0};
  std::vector<std::thread> readers;
  std::atomic<int> pinned{0};
  for (int which = 0; which < 2; ++which) {
    readers.emplace_back([&, which] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus_[which], &set);
      if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0) pinned.fetch_add(1);
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const int key = i % kKeys;
        auto r = c->Get("hot:" + std::to_string(key));
        if (!r.ok()) {
          bad.fetch_add(1);
        } else if (r->has_value()) {
          served.fetch_add(1, std::memory_order_relaxed);
          if ((*r)->value == nullptr || *(*r)->value != payload(key, (*r)->version)) bad.fetch_add(1);
        }
      }
    });
  }
  std::uint64_t version = 1;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
  while (std::chrono::steady_clock::now() < until) {
    for (int key = 1; key < kKeys; ++key) {
      ++version;
      const std::string k = "hot:" + std::to_string(key);
      if (version % 17 == 0) {
        ASSERT_TRUE(c->Erase(k).ok());
      } else {
        ASSERT_TRUE(c->Set(k, V(payload(key, version)), Version(version)).ok());
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop.store(true);
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(pinned.load(), 2);
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(served.load(), 0u);
  EXPECT_EQ(first.use_count(), static_cast<long>(2 + kStripes - 1)) << "hot:0 was not striped during the race";
}

}  // namespace
}  // namespace tiercache
