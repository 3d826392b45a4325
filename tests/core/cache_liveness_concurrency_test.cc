// Liveness of the tiered cache under the interleavings that used to break it
// (issue 10, "Liveness" items 6-9 and 11), over the in-memory L2 store with
// real clocks: hung loaders, queued loads, deadlines of queued async gets, a
// dead L2 shard, GetMany's single-flight and soft timeout, per-call options
// under single-flight, leases of queued loads, slow lease releases, and a
// temporary loader outliving its TypedCache::Get call.
//
// Each test forces its interleaving with gates (loaders block until the test
// opens them) and stays well under 3 s, also under TSan. Every gate is opened
// before the caches are destroyed (a cache's destructor waits for its running
// loads), also when an assertion fails early: see OpenOnExit. Whatever a
// loader touches is declared before the caches, so it outlives loads that
// finish in the background; no ASSERT runs while a test's thread is running.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/codec.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

// A gate loaders block on until the test opens it.
class Gate {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // Waits until the gate is open or `max` has passed; true when open.
  bool WaitFor(std::chrono::nanoseconds max) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, max, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Runs `fn` when it goes out of scope. Declared after the caches it protects,
// so it runs before their destructors (which wait for running loads).
class OpenOnExit {
 public:
  explicit OpenOnExit(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~OpenOnExit() { fn_(); }
  OpenOnExit(const OpenOnExit&) = delete;
  OpenOnExit& operator=(const OpenOnExit&) = delete;

 private:
  std::function<void()> fn_;
};

// Polls `pred` every millisecond for at most `max`; true when it held.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds max) {
  const Steady::time_point until = Steady::now() + max;
  while (!pred()) {
    if (Steady::now() >= until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::chrono::milliseconds Since(Steady::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - t0);
}

// A loader returning "<key>@1", counting its calls.
struct CountingLoader {
  std::atomic<int> calls{0};
  std::chrono::milliseconds delay{0};
  Loader Get() {
    return [this](std::string_view key) -> Result<LoadResult> {
      calls.fetch_add(1);
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      return LoadResult{std::string(key) + "@1", 1};
    };
  }
};

// A batch loader returning "<key>@1" per key, recording what it was asked.
struct RecordingBatchLoader {
  std::atomic<int> calls{0};
  std::chrono::milliseconds delay{0};
  std::mutex mu;
  std::vector<std::vector<std::string>> asked;  // GUARDED_BY(mu)

  BatchLoader Get() {
    return [this](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
      calls.fetch_add(1);
      {
        std::lock_guard<std::mutex> lock(mu);
        asked.push_back(keys);
      }
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      std::vector<LoadResult> out;
      for (const std::string& k : keys) out.push_back(LoadResult{k + "@1", 1});
      return out;
    };
  }
  std::vector<std::vector<std::string>> Asked() {
    std::lock_guard<std::mutex> lock(mu);
    return asked;
  }
};

// Forwards to another L2Store, counting the calls that reach each shard.
// Optionally it makes ReleaseLease slow: it sleeps `release_delay` first,
// whatever timeout it is given (a store or network that overruns).
struct ForwardingOptions {
  std::chrono::milliseconds release_delay{0};
};

class ForwardingL2 final : public L2Store {
 public:
  explicit ForwardingL2(std::shared_ptr<L2Store> inner, ForwardingOptions options = {})
      : inner_(std::move(inner)), options_(options) {}

  int calls(int shard) const { return calls_[static_cast<size_t>(shard % 4)].load(); }

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) override {
    Count(key);
    return inner_->Get(key, timeout);
  }
  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    for (const auto& k : keys) Count(k);
    return inner_->GetMany(keys, timeout);
  }
  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys, milliseconds timeout) override {
    for (const auto& k : keys) Count(k);
    return inner_->Snapshot(keys, timeout);
  }
  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds max_age,
                                         milliseconds fence_ttl, milliseconds timeout) override {
    for (const auto& f : fills) Count(f.key);
    return inner_->Fill(fills, max_age, fence_ttl, timeout);
  }
  Status Put(std::string_view key, std::string_view envelope, milliseconds ttl, milliseconds timeout) override {
    Count(key);
    return inner_->Put(key, envelope, ttl, timeout);
  }
  Result<FenceOutcome> Invalidate(const InvalidateRequest& q, milliseconds fence_ttl, milliseconds timeout) override {
    Count(q.key);
    return inner_->Invalidate(q, fence_ttl, timeout);
  }
  Result<bool> RemoveCorrupt(std::string_view key, std::string_view bytes, milliseconds timeout) override {
    Count(key);
    return inner_->RemoveCorrupt(key, bytes, timeout);
  }
  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view token, milliseconds ttl,
                                    milliseconds timeout) override {
    Count(key);
    return inner_->AcquireLease(key, token, ttl, timeout);
  }
  Result<bool> ExtendLease(std::string_view key, std::string_view token, milliseconds ttl,
                           milliseconds timeout) override {
    Count(key);
    return inner_->ExtendLease(key, token, ttl, timeout);
  }
  Result<bool> ReleaseLease(std::string_view key, std::string_view token, milliseconds timeout) override {
    Count(key);
    if (options_.release_delay.count() > 0) std::this_thread::sleep_for(options_.release_delay);
    return inner_->ReleaseLease(key, token, timeout);
  }
  int ShardOf(std::string_view key) const override { return inner_->ShardOf(key); }

 private:
  void Count(std::string_view key) { calls_[static_cast<size_t>(ShardOf(key) % 4)].fetch_add(1); }

  const std::shared_ptr<L2Store> inner_;
  const ForwardingOptions options_;
  std::array<std::atomic<int>, 4> calls_{};
};

