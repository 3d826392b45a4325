// Groups on the real cluster (the Lua scripts): one move of a group ends
// every member in one round trip whatever their number, a fill made under an
// earlier generation is refused by the server, reads take the generation in
// the same MGET, and a lost generation key revives nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "common/forwarding_l2_store.h"
#include "common/test_env.h"
#include "core/cache_test_util.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;

// Counts the L2 calls that reach Redis, by kind.
class CountingStore : public testing::ForwardingL2Store {
 public:
  using ForwardingL2Store::ForwardingL2Store;
  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    ++invalidate_calls;
    invalidate_requests += requests.size();
    return inner_->InvalidateMany(requests, fence_ttl, timeout);
  }
  std::atomic<int> invalidate_calls{0};
  std::atomic<size_t> invalidate_requests{0};
};

class GroupClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    store_ = std::make_shared<CountingStore>(MakeRedisL2Store(client_));
    a_ = Make(store_);
    b_ = Make(MakeRedisL2Store(client_));
    group_ = "feed:{community:" + testing::UniqueTag() + "}";
  }

  std::unique_ptr<Cache> Make(std::shared_ptr<L2Store> l2) {
    CacheOptions o;
    o.l2 = std::move(l2);
    o.ttl = 60s;
    o.l1.default_ttl = 60s;
    o.early_refresh_beta = 0;
    o.hard_timeout = 10s;
    o.soft_timeout = 10s;
    return testing::MakeCacheOrFail(o);
  }
  std::string Page(int n) const { return group_ + ":page:" + std::to_string(n); }
  GetOptions InGroup() const {
    GetOptions g;
    g.group = group_;
    return g;
  }
  static std::string Rev(const Result<CachedValue>& v) {
    return v.ok() ? std::string(v->payload().substr(0, v->payload().find(' '))) : v.status().ToString();
  }
  Loader FeedLoader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads_;
      return LoadResult{"rev" + std::to_string(revision_.load()) + " " + std::string(key), std::nullopt};
    };
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::shared_ptr<CountingStore> store_;
  std::unique_ptr<Cache> a_, b_;
  std::string group_;
  std::atomic<int> revision_{1};
  std::atomic<int> loads_{0};
};

TEST_F(GroupClusterTest, OneMoveInOneRoundTripEndsEveryPage) {
  constexpr int kPages = 200;
  for (int n = 1; n <= kPages; ++n) ASSERT_EQ(Rev(a_->Get(Page(n), FeedLoader(), InGroup())), "rev1");
  for (int n = 1; n <= kPages; ++n) {  // pod b reads them from L2
    Result<CachedValue> v = b_->Get(Page(n), FeedLoader(), InGroup());
    ASSERT_EQ(Rev(v), "rev1");
    ASSERT_EQ(v->source(), ValueSource::kL2) << Describe(v);
  }
  EXPECT_EQ(loads_, kPages);
  revision_ = 2;
  Result<uint64_t> gen = a_->InvalidateGroup(group_);
  ASSERT_TRUE(gen.ok()) << gen.status().ToString();
  EXPECT_GE(*gen, uint64_t{1} << 40);
  EXPECT_EQ(store_->invalidate_calls, 1);
  EXPECT_EQ(store_->invalidate_requests, 1u) << "one request for the group, not one per page";
  Result<std::optional<std::string>> stored = client_->Get(GroupKeyFor(group_));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(**stored, std::to_string(*gen));
  // L2: every page is out, for a pod that did not move the group (b's L1 has
  // not been told: a fresh pod c stands for L2 alone).
  auto c = Make(MakeRedisL2Store(client_));
  for (int n = 1; n <= kPages; ++n) EXPECT_EQ(Rev(c->Get(Page(n), FeedLoader(), InGroup())), "rev2") << n;
  // a's L1: every page is out.
  for (int n = 1; n <= kPages; ++n) EXPECT_EQ(Rev(a_->Get(Page(n), FeedLoader(), InGroup())), "rev2") << n;
  EXPECT_EQ(loads_, 2 * kPages);
}

