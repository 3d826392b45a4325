// A randomized consistency checker for the tiered cache against the real
// Redis Cluster (issue 10, "Must show").
//
// Three worker processes ("pods"), each with one Cache over the cluster and
// kThreads threads doing random gets, batch gets and writes. The "database"
// is a file-backed MAP_SHARED mapping (struct Shared) that every process
// maps: per key, the source version (the truth; a write bumps it, then calls
// Invalidate(key, new_version)) and, per pod slot, the newest version that
// pod invalidated with the CLOCK_MONOTONIC time its Invalidate returned.
// Loaders read the mapped version and return {"v<version>", version}, at
// once, or slowly (sleep before reading, or — the dangerous case — read
// first and then sleep), or rarely hang 1.5 s after reading.
//
// The rule checked on every successful Get / GetMany result (cache.h): for
// each pod slot p, with (v_p, t_p) read BEFORE the call started,
//   * p is the calling pod:   the result's version >= v_p;
//   * p is another pod:       the result's version >= v_p when
//                             t_p + L1 TTL + kOtherPodSlack < the call's start
//                             (another pod's L1 copy may outlive an
//                             invalidation by that pod's L1 TTL).
// Gets read keys uniformly; writes favour half of them (the other half is
// written rarely, so its values expire and stale copies get served).
// At checkpoints (writes paused) and at the end (writes stopped), after the
// L1 TTL + 100 ms, every pod must read exactly the database's version of
// every key. Meanwhile the parent SIGKILLs a random pod every ~1 s (often a
// lease holder or a load in flight) and starts a new one in its slot.
//
// With CacheOptions::version_fencing off, the same run must find violations:
// that shows the checker can fail.
//
// Worker processes are copies of this program: a static initializer sees
// TIERCACHE_CHECKER_WORKER, runs the pod and exits before GoogleTest runs.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/redis/redis_client.h"

extern char** environ;

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using redis::testing::ClusterOptions;

// ---- the workload's shape ----------------------------------------------------

constexpr int kProcs = 3;
constexpr int kThreads = 4;
constexpr int kKeys = 40;           // 4 hash tags x 8 keys, and 8 untagged keys
constexpr int kTaggedKeys = 32;
constexpr int kKeysPerTag = 8;
constexpr auto kL1Ttl = 200ms;
constexpr auto kOtherPodSlack = 50ms;  // scheduling slack on top of the L1 TTL
constexpr auto kSoftTimeout = 50ms;
constexpr auto kHardTimeout = 150ms;
constexpr auto kTombstoneTtl = 300ms;
constexpr auto kMaxLoadAge = 1s;
constexpr auto kLeaseTtl = 300ms;
constexpr auto kHang = 1500ms;
constexpr int kMaxPrinted = 12;  // violation reports printed per run (all are counted)

int64_t MonoUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // system-wide: comparable across processes
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

constexpr int64_t Us(std::chrono::microseconds d) { return d.count(); }

// ---- the shared "database" -------------------------------------------------

static_assert(std::atomic<uint64_t>::is_always_lock_free, "atomics in a shared mapping must be lock-free");
static_assert(std::atomic<int64_t>::is_always_lock_free, "atomics in a shared mapping must be lock-free");

// A pod's newest invalidation of a key, as one 64-bit word so that readers
// never see a version with another invalidation's time: the version in the
// high 24 bits, the CLOCK_MONOTONIC time its Invalidate returned (µs since
// Shared::base_us) in the low 40 bits (12 days).
constexpr int kTimeBits = 40;
constexpr uint64_t kTimeMask = (uint64_t{1} << kTimeBits) - 1;
constexpr uint64_t kMaxVersion = (uint64_t{1} << (64 - kTimeBits)) - 1;

struct Invalidated {
  uint64_t version = 0;  // 0: none yet
  int64_t at_us = 0;     // CLOCK_MONOTONIC µs (absolute)
};

struct KeySlot {
  std::atomic<uint64_t> db_version{0};          // the source of truth
  std::atomic<uint64_t> invalidated[kProcs]{};  // packed Invalidated per pod slot
};

struct WorkerSlot {
  std::atomic<int64_t> pid{0};
  std::atomic<uint64_t> ready{0};             // 1 once the pod runs (after its repair pass)
  std::atomic<uint64_t> writes_in_flight{0};  // bumped before a write checks the pause flag
  std::atomic<uint64_t> checkpoint_done{0};   // the last checkpoint this pod finished
  std::atomic<uint64_t> loads_running{0};
};