CacheOptions BaseOptions(std::shared_ptr<L2Store> l2) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.l1.default_ttl = 1s;
  return o;
}

std::unique_ptr<Cache> Make(CacheOptions o) { return ::tiercache::testing::MakeCacheOrFail(std::move(o)); }

// ---- 6: one hung loader does not take down loading ---------------------------

TEST(CacheLivenessConcurrencyTest, HungLoaderHoldsOneThreadAndItsLeaseForABoundedTimeOnly) {
  Gate release;
  std::array<std::atomic<int>, 3> hung_calls{};
  auto hung = [&](int i) -> Loader {
    return [&, i](std::string_view) -> Result<LoadResult> {
      hung_calls[static_cast<size_t>(i)].fetch_add(1);
      release.WaitFor(30s);
      return LoadResult{std::string("late"), 1};
    };
  };
  Steady::time_point t0{};                     // when pod A's load of "h" hangs
  std::atomic<long long> b_first_load_ms{-1};  // when B's loader first ran, from t0
  CountingLoader fine;
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.loader_threads = 2;
  o.max_hung_loads = 4;
  o.soft_timeout = 100ms;
  o.hard_timeout = 100ms;
  o.max_load_age = 400ms;
  o.lease.ttl = 150ms;
  auto a = Make(o);
  // Pod B shares the L2. What it loads is above its max_value_bytes, so it is
  // served to B but never shared through L2: pod A keeps seeing a miss on "h".
  CacheOptions ob = o;
  ob.max_value_bytes = 1;
  auto b = Make(ob);
  ASSERT_TRUE(a && b);
  OpenOnExit open([&] { release.Open(); });

  // Pod B keeps trying to load "h" from the moment pod A's load hangs. It may
  // load only once A's lease is gone: not before the keeper stops extending
  // it (max_load_age after it was taken), and then within one lease TTL.
  t0 = Steady::now();
  std::atomic<long long> b_loaded_ms{-1};      // when a B get first returned B's value
  std::string b_log;                           // written by pod_b, read after join
  std::thread pod_b([&] {
    Loader from_b = [&](std::string_view) -> Result<LoadResult> {
      long long unset = -1;
      b_first_load_ms.compare_exchange_strong(unset, Since(t0).count());
      return LoadResult{std::string("from-b"), 1};
    };
    if (!WaitUntil([&] { return hung_calls[0].load() > 0; }, 1s)) return;  // A's load holds the lease
    while (Since(t0) < 2500ms) {
      const Steady::time_point t = Steady::now();
      Result<CachedValue> v = b->Get("h", from_b);
      b_log += "  at " + std::to_string(Since(t0).count()) + " ms (took " + std::to_string(Since(t).count()) +
               " ms): " + v.status().ToString() + "\n";
      if (v.ok() && v->payload() == "from-b") {
        b_loaded_ms = Since(t0).count();
        return;
      }
    }
  });

  for (int i = 0; i < 20; ++i) {
    const Steady::time_point t = Steady::now();
    Result<CachedValue> v = a->Get("h", hung(0));
    const auto took = Since(t);
    EXPECT_TRUE(v.status().IsDeadlineExceeded()) << "get #" << i << ": " << v.status().ToString();
    EXPECT_GE(took, 90ms) << "get #" << i;
    EXPECT_LT(took, 300ms) << "get #" << i;
  }
  EXPECT_EQ(hung_calls[0].load(), 1) << "a hung load of one key took more than one loader thread";
  pod_b.join();
  if (b_first_load_ms.load() >= 0) {
    EXPECT_GE(b_first_load_ms.load(), 300) << "pod B loaded 'h' while pod A's lease on it was alive; B's gets:\n"
                                           << b_log;
  }
  EXPECT_GE(b_loaded_ms.load(), 0) << "pod B never loaded 'h': the hung holder's lease lives forever";
  EXPECT_LE(b_loaded_ms.load(), 400 + 150 + 300) << "max_load_age + lease.ttl + margin; B's gets:\n" << b_log;

  // Two more keys hang the same way: with `h`, three loads are stuck, one more
  // than loader_threads.
  for (int i = 1; i <= 2; ++i) {
    Result<CachedValue> v = a->Get("h" + std::to_string(i), hung(i));
    EXPECT_TRUE(v.status().IsDeadlineExceeded()) << v.status().ToString();
  }
  // Other keys still load, each within its hard timeout (bulkhead).
  std::vector<std::thread> others;
  std::atomic<int> ok{0};
  for (int i = 0; i < 10; ++i) {
    others.emplace_back([&, i] {
      const std::string key = "other" + std::to_string(i);
      const Steady::time_point t = Steady::now();
      Result<CachedValue> v = a->Get(key, fine.Get());
      EXPECT_TRUE(v.ok()) << key << ": " << v.status().ToString() << " after " << Since(t).count() << " ms";
      if (v.ok() && v->payload() == key + "@1") ok.fetch_add(1);
    });
  }
  for (auto& t : others) t.join();
  EXPECT_EQ(ok.load(), 10);
  EXPECT_EQ(fine.calls.load(), 10);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(hung_calls[static_cast<size_t>(i)].load(), 1) << "hung key " << i;
}

