// Attacks on groups that the current code withstands (kept as regression
// tests): an early refresh, a GetMany batch and a lease holder, each begun
// before this pod's move, never hand an older member to a get begun after it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/l2_store.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;
using testing::MakeCacheOrFail;

constexpr char kGroup[] = "feed:{adv3h}";
std::string Page(int n) { return "feed:{adv3h}:page:" + std::to_string(n); }
GetOptions InGroup() {
  GetOptions g;
  g.group = kGroup;
  return g;
}
std::string Rev(const Result<CachedValue>& v) {
  if (!v.ok()) return v.status().ToString();
  return std::string(v->payload().substr(0, v->payload().find(' ')));
}
CacheOptions Options(std::shared_ptr<L2Store> l2) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl = 60s;
  o.l1.default_ttl = 60s;
  o.early_refresh_beta = 0;
  return o;
}

// A stalled loader: the first call after arm() reads the revision, then
// waits for release().
struct Gate {
  std::atomic<int> revision{1};
  std::atomic<bool> armed{false};
  std::promise<void> entered, go;
  std::shared_future<void> go_f = go.get_future().share();
  std::string Read(std::string_view key) {
    const int seen = revision.load();
    // Every load measurably long: early refresh scales with the load's δ,
    // and a δ of 0 µs would never refresh.
    std::this_thread::sleep_for(2ms);
    if (armed.exchange(false)) {
      entered.set_value();
      go_f.wait();
    }
    return "rev" + std::to_string(seen) + " " + std::string(key);
  }
};

TEST(Adversary3GroupsHeldTest, AnEarlyRefreshBegunBeforeTheMoveNeverReachesL1OrL2) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Gate gate;
  Loader loader = [&](std::string_view key) -> Result<LoadResult> { return LoadResult{gate.Read(key), {}}; };
  ASSERT_EQ(Rev(a->Get(Page(1), loader, InGroup())), "rev1");
  gate.armed = true;
  GetOptions eager = InGroup();
  eager.early_refresh_beta = 1e9;  // every hit refreshes
  ASSERT_EQ(Rev(a->Get(Page(1), loader, eager)), "rev1");  // L1 hit; the refresh reads rev1 and stalls
  ASSERT_EQ(gate.entered.get_future().wait_for(10s), std::future_status::ready) << "no early refresh started";
  gate.revision = 2;
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  gate.go.set_value();
  std::this_thread::sleep_for(50ms);
  for (int i = 0; i < 3; ++i) {
    Result<CachedValue> v = a->Get(Page(1), loader, InGroup());
    EXPECT_EQ(Rev(v), "rev2") << Describe(v);
  }
  auto b = MakeCacheOrFail(Options(l2));
  EXPECT_EQ(Rev(b->Get(Page(1), loader, InGroup())), "rev2");
}

TEST(Adversary3GroupsHeldTest, AGetManyBatchBegunBeforeTheMoveIsNotJoinedAfterIt) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Gate gate;
  BatchLoader batch = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    std::vector<LoadResult> out;
    for (const auto& k : keys) out.push_back(LoadResult{gate.Read(k), {}});
    return out;
  };
  Loader one = [&](std::string_view key) -> Result<LoadResult> { return LoadResult{gate.Read(key), {}}; };
  gate.armed = true;
  auto first = std::async(std::launch::async, [&] { return a->GetMany({Page(1), Page(2)}, batch, InGroup()); });
  ASSERT_EQ(gate.entered.get_future().wait_for(10s), std::future_status::ready);
  gate.revision = 2;
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  auto later = std::async(std::launch::async, [&] { return a->GetMany({Page(1), Page(2)}, batch, InGroup()); });
  auto single = std::async(std::launch::async, [&] { return a->Get(Page(1), one, InGroup()); });
  std::this_thread::sleep_for(20ms);
  gate.go.set_value();
  ASSERT_TRUE(first.get().ok());
  Result<std::vector<Result<CachedValue>>> r = later.get();
  ASSERT_TRUE(r.ok());
  for (const auto& v : *r) EXPECT_EQ(Rev(v), "rev2") << Describe(v);
  EXPECT_EQ(Rev(single.get()), "rev2");
  for (int n = 1; n <= 2; ++n) EXPECT_EQ(Rev(a->Get(Page(n), one, InGroup())), "rev2");
}

TEST(Adversary3GroupsHeldTest, ALeaseHolderElsewhereNeverLetsAnOlderMemberBeServedStale) {
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = Options(l2);
  o.ttl = 1s;
  o.max_stale = 600s;
  auto a = MakeCacheOrFail(o);
  auto b = MakeCacheOrFail(o);
  Gate gate;
  Loader loader = [&](std::string_view key) -> Result<LoadResult> { return LoadResult{gate.Read(key), {}}; };
  ASSERT_EQ(Rev(a->Get(Page(1), loader, InGroup())), "rev1");
  std::this_thread::sleep_for(1100ms);  // expired: a stale copy in a's L1 and in L2
  gate.revision = 2;
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  gate.armed = true;
  auto holder = std::async(std::launch::async, [&] { return b->Get(Page(1), loader, InGroup()); });
  ASSERT_EQ(gate.entered.get_future().wait_for(10s), std::future_status::ready);  // b holds the lease
  Result<CachedValue> v = a->Get(Page(1), loader, InGroup());
  EXPECT_TRUE(!v.ok() || Rev(v) == "rev2") << Describe(v);
  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf(kGroup), true);
  Result<CachedValue> w = a->Get(Page(1), loader, InGroup());
  EXPECT_TRUE(!w.ok() || Rev(w) == "rev2") << Describe(w);
  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf(kGroup), false);
  gate.go.set_value();
  EXPECT_EQ(Rev(holder.get()), "rev2");
}

}  // namespace
}  // namespace tiercache