struct Counters {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> gets{0};
  std::atomic<uint64_t> get_many_calls{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> checked{0};  // successful results checked (one per key of a GetMany)
  std::atomic<uint64_t> from_l1{0};
  std::atomic<uint64_t> from_l2{0};
  std::atomic<uint64_t> from_loader{0};
  std::atomic<uint64_t> stale_served{0};
  std::atomic<uint64_t> err_deadline{0};
  std::atomic<uint64_t> err_aborted{0};
  std::atomic<uint64_t> err_other{0};
  std::atomic<uint64_t> err_busy{0};
  std::atomic<uint64_t> loads{0};
  std::atomic<uint64_t> slow_loads{0};
  std::atomic<uint64_t> hung_loads{0};
  std::atomic<uint64_t> invalidate_retries{0};
  std::atomic<uint64_t> invalidate_failures{0};
  std::atomic<uint64_t> repairs{0};
  std::atomic<uint64_t> violations{0};
  std::atomic<uint64_t> viol_own_pod{0};
  std::atomic<uint64_t> viol_other_pod{0};
  std::atomic<uint64_t> viol_from_l1{0};
  std::atomic<uint64_t> viol_from_l2{0};
  std::atomic<uint64_t> viol_from_loader{0};
  std::atomic<uint64_t> viol_stale{0};
  std::atomic<uint64_t> viol_get_many{0};
  std::atomic<uint64_t> checkpoint_reads{0};
  std::atomic<uint64_t> checkpoint_violations{0};
  std::atomic<uint64_t> checkpoint_errors{0};
  std::atomic<uint64_t> printed{0};
};

constexpr uint64_t kMagic = 0x7469657263686b31ULL;  // "tierchk1"

struct Shared {
  uint64_t magic = kMagic;
  int64_t base_us = 0;  // written before any worker starts
  std::atomic<uint64_t> stop_ops{0};      // op threads stop (the end)
  std::atomic<uint64_t> pause_writes{0};  // writers skip writes (checkpoints)
  std::atomic<uint64_t> checkpoint_seq{0};
  std::atomic<uint64_t> exit_now{0};
  Counters c;
  WorkerSlot workers[kProcs];
  KeySlot keys[kKeys];
};
static_assert(std::is_trivially_destructible_v<Shared>);

uint64_t Pack(const Shared& db, uint64_t version, int64_t at_us) {
  return (version << kTimeBits) | (static_cast<uint64_t>(at_us - db.base_us) & kTimeMask);
}

Invalidated Unpack(const Shared& db, uint64_t packed) {
  Invalidated i;
  i.version = packed >> kTimeBits;
  i.at_us = db.base_us + static_cast<int64_t>(packed & kTimeMask);
  return i;
}

// Records that pod `proc` invalidated key `k` at `version`, returning at
// `at_us`; keeps the newest version (its constraint implies the older ones').
void RecordInvalidation(Shared& db, int k, int proc, uint64_t version, int64_t at_us) {
  std::atomic<uint64_t>& slot = db.keys[k].invalidated[proc];
  uint64_t cur = slot.load();
  const uint64_t next = Pack(db, version, at_us);
  while (Unpack(db, cur).version < version && !slot.compare_exchange_weak(cur, next)) {
  }
}

uint64_t NewestInvalidated(const Shared& db, int k) {
  uint64_t m = 0;
  for (int p = 0; p < kProcs; ++p) m = std::max(m, Unpack(db, db.keys[k].invalidated[p].load()).version);
  return m;
}

Shared* MapShared(const std::string& path, bool create) {
  const int fd = ::open(path.c_str(), create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, 0600);
  if (fd < 0) return nullptr;
  if (create && ::ftruncate(fd, sizeof(Shared)) != 0) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return nullptr;
  if (create) return new (p) Shared();
  Shared* db = static_cast<Shared*>(p);  // constructed by the parent
  return db->magic == kMagic ? db : nullptr;
}

std::vector<std::string> KeyNames(const std::string& run) {
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) {
    if (i < kTaggedKeys) {
      keys.push_back("chk:{" + run + ":t" + std::to_string(i / kKeysPerTag) + "}:k" + std::to_string(i));
    } else {
      keys.push_back("chk:" + run + ":free:k" + std::to_string(i));  // no tag: its own slot
    }
  }
  return keys;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

using ::tiercache::testing::UniqueTag;

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(Rng()); }

const char* SourceName(ValueSource s) {
  switch (s) {
    case ValueSource::kL1:
      return "L1";
    case ValueSource::kL2:
      return "L2";
    case ValueSource::kLoader:
      return "loader";
  }
  return "?";
}

// ---- a pod ---------------------------------------------------------------------

class Pod {
 public:
  Pod(Shared* db, int proc, bool fencing, const std::string& run)
      : db_(db), proc_(proc), fencing_(fencing), keys_(KeyNames(run)) {
    for (int i = 0; i < kKeys; ++i) index_.emplace(keys_[i], i);
  }