// The wait for another pod's lease that runs into the caller's hard timeout
// ends with kDeadlineExceeded and starts no load: the holder is loading, and
// a load without the lease is a second load of the key (with a hung source,
// one more stuck loader thread on every pod that waited).
TEST(CacheLivenessConcurrencyTest, LeaseWaitEndedByTheHardTimeoutStartsNoLoad) {
  Gate gate;
  std::atomic<int> a_calls{0}, b_calls{0};
  Loader a_loader = [&](std::string_view) -> Result<LoadResult> {
    a_calls.fetch_add(1);
    gate.WaitFor(5s);
    return LoadResult{std::string("from-a"), 1};
  };
  Loader b_loader = [&](std::string_view) -> Result<LoadResult> {
    b_calls.fetch_add(1);
    return LoadResult{std::string("from-b"), 1};
  };
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.lease.max_wait = 1s;  // longer than the waiter's hard timeout: the hard timeout ends the wait
  auto a = Make(o);
  ASSERT_TRUE(a);
  OpenOnExit open([&] { gate.Open(); });
  std::thread holder([&] {
    Result<CachedValue> v = a->Get("k", a_loader);  // holds k's lease until the gate opens
    EXPECT_TRUE(v.ok()) << v.status().ToString();
  });
  EXPECT_TRUE(WaitUntil([&] { return a_calls.load() == 1; }, 1s));

  GetOptions short_call;
  short_call.soft_timeout = 100ms;
  short_call.hard_timeout = 100ms;
  for (LeaseWaitTimeoutAction action : {LeaseWaitTimeoutAction::kLoad, LeaseWaitTimeoutAction::kFail}) {
    const bool fail = action == LeaseWaitTimeoutAction::kFail;
    b_calls = 0;
    CacheOptions ob = o;
    ob.lease.on_wait_timeout = action;
    auto b = Make(ob);
    if (!b) continue;
    const Steady::time_point t = Steady::now();
    Result<CachedValue> v = b->Get("k", b_loader, short_call);
    const auto took = Since(t);
    EXPECT_TRUE(v.status().IsDeadlineExceeded()) << "kFail=" << fail << ": " << v.status().ToString();
    EXPECT_LT(took, 300ms) << "kFail=" << fail;
    std::this_thread::sleep_for(50ms);  // a load started in the background would have run by now
    EXPECT_EQ(b_calls.load(), 0) << "kFail=" << fail
                                 << ": the waiter loaded 'k' without the lease when its hard timeout came";
  }
  gate.Open();
  holder.join();
  EXPECT_EQ(a_calls.load(), 1);
}

// ---- 7: GetAsync's deadline counts from the call --------------------------------

TEST(CacheLivenessConcurrencyTest, GetAsyncDeadlineCountsFromTheCallNotFromTheQueue) {
  Gate release;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.async_threads = 1;
  o.soft_timeout = 100ms;
  o.hard_timeout = 100ms;
  auto cache = Make(o);
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { release.Open(); });
  Loader slow = [&](std::string_view key) -> Result<LoadResult> {
    release.WaitFor(1s);  // "takes 1 s" (cut short when the test ends)
    return LoadResult{std::string(key), 1};
  };

  std::vector<std::future<Result<CachedValue>>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(cache->GetAsync("async" + std::to_string(i), slow));
  const Steady::time_point issued = Steady::now();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(futures[static_cast<size_t>(i)].wait_until(issued + 300ms), std::future_status::ready)
        << "GetAsync #" << i << " still pending 300 ms after the calls: its deadline counted from the queue";
    Result<CachedValue> v = futures[static_cast<size_t>(i)].get();
    EXPECT_TRUE(v.status().IsDeadlineExceeded()) << "#" << i << ": " << v.status().ToString();
  }
}

// ---- 8: one L2 shard down ---------------------------------------------------------

TEST(CacheLivenessConcurrencyTest, DeadShardFailsFastForItsKeysOnlyAndHasItsOwnBreaker) {
  auto mem = MakeInMemoryL2Store();
  auto l2 = std::make_shared<ForwardingL2>(mem);
  const int sick = l2->ShardOf("a");
  const int healthy = l2->ShardOf("b");
  ASSERT_NE(sick, healthy);
  InMemoryL2StoreSetShardDown(mem.get(), sick, true);

  CountingLoader sick_loader, healthy_loader;
  CounterMetrics ma, mb;
  CacheOptions o = BaseOptions(l2);
  o.lease.max_wait = 1s;
  o.breaker_failure_threshold = 2;
  o.breaker_open_duration = 10s;  // no probe during the test
  o.metrics = &ma;
  auto a = Make(o);
  o.metrics = &mb;
  auto b = Make(o);
  ASSERT_TRUE(a && b);

  int sick_calls_when_open = -1;
  uint64_t l2_errors_when_open = 0;
  for (int round = 0; round < 6; ++round) {
    // Keys on the dead shard: the loader's value, at once, every time.
    for (const char* key : {"a1", "a2"}) {
      const Steady::time_point t = Steady::now();
      Result<CachedValue> v = a->Get(key, sick_loader.Get());
      const auto took = Since(t);
      ASSERT_TRUE(v.ok()) << key << ": " << v.status().ToString();
      EXPECT_EQ(v->payload(), std::string(key) + "@1");
      EXPECT_EQ(v->source(), ValueSource::kLoader);
      EXPECT_LT(took, 200ms) << key << " round " << round << ": polled the dead shard for the lease wait";
    }
    // Keys on a live shard are loaded once and shared through L2.
    const std::string key = "b" + std::to_string(round);
    Result<CachedValue> v = a->Get(key, healthy_loader.Get());
    ASSERT_TRUE(v.ok()) << key << ": " << v.status().ToString();
    Result<CachedValue> w = b->Get(key, healthy_loader.Get());
    ASSERT_TRUE(w.ok()) << key << ": " << w.status().ToString();
    EXPECT_EQ(w->source(), ValueSource::kL2) << key << ": pod A did not store it in the live shard";
    if (round == 0) {  // two failures: the dead shard's breaker is open
      sick_calls_when_open = l2->calls(sick);
      l2_errors_when_open = ma.snapshot().get(Counter::kL2Error, Tier::kL2);
    }
  }
  EXPECT_EQ(sick_loader.calls.load(), 12) << "dead-shard keys are loaded on every get (cached nowhere)";
  EXPECT_EQ(healthy_loader.calls.load(), 6);
  EXPECT_EQ(mb.snapshot().get(Counter::kHit, Tier::kL2), 6u) << "pod B got every live-shard key from L2";
  const CounterMetrics::Snapshot sa = ma.snapshot();
  EXPECT_LE(sick_calls_when_open, 2) << "calls that reached the dead shard before its breaker opened";
  EXPECT_EQ(l2->calls(sick), sick_calls_when_open)
      << "the dead shard was called again: a success on the live shard closed its breaker";
  EXPECT_EQ(sa.get(Counter::kL2Error, Tier::kL2), l2_errors_when_open);
  EXPECT_EQ(sa.get(Counter::kBreakerOpened, Tier::kL2), 1u) << "only the dead shard's breaker opens";
  EXPECT_TRUE(sa.breaker_open);
  EXPECT_GT(l2->calls(healthy), 0);

  // Nothing of the dead shard's keys was stored.
  InMemoryL2StoreSetShardDown(mem.get(), sick, false);
  for (const char* key : {"a1", "a2"}) {
    Result<std::optional<std::string>> raw = mem->Get(key, 100ms);
    ASSERT_TRUE(raw.ok());
    EXPECT_FALSE(raw->has_value()) << key;
  }
}

