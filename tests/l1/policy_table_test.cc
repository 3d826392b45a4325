// PolicyTable and NodeList: the policy lists of a shard, linked through
// 32-bit indices into one dense array of records. Random list operations on
// four lists at once, records freed and reused, checked against std::list
// models after every step.
#include "l1/node.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <cstdint>
#include <list>
#include <random>
#include <set>
#include <string>
#include <vector>

// Allocation failure on demand: the n-th allocation from now on this thread
// throws std::bad_alloc (0: none fails).
namespace {
thread_local int t_fail_in = 0;
}  // namespace
// GCC sees the free() below inlined into a delete-expression whose memory came
// from this replaced operator new (malloc), and warns -Wmismatched-new-delete:
// a false positive for a replaced global operator new.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (t_fail_in > 0 && --t_fail_in == 0) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tiercache::l1 {
namespace {

struct Lists {
  PolicyTable table;
  NodeList lists[PolicyTable::kLists] = {{&table, 0}, {&table, 1}, {&table, 2}, {&table, 3}};
};

// Every list, walked front to back through the records, equals its model, and
// the records of nodes in no list are not reachable.
void ExpectSame(const Lists& l, const std::vector<std::list<Node*>>& model) {
  for (std::uint32_t h = 0; h < PolicyTable::kLists; ++h) {
    std::vector<Node*> walked;
    for (Node* n = l.lists[h].front(); n != nullptr; n = l.lists[h].next(n)) {
      walked.push_back(n);
      ASSERT_LE(walked.size(), model[h].size()) << "list " << h << " is longer than its model";
    }
    EXPECT_EQ(walked, std::vector<Node*>(model[h].begin(), model[h].end())) << "list " << h;
    EXPECT_EQ(l.lists[h].size(), model[h].size());
    EXPECT_EQ(l.lists[h].empty(), model[h].empty());
    EXPECT_EQ(l.lists[h].back(), model[h].empty() ? nullptr : model[h].back());
  }
}

TEST(PolicyTableTest, RandomListOperationsMatchModelsAndRecordsAreReused) {
  Lists l;
  std::vector<std::list<Node*>> model(PolicyTable::kLists);
  std::vector<NodePtr> owned;
  std::vector<int> where;  // list of owned[i], -1: none (detached)
  std::mt19937 rng(7);
  std::size_t max_live = 0, live = 0;
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 4);
    const int target = static_cast<int>(rng() % PolicyTable::kLists);
    if (op == 0 || live == 0) {  // a new node enters a list
      owned.push_back(NewNode("k" + std::to_string(step)));
      where.push_back(target);
      Node* n = owned.back().get();
      l.table.Reserve();
      l.table.Attach(n, step);
      ASSERT_GE(n->policy_index(), PolicyTable::kLists);
      l.lists[target].push_front(n);
      model[target].push_front(n);
      max_live = std::max(max_live, ++live);
    } else {
      std::size_t i = rng() % owned.size();
      while (where[i] < 0) i = (i + 1) % owned.size();
      Node* n = owned[i].get();
      const int from = where[i];
      if (op == 1) {  // a hit
        l.lists[from].move_to_front(n);
        model[from].remove(n);
        model[from].push_front(n);
      } else if (op == 2) {  // to another list (promotion, demotion)
        l.lists[from].remove(n);
        model[from].remove(n);
        l.lists[target].push_front(n);
        model[target].push_front(n);
        where[i] = target;
      } else {  // leaves: its record is freed for the next node
        l.lists[from].remove(n);
        model[from].remove(n);
        l.table.Detach(n);
        EXPECT_EQ(n->policy_index(), 0u);
        where[i] = -1;
        --live;
      }
    }
    ExpectSame(l, model);
    if (HasFailure()) return;
  }
  // Freed records were reused: the array never held more than the most nodes
  // live at once (plus the heads).
  EXPECT_EQ(l.table.size(), PolicyTable::kLists + max_live);
  // Every live node owns a distinct record, and the record names it.
  std::set<std::uint32_t> indices;
  for (std::size_t i = 0; i < owned.size(); ++i) {
    if (where[i] < 0) continue;
    EXPECT_TRUE(indices.insert(owned[i]->policy_index()).second);
    EXPECT_EQ(l.table.node(owned[i]->policy_index()), owned[i].get());
  }
  l.table.Reset();
  for (NodeList& list : l.lists) list.clear();
  EXPECT_EQ(l.table.size(), PolicyTable::kLists);
  EXPECT_LT(l.table.allocated_for_testing(), PolicyTable::kLists + max_live) << "Reset keeps the memory";
  for (NodeList& list : l.lists) EXPECT_TRUE(list.empty());
}

