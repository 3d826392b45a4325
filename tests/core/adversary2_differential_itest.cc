// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review 2: the in-memory L2 store must apply EXACTLY the rules of
// the Lua scripts (l2_store.h, memory_l2_store.cc). Random sequences of fills
// (fenced and write-through, values and negatives, versions around 2^32,
// 2^53, 2^63 and u64 max), invalidations, evictions and raw fence values are
// applied to both stores; outcomes, stored bytes and fence bytes must agree.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <sstream>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

std::string Hex(const std::optional<std::string>& s) {
  if (!s) return "<none>";
  std::ostringstream o;
  for (unsigned char c : *s) o << "0123456789abcdef"[c >> 4] << "0123456789abcdef"[c & 15];
  return o.str();
}

std::string Env(EntryKind kind, uint64_t version) {
  EnvelopeView e;
  e.kind = kind;
  e.codec_id = kCodecString;
  e.version = version;
  e.written_at = WallTime(std::chrono::milliseconds(1767225600000LL));
  e.expires_at = e.written_at + 3600s;
  e.load_duration = std::chrono::microseconds(1234);
  if (kind == EntryKind::kValue) e.payload = "payload";
  return *EncodeEnvelope(e);
}

std::string Describe(const Result<FenceOutcome>& r) {
  if (!r.ok()) return r.status().ToString();
  return "verdict " + std::to_string(static_cast<int>(r->verdict)) + " stored_version " +
         std::to_string(r->stored_version);
}

class Differential : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    auto c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    redis_ = MakeRedisL2Store(client_);
    mem_ = MakeInMemoryL2Store();
  }
  std::shared_ptr<redis::RedisClient> client_;
  std::shared_ptr<L2Store> redis_, mem_;
};

TEST_F(Differential, RandomSequencesAgree) {
  const uint64_t kVersions[] = {0, 1, 2, 3, 0xFFFFFFFFull, 0x100000000ull, (1ull << 53) - 1, 1ull << 53,
                                (1ull << 53) + 1, 1ull << 63, UINT64_MAX - 1, UINT64_MAX,
                                0x7C7C7C7C7C7C7C7Cull /* '|' bytes */};
  std::mt19937_64 rng(12345);
  const uint64_t run = std::random_device{}() % 1000000000;
  int mismatches = 0;
  for (int seq = 0; seq < 500 && mismatches < 8; ++seq) {
    const std::string key = "adv2:diff:{" + std::to_string(run) + "}:" + std::to_string(seq);
    std::optional<FenceSnapshot> old_r, old_m;  // a snapshot taken some steps ago
    std::ostringstream log;
    for (int step = 0; step < 14 && mismatches < 8; ++step) {
      const int op = static_cast<int>(rng() % 8);
      const uint64_t ver = kVersions[rng() % (sizeof(kVersions) / sizeof(kVersions[0]))];
      const std::string epoch = (rng() % 4 == 0) ? "ep|" + std::to_string(step) + "|xxxxxx" : "e" + std::to_string(step);
      Result<FenceOutcome> r = FenceOutcome{}, m = FenceOutcome{};
      if (op <= 2) {  // fenced fill, fresh or old snapshot
        const bool negative = rng() % 2 == 0;
        FillRequest f;
        f.key = key;
        f.envelope = Env(negative ? EntryKind::kNegative : EntryKind::kValue, ver);
        f.physical_ttl = 60000ms;
        FenceSnapshot sr = redis_->Snapshot({key}, 1000ms)[0].value();
        FenceSnapshot sm = mem_->Snapshot({key}, 1000ms)[0].value();
        if (op == 2 && old_r) {
          sr = *old_r;
          sm = *old_m;
        } else if (op == 1) {
          old_r = sr;
          old_m = sm;
        }
        f.fence = sr;
        r = redis_->Fill({f}, 60000ms, kFenceLifetime, 1000ms)[0];
        f.fence = sm;
        m = mem_->Fill({f}, 60000ms, kFenceLifetime, 1000ms)[0];
        log << " fill(" << (negative ? "neg" : "val") << " v" << ver << (op == 2 ? " oldsnap" : "") << ")";
      } else if (op == 3) {  // write-through
        FillRequest f;
        f.key = key;
        f.envelope = Env(EntryKind::kValue, ver);
        f.physical_ttl = 60000ms;
        f.write_through = true;
        f.new_epoch = epoch;
        r = redis_->Fill({f}, 60000ms, kFenceLifetime, 1000ms)[0];
        m = mem_->Fill({f}, 60000ms, kFenceLifetime, 1000ms)[0];
        log << " set(v" << ver << " epoch " << epoch << ")";
      } else if (op == 4 || op == 5) {
        InvalidateRequest q{key, Env(EntryKind::kTombstone, ver), 60000ms, epoch};
        r = redis_->Invalidate(q, kFenceLifetime, 1000ms);
        m = mem_->Invalidate(q, kFenceLifetime, 1000ms);
        log << " invalidate(v" << ver << " epoch " << epoch << ")";
      } else if (op == 7) {  // a raw fence: a bare (pre-floor) epoch, or one with '|' 9 from the end
        static const std::string kRaw[] = {"0123456789abcdef0123456789abcdef", "abc|defghijk", "|", "x|\x7c\x7c\x7c\x7c\x7c\x7c\x7c\x7c", ""};
        const std::string raw = kRaw[rng() % 5];
        if (raw.empty()) {
          (void)client_->Del({FenceKeyFor(key)});
          InMemoryL2StorePutRaw(mem_.get(), FenceKeyFor(key), "");  // see below: empty == none for a snapshot
        } else {
          redis::SetOptions so;
          (void)client_->Set(FenceKeyFor(key), raw, so);
          InMemoryL2StorePutRaw(mem_.get(), FenceKeyFor(key), raw);
        }
        log << " rawfence(" << Hex(raw) << ")";
      } else {  // eviction of the value key
        auto cur = mem_->Get(key, 1000ms);
        if (cur.ok() && cur->has_value()) (void)mem_->RemoveCorrupt(key, **cur, 1000ms);
        (void)client_->Del({key});
        log << " evict";
      }
      const std::string fr = Describe(r), fm = Describe(m);
      auto vr = client_->Get(key), vm = mem_->Get(key, 1000ms);
      auto er = client_->Get(FenceKeyFor(key));
      // the in-memory fence, through a snapshot (its epoch field is the raw value)
      FenceSnapshot snm = mem_->Snapshot({key}, 1000ms)[0].value();
      const std::optional<std::string> em =
          snm.epoch.empty() ? std::nullopt : std::optional<std::string>(snm.epoch);
      const std::optional<std::string> er2 = er.ok() ? *er : std::optional<std::string>("<error>");
      if (fr != fm || Hex(vr.ok() ? *vr : std::nullopt) != Hex(vm.ok() ? *vm : std::nullopt) || Hex(er2) != Hex(em)) {
        ++mismatches;
        ADD_FAILURE() << "divergence after:" << log.str() << "\n  outcome redis: " << fr << "\n  outcome mem:   " << fm
                      << "\n  value redis: " << Hex(vr.ok() ? *vr : std::nullopt)
                      << "\n  value mem:   " << Hex(vm.ok() ? *vm : std::nullopt) << "\n  fence redis: " << Hex(er2)
                      << "\n  fence mem:   " << Hex(em);
        break;
      }
    }
  }
}

}  // namespace
}  // namespace tiercache