// ---- 9: GetMany -----------------------------------------------------------------

TEST(CacheLivenessConcurrencyTest, GetManyIdenticalConcurrentCallsShareOneBatchLoad) {
  // Several rounds, fresh keys each: whether two calls split the keys between
  // them depends on how their registrations interleave, which a test cannot
  // force from outside; each round is one more chance for it.
  constexpr int kRounds = 12;
  std::array<RecordingBatchLoader, kRounds> loaders;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_TRUE(cache);
  std::string report;
  for (int round = 0; round < kRounds; ++round) {
    RecordingBatchLoader& loader = loaders[static_cast<size_t>(round)];
    loader.delay = 100ms;
    std::vector<std::string> keys;
    for (int i = 1; i <= 5; ++i) keys.push_back("m" + std::to_string(round) + "_" + std::to_string(i));
    std::barrier start(10);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 10; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader.Get());
        if (!got.ok() || got->size() != keys.size()) return;
        int good = 0;
        for (size_t i = 0; i < keys.size(); ++i) {
          if ((*got)[i].ok() && (*got)[i]->payload() == keys[i] + "@1") ++good;
        }
        if (good == 5) ok.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 10) << "round " << round;
    size_t keys_asked = 0;
    for (const auto& batch : loader.Asked()) keys_asked += batch.size();
    EXPECT_EQ(keys_asked, 5u) << "round " << round << ": a key was loaded more than once";
    if (loader.calls.load() != 1) {
      report += "  round " + std::to_string(round) + ":";
      for (const auto& batch : loader.Asked()) {
        report += " [";
        for (const auto& k : batch) report += " " + k;
        report += " ]";
      }
      report += "\n";
    }
  }
  EXPECT_TRUE(report.empty()) << "identical concurrent GetMany calls ran several batch loads (the keys split "
                                 "between them):\n"
                              << report;
}

TEST(CacheLivenessConcurrencyTest, GetManyMergesDuplicateKeys) {
  RecordingBatchLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_TRUE(cache);
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany({"a", "a", "b"}, loader.Get());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  for (const auto& r : *got) ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(loader.Asked(), (std::vector<std::vector<std::string>>{{"a", "b"}}));
  EXPECT_EQ((*got)[0]->payload(), "a@1");
  EXPECT_EQ((*got)[1]->payload(), (*got)[0]->payload());
  EXPECT_EQ((*got)[1]->version(), (*got)[0]->version());
  EXPECT_EQ((*got)[2]->payload(), "b@1");
}

TEST(CacheLivenessConcurrencyTest, GetManyJoinsTheLoadOfARunningGet) {
  Gate gate;
  std::atomic<int> x_calls{0};
  Loader x_loader = [&](std::string_view) -> Result<LoadResult> {
    x_calls.fetch_add(1);
    gate.WaitFor(2s);
    return LoadResult{std::string("x-from-get"), 1};
  };
  RecordingBatchLoader batch;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { gate.Open(); });
  std::thread getter([&] {
    Result<CachedValue> v = cache->Get("x", x_loader);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (v.ok()) {
      EXPECT_EQ(v->payload(), "x-from-get");
    }
  });
  EXPECT_TRUE(WaitUntil([&] { return x_calls.load() == 1; }, 1s));

  Result<std::vector<Result<CachedValue>>> got = Status::Internal("not run");
  std::thread many([&] { got = cache->GetMany({"x", "y"}, batch.Get()); });
  EXPECT_TRUE(WaitUntil([&] { return batch.calls.load() == 1; }, 1s)) << "y was not loaded while x was loading";
  gate.Open();
  many.join();
  getter.join();
  EXPECT_EQ(x_calls.load(), 1);
  EXPECT_EQ(batch.Asked(), (std::vector<std::vector<std::string>>{{"y"}})) << "x was loaded twice";
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 2u);
  ASSERT_TRUE((*got)[0].ok()) << (*got)[0].status().ToString();
  EXPECT_EQ((*got)[0]->payload(), "x-from-get");
  ASSERT_TRUE((*got)[1].ok()) << (*got)[1].status().ToString();
  EXPECT_EQ((*got)[1]->payload(), "y@1");
}

