// The in-process L2Store: a mutex-guarded map with TTLs, applying the same
// rules as the Lua scripts in scripts.cc (l2_store.h).
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <mutex>
#include <deque>
#include <algorithm>

#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"

namespace tiercache {
namespace {

struct Item {
  std::string bytes;
  Clock::TimePoint expires;
};

constexpr int kShards = 4;
constexpr milliseconds kNoExpiry = std::chrono::hours(24 * 365 * 100);

class InMemoryL2Store final : public L2Store {
 public:
  explicit InMemoryL2Store(Clock* clock) : clock_(clock ? clock : Clock::Real()) {}

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    std::lock_guard<std::mutex> lock(mu_);
    const Item* item = Find(key);
    if (item == nullptr) return std::optional<std::string>();
    return std::optional<std::string>(item->bytes);
  }

  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    std::vector<Result<std::optional<std::string>>> out;
    out.reserve(keys.size());
    for (const std::string& k : keys) out.push_back(Get(k, timeout));
    return out;
  }

  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys, milliseconds) override {
    std::vector<Result<FenceSnapshot>> out(keys.size(), FenceSnapshot());
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      if (Status s = Reachable(keys[i]); !s.ok()) {
        out[i] = s;
      } else {
        out[i] = SnapshotLocked(keys[i]);
      }
    }
    return out;
  }

  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds max_age,
                                         milliseconds fence_ttl, milliseconds) override {
    std::vector<Result<FenceOutcome>> out;
    out.reserve(fills.size());
    for (const FillRequest& f : fills) out.push_back(FillOne(f, max_age, fence_ttl));
    return out;
  }

  Status Put(std::string_view key, std::string_view envelope, milliseconds ttl, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    std::lock_guard<std::mutex> lock(mu_);
    StoreLocked(key, envelope, ttl);
    return Status::Ok();
  }

  Result<FenceOutcome> Invalidate(const InvalidateRequest& q, milliseconds fence_ttl, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(q.key));
    Result<EnvelopeView> tomb = DecodeEnvelope(q.tombstone);
    if (!tomb.ok() || tomb->kind != EntryKind::kTombstone) {
      return Status::InvalidArgument("invalidate: not a tombstone envelope");
    }
    std::string bytes = q.tombstone;
    std::lock_guard<std::mutex> lock(mu_);
    Fence fence = FenceLocked(q.key);
    std::optional<EnvelopeView> stored = StoredLocked(q.key);
    if (tomb->version == 0) {
      if (stored && stored->version != 0) bytes = WithVersion(*tomb, stored->version);  // keeps its version
    } else {
      if (fence.floor >= tomb->version) return FenceOutcome{FillVerdict::kOlderVersion, fence.floor};
      if (stored && stored->version >= tomb->version) {  // nothing to drop; the floor rises
        if (tomb->version > fence.floor) {
          StoreLocked(FenceKeyFor(q.key), FenceBytes(fence.epoch, tomb->version), fence_ttl);
        }
        return FenceOutcome{FillVerdict::kOlderVersion, stored->version};
      }
      fence.floor = tomb->version;
    }
    StoreLocked(q.key, bytes, q.tombstone_ttl);
    StoreLocked(FenceKeyFor(q.key), FenceBytes(q.new_epoch, fence.floor), fence_ttl);
    return FenceOutcome{};
  }

  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    std::vector<Result<FenceOutcome>> out;
    out.reserve(requests.size());
    for (const InvalidateRequest& q : requests) {
      if (!q.group) {
        out.push_back(Invalidate(q, fence_ttl, timeout));
        continue;
      }
      if (Status s = Reachable(q.key); !s.ok()) {
        out.push_back(s);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t gen = EnsureGroupLocked(q.key);
      // The floor only rises (an unknown one is replaced), and a rise moves
      // the group whatever its event id: members stored under the current
      // generation were all checked against the current floor.
      bool raised = false;
      if (q.group_floor != 0) {
        const std::optional<uint64_t> floor = GroupFloorLocked(q.key);
        if (!floor || q.group_floor > *floor) {
          StoreLocked(GroupFloorKeyFor(q.key), std::to_string(q.group_floor), kNoExpiry);
          raised = true;
        }
      }
      std::deque<std::string>& recent = recent_[q.key];
      const bool seen =
          !q.event_id.empty() && std::find(recent.begin(), recent.end(), q.event_id) != recent.end();
      if (seen && !raised) {
        out.push_back(FenceOutcome{FillVerdict::kOlderVersion, gen});  // this event moved it already
        continue;
      }
      if (!q.event_id.empty() && !seen) {
        recent.push_back(q.event_id);
        if (recent.size() > kRecentEvents) recent.pop_front();
      }
      StoreLocked(GroupKeyFor(q.key), std::to_string(gen + 1), kNoExpiry);
      out.push_back(FenceOutcome{FillVerdict::kStored, gen + 1});
    }
    return out;
  }

  Result<GroupRead> GetInGroup(const std::vector<std::string>& keys, std::string_view group,
                               milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(group));
    std::lock_guard<std::mutex> lock(mu_);
    GroupRead out;
    for (const std::string& k : keys) {
      const Item* item = Find(k);
      out.values.push_back(item ? std::optional<std::string>(item->bytes) : std::nullopt);
    }
    out.generation = GroupLocked(group);
    return out;
  }

  Result<std::vector<FenceSnapshot>> SnapshotInGroup(const std::vector<std::string>& keys, std::string_view group,
                                                     milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(group));
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t gen = EnsureGroupLocked(group);
    std::vector<FenceSnapshot> out;
    for (const std::string& k : keys) {
      out.push_back(SnapshotLocked(k));
      out.back().group_generation = gen;
    }
    return out;
  }

  Result<LeaseOutcome> AcquireLeaseInGroup(std::string_view key, std::string_view group, std::string_view token,
                                           milliseconds ttl, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(group));
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t gen = EnsureGroupLocked(group);
    Result<LeaseOutcome> out = AcquireLeaseLocked(key, token, ttl);
    if (out.ok()) out->fence.group_generation = gen;
    return out;
  }

  Result<bool> RemoveCorrupt(std::string_view key, std::string_view bytes, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    std::lock_guard<std::mutex> lock(mu_);
    const Item* item = Find(key);
    if (item == nullptr || item->bytes != bytes) return false;
    items_.erase(std::string(key));
    return true;
  }

  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view token, milliseconds ttl,
                                    milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    return AcquireLeaseLocked(key, token, ttl);
  }

  // REQUIRES: mu_ held.
  Result<LeaseOutcome> AcquireLeaseLocked(std::string_view key, std::string_view token, milliseconds ttl) {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    const std::string lease_key = LeaseKeyFor(key);
    LeaseOutcome out;
    if (Find(lease_key) == nullptr) {
      StoreLocked(lease_key, token, ttl);
      out.won = true;
    }
    if (const Item* item = Find(key)) out.value = item->bytes;
    out.fence = SnapshotLocked(key);
    return out;
  }

  Result<bool> ExtendLease(std::string_view key, std::string_view token, milliseconds ttl, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    const std::string lease_key = LeaseKeyFor(key);
    std::lock_guard<std::mutex> lock(mu_);
    const Item* lease = Find(lease_key);
    if (lease == nullptr || lease->bytes != token) return false;
    StoreLocked(lease_key, token, ttl);
    return true;
  }

  Result<bool> ReleaseLease(std::string_view key, std::string_view token, milliseconds) override {
    TIERCACHE_RETURN_IF_ERROR(Reachable(key));
    std::lock_guard<std::mutex> lock(mu_);
    return ReleaseLocked(LeaseKeyFor(key), token);
  }

  int ShardOf(std::string_view key) const override {
    return key.empty() ? 0 : static_cast<unsigned char>(key[0]) % kShards;
  }

  void PutRaw(std::string_view key, std::string_view bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    StoreLocked(key, bytes, std::chrono::hours(1));
  }

  void SetShardDown(int shard, bool down) {
    std::lock_guard<std::mutex> lock(down_mu_);
    down_[static_cast<size_t>(shard % kShards)] = down;
  }

 private:
  Status Reachable(std::string_view key) const {
    std::lock_guard<std::mutex> lock(down_mu_);
    if (down_[static_cast<size_t>(ShardOf(key))]) {
      return Status::Unavailable("in-memory L2 shard " + std::to_string(ShardOf(key)) + " is down (test)");
    }
    return Status::Ok();
  }

  Result<FenceOutcome> FillOne(const FillRequest& f, milliseconds max_age, milliseconds fence_ttl) {
    TIERCACHE_RETURN_IF_ERROR(Reachable(f.key));
    Result<EnvelopeView> fresh = DecodeEnvelope(f.envelope);
    if (!fresh.ok() || fresh->kind == EntryKind::kTombstone) {
      return Status::InvalidArgument("fill: not a value or negative envelope");
    }
    if (fresh->grouped != !f.group.empty()) {
      return Status::InvalidArgument("fill: a group member needs a format-2 envelope and its group");
    }
    std::lock_guard<std::mutex> lock(mu_);
    FenceOutcome out;
    if (!f.group.empty() && GroupLocked(f.group) != fresh->group_generation) {
      // The group moved on since the fill's snapshot.
      if (!f.lease_key.empty()) ReleaseLocked(f.lease_key, f.lease_token);
      return FenceOutcome{FillVerdict::kInvalidated, 0};
    }
    Fence fence = FenceLocked(f.key);
    if (!f.write_through) {
      if (NowMs() - f.fence.store_ms > max_age.count()) {
        out.verdict = FillVerdict::kTooOld;
      } else {
        const Fence seen = ParseFence(f.fence.epoch);
        // An unversioned result is also refused when the floor moved.
        if (fence.epoch != seen.epoch || (fresh->version == 0 && fence.floor != seen.floor)) {
          out.verdict = FillVerdict::kInvalidated;
        }
      }
    }
    if (out.stored() && fresh->version != 0 && fence.floor > fresh->version) {
      out = FenceOutcome{FillVerdict::kOlderVersion, fence.floor};
    }
    if (out.stored() && !f.group.empty()) {
      // The group's floor refuses as the key's does, and an unversioned
      // member too; an unknown floor (foreign bytes) refuses every member.
      const std::optional<uint64_t> floor = GroupFloorLocked(f.group);
      if (!floor) {
        out = FenceOutcome{FillVerdict::kOlderVersion, std::numeric_limits<uint64_t>::max()};
      } else if (*floor != 0 && (fresh->version == 0 || *floor > fresh->version)) {
        out = FenceOutcome{FillVerdict::kOlderVersion, *floor};
      }
    }
    if (out.stored()) {
      std::optional<EnvelopeView> stored = StoredLocked(f.key);
      std::string bytes = f.envelope;
      const bool inherit = fresh->version == 0 && fresh->kind == EntryKind::kNegative;
      uint64_t below = 0;  // the stored tombstone's or negative's version it may take
      if (stored && stored->version > fresh->version) {
        if (!inherit || stored->kind == EntryKind::kValue) {
          out = FenceOutcome{FillVerdict::kOlderVersion, stored->version};
        } else {
          below = stored->version;
        }
      }
      if (out.stored() && inherit && std::max(below, fence.floor) != 0) {
        bytes = WithVersion(*fresh, std::max(below, fence.floor));  // takes that version
      }
      if (out.stored()) {
        Result<EnvelopeView> written = DecodeEnvelope(bytes);
        out.stored_version = written.ok() ? written->version : fresh->version;
        StoreLocked(f.key, bytes, f.physical_ttl);
        if (f.write_through) {
          StoreLocked(FenceKeyFor(f.key), FenceBytes(f.new_epoch, std::max(fence.floor, fresh->version)), fence_ttl);
        }
      }
    }
    if (!f.lease_key.empty()) ReleaseLocked(f.lease_key, f.lease_token);
    return out;
  }

  // A fence value (as in scripts.cc): <epoch>|<8-byte big-endian floor>, or a bare epoch.
  struct Fence {
    std::string epoch;
    uint64_t floor = 0;
  };
  static Fence ParseFence(std::string_view bytes) {
    Fence f;
    if (bytes.size() >= 9 && bytes[bytes.size() - 9] == '|') {
      for (size_t i = bytes.size() - 8; i < bytes.size(); ++i) f.floor = (f.floor << 8) | static_cast<uint8_t>(bytes[i]);
      f.epoch = std::string(bytes.substr(0, bytes.size() - 9));
    } else {
      f.epoch = std::string(bytes);
    }
    return f;
  }
  static std::string FenceBytes(const std::string& epoch, uint64_t floor) {
    std::string out = epoch + '|';
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((floor >> (8 * i)) & 0xff));
    return out;
  }
  static std::string WithVersion(EnvelopeView e, uint64_t version) {
    e.version = version;
    return *EncodeEnvelope(e);
  }
  // REQUIRES: mu_ held.
  Fence FenceLocked(std::string_view key) {
    const Item* item = Find(FenceKeyFor(key));
    return item ? ParseFence(item->bytes) : Fence();
  }

  // REQUIRES: mu_ held. The group's generation, if it has a valid one (a
  // canonical decimal in [1, 2^53), as the scripts read it).
  std::optional<uint64_t> GroupLocked(std::string_view group) {
    const Item* item = Find(GroupKeyFor(group));
    if (item == nullptr || item->bytes.empty() || item->bytes[0] == '0') return std::nullopt;
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(item->bytes.data(), item->bytes.data() + item->bytes.size(), v);
    if (ec != std::errc() || end != item->bytes.data() + item->bytes.size() || v >= kMaxGroupGeneration) {
      return std::nullopt;
    }
    return v;
  }
  // REQUIRES: mu_ held. The group's version floor (0: none), or nullopt when
  // its key holds anything but a canonical decimal in [1, 2^64) (unknown).
  std::optional<uint64_t> GroupFloorLocked(std::string_view group) {
    const Item* item = Find(GroupFloorKeyFor(group));
    if (item == nullptr) return uint64_t{0};
    const std::string& b = item->bytes;
    uint64_t v = 0;
    if (b.empty() || b[0] == '0') return std::nullopt;
    auto [end, ec] = std::from_chars(b.data(), b.data() + b.size(), v);
    if (ec != std::errc() || end != b.data() + b.size()) return std::nullopt;
    return v;
  }
  // REQUIRES: mu_ held. The group's generation; without a valid one, the
  // clock in microseconds (above every earlier generation, as in Redis).
  uint64_t EnsureGroupLocked(std::string_view group) {
    if (std::optional<uint64_t> g = GroupLocked(group)) return *g;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_->WallNow().time_since_epoch());
    const uint64_t start = std::max<uint64_t>(1, static_cast<uint64_t>(us.count()));
    StoreLocked(GroupKeyFor(group), std::to_string(start), kNoExpiry);
    return start;
  }

  int64_t NowMs() const {
    return std::chrono::duration_cast<milliseconds>(clock_->WallNow().time_since_epoch()).count();
  }

  // REQUIRES: mu_ held.
  FenceSnapshot SnapshotLocked(std::string_view key) {
    FenceSnapshot s;
    s.store_ms = NowMs();
    if (const Item* fence = Find(FenceKeyFor(key))) s.epoch = fence->bytes;
    return s;
  }

  // REQUIRES: mu_ held. Drops the item if it has expired.
  const Item* Find(std::string_view key) {
    auto it = items_.find(key);
    if (it == items_.end()) return nullptr;
    if (clock_->Now() >= it->second.expires) {
      items_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  // REQUIRES: mu_ held. The stored envelope if it passes every structural
  // check (the CRC aside, as in Lua).
  std::optional<EnvelopeView> StoredLocked(std::string_view key) {
    const Item* item = Find(key);
    if (item == nullptr) return std::nullopt;
    Result<EnvelopeView> e = DecodeEnvelope(item->bytes, /*verify_checksum=*/false);
    if (!e.ok()) return std::nullopt;
    return *e;
  }

  // REQUIRES: mu_ held.
  bool ReleaseLocked(const std::string& lease_key, std::string_view token) {
    const Item* lease = Find(lease_key);
    if (lease == nullptr || lease->bytes != token) return false;
    items_.erase(lease_key);
    return true;
  }

  // REQUIRES: mu_ held.
  void StoreLocked(std::string_view key, std::string_view bytes, milliseconds ttl) {
    items_[std::string(key)] = Item{std::string(bytes), clock_->Now() + std::max(ttl, milliseconds(1))};
  }

  Clock* const clock_;
  std::mutex mu_;
  std::map<std::string, Item, std::less<>> items_;  // GUARDED_BY(mu_)
  static constexpr size_t kRecentEvents = 256;
  std::map<std::string, std::deque<std::string>, std::less<>> recent_;  // GUARDED_BY(mu_): per group
  mutable std::mutex down_mu_;
  std::array<bool, kShards> down_{};  // GUARDED_BY(down_mu_)
};

}  // namespace

std::shared_ptr<L2Store> MakeInMemoryL2Store(Clock* clock) { return std::make_shared<InMemoryL2Store>(clock); }

void InMemoryL2StorePutRaw(L2Store* store, std::string_view key, std::string_view bytes) {
  static_cast<InMemoryL2Store*>(store)->PutRaw(key, bytes);
}

void InMemoryL2StoreSetShardDown(L2Store* store, int shard, bool down) {
  static_cast<InMemoryL2Store*>(store)->SetShardDown(shard, down);
}

}  // namespace tiercache
