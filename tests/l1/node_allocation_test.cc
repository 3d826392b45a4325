// A fill whose memory cannot be allocated (its node's slab, or the shard's
// table or policy records growing) is an error value, not an exception:
// Set returns kResourceExhausted, nothing cached before is lost, and
// GetOrLoad still returns the value it loaded, uncached.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "tiercache/l1_cache.h"

// Plain allocations of at least g_fail_from bytes throw std::bad_alloc while
// it is non-zero: a node arena's slab (4 KiB and up) among them. (GCC cannot
// see that this file's new and delete are a matching malloc / free pair.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<std::size_t> g_fail_from{0};
std::atomic<int> g_failed{0};
}  // namespace

void* operator new(std::size_t n) {
  const std::size_t from = g_fail_from.load();
  if (from != 0 && n >= from) {
    g_failed.fetch_add(1);
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tiercache {
namespace {

TEST(L1NodeAllocationTest, AFillWithoutMemoryIsResourceExhaustedAndLosesNothing) {
  FakeClock clock;
  L1Options o;
  o.num_shards = 1;
  o.max_entries = 100'000;
  o.default_ttl = std::chrono::hours(1);
  o.clock = &clock;
  auto created = L1Cache::Create(o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  L1Cache& c = **created;
  L1Fill fill;
  fill.version = 1;
  ASSERT_TRUE(c.Set("first", std::make_shared<const std::string>("v"), fill).ok());

  g_fail_from = 4096;
  int stored = 1;
  Status failure = Status::Ok();
  for (int i = 0; i < 1000 && failure.ok(); ++i) {
    failure = c.Set("k" + std::to_string(i), std::make_shared<const std::string>("v"), fill);
    if (failure.ok()) ++stored;
  }
  EXPECT_TRUE(failure.IsResourceExhausted()) << failure.ToString();
  EXPECT_GT(g_failed.load(), 0);
  EXPECT_EQ(c.Stats().entries, static_cast<std::uint64_t>(stored));
  auto first = c.Get("first");
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(*(*first)->value, "v");

  // A load still reaches its callers, uncached.
  auto loaded = c.GetOrLoad(
      "loaded", [] { return Result<L1Loaded>(L1Loaded{std::make_shared<const std::string>("fresh"), 3}); },
      clock.Now() + std::chrono::seconds(1));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->kind, L1EntryKind::kValue);
  ASSERT_NE(loaded->value, nullptr);
  EXPECT_EQ(*loaded->value, "fresh");
  EXPECT_EQ(loaded->version, 3u);
  auto cached = c.Get("loaded");
  ASSERT_TRUE(cached.ok());
  EXPECT_FALSE(cached->has_value());

  g_fail_from = 0;
  EXPECT_TRUE(c.Set("after", std::make_shared<const std::string>("v"), fill).ok());
  EXPECT_EQ(c.Stats().entries, static_cast<std::uint64_t>(stored + 1));
}

}  // namespace
}  // namespace tiercache
