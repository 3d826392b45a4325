// Helpers shared by the Kafka invalidation tests: events for a key, the
// identity mapping (the entity id is the cache key), waiting for a
// condition, and a loader of a fixed version.
#ifndef TIERCACHE_TESTS_KAFKA_KAFKA_EVENT_TEST_UTIL_H_
#define TIERCACHE_TESTS_KAFKA_KAFKA_EVENT_TEST_UTIL_H_

#include <chrono>
#include <string>
#include <thread>

#include "tiercache/cache.h"
#include "tiercache/events.h"
#include "tiercache/kafka/invalidation_consumer.h"

namespace tiercache::kafka::testing_events {

// A post.updated event of `key` (entity id and partition key) at `version`.
inline std::string EventFor(const std::string& key, uint64_t version) {
  InvalidationEvent e;
  e.event_id = key + "-" + std::to_string(version);
  e.type = "post.updated";
  e.entity_id = key;
  e.partition_key = key;
  e.version = version;
  e.occurred_at = std::chrono::system_clock::now();
  return *EncodeEvent(e);
}

inline Result<InvalidationTargets> MapToKey(const InvalidationEvent& e) { return InvalidationTargets{{e.entity_id}, {}}; }

// The group of the event's partition key ("feed:{<partition key>}"), e.g.
// every page of a community's feed; its members are FeedPage(key, n).
inline Result<InvalidationTargets> MapToGroup(const InvalidationEvent& e) {
  return InvalidationTargets{{}, {"feed:{" + e.partition_key + "}"}};
}
inline std::string FeedPage(const std::string& partition_key, int n) {
  return "feed:{" + partition_key + "}:page:" + std::to_string(n);
}

// Polls `done` every 5 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A loader answering "v<version>" at `version`.
inline Loader Version(uint64_t v) {
  return [v](std::string_view) -> Result<LoadResult> { return LoadResult{"v" + std::to_string(v), v}; };
}

}  // namespace tiercache::kafka::testing_events

#endif  // TIERCACHE_TESTS_KAFKA_KAFKA_EVENT_TEST_UTIL_H_