  int Run() {
    Result<std::unique_ptr<redis::RedisClient>> client = redis::RedisClient::Create(ClusterOptions());
    if (!client.ok()) {
      std::fprintf(stderr, "pod %d: redis client: %s\n", proc_, client.status().ToString().c_str());
      return 3;
    }
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*client));
    CacheOptions o;
    o.l2 = MakeRedisL2Store(client_);
    o.use_l1 = true;
    o.l1.default_ttl = kL1Ttl;
    o.ttl = 1s;  // L2 values expire during the run: stale serving and early refresh take part
    o.max_stale = 60s;
    o.soft_timeout = kSoftTimeout;
    o.hard_timeout = kHardTimeout;
    o.tombstone_ttl = kTombstoneTtl;  // short: the fence epoch, not the tombstone, must do the work
    o.max_load_age = kMaxLoadAge;
    o.lease.ttl = kLeaseTtl;
    o.version_fencing = fencing_;
    Result<std::unique_ptr<Cache>> cache = Cache::Create(o);
    if (!cache.ok()) {
      std::fprintf(stderr, "pod %d: cache: %s\n", proc_, cache.status().ToString().c_str());
      return 3;
    }
    cache_ = std::move(*cache);
    loader_ = [this](std::string_view k) { return Load(k); };
    batch_loader_ = [this](const std::vector<std::string>& ks) { return LoadBatch(ks); };

    Repair();
    WorkerSlot& me = db_->workers[proc_];
    uint64_t checkpoint_done = me.checkpoint_done.load();
    me.ready.store(1);

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back([this] { OpLoop(); });
    while (!db_->exit_now.load()) {
      const uint64_t seq = db_->checkpoint_seq.load();
      if (seq != checkpoint_done) {
        Checkpoint(seq);
        checkpoint_done = seq;
        me.checkpoint_done.store(seq);
      }
      std::this_thread::sleep_for(2ms);
    }
    for (auto& t : threads) t.join();
    return 0;
  }

 private:
  struct Snap {
    Invalidated inv[kProcs];
  };

  Snap SnapshotOf(int k) const {
    Snap s;
    for (int p = 0; p < kProcs; ++p) s.inv[p] = Unpack(*db_, db_->keys[k].invalidated[p].load());
    return s;
  }

  // What L2 holds for key k now (for violation reports: read after the fact).
  std::string DescribeL2(int k) {
    std::string out = "L2 now: ";
    Result<std::optional<std::string>> raw = client_->Get(keys_[k]);
    if (!raw.ok()) {
      out += "(read failed)";
    } else if (!raw->has_value()) {
      out += "empty";
    } else {
      Result<EnvelopeView> e = DecodeEnvelope(**raw);
      if (!e.ok()) {
        out += "undecodable";
      } else {
        const auto now = std::chrono::system_clock::now();
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s v%" PRIu64 " written %.0f ms ago, expires in %.0f ms",
                      e->kind == EntryKind::kValue       ? "value"
                      : e->kind == EntryKind::kNegative ? "negative"
                                                        : "tombstone",
                      e->version, std::chrono::duration<double, std::milli>(now - e->written_at).count(),
                      std::chrono::duration<double, std::milli>(e->expires_at - now).count());
        out += buf;
      }
    }
    Result<std::optional<std::string>> lease = client_->Get(LeaseKeyFor(keys_[k]));
    Result<std::optional<std::string>> fence = client_->Get(FenceKeyFor(keys_[k]));
    out += lease.ok() && lease->has_value() ? "; lease held" : "; no lease";
    out += fence.ok() && fence->has_value() ? "; fence epoch set" : "; no fence epoch";
    return out;
  }

  // "pod P invalidated vN T ms ago" for the newest invalidation of key k.
  std::string NewestInvalidationAge(int k) {
    int who = -1;
    Invalidated newest;
    for (int p = 0; p < kProcs; ++p) {
      const Invalidated i = Unpack(*db_, db_->keys[k].invalidated[p].load());
      if (i.version > newest.version) newest = i, who = p;
    }
    if (who < 0) return "never invalidated";
    char buf[96];
    std::snprintf(buf, sizeof buf, "pod %d invalidated v%" PRIu64 " %.1f ms ago", who, newest.version,
                  (MonoUs() - newest.at_us) / 1000.0);
    return buf;
  }

  // ---- the loaders: read the database, at once, slowly or hanging ----

  // How a load behaves. Reading first and sleeping after is the dangerous
  // case: the value may be invalidated while the load still holds it.
  enum class Pace { kFast, kSleepThenRead, kReadThenSleep, kReadThenHang };

  Pace PickPace() {
    const int r = Uniform(0, 999);
    if (r < 10) return Pace::kReadThenHang;   // 1%
    if (r < 260) return Pace::kReadThenSleep;  // 25%
    if (r < 360) return Pace::kSleepThenRead;  // 10%
    return Pace::kFast;
  }

  void Before(Pace p) {
    if (p == Pace::kSleepThenRead) {
      db_->c.slow_loads.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(Uniform(20, 200)));
    }
  }
  void After(Pace p) {
    if (p == Pace::kReadThenSleep) {
      db_->c.slow_loads.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(Uniform(20, 200)));
    } else if (p == Pace::kReadThenHang) {
      db_->c.hung_loads.fetch_add(1);
      std::this_thread::sleep_for(kHang);
    }
  }

  Result<LoadResult> Load(std::string_view key) {
    auto it = index_.find(std::string(key));
    if (it == index_.end()) return Status::Internal("unknown key " + std::string(key));
    WorkerSlot& me = db_->workers[proc_];
    me.loads_running.fetch_add(1);
    db_->c.loads.fetch_add(1);
    const Pace pace = PickPace();
    Before(pace);
    const uint64_t v = db_->keys[it->second].db_version.load();
    After(pace);
    me.loads_running.fetch_sub(1);
    return LoadResult{"v" + std::to_string(v), v};
  }

  Result<std::vector<LoadResult>> LoadBatch(const std::vector<std::string>& keys) {
    WorkerSlot& me = db_->workers[proc_];
    me.loads_running.fetch_add(1);
    db_->c.loads.fetch_add(1);
    const Pace pace = PickPace();
    Before(pace);
    std::vector<LoadResult> out;
    for (const std::string& k : keys) {
      auto it = index_.find(k);
      if (it == index_.end()) {
        me.loads_running.fetch_sub(1);
        return Status::Internal("unknown key " + k);
      }
      const uint64_t v = db_->keys[it->second].db_version.load();
      out.push_back(LoadResult{"v" + std::to_string(v), v});
    }
    After(pace);
    me.loads_running.fetch_sub(1);
    return out;
  }

  // ---- writes ----

  // Invalidate(key, v) until it returns OK (bounded); true when it did.
  bool InvalidateUntilOk(int k, uint64_t v) {
    for (int attempt = 0; attempt < 40; ++attempt) {
      Status s = cache_->Invalidate(keys_[k], v);
      if (s.ok()) {
        RecordInvalidation(*db_, k, proc_, v, MonoUs());
        return true;
      }
      db_->c.invalidate_retries.fetch_add(1);
      std::this_thread::sleep_for(20ms);
    }
    db_->c.invalidate_failures.fetch_add(1);
    std::fprintf(stderr, "pod %d: Invalidate(%s, %" PRIu64 ") kept failing: the checkpoints may flag the key\n",
                 proc_, keys_[k].c_str(), v);
    return false;
  }

  // A write that a SIGKILL interrupted (between the database bump and the
  // returned Invalidate) left the key invalidated by nobody: the new pod
  // invalidates it before it starts, as a real writer's outbox would.
  void Repair() {
    for (int k = 0; k < kKeys; ++k) {
      const uint64_t v = db_->keys[k].db_version.load();
      if (v > 1 && NewestInvalidated(*db_, k) < v) {  // version 1 was never written
        db_->c.repairs.fetch_add(1);
        InvalidateUntilOk(k, v);
      }
    }
  }

  void Write(int k) {
    WorkerSlot& me = db_->workers[proc_];
    me.writes_in_flight.fetch_add(1);  // before the flag: the parent drains after raising it
    if (db_->pause_writes.load() || db_->stop_ops.load()) {
      me.writes_in_flight.fetch_sub(1);
      std::this_thread::sleep_for(1ms);
      return;
    }
    const uint64_t v = db_->keys[k].db_version.fetch_add(1) + 1;
    if (v > kMaxVersion) std::abort();  // the packing's bound; never near in a run this short
    InvalidateUntilOk(k, v);
    me.writes_in_flight.fetch_sub(1);
    db_->c.writes.fetch_add(1);
    db_->c.ops.fetch_add(1);
  }

  // ---- reads and the check ----

  void CountError(const Status& s) {
    if (s.IsDeadlineExceeded()) {
      db_->c.err_deadline.fetch_add(1);
    } else if (s.IsAborted()) {
      db_->c.err_aborted.fetch_add(1);
    } else if (s.IsResourceExhausted()) {
      // Documented: the loader pool is full, or loads of the key begun
      // before its latest local invalidation still run (LoadRegistry's cap).
      db_->c.err_busy.fetch_add(1);
    } else {
      if (db_->c.err_other.fetch_add(1) < 5) {
        std::fprintf(stderr, "pod %d: unexpected error: %s\n", proc_, s.ToString().c_str());
      }
    }
  }

  // Checks one successful result against the snapshot taken before the call.
  void Check(const char* op, int k, const Snap& snap, int64_t start_us, int64_t end_us, const CachedValue& v) {
    db_->c.checked.fetch_add(1);
    switch (v.source()) {
      case ValueSource::kL1:
        db_->c.from_l1.fetch_add(1);
        break;
      case ValueSource::kL2:
        db_->c.from_l2.fetch_add(1);
        break;
      case ValueSource::kLoader:
        db_->c.from_loader.fetch_add(1);
        break;
    }
    if (v.stale()) db_->c.stale_served.fetch_add(1);
    const uint64_t g = v.version();
    const bool intact = v.found() && v.payload() == "v" + std::to_string(g);
    // The strictest constraint this result breaks, if any.
    int culprit = -1;
    for (int p = 0; p < kProcs; ++p) {
      const Invalidated& i = snap.inv[p];
      if (i.version == 0 || g >= i.version) continue;
      const bool binding = p == proc_ || i.at_us + Us(kL1Ttl) + Us(kOtherPodSlack) < start_us;
      if (binding && (culprit < 0 || i.version > snap.inv[culprit].version)) culprit = p;
    }
    if (culprit < 0 && intact) return;
    Counters& c = db_->c;
    c.violations.fetch_add(1);
    if (culprit == proc_) c.viol_own_pod.fetch_add(1);
    if (culprit >= 0 && culprit != proc_) c.viol_other_pod.fetch_add(1);
    if (v.source() == ValueSource::kL1) c.viol_from_l1.fetch_add(1);
    if (v.source() == ValueSource::kL2) c.viol_from_l2.fetch_add(1);
    if (v.source() == ValueSource::kLoader) c.viol_from_loader.fetch_add(1);
    if (v.stale()) c.viol_stale.fetch_add(1);
    if (std::string_view(op) == "GetMany") c.viol_get_many.fetch_add(1);
    if (c.printed.fetch_add(1) >= kMaxPrinted) return;
    const double expires_in_ms =
        std::chrono::duration<double, std::milli>(v.expires_at() - std::chrono::system_clock::now()).count();
    std::string per_pod;
    for (int p = 0; p < kProcs; ++p) {
      char buf[128];
      std::snprintf(buf, sizeof buf, " pod%d:v%" PRIu64 "@%+.1fms", p, snap.inv[p].version,
                    snap.inv[p].version ? (snap.inv[p].at_us - start_us) / 1000.0 : 0.0);
      per_pod += buf;
    }
    if (culprit < 0) {
      std::fprintf(stderr,
                   "VIOLATION pod %d %s %s: bad value (found=%d payload '%.*s' version %" PRIu64 ", source %s)\n",
                   proc_, op, keys_[k].c_str(), v.found(), static_cast<int>(v.payload().size()),
                   v.payload().data(), g, SourceName(v.source()));
      return;
    }
    const Invalidated& i = snap.inv[culprit];
    std::fprintf(stderr,
                 "VIOLATION pod %d (pid %d) %s %s: got v%" PRIu64 " (source %s%s, expires in %.1f ms, load took %.1f ms)"
                 " but pod %d%s invalidated v%" PRIu64 ", its Invalidate returned %.1f ms before this call started"
                 " (other pods' bound: %lld ms); call took %.1f ms; db now v%" PRIu64
                 "; newest invalidations (time relative to call start):%s; %s\n",
                 proc_, static_cast<int>(::getpid()), op, keys_[k].c_str(), g, SourceName(v.source()),
                 v.stale() ? ", STALE" : "", expires_in_ms, v.load_duration().count() / 1000.0, culprit,
                 culprit == proc_ ? " (this pod)" : "", i.version, (start_us - i.at_us) / 1000.0,
                 static_cast<long long>((kL1Ttl + kOtherPodSlack).count()), (end_us - start_us) / 1000.0,
                 db_->keys[k].db_version.load(), per_pod.c_str(), DescribeL2(k).c_str());
  }

  // One get in five goes through GetAsync (its deadline counts from the call).
  void DoGet(int k) {
    const bool async = Uniform(0, 4) == 0;
    const Snap snap = SnapshotOf(k);
    const int64_t start = MonoUs();
    Result<CachedValue> r = async ? cache_->GetAsync(keys_[k], loader_).get() : cache_->Get(keys_[k], loader_);
    const int64_t end = MonoUs();
    db_->c.gets.fetch_add(1);
    db_->c.ops.fetch_add(1);
    if (!r.ok()) return CountError(r.status());
    Check(async ? "GetAsync" : "Get", k, snap, start, end, *r);
  }

  void DoGetMany() {
    const int n = Uniform(2, 5);
    std::vector<int> ks;
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
      ks.push_back(Uniform(0, kKeys - 1));  // repeats allowed: a repeated key gets the same result
      names.push_back(keys_[ks.back()]);
    }
    std::vector<Snap> snaps;
    for (int k : ks) snaps.push_back(SnapshotOf(k));
    const int64_t start = MonoUs();
    Result<std::vector<Result<CachedValue>>> r = cache_->GetMany(names, batch_loader_);
    const int64_t end = MonoUs();
    db_->c.get_many_calls.fetch_add(1);
    db_->c.ops.fetch_add(1);
    if (!r.ok()) return CountError(r.status());
    for (size_t i = 0; i < ks.size(); ++i) {
      if (!(*r)[i].ok()) {
        CountError((*r)[i].status());
        continue;
      }
      Check("GetMany", ks[i], snaps[i], start, end, *(*r)[i]);
    }
  }

  void OpLoop() {
    while (!db_->stop_ops.load()) {
      const int r = Uniform(0, 99);
      if (r < 60) {
        DoGet(Uniform(0, kKeys - 1));
      } else if (r < 70) {
        DoGetMany();
      } else {
        // Writes favour the first half of the keys: the other half is written
        // rarely, so its values reach their L2 expiry and old copies linger
        // in L1 (stale serving and early refresh take part).
        Write(Uniform(0, 9) == 0 ? Uniform(kKeys / 2, kKeys - 1) : Uniform(0, kKeys / 2 - 1));
      }
    }
  }

  // ---- checkpoints: writes are paused (or stopped) and every invalidation
  // returned more than the L1 TTL ago: every read must be the database's ----

  void CheckpointMismatch(const char* op, int k, uint64_t expected, const Result<CachedValue>& r) {
    db_->c.checkpoint_violations.fetch_add(1);
    if (db_->c.printed.fetch_add(1) >= kMaxPrinted) return;
    std::fprintf(stderr,
                 "CHECKPOINT VIOLATION pod %d %s %s: db v%" PRIu64 " (newest invalidated v%" PRIu64
                 ") but got v%" PRIu64 " (source %s%s, found=%d); %s; %s\n",
                 proc_, op, keys_[k].c_str(), expected, NewestInvalidated(*db_, k), r->version(),
                 SourceName(r->source()), r->stale() ? ", STALE" : "", r->found(), NewestInvalidationAge(k).c_str(),
                 DescribeL2(k).c_str());
  }

  void Checkpoint(uint64_t seq) {
    for (int k = 0; k < kKeys; ++k) {
      const uint64_t expected = db_->keys[k].db_version.load();
      const int64_t give_up = MonoUs() + 3'000'000;  // a hung load of the key may hold it 1.5 s
      Result<CachedValue> r = Status::Internal("not read");
      for (;;) {
        r = cache_->Get(keys_[k], loader_);
        if (r.ok() || MonoUs() > give_up) break;
        std::this_thread::sleep_for(10ms);
      }
      db_->c.checkpoint_reads.fetch_add(1);
      if (!r.ok()) {
        db_->c.checkpoint_errors.fetch_add(1);
        std::fprintf(stderr, "pod %d checkpoint %" PRIu64 ": Get(%s) kept failing: %s\n", proc_, seq,
                     keys_[k].c_str(), r.status().ToString().c_str());
        continue;
      }
      if (!r->found() || r->version() != expected || r->payload() != "v" + std::to_string(expected)) {
        CheckpointMismatch("Get", k, expected, r);
      }
    }
    // And all keys in one batch (errors here are allowed: the loads may time out).
    Result<std::vector<Result<CachedValue>>> many = cache_->GetMany(keys_, batch_loader_);
    if (!many.ok()) return;
    for (int k = 0; k < kKeys; ++k) {
      const Result<CachedValue>& r = (*many)[k];
      if (!r.ok()) continue;
      db_->c.checkpoint_reads.fetch_add(1);
      const uint64_t expected = db_->keys[k].db_version.load();
      if (!r->found() || r->version() != expected) CheckpointMismatch("GetMany", k, expected, r);
    }
  }

  Shared* const db_;
  const int proc_;
  const bool fencing_;
  const std::vector<std::string> keys_;
  std::unordered_map<std::string, int> index_;
  std::shared_ptr<redis::RedisClient> client_;
  std::unique_ptr<Cache> cache_;
  Loader loader_;
  BatchLoader batch_loader_;
};