TEST_F(GroupClusterTest, TheServerRefusesAFillMadeUnderAnEarlierGeneration) {
  std::promise<void> read_source, resume;
  std::shared_future<void> resume_f = resume.get_future().share();
  std::atomic<int> calls{0};
  Loader slow = [&](std::string_view key) -> Result<LoadResult> {
    const int seen = revision_.load();
    if (calls.fetch_add(1) == 0) {
      read_source.set_value();
      resume_f.wait();
    }
    return LoadResult{"rev" + std::to_string(seen) + " " + std::string(key), std::nullopt};
  };
  auto first = std::async(std::launch::async, [&] { return a_->Get(Page(1), slow, InGroup()); });
  read_source.get_future().wait();
  revision_ = 2;
  ASSERT_TRUE(b_->InvalidateGroup(group_).ok());
  resume.set_value();
  Result<CachedValue> got = first.get();
  EXPECT_EQ(Rev(got), "rev2") << Describe(got);
  EXPECT_EQ(calls, 2) << "the refused fill should have been loaded once more";
  // What L2 holds is rev2, at the current generation.
  Result<std::optional<std::string>> raw = client_->Get(Page(1));
  ASSERT_TRUE(raw.ok() && raw->has_value());
  Result<EnvelopeView> e = DecodeEnvelope(**raw);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->grouped);
  EXPECT_EQ(std::string(e->payload.substr(0, 4)), "rev2");
  Result<std::optional<std::string>> gen = client_->Get(GroupKeyFor(group_));
  ASSERT_TRUE(gen.ok() && gen->has_value());
  EXPECT_EQ(std::to_string(e->group_generation), **gen);
}

TEST_F(GroupClusterTest, ALostGenerationKeyRevivesNoMember) {
  ASSERT_EQ(Rev(a_->Get(Page(1), FeedLoader(), InGroup())), "rev1");
  ASSERT_EQ(Rev(b_->Get(Page(1), FeedLoader(), InGroup())), "rev1");  // b: from L2
  // The generation key is evicted (or deleted by hand): members are not
  // current any more, and the group restarts at a random generation.
  ASSERT_TRUE(client_->Del({GroupKeyFor(group_)}).ok());
  revision_ = 2;
  auto c = Make(MakeRedisL2Store(client_));
  EXPECT_EQ(Rev(c->Get(Page(1), FeedLoader(), InGroup())), "rev2");
  Result<std::optional<std::string>> gen = client_->Get(GroupKeyFor(group_));
  ASSERT_TRUE(gen.ok() && gen->has_value()) << "the next load gave the group a generation again";
}

TEST_F(GroupClusterTest, GetManyOfPagesIsOneReadWithTheGeneration) {
  std::vector<std::string> pages;
  for (int n = 1; n <= 20; ++n) pages.push_back(Page(n));
  std::atomic<int> batches{0};
  BatchLoader loader = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    ++batches;
    std::vector<LoadResult> out;
    for (const std::string& k : keys) out.push_back(LoadResult{"rev" + std::to_string(revision_.load()) + " " + k, std::nullopt});
    return out;
  };
  Result<std::vector<Result<CachedValue>>> r = a_->GetMany(pages, loader, InGroup());
  ASSERT_TRUE(r.ok());
  for (const auto& v : *r) ASSERT_EQ(Rev(v), "rev1");
  r = b_->GetMany(pages, loader, InGroup());
  ASSERT_TRUE(r.ok());
  for (const auto& v : *r) EXPECT_EQ(v->source(), ValueSource::kL2) << Describe(v);
  EXPECT_EQ(batches, 1);
  revision_ = 2;
  ASSERT_TRUE(b_->InvalidateGroup(group_).ok());
  r = b_->GetMany(pages, loader, InGroup());
  ASSERT_TRUE(r.ok());
  for (const auto& v : *r) EXPECT_EQ(Rev(v), "rev2");
  EXPECT_EQ(batches, 2);
}

TEST_F(GroupClusterTest, AKeyOutsideTheGroupsSlotIsRefusedBeforeAnyCall) {
  Result<CachedValue> v = a_->Get("post:{elsewhere}:1", FeedLoader(), InGroup());
  EXPECT_TRUE(v.status().IsInvalidArgument()) << v.status().ToString();
  EXPECT_EQ(loads_, 0);
}

}  // namespace
}  // namespace tiercache