TEST(PolicyTableTest, ReserveAllocatesOnlyWhenNoRecordIsFree) {
  PolicyTable t;
  NodePtr a = NewNode("a"), b = NewNode("b");
  t.Reserve();
  t.Attach(a.get(), 1);
  const std::size_t size = t.size();
  t.Detach(a.get());
  t.Reserve();  // the freed record is there: no growth
  EXPECT_EQ(t.size(), size);
  t.Attach(b.get(), 2);
  EXPECT_EQ(b->policy_index(), size - 1);
  EXPECT_EQ(t.node(b->policy_index()), b.get());
}

// A table bounded at `n` nodes grows its arrays by doubling but never past
// the heads and n records, so a full shard's records take no slack; a
// record freed at the bound is reused.
TEST(PolicyTableTest, ABoundedTableNeverAllocatesPastItsBound) {
  for (std::size_t bound : {1, 5, 12, 13, 100, 1000}) {
    PolicyTable t(bound);
    std::vector<NodePtr> nodes;
    for (std::size_t i = 0; i < bound; ++i) {
      nodes.push_back(NewNode("k" + std::to_string(i)));
      t.Reserve();
      t.Attach(nodes.back().get(), i);
      ASSERT_LE(t.allocated_for_testing(), PolicyTable::kLists + bound) << bound << " " << i;
    }
    EXPECT_EQ(t.allocated_for_testing(), PolicyTable::kLists + bound) << bound;
    t.Detach(nodes.front().get());
    NodePtr again = NewNode("again");
    t.Reserve();
    t.Attach(again.get(), 0);
    EXPECT_EQ(t.allocated_for_testing(), PolicyTable::kLists + bound) << bound;
    EXPECT_TRUE(t.ConsistentForTesting());
  }
}

// A Reserve that grows the arrays and runs out of memory on the first or the
// second of its allocations leaves the table as it was: the two arrays keep
// one entry per record, and the next Reserve and Attach work.
TEST(PolicyTableTest, AReserveThatRunsOutOfMemoryChangesNothing) {
  for (int failing = 1; failing <= 2; ++failing) {
    PolicyTable t;
    std::vector<NodePtr> nodes;
    // Fill up to the arrays' capacity, so the next Reserve has to grow them.
    while (t.size() < t.allocated_for_testing() || nodes.size() < 4) {
      nodes.push_back(NewNode("k" + std::to_string(nodes.size())));
      t.Reserve();
      t.Attach(nodes.back().get(), nodes.size());
    }
    const std::size_t size = t.size();
    NodePtr extra = NewNode("extra");
    t_fail_in = failing;
    bool threw = false;
    try {
      t.Reserve();
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    t_fail_in = 0;
    EXPECT_TRUE(threw) << "allocation " << failing << " of the growth did not fail";
    EXPECT_TRUE(t.ConsistentForTesting()) << "allocation " << failing << " failed";
    EXPECT_EQ(t.size(), size);
    t.Reserve();
    t.Attach(extra.get(), 3);
    EXPECT_EQ(t.node(extra->policy_index()), extra.get());
    EXPECT_TRUE(t.ConsistentForTesting());
  }
}

}  // namespace
}  // namespace tiercache::l1