int CheckerWorker() {
  const std::string path = Env("CHECKER_DB");
  const int proc = std::atoi(Env("CHECKER_PROC").c_str());
  if (proc < 0 || proc >= kProcs) return 4;
  Shared* db = MapShared(path, /*create=*/false);
  if (db == nullptr) {
    std::fprintf(stderr, "checker worker: cannot map %s\n", path.c_str());
    return 3;
  }
  // Never destroyed: loads may still run on the cache's threads at _Exit.
  Pod* pod = new Pod(db, proc, Env("CHECKER_FENCING") == "1", Env("CHECKER_RUN"));
  return pod->Run();
}

struct WorkerHook {
  WorkerHook() {
    if (Env("TIERCACHE_CHECKER_WORKER").empty()) return;
    const int code = CheckerWorker();
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
} worker_hook;

// ---- the parent ------------------------------------------------------------------

pid_t SpawnWorker(const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_strings(extra_env);
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return -1;
  return pid;
}

template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

struct RunStats {
  uint64_t ops = 0, gets = 0, get_many = 0, writes = 0, checked = 0, from_l1 = 0, from_l2 = 0, from_loader = 0,
           stale = 0, err_deadline = 0, err_aborted = 0, err_other = 0, loads = 0, slow_loads = 0, hung_loads = 0,
           invalidate_retries = 0, invalidate_failures = 0, repairs = 0, violations = 0, checkpoint_reads = 0,
           checkpoint_violations = 0, checkpoint_errors = 0;
  int kills = 0, checkpoints = 0, harness_gaps = 0, harness_timeouts = 0;
};

class Checker {
 public:
  explicit Checker(bool fencing) : fencing_(fencing), run_(UniqueTag()) {}

