#include "redis/slot_map.h"

#include <algorithm>

namespace tiercache::redis::internal {

SlotMap::SlotMap() {
  master_.fill(-1);
  for (auto& p : published_) p.store(-1, std::memory_order_relaxed);
}

bool SlotMap::Apply(const std::vector<Range>& ranges) {
  std::array<int16_t, kSlotCount> masters;
  masters.fill(-1);
  std::vector<Shard> shards;
  shards.reserve(ranges.size());
  for (const Range& r : ranges) {
    const auto shard = static_cast<uint16_t>(shards.size());
    shards.push_back(Shard{r.master, r.replicas});
    for (int s = r.first; s <= r.last && s < kSlotCount; ++s) {
      masters[s] = static_cast<int16_t>(r.master);
      shard_of_[s] = shard;
    }
  }
  const bool changed = masters != master_;
  master_ = masters;
  shards_ = std::move(shards);
  served_ = true;
  for (int s = 0; s < kSlotCount; ++s) Publish(static_cast<uint16_t>(s));
  return changed;
}

void SlotMap::AssignAll(int node) {
  Apply({Range{0, kSlotCount - 1, node, {}}});
}

void SlotMap::Move(uint16_t slot, int node) {
  master_[slot] = static_cast<int16_t>(node);
  Publish(slot);
}

int SlotMap::NextReplica(uint16_t slot) {
  const int m = master_[slot];
  const uint16_t shard = shard_of_[slot];
  if (m < 0 || shard >= shards_.size() || shards_[shard].master != m || shards_[shard].replicas.empty()) return -1;
  const std::vector<int>& reps = shards_[shard].replicas;
  return reps[replica_rr_++ % reps.size()];
}

int SlotMap::NextKeylessMaster() {
  for (int i = 0; i < 8; ++i) {
    keyless_rr_ += 4093;  // a prime: the tries land in different ranges
    const int m = master_[keyless_rr_ & (kSlotCount - 1)];
    if (m >= 0) return m;
  }
  return -1;
}

std::vector<int> SlotMap::Masters() const {
  std::vector<int> out;
  for (const Shard& s : shards_) {
    if (std::find(out.begin(), out.end(), s.master) == out.end()) out.push_back(s.master);
  }
  return out;
}

std::vector<int> SlotMap::Members() const {
  std::vector<int> out;
  for (const Shard& s : shards_) {
    out.push_back(s.master);
    out.insert(out.end(), s.replicas.begin(), s.replicas.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace tiercache::redis::internal
