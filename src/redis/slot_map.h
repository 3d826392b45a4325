// SlotMap: which node serves each of the 16384 hash slots, and the shards
// (a master and its replicas, in CLUSTER SLOTS order) they belong to. Node
// ids are the engine's (indexes into its node list). Internal.
//
// Thread-safety: everything but PublishedMaster is for the I/O thread only.
// PublishedMaster may be called from any thread: it reads a per-slot copy of
// the master id that the map updates (relaxed) whenever a slot changes.
#ifndef TIERCACHE_SRC_REDIS_SLOT_MAP_H_
#define TIERCACHE_SRC_REDIS_SLOT_MAP_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "tiercache/redis/slot.h"

namespace tiercache::redis::internal {

class SlotMap {
 public:
  // One range of CLUSTER SLOTS, its nodes as ids.
  struct Range {
    uint16_t first = 0, last = 0;
    int master = -1;
    std::vector<int> replicas;
  };

  SlotMap();  // no slot served
  SlotMap(const SlotMap&) = delete;
  SlotMap& operator=(const SlotMap&) = delete;

  // Replaces the map with `ranges` (slots in none of them: unserved).
  // Returns true when some slot's master changed.
  bool Apply(const std::vector<Range>& ranges);
  // Every slot served by `node`, which has no replica (a standalone server).
  void AssignAll(int node);
  // MOVED: `slot` is served by `node` now. Its shard's replicas are no
  // longer trusted for it (NextReplica answers -1) until the next Apply.
  void Move(uint16_t slot, int node);

  bool empty() const { return !served_; }
  // The master of `slot`, or -1.
  int Master(uint16_t slot) const { return master_[slot]; }
  // A replica of `slot`'s shard, in turn; -1 when it lists none, or when its
  // master is no longer the slot's (moved since the map was applied).
  int NextReplica(uint16_t slot);
  // A master for a command without a key: spread over the slots in turn,
  // skipping unserved ones; -1 when none is found in a few tries.
  int NextKeylessMaster();
  // The distinct masters, in shard order.
  std::vector<int> Masters() const;
  // Every node the last Apply listed (masters and replicas), sorted.
  std::vector<int> Members() const;

  // Any thread: the master of `slot` as last published, or -1.
  int PublishedMaster(uint16_t slot) const {
    return slot < kSlotCount ? published_[slot].load(std::memory_order_relaxed) : -1;
  }

 private:
  struct Shard {
    int master = -1;
    std::vector<int> replicas;
  };
  void Publish(uint16_t slot) { published_[slot].store(master_[slot], std::memory_order_relaxed); }

  std::array<int16_t, kSlotCount> master_{};
  std::array<uint16_t, kSlotCount> shard_of_{};
  std::vector<Shard> shards_;
  std::array<std::atomic<int16_t>, kSlotCount> published_{};
  bool served_ = false;
  size_t keyless_rr_ = 0;
  size_t replica_rr_ = 0;
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_SLOT_MAP_H_