  ~Checker() {
    for (int p = 0; p < kProcs; ++p) {
      if (pids_[p] > 0) {
        ::kill(pids_[p], SIGKILL);
        ::waitpid(pids_[p], nullptr, 0);
      }
    }
    if (db_ != nullptr) ::munmap(db_, sizeof(Shared));
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  // Runs the workload for `duration`; returns false on a harness failure.
  bool Run(std::chrono::milliseconds duration, RunStats* out) {
    std::string dir = ::testing::TempDir();
    if (!dir.empty() && dir.back() != '/') dir.push_back('/');
    path_ = dir + "tiercache_checker_" + std::to_string(::getpid()) + "_" + run_ + ".db";
    db_ = MapShared(path_, /*create=*/true);
    if (db_ == nullptr) {
      ADD_FAILURE() << "cannot create the shared database at " << path_;
      path_.clear();
      return false;
    }
    db_->base_us = MonoUs();
    for (int k = 0; k < kKeys; ++k) db_->keys[k].db_version.store(1);  // every key exists at version 1

    for (int p = 0; p < kProcs; ++p) {
      if (!Start(p)) return false;
    }
    std::mt19937_64 rng(std::random_device{}());
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + duration;
    auto jitter = [&] { return std::chrono::milliseconds(std::uniform_int_distribution<int>(-200, 200)(rng)); };
    auto next_kill = start + 1s + jitter();
    auto next_checkpoint = start + 2s;
    while (std::chrono::steady_clock::now() < end) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_checkpoint) {
        if (!Checkpoint(/*final=*/false)) return false;
        next_checkpoint += 2s;
      } else if (now >= next_kill) {
        const int victim = std::uniform_int_distribution<int>(0, kProcs - 1)(rng);
        std::printf("  t=%.1fs kill pod %d (%" PRIu64 " loads running, %" PRIu64 " writes in flight)\n",
                    std::chrono::duration<double>(now - start).count(), victim,
                    db_->workers[victim].loads_running.load(), db_->workers[victim].writes_in_flight.load());
        ::kill(pids_[victim], SIGKILL);
        ::waitpid(pids_[victim], nullptr, 0);
        pids_[victim] = -1;
        ++stats_.kills;
        if (!Start(victim)) return false;
        next_kill += 1s + jitter();
      } else {
        std::this_thread::sleep_for(5ms);
      }
    }
    // The end: every op stops, then a last checkpoint.
    db_->stop_ops.store(1);
    if (!Checkpoint(/*final=*/true)) return false;
    db_->exit_now.store(1);
    for (int p = 0; p < kProcs; ++p) {
      const bool exited = WaitUntil([&] { return ::waitpid(pids_[p], nullptr, WNOHANG) == pids_[p]; }, 5000ms);
      if (!exited) {
        ADD_FAILURE() << "pod " << p << " did not exit";
        ::kill(pids_[p], SIGKILL);
        ::waitpid(pids_[p], nullptr, 0);
      }
      pids_[p] = -1;
    }
    Collect(out);
    return true;
  }