TEST(CacheLivenessConcurrencyTest, GetManyServesAStaleL2ValueAtTheSoftTimeout) {
  Gate gate;
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.ttl = 50ms;
  o.l1.default_ttl = 50ms;
  o.max_stale = 10s;
  o.soft_timeout = 50ms;
  o.hard_timeout = 1s;
  auto writer = Make(o);
  auto reader = Make(o);  // its L1 is empty: the stale copy comes from L2
  ASSERT_TRUE(writer && reader);
  OpenOnExit open([&] { gate.Open(); });
  ASSERT_TRUE(writer->Set("s1", "old", 1).ok());
  std::this_thread::sleep_for(100ms);  // expired, well within max_stale

  BatchLoader slow = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    gate.WaitFor(1s);
    return std::vector<LoadResult>(keys.size(), LoadResult{std::string("new"), 2});
  };
  const Steady::time_point t0 = Steady::now();
  Result<std::vector<Result<CachedValue>>> got = reader->GetMany({"s1"}, slow);
  const auto took = Since(t0);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1u);
  ASSERT_TRUE((*got)[0].ok()) << (*got)[0].status().ToString();
  EXPECT_TRUE((*got)[0]->stale());
  EXPECT_EQ((*got)[0]->payload(), "old");
  EXPECT_GE(took, 40ms);
  EXPECT_LT(took, 250ms) << "GetMany ignored the soft timeout";
}

// The stale copy may also be this pod's own L1 entry: with L2 unreachable
// (nothing it shows supersedes the copy), it is served at the soft timeout.
TEST(CacheLivenessConcurrencyTest, GetManyServesAStaleL1CopyAtTheSoftTimeoutWhenL2IsDown) {
  Gate gate;
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.use_l1 = true;
  o.ttl = 50ms;
  o.l1.default_ttl = 50ms;
  o.max_stale = 10s;
  o.soft_timeout = 50ms;
  o.hard_timeout = 1s;
  auto cache = Make(o);
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { gate.Open(); });
  BatchLoader fast = [](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    return std::vector<LoadResult>(keys.size(), LoadResult{std::string("old"), 1});
  };
  Result<std::vector<Result<CachedValue>>> first = cache->GetMany({"s1"}, fast);  // into L2 and L1
  ASSERT_TRUE(first.ok() && (*first)[0].ok());
  std::this_thread::sleep_for(100ms);  // expired, well within max_stale
  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf("s1"), true);

  BatchLoader slow = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    gate.WaitFor(1s);
    return std::vector<LoadResult>(keys.size(), LoadResult{std::string("new"), 2});
  };
  const Steady::time_point t0 = Steady::now();
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany({"s1"}, slow);
  const auto took = Since(t0);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1u);
  ASSERT_TRUE((*got)[0].ok()) << (*got)[0].status().ToString();
  EXPECT_TRUE((*got)[0]->stale());
  EXPECT_EQ((*got)[0]->payload(), "old");
  EXPECT_EQ((*got)[0]->source(), ValueSource::kL1);
  EXPECT_LT(took, 250ms) << "GetMany ignored the soft timeout";
}

TEST(CacheLivenessConcurrencyTest, GetManyWithOneShardDownCachesOnlyTheLiveShardsKeys) {
  auto mem = MakeInMemoryL2Store();
  const int sick = mem->ShardOf("a");
  ASSERT_NE(mem->ShardOf("b"), sick);
  ASSERT_NE(mem->ShardOf("c"), sick);
  InMemoryL2StoreSetShardDown(mem.get(), sick, true);
  RecordingBatchLoader loader;
  auto cache = Make(BaseOptions(mem));
  ASSERT_TRUE(cache);
  const std::vector<std::string> keys{"a1", "b1", "a2", "c1"};
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader.Get());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE((*got)[i].ok()) << keys[i] << ": " << (*got)[i].status().ToString();
    EXPECT_EQ((*got)[i]->payload(), keys[i] + "@1");
  }
  EXPECT_EQ(loader.calls.load(), 1);
  InMemoryL2StoreSetShardDown(mem.get(), sick, false);
  for (const std::string& key : keys) {
    Result<std::optional<std::string>> raw = mem->Get(key, 100ms);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw->has_value(), mem->ShardOf(key) != sick) << key;
  }
}

// ---- 11: per-call options, queued leases, slow lease release ------------------------

TEST(CacheLivenessConcurrencyTest, SingleFlightWaiterIsNotGivenAShorterCallersTimeout) {
  CountingLoader loader;
  loader.delay = 300ms;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_TRUE(cache);
  GetOptions short_call, long_call;
  short_call.hard_timeout = 50ms;
  long_call.hard_timeout = 1s;
  std::thread a([&] {
    Result<CachedValue> v = cache->Get("shared", loader.Get(), short_call);
    EXPECT_TRUE(v.status().IsDeadlineExceeded()) << v.status().ToString();
  });
  EXPECT_TRUE(WaitUntil([&] { return loader.calls.load() == 1; }, 1s));  // A's load runs
  const Steady::time_point t0 = Steady::now();
  Result<CachedValue> v = cache->Get("shared", loader.Get(), long_call);
  const auto took = Since(t0);
  a.join();
  ASSERT_TRUE(v.ok()) << "B got " << v.status().ToString() << " after " << took.count() << " ms";
  EXPECT_EQ(v->payload(), "shared@1");
  EXPECT_EQ(loader.calls.load(), 1);
}

