// Small helpers shared by the cache's tests.
#ifndef TIERCACHE_TESTS_CORE_CACHE_TEST_UTIL_H_
#define TIERCACHE_TESTS_CORE_CACHE_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>

#include "tiercache/cache.h"

namespace tiercache::testing {

// "value 'x' v3 (stale) from L1", "not-found v5 from loader", or the error.
inline std::string Describe(const Result<CachedValue>& v) {
  if (!v.ok()) return v.status().ToString();
  const char* src = v->source() == ValueSource::kL1 ? "L1" : v->source() == ValueSource::kL2 ? "L2" : "loader";
  return std::string(v->found() ? "value '" + std::string(v->payload()) + "'" : "not-found") + " v" +
         std::to_string(v->version()) + (v->stale() ? " (stale)" : "") + " from " + src;
}

// Cache::Create, failing the test (and returning null) on an error.
inline std::unique_ptr<Cache> MakeCacheOrFail(CacheOptions o) {
  Result<std::unique_ptr<Cache>> c = Cache::Create(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// A random tag for keys of one test run (digits).
inline std::string UniqueTag() {
  static std::mt19937_64 rng(std::random_device{}());
  return std::to_string(rng() % 1000000000000ULL);
}

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_CORE_CACHE_TEST_UTIL_H_