 private:
  bool Start(int p) {
    WorkerSlot& w = db_->workers[p];
    w.ready.store(0);
    w.writes_in_flight.store(0);  // a killed pod's writes in flight are over
    w.loads_running.store(0);
    w.checkpoint_done.store(db_->checkpoint_seq.load());
    pids_[p] = SpawnWorker({"TIERCACHE_CHECKER_WORKER=1", "CHECKER_DB=" + path_, "CHECKER_PROC=" + std::to_string(p),
                            std::string("CHECKER_FENCING=") + (fencing_ ? "1" : "0"), "CHECKER_RUN=" + run_});
    if (pids_[p] <= 0) {
      ADD_FAILURE() << "cannot spawn pod " << p;
      return false;
    }
    w.pid.store(pids_[p]);
    if (!WaitUntil([&] { return w.ready.load() == 1; }, 10000ms)) {
      ADD_FAILURE() << "pod " << p << " did not start";
      return false;
    }
    return true;
  }

  // Pauses (or, at the end, has stopped) writes, waits until none is in
  // flight and the L1 TTL + 100 ms passed, has every pod read every key, and
  // resumes writes.
  bool Checkpoint(bool final) {
    db_->pause_writes.store(1);
    bool drained = WaitUntil(
        [&] {
          for (int p = 0; p < kProcs; ++p) {
            if (db_->workers[p].writes_in_flight.load() != 0) return false;
          }
          return true;
        },
        5000ms);
    if (!drained) {
      ++stats_.harness_timeouts;
      std::printf("  checkpoint: writes did not drain\n");
    }
    // Every database version is invalidated now (writers retry Invalidate;
    // a new pod repairs a killed writer's): else the checkpoint could not
    // expect the database's versions.
    for (int k = 0; k < kKeys; ++k) {
      const uint64_t v = db_->keys[k].db_version.load();
      const uint64_t inv = NewestInvalidated(*db_, k);
      if (inv != v && !(v == 1 && inv == 0)) {
        ++stats_.harness_gaps;
        std::printf("  checkpoint: key %d at v%" PRIu64 " but invalidated only up to v%" PRIu64 "\n", k, v, inv);
      }
    }
    std::this_thread::sleep_for(kL1Ttl + 100ms);
    const uint64_t seq = db_->checkpoint_seq.fetch_add(1) + 1;
    const bool done = WaitUntil(
        [&] {
          for (int p = 0; p < kProcs; ++p) {
            if (db_->workers[p].checkpoint_done.load() != seq) return false;
          }
          return true;
        },
        10000ms);
    if (!done) {
      ++stats_.harness_timeouts;
      std::printf("  checkpoint %" PRIu64 ": not every pod finished\n", seq);
    }
    ++stats_.checkpoints;
    std::printf("  %s checkpoint %" PRIu64 ": %" PRIu64 " reads checked so far, %" PRIu64 " mismatches\n",
                final ? "final" : "", seq, db_->c.checkpoint_reads.load(), db_->c.checkpoint_violations.load());
    if (!final) db_->pause_writes.store(0);
    return true;
  }