TEST(CacheLivenessConcurrencyTest, LeaseOfAQueuedLoadIsKeptAlive) {
  std::atomic<int> p_calls{0}, q_calls{0};
  Loader p_loader = [&](std::string_view) -> Result<LoadResult> {
    p_calls.fetch_add(1);
    std::this_thread::sleep_for(600ms);
    return LoadResult{std::string("p"), 1};
  };
  Loader q_loader = [&](std::string_view) -> Result<LoadResult> {
    q_calls.fetch_add(1);
    return LoadResult{std::string("q"), 1};
  };
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.loader_threads = 1;
  o.lease.ttl = 150ms;
  o.lease.max_wait = 1s;
  o.hard_timeout = 1s;
  auto a = Make(o);
  auto b = Make(o);
  ASSERT_TRUE(a && b);
  std::thread p([&] { EXPECT_TRUE(a->Get("p", p_loader).ok()); });
  EXPECT_TRUE(WaitUntil([&] { return p_calls.load() == 1; }, 1s));  // the only loader thread is busy
  std::thread q([&] {
    Result<CachedValue> v = a->Get("q", q_loader);  // wins q's lease; its load is queued behind p
    EXPECT_TRUE(v.ok()) << v.status().ToString();
  });
  std::this_thread::sleep_for(300ms);  // twice q's lease TTL, while its load is still queued
  EXPECT_EQ(q_calls.load(), 0) << "q's load was not queued behind p";
  Result<CachedValue> v = b->Get("q", q_loader);
  q.join();
  p.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->payload(), "q");
  EXPECT_EQ(v->source(), ValueSource::kL2);
  EXPECT_EQ(q_calls.load(), 1) << "q's lease expired while its load was queued: pod B loaded it too";
}

TEST(CacheLivenessConcurrencyTest, GetWhoseLoadCannotBeQueuedReturnsWithinItsDeadlineDespiteASlowRelease) {
  Gate gate;
  std::atomic<int> started{0};
  Loader blocked = [&](std::string_view key) -> Result<LoadResult> {
    started.fetch_add(1);
    gate.WaitFor(5s);
    return LoadResult{std::string(key), 1};
  };
  CountingLoader loader;
  auto mem = MakeInMemoryL2Store();
  auto l2 = std::make_shared<ForwardingL2>(mem, ForwardingOptions{.release_delay = 300ms});
  CacheOptions o = BaseOptions(l2);
  o.loader_threads = 1;
  o.loader_queue = 1;
  o.max_hung_loads = 0;  // no replacement thread: the running load keeps the pool
  o.soft_timeout = 100ms;
  o.hard_timeout = 100ms;
  auto cache = Make(o);
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { gate.Open(); });
  // p1 runs on the only loader thread, p2 waits in the only queue slot.
  EXPECT_TRUE(cache->Get("p1", blocked).status().IsDeadlineExceeded());
  ASSERT_TRUE(WaitUntil([&] { return started.load() == 1; }, 1s));
  EXPECT_TRUE(cache->Get("p2", blocked).status().IsDeadlineExceeded());
  EXPECT_EQ(started.load(), 1);

  const Steady::time_point t0 = Steady::now();
  Result<CachedValue> v = cache->Get("p3", loader.Get());
  const auto took = Since(t0);
  EXPECT_TRUE(v.status().IsResourceExhausted()) << v.status().ToString();
  EXPECT_LT(took, 150ms) << "releasing the lease on the caller's thread overran the 100 ms deadline";
  EXPECT_EQ(loader.calls.load(), 0);
}

// ---- 10 / 11(e): a temporary loader outliving TypedCache::Get --------------------------

TEST(CacheLivenessConcurrencyTest, TypedCacheTemporaryLoaderOutlivesTheCall) {
  Gate gate;
  std::atomic<bool> loaded{false};
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.ttl = 50ms;
  o.l1.default_ttl = 50ms;
  o.max_stale = 10s;
  o.soft_timeout = 20ms;
  o.hard_timeout = 1s;
  Result<std::unique_ptr<TypedCache<StringCodec>>> made = TypedCache<StringCodec>::Create(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  TypedCache<StringCodec>& cache = **made;
  OpenOnExit open([&] { gate.Open(); });
  using Loaded = TypedCache<StringCodec>::Loaded;

  Result<TypedCache<StringCodec>::Got> first = cache.Get("t", [](std::string_view) -> Result<Loaded> {
    return Loaded{std::string("v1"), 1};
  });
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  std::this_thread::sleep_for(80ms);  // expired: a stale copy is available

  const std::string expected(200, 'n');  // on the heap: a freed copy is an ASan error
  GetOptions longer;
  longer.ttl = 10s;  // what the background load stores stays fresh for the check below
  const Steady::time_point t0 = Steady::now();
  // The loader is a temporary: it is destroyed when this statement ends,
  // while its load still waits on `gate`.
  Result<TypedCache<StringCodec>::Got> got = cache.Get(
      "t",
      [payload = expected, &gate, &loaded](std::string_view) -> Result<Loaded> {
        gate.WaitFor(2s);
        Loaded l{payload, 2};
        loaded = true;
        return l;
      },
      longer);
  const auto took = Since(t0);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->stale);
  EXPECT_EQ(got->value, std::optional<std::string>("v1"));
  EXPECT_LT(took, 500ms);
  EXPECT_FALSE(loaded.load()) << "the call waited for the load";

  gate.Open();  // the load ends in the background, reading what its loader captured
  ASSERT_TRUE(WaitUntil([&] { return loaded.load(); }, 2s));
  bool filled = WaitUntil(
      [&] {
        Result<TypedCache<StringCodec>::Got> g = cache.Get("t", [](std::string_view) -> Result<Loaded> {
          return Status::Unavailable("not this loader");
        });
        return g.ok() && !g->stale && g->version == 2;
      },
      1s);
  EXPECT_TRUE(filled) << "the background load did not fill the cache";
  Result<TypedCache<StringCodec>::Got> now = cache.Get("t", [](std::string_view) -> Result<Loaded> {
    return Status::Unavailable("not this loader");
  });
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(now->value, std::optional<std::string>(expected));
}

// ---- a key at its cap of loads: callers wait for room, not fail ----------------

