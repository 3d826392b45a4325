// MakeCollectable's promise: a collection that fails is an empty scrape,
// never an exception (Collect runs on civetweb's threads, under C code).
// Allocation failure is forced on the collecting thread by this program's
// own operator new.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "tiercache/metrics.h"
#include "tiercache/prometheus.h"

namespace {
thread_local bool t_fail_allocations = false;
}  // namespace

// GCC sees the free() below inlined into a delete-expression whose memory came
// from this replaced operator new (malloc), and warns -Wmismatched-new-delete
// at -O1: a false positive for a replaced global operator new.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (t_fail_allocations) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tiercache::prometheus {
namespace {

// Collect with every allocation failing on this thread; true when it
// returned (whatever it returned into `out`), false when it threw.
bool CollectFailing(const ::prometheus::Collectable& c, std::vector<::prometheus::MetricFamily>* out) {
  struct Reset {
    ~Reset() { t_fail_allocations = false; }
  } reset;
  try {
    t_fail_allocations = true;
    std::vector<::prometheus::MetricFamily> got = c.Collect();
    t_fail_allocations = false;
    *out = std::move(got);
    return true;
  } catch (...) {
    return false;
  }
}

TEST(CollectFailureTest, AFailedCollectionIsAnEmptyScrapeNotAnException) {
  CounterMetrics metrics;
  metrics.Add(Counter::kHit, Tier::kL1, 5);
  auto collectable = MakeCollectable(&metrics, {{"service", "t"}});
  ASSERT_TRUE(collectable.ok());
  std::vector<::prometheus::MetricFamily> families;
  EXPECT_TRUE(CollectFailing(**collectable, &families)) << "an exception escaped Collect";
  EXPECT_TRUE(families.empty());
  // And with memory, the figures are there again.
  EXPECT_FALSE((*collectable)->Collect().empty());
}

}  // namespace
}  // namespace tiercache::prometheus