  void Collect(RunStats* s) {
    const Counters& c = db_->c;
    const int kills = stats_.kills, checkpoints = stats_.checkpoints, gaps = stats_.harness_gaps,
              timeouts = stats_.harness_timeouts;
    *s = RunStats{c.ops.load(),
                  c.gets.load(),
                  c.get_many_calls.load(),
                  c.writes.load(),
                  c.checked.load(),
                  c.from_l1.load(),
                  c.from_l2.load(),
                  c.from_loader.load(),
                  c.stale_served.load(),
                  c.err_deadline.load(),
                  c.err_aborted.load(),
                  c.err_other.load(),
                  c.loads.load(),
                  c.slow_loads.load(),
                  c.hung_loads.load(),
                  c.invalidate_retries.load(),
                  c.invalidate_failures.load(),
                  c.repairs.load(),
                  c.violations.load(),
                  c.checkpoint_reads.load(),
                  c.checkpoint_violations.load(),
                  c.checkpoint_errors.load()};
    s->kills = kills;
    s->checkpoints = checkpoints;
    s->harness_gaps = gaps;
    s->harness_timeouts = timeouts;
    std::printf(
        "checker (fencing %s): %" PRIu64 " ops (%" PRIu64 " gets, %" PRIu64 " get_many, %" PRIu64
        " writes), %" PRIu64 " results checked (L1 %" PRIu64 ", L2 %" PRIu64 ", loader %" PRIu64 ", stale %" PRIu64
        "); errors: %" PRIu64 " deadline, %" PRIu64 " aborted, %" PRIu64 " busy, %" PRIu64 " other; loads %" PRIu64 " (%" PRIu64
        " slow, %" PRIu64 " hung); invalidate retries %" PRIu64 ", failures %" PRIu64 ", repairs %" PRIu64
        "; %d kills, %d checkpoints (%" PRIu64 " reads, %" PRIu64 " mismatches, %" PRIu64
        " errors)\n  VIOLATIONS %" PRIu64 " (own pod %" PRIu64 ", other pod %" PRIu64 "; from L1 %" PRIu64
        ", L2 %" PRIu64 ", loader %" PRIu64 "; stale %" PRIu64 "; in GetMany %" PRIu64 ")\n",
        fencing_ ? "on" : "off", s->ops, s->gets, s->get_many, s->writes, s->checked, s->from_l1, s->from_l2,
        s->from_loader, s->stale, s->err_deadline, s->err_aborted, c.err_busy.load(), s->err_other, s->loads, s->slow_loads,
        s->hung_loads, s->invalidate_retries, s->invalidate_failures, s->repairs, s->kills, s->checkpoints,
        s->checkpoint_reads, s->checkpoint_violations, s->checkpoint_errors, s->violations, c.viol_own_pod.load(),
        c.viol_other_pod.load(), c.viol_from_l1.load(), c.viol_from_l2.load(), c.viol_from_loader.load(),
        c.viol_stale.load(), c.viol_get_many.load());
    std::fflush(stdout);
  }

