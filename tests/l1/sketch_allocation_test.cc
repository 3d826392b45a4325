// A shard makes its frequency sketch when it is first half full (Shard::
// SketchDue / NewSketch). If that allocation fails, the shard goes on with a
// one-block sketch: no store fails for it, and the bounds still hold.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "tiercache/l1_cache.h"

// Over-aligned allocations (the sketch's 64-byte blocks, the nodes) of at
// least t_fail_from bytes throw std::bad_alloc while it is non-zero. Nodes
// are under a kilobyte; a 4,096-entry sketch is 32 KiB.
namespace {
std::atomic<std::size_t> g_fail_from{0};
std::atomic<int> g_failed{0};
}  // namespace

void* operator new(std::size_t n, std::align_val_t al) {
  const std::size_t from = g_fail_from.load();
  if (from != 0 && n >= from) {
    g_failed.fetch_add(1);
    throw std::bad_alloc();
  }
  const auto a = static_cast<std::size_t>(al);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace tiercache {
namespace {

TEST(L1SketchAllocationTest, AFailedSketchAllocationFailsNoStoreAndBoundsHold) {
  FakeClock clock;
  L1Options o;
  o.policy = L1Policy::kTinyLfu;
  o.max_entries = 4'096;
  o.num_shards = 1;
  o.default_ttl = std::chrono::hours(1);
  o.clock = &clock;
  auto created = L1Cache::Create(o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  L1Cache& c = **created;
  L1Fill fill;
  fill.version = 1;
  g_fail_from = 16 * 1024;
  for (int i = 0; i < 10'000; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(c.Set(key, std::make_shared<const std::string>(key), fill).ok()) << key;
  }
  g_fail_from = 0;
  EXPECT_EQ(g_failed.load(), 1) << "one attempt, when the shard was first half full";
  EXPECT_LE(c.Stats().entries, 4'096u);
  EXPECT_GE(c.Stats().evictions, 10'000u - 4'096u);
  auto r = c.Get("k9999");
  ASSERT_TRUE(r.ok());
}

}  // namespace
}  // namespace tiercache
