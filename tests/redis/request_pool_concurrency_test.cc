// Request blocks are recycled through a per-thread free list (request.h):
// bounded, reused only after delete, and a block freed on another thread
// goes to that thread's list. The sanitizer builds pool nothing (they must
// see every lifetime); these tests then check exactly that.
#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "redis/request.h"

namespace tiercache::redis::internal {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kBound = 0;
#else
constexpr size_t kBound = Request::kPooledPerThread;
#endif

TEST(RequestPoolTest, KeepsAtMostItsBoundOfFreedBlocks) {
  std::vector<Request*> reqs;
  for (size_t i = 0; i < Request::kPooledPerThread + 100; ++i) reqs.push_back(new Request);
  EXPECT_EQ(Request::PooledBlocksForTesting(), 0u);  // all taken (and more)
  for (Request* r : reqs) r->Unref();
  EXPECT_EQ(Request::PooledBlocksForTesting(), kBound);
}

TEST(RequestPoolTest, ABlockIsReusedOnlyAfterItsRequestIsFreed) {
  Request* a = new Request;
  a->slot = 42;
  std::set<Request*> live{a};
  for (int i = 0; i < 1000; ++i) {
    Request* r = new Request;
    EXPECT_TRUE(live.insert(r).second) << "a live request's block was handed out again";
    EXPECT_EQ(r->slot, -1);  // constructed afresh, whatever the block held
    r->slot = i;
    if (i % 3 == 0) {  // free some: their blocks may come back, never a live one's
      live.erase(r);
      r->Unref();
    }
  }
  EXPECT_EQ(a->slot, 42);
  for (Request* r : live) r->Unref();
  if (kBound > 0) {
    // Freed last, taken first.
    Request* last = new Request;
    Request* again = new Request;
    last->Unref();
    Request* reused = new Request;
    EXPECT_EQ(reused, last);
    reused->Unref();
    again->Unref();
  }
}

TEST(RequestPoolTest, ARequestFreedOnAnotherThreadGoesToThatThreadsList) {
  std::vector<Request*> reqs;
  for (int i = 0; i < 50; ++i) reqs.push_back(new Request);
  const size_t mine = Request::PooledBlocksForTesting();
  size_t theirs = 0;
  std::thread t([&] {
    for (Request* r : reqs) r->Unref();  // the I/O thread frees callers' requests
    theirs = Request::PooledBlocksForTesting();
    // Allocated and freed many times over on this thread: the list stays bounded.
    for (int round = 0; round < 100; ++round) {
      std::vector<Request*> burst;
      for (int i = 0; i < 300; ++i) burst.push_back(new Request);
      for (Request* r : burst) r->Unref();
    }
    EXPECT_EQ(Request::PooledBlocksForTesting(), kBound);
  });  // the thread's list is freed as it exits
  t.join();
  EXPECT_EQ(theirs, std::min<size_t>(50, kBound));
  EXPECT_EQ(Request::PooledBlocksForTesting(), mine);
}

}  // namespace
}  // namespace tiercache::redis::internal