  const bool fencing_;
  const std::string run_;
  std::string path_;
  Shared* db_ = nullptr;
  pid_t pids_[kProcs] = {-1, -1, -1};
  RunStats stats_;
};

class ConsistencyCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
  }
};

TEST_F(ConsistencyCheckerTest, CheckerFindsNoStaleReadWithFencing) {
  Checker checker(/*fencing=*/true);
  RunStats s;
  ASSERT_TRUE(checker.Run(8s, &s));
  EXPECT_EQ(s.violations, 0u) << "a get returned a version below one whose Invalidate had returned (see VIOLATION)";
  EXPECT_EQ(s.checkpoint_violations, 0u) << "a checkpoint read differed from the database";
  EXPECT_EQ(s.harness_gaps, 0);
  EXPECT_EQ(s.harness_timeouts, 0);
  EXPECT_EQ(s.err_other, 0u);
  EXPECT_GT(s.ops, 2000u);
  EXPECT_GT(s.writes, 300u);
  EXPECT_GT(s.checked, 1000u);
  EXPECT_GE(s.kills, 5);
  EXPECT_GE(s.checkpoints, 4);
  EXPECT_GT(s.hung_loads, 0u);
}

TEST_F(ConsistencyCheckerTest, CheckerCatchesStaleReadsWithoutFencing) {
  Checker checker(/*fencing=*/false);
  RunStats s;
  ASSERT_TRUE(checker.Run(8s, &s));
  EXPECT_GT(s.violations + s.checkpoint_violations, 0u) << "the checker cannot tell fencing off from on";
  EXPECT_GT(s.violations, 0u);
  EXPECT_GT(s.ops, 2000u);
  EXPECT_EQ(s.harness_gaps, 0);
}

}  // namespace
}  // namespace tiercache
