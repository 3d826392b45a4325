// SlotMap: routing by slot, the shards' replicas, MOVED, keyless commands,
// and the copy of each slot's master published for other threads.
#include "redis/slot_map.h"

#include <gtest/gtest.h>

#include <set>

namespace tiercache::redis::internal {
namespace {

// Three shards as CLUSTER SLOTS lists them: masters 0, 1, 2 with replicas
// 3, 4 and none; slots 100..199 served by nobody.
std::vector<SlotMap::Range> ThreeShards() {
  return {{0, 99, 0, {3}}, {200, 9999, 1, {4, 5}}, {10000, kSlotCount - 1, 2, {}}};
}

TEST(SlotMapTest, StartsWithNoSlotServed) {
  SlotMap map;
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(map.Master(0), -1);
  EXPECT_EQ(map.PublishedMaster(16383), -1);
  EXPECT_EQ(map.NextReplica(0), -1);
  EXPECT_EQ(map.NextKeylessMaster(), -1);
  EXPECT_TRUE(map.Masters().empty());
}

TEST(SlotMapTest, RoutesEachSlotToItsRangesMasterAndPublishesIt) {
  SlotMap map;
  EXPECT_TRUE(map.Apply(ThreeShards()));
  EXPECT_FALSE(map.empty());
  EXPECT_EQ(map.Master(0), 0);
  EXPECT_EQ(map.Master(99), 0);
  EXPECT_EQ(map.Master(100), -1);
  EXPECT_EQ(map.Master(199), -1);
  EXPECT_EQ(map.Master(200), 1);
  EXPECT_EQ(map.Master(16383), 2);
  for (uint16_t s : {0, 150, 5000, 16383}) EXPECT_EQ(map.PublishedMaster(s), map.Master(s)) << s;
  EXPECT_EQ(map.PublishedMaster(kSlotCount), -1) << "out of range";
  EXPECT_EQ(map.Masters(), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(map.Members(), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_FALSE(map.Apply(ThreeShards())) << "the same map again changes no slot";
}

TEST(SlotMapTest, ReplicasAreTakenInTurnAndOnlyWhileTheirMasterServesTheSlot) {
  SlotMap map;
  map.Apply(ThreeShards());
  EXPECT_EQ(map.NextReplica(50), 3);
  std::set<int> seen;
  for (int i = 0; i < 4; ++i) seen.insert(map.NextReplica(300));
  EXPECT_EQ(seen, (std::set<int>{4, 5}));
  EXPECT_EQ(map.NextReplica(12000), -1) << "its shard lists no replica";
  EXPECT_EQ(map.NextReplica(150), -1) << "unserved";
  // MOVED: slot 50 is node 7's now; shard 0's replica replicates node 0,
  // not the slot's new master.
  map.Move(50, 7);
  EXPECT_EQ(map.Master(50), 7);
  EXPECT_EQ(map.PublishedMaster(50), 7);
  EXPECT_EQ(map.NextReplica(50), -1);
  EXPECT_EQ(map.NextReplica(51), 3) << "the other slots of the shard keep their replica";
  EXPECT_TRUE(map.Apply(ThreeShards())) << "slot 50 goes back to node 0";
  EXPECT_EQ(map.NextReplica(50), 3);
}

TEST(SlotMapTest, KeylessCommandsSpreadOverServedSlotsMasters) {
  SlotMap map;
  map.Apply(ThreeShards());
  std::set<int> seen;
  for (int i = 0; i < kSlotCount; ++i) {  // the stride is odd: every slot once
    const int m = map.NextKeylessMaster();
    ASSERT_GE(m, 0);
    seen.insert(m);
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1, 2}));
}

TEST(SlotMapTest, AStandaloneServerServesEverySlotWithoutReplicas) {
  SlotMap map;
  map.AssignAll(4);
  EXPECT_EQ(map.Master(0), 4);
  EXPECT_EQ(map.Master(16383), 4);
  EXPECT_EQ(map.PublishedMaster(8000), 4);
  EXPECT_EQ(map.NextReplica(8000), -1);
  EXPECT_EQ(map.Masters(), (std::vector<int>{4}));
}

TEST(SlotMapTest, ARangeLeftOutOfANewMapIsNoLongerServed) {
  SlotMap map;
  map.Apply(ThreeShards());
  EXPECT_TRUE(map.Apply({{0, 99, 0, {3}}}));
  EXPECT_EQ(map.Master(5000), -1);
  EXPECT_EQ(map.PublishedMaster(5000), -1);
  EXPECT_EQ(map.Members(), (std::vector<int>{0, 3}));
}

}  // namespace
}  // namespace tiercache::redis::internal
