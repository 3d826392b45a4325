// NodeArena: blocks are placed across as few lines as they can, never overlap, are reused by size, and the
// slabs grow and are kept; threads allocating and freeing at once never get
// overlapping blocks (each fills its block with its own pattern and checks
// it before freeing). Runs under ASan and TSan too; under ASan a read of a
// freed block must still be reported (the arena poisons it).
#include "l1/node_arena.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "l1/node.h"

namespace tiercache::l1 {
namespace {

constexpr std::size_t kLine = NodeArena::kMaxAlign;

// A block fits where it spans no more lines than its size needs.
TEST(NodeArenaTest, ABlockFitsWhereItSpansNoMoreLinesThanItsSizeNeeds) {
  EXPECT_TRUE(NodeArena::Fits(0, 64));
  EXPECT_FALSE(NodeArena::Fits(8, 64));
  EXPECT_TRUE(NodeArena::Fits(8, 56));
  EXPECT_FALSE(NodeArena::Fits(16, 56));
  EXPECT_TRUE(NodeArena::Fits(64 + 48, 80));
  EXPECT_FALSE(NodeArena::Fits(56, 80));
  EXPECT_TRUE(NodeArena::Fits(56, 8));
  EXPECT_TRUE(NodeArena::Fits(128, 256));
  EXPECT_FALSE(NodeArena::Fits(136, 256));
  for (std::uintptr_t at = 0; at < 256; at += 8) {
    for (std::size_t bytes = 8; bytes <= 256; bytes += 8) {
      const std::size_t lines = (at % 64 + bytes + 63) / 64;
      EXPECT_EQ(NodeArena::Fits(at, bytes), lines == (bytes + 63) / 64) << at << " " << bytes;
    }
  }
}

// Sizes of every class (8 to 256 bytes) and one above, mixed, so that carving
// skips padding and the slabs' rests go to the free lists: each block has
// its size's placement (Fits; also those handed out again from the free lists),
// none overlaps another, and freed ones are reused.
TEST(NodeArenaTest, BlocksAreAlignedDisjointAndReusedBySize) {
  NodeArena arena;
  std::vector<std::pair<char*, std::size_t>> blocks;
  std::size_t pooled = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t bytes = NodeArena::kGrain * (1 + (i * 7) % 33);  // 8..264: the last one is not pooled
    auto* p = static_cast<char*>(arena.Allocate(bytes));
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % NodeArena::kGrain, 0u) << bytes;
    if (bytes <= NodeArena::kMaxPooledBytes) {
      ASSERT_TRUE(NodeArena::Fits(reinterpret_cast<std::uintptr_t>(p), bytes)) << bytes;
    }
    std::memset(p, i & 0xFF, bytes);
    blocks.emplace_back(p, bytes);
    if (bytes <= NodeArena::kMaxPooledBytes) pooled += bytes;
  }
  std::set<std::pair<char*, std::size_t>> sorted(blocks.begin(), blocks.end());
  char* end = nullptr;
  for (const auto& [p, bytes] : sorted) {
    EXPECT_GE(p, end) << "blocks overlap";
    end = p + bytes;
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    for (std::size_t b = 0; b < blocks[i].second; ++b) {
      ASSERT_EQ(static_cast<unsigned char>(blocks[i].first[b]), i & 0xFF) << "block " << i << " overwritten";
    }
  }
  const std::size_t slabs = arena.slab_bytes();
  EXPECT_GE(slabs, pooled);
  // A freed block is handed out again for its size, and no slab is added.
  char* freed = blocks[1].first;
  const std::size_t freed_bytes = blocks[1].second;
  arena.Free(freed, freed_bytes);
  EXPECT_EQ(arena.Allocate(freed_bytes), freed);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (i != 1) arena.Free(blocks[i].first, blocks[i].second);
  }
  arena.Free(freed, freed_bytes);
  for (const auto& [p, bytes] : blocks) {
    auto* again = static_cast<char*>(arena.Allocate(bytes));
    if (bytes <= NodeArena::kMaxPooledBytes) {
      EXPECT_TRUE(NodeArena::Fits(reinterpret_cast<std::uintptr_t>(again), bytes)) << bytes;
    }
    arena.Free(again, bytes);
  }
  EXPECT_EQ(arena.slab_bytes(), slabs) << "freed blocks were not reused";
}

// A node allocated in an arena goes back there when its NodePtr dies.
TEST(NodeArenaTest, NodesComeFromTheirArenaAndGoBackToIt) {
  NodeArena arena;
  Node* first;
  {
    NodePtr n = NewNode("key", NodeShape{3, false, false, 2}, &arena);
    first = n.get();
    EXPECT_EQ(n.get_deleter().arena, &arena);
    EXPECT_EQ(n->key(), "key");
  }
  NodePtr again = NewNode("yek", NodeShape{3, false, false, 2}, &arena);
  EXPECT_EQ(again.get(), first);
  EXPECT_EQ(again->key(), "yek");
  NodePtr big = NewNode(std::string(1000, 'k'), NodeShape{1000, false, false, 2}, &arena);  // not pooled
  EXPECT_EQ(big->key(), std::string(1000, 'k'));
}

TEST(NodeArenaTest, ThreadsAllocatingAndFreeingAtOnceNeverShareABlock) {
  NodeArena arena;
  constexpr int kThreads = 4;
  constexpr int kOps = 20'000;
  std::atomic<int> broken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
      std::vector<std::pair<char*, std::size_t>> held;
      const auto mark = static_cast<char>('a' + t);
      auto release = [&](std::size_t i) {
        auto [p, bytes] = held[i];
        for (std::size_t b = 0; b < bytes; ++b) {
          if (p[b] != mark) {
            broken.fetch_add(1);
            break;
          }
        }
        arena.Free(p, bytes);
        held[i] = held.back();
        held.pop_back();
      };
      for (int op = 0; op < kOps; ++op) {
        if (held.size() < 64 && (held.empty() || rng() % 3 != 0)) {
          const std::size_t bytes = NodeArena::kGrain * (1 + rng() % 40);
          auto* p = static_cast<char*>(arena.Allocate(bytes));
          std::memset(p, mark, bytes);
          held.emplace_back(p, bytes);
        } else {
          release(rng() % held.size());
        }
      }
      while (!held.empty()) release(held.size() - 1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(broken.load(), 0);
}

#if defined(__SANITIZE_ADDRESS__)
TEST(NodeArenaDeathTest, ReadingAFreedBlockIsReportedUnderAsan) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        NodeArena arena;
        auto* p = static_cast<volatile char*>(arena.Allocate(2 * kLine));
        p[100] = 1;
        arena.Free(const_cast<char*>(p), 2 * kLine);
        [[maybe_unused]] char c = p[100];
      },
      "use-after-poison");
}
#endif

}  // namespace
}  // namespace tiercache::l1
