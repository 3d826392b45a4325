// L1Follower: this pod's L1 follows the invalidation stream, and is fenced
// whenever the pod cannot be sure it saw every event.
//
// A service's group consumer (InvalidationConsumer) gives each event to ONE
// pod, which applies it to the shared L2; but every pod holds L1 copies. So
// every pod also runs an L1Follower: a consumer with no group that assigns
// itself every partition of the topics, starting `lookback` before now (so
// events whose L2 application may still be pending are seen), commits
// nothing, and for each event drops the mapped keys from this pod's L1 with
// Cache::InvalidateLocal(key, version): an L1 tombstone at the event's
// version, so a refill from an L2 that has not applied the event yet is
// refused too. For a mapped group it calls Cache::InvalidateMany with the
// group, the event's version and the event's id (an L2 round trip): the
// group moves on (once per event id, whoever applies the event first), its
// version floor rises to the event's version (InvalidationTargets), and this
// pod's L1 stops serving its members from earlier generations as soon as the
// call returns, without waiting for the service's consumer.
//
// Gap-aware: every check_interval librdkafka's statistics tell each
// partition's high watermark as of the last fetch response and whether the
// partition's broker answered since the previous statistics. A watermark
// from a broker that answered is a checkpoint: "everything published before
// time T is at an offset below H". Once the follower has handled every
// partition up to its checkpoint, it is caught up to T. L1 is trusted only
// while now - caught_up_to <= max_lag; otherwise (start-up before the
// follower caught up, brokers unreachable or hung, a slow follower) the
// follower calls Cache::FenceL1 (stop reading and filling L1; after lost
// events or when the brokers became unreachable, also drop it: see
// drop_when_unreachable) and Cache::TrustL1 once it caught up again. No
// broker call blocks the decision: a silent broker simply stops producing
// checkpoints. So an L1 copy outlives the publication of its invalidation by
// at most
//   max_lag + 2 x check_interval
// (docs/consistency.md), never by the L1 TTL.
//
// Thread-safety: Start/Stop/stats from any thread; the mapper runs on the
// follower's thread. Ownership: `cache` is not owned and must outlive it.
#ifndef TIERCACHE_KAFKA_L1_FOLLOWER_H_
#define TIERCACHE_KAFKA_L1_FOLLOWER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tiercache/cache.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace tiercache::kafka {

struct L1FollowerOptions {
  std::string brokers;              // required
  std::vector<std::string> topics;  // required
  // How far back the follower starts (events applied to L2 late are seen). >= 0.
  milliseconds lookback{30000};
  // fetch.wait.max.ms: the main term of the fan-out lag. > 0.
  milliseconds fetch_wait{5};
  // Gap-awareness (class comment). Each > 0.
  milliseconds max_lag{500};
  milliseconds check_interval{100};  // also statistics.interval.ms
  // When the brokers become unreachable, also drop L1 (not only stop using
  // it). An outage stops the producers too: events committed meanwhile wait
  // in their outbox and are published only after it, so once the follower
  // has caught up with the brokers it still cannot know about them, and an
  // L1 kept through the outage could serve copies those events invalidate.
  // Set false only when every producer publishes before acknowledging its
  // write (nothing committed can wait behind an outage): L1 then survives
  // outages warm.
  bool drop_when_unreachable = true;
  std::string client_id = "tiercache-l1-follower";
  // Invalidation lag at stage kL1, L1 fences by cause and the fenced state;
  // null: none. Not owned; must outlive the follower.
  Metrics* metrics = nullptr;
  std::vector<std::pair<std::string, std::string>> extra;  // more librdkafka properties
  // Called on the follower's thread after an event's keys were dropped from
  // L1. May be empty.
  std::function<void(const InvalidationEvent&, std::chrono::system_clock::time_point dropped_at)> on_dropped;
};

struct L1FollowerStats {
  uint64_t events = 0;        // events handled
  uint64_t keys_dropped = 0;  // InvalidateLocal calls, and groups moved (InvalidateMany)
  uint64_t malformed = 0;     // skipped here (the group consumer dead-letters them)
  uint64_t fences = 0;        // times L1 was fenced
  std::map<std::string, uint64_t> fences_by_cause;  // by L1FenceCauseName: "starting", "lagging", ...
  bool trusted = false;       // L1 trusted now
  int64_t behind_ms = -1;     // now - caught_up_to at the last check (-1: never caught up)
};

class L1Follower {
 public:
  // Errors: kInvalidArgument (options, null cache or mapper).
  static Result<std::unique_ptr<L1Follower>> Create(L1FollowerOptions options, Cache* cache, EventMapper mapper);
  ~L1Follower();  // Stop()
  L1Follower(const L1Follower&) = delete;
  L1Follower& operator=(const L1Follower&) = delete;

  // Fences L1 ("starting") and starts following in the background (it keeps
  // trying while the brokers cannot be reached). Errors: kFailedPrecondition
  // (started twice), kInternal (no thread).
  Status Start();
  // Stops and joins both threads; L1 stays as it is (fenced or not). Idempotent.
  void Stop();

  L1FollowerStats stats() const;

  struct Impl;

 private:
  explicit L1Follower(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache::kafka

#endif  // TIERCACHE_KAFKA_L1_FOLLOWER_H_