// Two loads of one key hang, each begun before an invalidation of it, so
// the key is at LoadRegistry's cap and a third caller can join neither.
// Such a caller used to fail at once with kResourceExhausted (in the demo:
// a 503 on the hottest page at peak, when a post of it was edited twice in a
// few milliseconds). It now waits, up to its deadline, for one to end, then
// loads with a ticket taken then; a caller whose deadline comes first gets
// kDeadlineExceeded.
struct CappedKey {
  Gate first, second;
  std::atomic<int> calls{0};
  // Load 1 fails after its gate (so its caller does not reload), load 2
  // returns what it read before the invalidations; later loads return
  // "<key>@<n>" at version n.
  Loader Get() {
    return [this](std::string_view key) -> Result<LoadResult> {
      const int n = calls.fetch_add(1) + 1;
      if (n == 1) {
        first.WaitFor(10s);
        return Status::Unavailable("load 1 gave up");
      }
      if (n == 2) second.WaitFor(10s);
      const std::string what = n <= 2 ? "stale" : std::string(key);
      return LoadResult{what + "@" + std::to_string(n), static_cast<uint64_t>(n)};
    };
  }
  void OpenAll() {
    first.Open();
    second.Open();
  }
};

CacheOptions CappedOptions() {
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.loader_threads = 6;
  o.max_stale = 0ms;  // nothing stale to serve
  o.soft_timeout = 3s;
  o.hard_timeout = 3s;
  o.lease.max_wait = 20ms;  // the lease of a hung load is not waited out for long
  return o;
}

// Puts `key` at its cap: two hung loads, each superseded by an invalidation.
void FillTheCap(Cache& cache, CappedKey& src, const std::string& key, std::thread* a, std::thread* b) {
  *a = std::thread([&cache, &src, key] { cache.Get(key, src.Get()).status().IgnoreError(); });
  EXPECT_TRUE(WaitUntil([&] { return src.calls.load() == 1; }, 2s));
  EXPECT_TRUE(cache.Invalidate(key).ok());
  *b = std::thread([&cache, &src, key] { cache.Get(key, src.Get()).status().IgnoreError(); });
  EXPECT_TRUE(WaitUntil([&] { return src.calls.load() == 2; }, 2s));
  EXPECT_TRUE(cache.Invalidate(key).ok());
}

TEST(CacheLivenessConcurrencyTest, GetOfAKeyAtItsCapOfLoadsWaitsForOneToEndThenLoads) {
  CappedKey src;
  auto cache = Make(CappedOptions());
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { src.OpenAll(); });
  const std::string key = "capped:row";
  std::thread a, b;
  FillTheCap(*cache, src, key, &a, &b);

  std::atomic<bool> returned{false};
  Result<CachedValue> third = Status::Internal("not run");
  const Steady::time_point t0 = Steady::now();
  std::thread c([&] {
    third = cache->Get(key, src.Get());
    returned = true;
  });
  std::this_thread::sleep_for(200ms);
  const bool early = returned.load();
  const int calls_while_capped = src.calls.load();
  src.first.Open();  // the oldest load ends: room for a new one
  c.join();
  const int calls = src.calls.load();
  src.second.Open();
  a.join();
  b.join();
  EXPECT_FALSE(early) << "the third get returned before either load ended: " << third.status().ToString();
  EXPECT_EQ(calls_while_capped, 2) << "a third load started while two were running";
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->payload(), key + "@3");
  EXPECT_EQ(calls, 3);
  EXPECT_GE(Since(t0), 200ms);
}

// An invalidation while the caller waits: the load it then starts is fenced
// from when it starts, so its fill is stored at once. With the ticket taken
// before the wait, the fill was refused and the load ran twice.
TEST(CacheLivenessConcurrencyTest, GetThatWaitedForRoomLoadsWithATicketTakenAfterTheWait) {
  CappedKey src;
  auto cache = Make(CappedOptions());
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { src.OpenAll(); });
  const std::string key = "capped:row";
  std::thread a, b;
  FillTheCap(*cache, src, key, &a, &b);

  Result<CachedValue> third = Status::Internal("not run");
  std::thread c([&] { third = cache->Get(key, src.Get()); });
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(cache->Invalidate(key).ok());  // while the third get waits
  std::this_thread::sleep_for(50ms);
  src.first.Open();
  c.join();
  const int calls = src.calls.load();
  src.second.Open();
  a.join();
  b.join();
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->payload(), key + "@3");
  EXPECT_EQ(calls, 3) << "the load after the wait was fenced from before it, so its fill was refused";
}

TEST(CacheLivenessConcurrencyTest, GetOfAKeyAtItsCapOfLoadsFailsAtItsDeadlineIfNoneEnds) {
  CappedKey src;
  auto cache = Make(CappedOptions());
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { src.OpenAll(); });
  const std::string key = "capped:row";
  std::thread a, b;
  FillTheCap(*cache, src, key, &a, &b);
  GetOptions g;
  g.hard_timeout = 150ms;
  const Steady::time_point t0 = Steady::now();
  Result<CachedValue> third = cache->Get(key, src.Get(), g);
  const auto took = Since(t0);
  const int calls = src.calls.load();
  src.OpenAll();
  a.join();
  b.join();
  EXPECT_TRUE(third.status().IsDeadlineExceeded()) << third.status().ToString();
  EXPECT_GE(took, 140ms);
  EXPECT_LT(took, 1s) << "waited past its deadline";
  EXPECT_EQ(calls, 2) << "a third load started while two were running";
}

