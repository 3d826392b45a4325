// RedisClient under concurrency (also run under ASan+UBSan and TSan in CI):
// sync and async callers mixed, destruction with requests in flight, and
// deadlines racing completions.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using ::tiercache::testing::RedisClusterPorts;

#define REQUIRE_CLUSTER() TIERCACHE_REQUIRE_SERVER("redis cluster node", RedisClusterPorts()[0])

std::unique_ptr<RedisClient> Connect(RedisClientOptions o = testing::ClusterOptions()) {
  auto c = RedisClient::Create(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(ClientConcurrencyTest, SyncAndAsyncCallersMix) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::atomic<int> errors{0}, async_done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        std::string key = "tc:conc:" + std::to_string(t) + ":" + std::to_string(i % 20);
        if (!client->Set(key, std::to_string(i)).ok()) errors.fetch_add(1);
        auto got = client->Get(key);
        if (!got.ok() || got->value_or("") != std::to_string(i)) errors.fetch_add(1);
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        client->CommandAsync({"INCR", "tc:conc:counter"}, CommandOptions{}, [&](Result<Reply> r) {
          if (!r.ok()) errors.fetch_add(1);
          async_done.fetch_add(1);
        });
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 500 && async_done.load() < 2000; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(async_done.load(), 2000);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_TRUE(client->Del({"tc:conc:counter"}).ok());
}

TEST(ClientConcurrencyTest, DestroyWithRequestsInFlightRunsEveryCallbackOnce) {
  REQUIRE_CLUSTER();
  std::atomic<int> done{0}, cancelled{0};
  constexpr int kRequests = 20000;
  {
    auto client = Connect();
    ASSERT_TRUE(client);
    for (int i = 0; i < kRequests; ++i) {
      client->GetAsync("tc:conc:destroy:" + std::to_string(i % 100), {}, [&](Result<std::optional<std::string>> r) {
        if (!r.ok() && r.status().IsCancelled()) cancelled.fetch_add(1);
        done.fetch_add(1);
      });
    }
  }  // destroyed with most requests still queued or in flight
  EXPECT_EQ(done.load(), kRequests);
  std::printf("%d of %d requests were cancelled by the destruction\n", cancelled.load(), kRequests);
}

// Callbacks that submit their next request (as a pipeline of async calls
// does) run on the I/O thread, which queues those requests for itself: the
// ones it still holds when the client is destroyed must be finished too
// (kCancelled), each callback run once. The destruction lands at a random
// point of the chains, so the rounds reach that window many times.
TEST(ClientConcurrencyTest, DestroyWhileCallbacksResubmitRunsEveryCallbackOnce) {
  REQUIRE_CLUSTER();
  struct Chains {
    RedisClient* client = nullptr;
    std::atomic<int> submitted{0}, done{0}, errors{0};
    void Issue(int i) {
      submitted.fetch_add(1);
      client->GetAsync("tc:conc:chain:" + std::to_string(i % 50), {}, [this, i](Result<std::optional<std::string>> r) {
        done.fetch_add(1);
        if (r.ok()) {
          Issue(i + 1);  // on the I/O thread
        } else if (!r.status().IsCancelled()) {
          errors.fetch_add(1);
        }
      });
    }
  };
  for (int round = 0; round < 30; ++round) {
    Chains chains;
    {
      auto client = Connect();
      ASSERT_TRUE(client);
      chains.client = client.get();
      for (int i = 0; i < 64; ++i) chains.Issue(i * 7);
      std::this_thread::sleep_for(std::chrono::milliseconds(2 + round % 7));
    }  // destroyed while the chains run
    ASSERT_EQ(chains.done.load(), chains.submitted.load()) << "round " << round;
    EXPECT_EQ(chains.errors.load(), 0);
  }
}

TEST(ClientConcurrencyTest, TinyDeadlinesRaceCompletionsSafely) {
  REQUIRE_CLUSTER();
  RedisClientOptions o = testing::ClusterOptions();
  auto client = Connect(o);
  ASSERT_TRUE(client);
  // Every key holds its own name: a reply matched to the wrong request shows.
  std::vector<std::vector<std::string>> sets;
  for (int k = 0; k < 64; ++k) sets.push_back({"SET", "tc:conc:tiny:" + std::to_string(k), "tc:conc:tiny:" + std::to_string(k)});
  for (const auto& r : client->Pipeline(sets)) ASSERT_TRUE(r.ok());
  std::atomic<int> ok{0}, late{0}, other{0}, mismatched{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        CallOptions call;
        call.timeout = std::chrono::milliseconds(1 + (i % 3));
        std::string key = "tc:conc:tiny:" + std::to_string((t * 7 + i) % 64);
        auto r = (t == 0 && i % 2 == 0) ? client->Get(key, call) : client->Get(key, CallOptions{});
        if (t != 0 && i % 5 == 0) {
          // Also a single caller with tiny deadlines (direct I/O path).
          auto tiny = client->Get(key, call);
          if (tiny.ok() && tiny->value_or("") != key) mismatched.fetch_add(1);
        }
        if (r.ok()) {
          if (r->value_or("") != key) mismatched.fetch_add(1);
          ok.fetch_add(1);
        } else if (r.status().IsDeadlineExceeded() || r.status().IsUnavailable()) {
          late.fetch_add(1);
        } else {
          other.fetch_add(1);
          ADD_FAILURE() << r.status().ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(mismatched.load(), 0);
  EXPECT_EQ(ok.load() + late.load(), 4000);
  // The client still works normally afterwards, on every node.
  for (int k = 0; k < 64; ++k) {
    auto r = client->Get("tc:conc:tiny:" + std::to_string(k));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->value_or(""), "tc:conc:tiny:" + std::to_string(k));
  }
}

TEST(ClientConcurrencyTest, RepliesOutlivingTheirDeadlineAreNeverHandedToTheNextCall) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  // A script that keeps the node busy for 3 ms, called with a 1 ms deadline:
  // its reply arrives after the caller gave up and must be discarded.
  const std::string slow =
      "local s = redis.call('TIME') repeat local n = redis.call('TIME') "
      "until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 3000 return 'slow'";
  int timed_out = 0, mismatched = 0;
  for (int i = 0; i < 40; ++i) {
    std::string key = "tc:conc:orphan:{" + std::to_string(i % 4) + "}";
    ASSERT_TRUE(client->Set(key, key).ok());
    CommandOptions opts;
    opts.key_index = 3;
    opts.call.timeout = 1ms;
    auto r = client->Command({"EVAL", slow, "1", key}, opts);
    if (!r.ok()) ++timed_out;  // DeadlineExceeded, or Unavailable when no time was left to retry
    auto got = client->Get(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    if (got->value_or("") != key) ++mismatched;
  }
  EXPECT_EQ(mismatched, 0);
  EXPECT_GT(timed_out, 20);
}

TEST(ClientConcurrencyTest, ClientsCreatedAndDestroyedInParallel) {
  REQUIRE_CLUSTER();
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto c = RedisClient::Create(testing::ClusterOptions());
        if (!c.ok() || !(*c)->Get("tc:conc:cd").ok()) errors.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
}

}  // namespace
}  // namespace tiercache::redis