// A caller that won the key's lease and then finds the key at its cap gives
// the lease back before it waits for room: other pods may load the key
// meanwhile (their callers would otherwise wait for a lease nobody uses, up
// to lease.max_wait, then load without it or fail). Forced: a probe holds
// the lease while the cap fills (so the two hung loads run without it), then
// lets it go, so the third caller wins it (seen in its metrics); while that
// caller waits, another pod must be able to take the lease well within its
// 5 s TTL. Fails without the give-back.
TEST(CacheLivenessConcurrencyTest, GetThatWaitsForRoomGivesItsLeaseBackFirst) {
  CappedKey src;
  CounterMetrics metrics;
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = CappedOptions();
  o.l2 = l2;
  o.lease.ttl = 5s;
  o.metrics = &metrics;
  auto cache = Make(o);
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { src.OpenAll(); });
  const std::string key = "capped:row";
  auto probe = l2->AcquireLease(key, "probe", 5s, 1s);
  ASSERT_TRUE(probe.ok() && probe->won) << "the probe could not take the lease";
  std::thread a, b;
  FillTheCap(*cache, src, key, &a, &b);  // both loads waited out lease.max_wait and run without it
  const auto leases_won = [&] { return metrics.snapshot().get(Counter::kLeaseWon, Tier::kL2); };
  EXPECT_EQ(leases_won(), 0u) << "a load of the cap took the lease the probe held";
  auto released = l2->ReleaseLease(key, "probe", 1s);
  ASSERT_TRUE(released.ok() && *released);

  std::atomic<bool> returned{false};
  Result<CachedValue> third = Status::Internal("not run");
  std::thread c([&] {
    third = cache->Get(key, src.Get());  // wins the free lease, then finds the cap
    returned = true;
  });
  const bool won = WaitUntil([&] { return leases_won() == 1; }, 2s);
  bool other_pod_took_it = false;
  if (won) {  // the give-back is asynchronous (the lease keeper's thread): poll
    other_pod_took_it = WaitUntil(
        [&] {
          auto r = l2->AcquireLease(key, "other-pod", 1s, 1s);
          return r.ok() && r->won;
        },
        1s);
  }
  const bool waiting = !returned.load();
  if (other_pod_took_it) l2->ReleaseLease(key, "other-pod", 1s).status().IgnoreError();
  src.first.Open();  // room: the third get loads
  c.join();
  src.second.Open();
  a.join();
  b.join();
  ASSERT_TRUE(won) << "the third get never took the free lease: the test forces nothing";
  EXPECT_TRUE(waiting) << "the third get did not wait for room: " << third.status().ToString();
  EXPECT_TRUE(other_pod_took_it) << "the caller waiting for room kept the key's lease: no other pod could load it";
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->payload(), key + "@3");
}

TEST(CacheLivenessConcurrencyTest, GetManyLoadsAKeyAtItsCapAloneOnceOneOfItsLoadsEnds) {
  CappedKey src;
  RecordingBatchLoader batch;
  auto cache = Make(CappedOptions());
  ASSERT_TRUE(cache);
  OpenOnExit open([&] { src.OpenAll(); });
  const std::string key = "capped:row";
  std::thread a, b;
  FillTheCap(*cache, src, key, &a, &b);

  std::atomic<bool> returned{false};
  Result<std::vector<Result<CachedValue>>> got = Status::Internal("not run");
  std::thread c([&] {
    got = cache->GetMany({"other:row", key}, batch.Get());
    returned = true;
  });
  std::this_thread::sleep_for(200ms);
  const bool early = returned.load();
  src.first.Open();
  c.join();
  src.second.Open();
  a.join();
  b.join();
  EXPECT_FALSE(early) << "GetMany returned before either load of the capped key ended";
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 2u);
  ASSERT_TRUE((*got)[0].ok()) << (*got)[0].status().ToString();
  EXPECT_EQ((*got)[0]->payload(), "other:row@1");
  ASSERT_TRUE((*got)[1].ok()) << (*got)[1].status().ToString();
  EXPECT_EQ((*got)[1]->payload(), key + "@1") << "not the batch loader's own load of the key";
  const auto asked = batch.Asked();
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0], std::vector<std::string>{"other:row"});
  EXPECT_EQ(asked[1], std::vector<std::string>{key});
}

// Two keys at their caps: each loads as soon as it has room, not one after
// the other's wait (k2's room comes first, though k1 comes first in the call).
TEST(CacheLivenessConcurrencyTest, GetManyWaitsForAllItsCappedKeysAtOnce) {
  CappedKey src1, src2;
  RecordingBatchLoader batch;
  auto cache = Make(CappedOptions());
  ASSERT_TRUE(cache);
  OpenOnExit open([&] {
    src1.OpenAll();
    src2.OpenAll();
  });
  const std::string k1 = "capped:one", k2 = "capped:two";
  std::thread a1, b1, a2, b2;
  FillTheCap(*cache, src1, k1, &a1, &b1);
  FillTheCap(*cache, src2, k2, &a2, &b2);

  Result<std::vector<Result<CachedValue>>> got = Status::Internal("not run");
  std::thread c([&] { got = cache->GetMany({k1, k2}, batch.Get()); });
  std::this_thread::sleep_for(100ms);
  src2.first.Open();
  EXPECT_TRUE(WaitUntil([&] { return batch.calls.load() == 1; }, 2s)) << "k2 did not load once it had room";
  src1.first.Open();
  c.join();
  src1.second.Open();
  src2.second.Open();
  for (std::thread* t : {&a1, &b1, &a2, &b2}) t->join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 2u);
  for (const auto& r : *got) EXPECT_TRUE(r.ok()) << r.status().ToString();
  const auto asked = batch.Asked();
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0], std::vector<std::string>{k2});
  EXPECT_EQ(asked[1], std::vector<std::string>{k1});
}

}  // namespace
}  // namespace tiercache
