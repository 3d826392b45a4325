// InvalidationConsumer: applies invalidation events (docs/events.md) to the
// shared L2 for one service, at least once, never out of version order.
//
// One consumer group per service (every pod of the service runs one; Kafka
// gives each partition to one of them). The loop, on the consumer's own
// thread:
//   1. takes up to max_batch messages;
//   2. parses each (malformed: to the dead-letter topic with the reason and
//      the original bytes, once the broker acknowledged it; the partition
//      goes on) and maps it to cache keys with the user's EventMapper (an
//      error from it, e.g. an unknown type, dead-letters the event too);
//   3. applies the whole batch with Cache::InvalidateMany: one atomic script
//      per hash slot, pipelined; a tombstone at the event's version unless
//      L2 already has that version or newer (then "ignored": old and
//      redelivered events change nothing);
//   4. stores each partition's offset after the last message applied
//      (enable.auto.offset.store=false, rd_kafka_offsets_store), and
//      librdkafka commits stored offsets every auto_commit_interval; on a
//      revoke and on Stop the stored offsets are committed synchronously.
// A Redis error never skips an event: a partition with a key that failed is
// paused, rewound to its first unapplied message and retried with
// exponential backoff, while the other partitions go on.
//
// Rebalancing uses the eager `range` assignor, not cooperative-sticky:
// librdkafka 2.0.2 (Debian 12) has cooperative-rebalance commit bugs fixed
// only in 2.3-2.10 (../notes: #4059, #3306, #4783), and eager rebalancing,
// where every partition is revoked and reassigned, is what the version
// fence makes harmless (two consumers applying one partition at once during
// a hand-over cannot regress a key).
//
// Thread-safety: Start/Stop/stats from any thread; the mapper and the
// observer run on the consumer's thread, no lock held.
// Ownership: `cache` and `dead_letters` are not owned and must outlive the
// consumer.
#ifndef TIERCACHE_KAFKA_INVALIDATION_CONSUMER_H_
#define TIERCACHE_KAFKA_INVALIDATION_CONSUMER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tiercache/cache.h"
#include "tiercache/events.h"
#include "tiercache/kafka/publisher.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace tiercache::kafka {

// What one event invalidates: keys, at the event's version, and whole groups
// (Cache::InvalidateGroup: every page of a feed at once, whatever the number
// of pages; GetOptions::group names a key's group on reads). A group moves
// once per event id, and its version floor rises to the event's version:
// from then on a member whose load returns a lower version (a replica behind
// the event) or none is refused (docs/consistency.md §3b). So the members'
// versions must count in the event's sequence (e.g. a community's
// feed_version, which the changed post also takes as its version), and
// members must be versioned, not-found included.
struct InvalidationTargets {
  std::vector<std::string> keys;
  std::vector<std::string> groups;
};

// Maps an event to what it invalidates. An error dead-letters the event with
// the error's message as the reason (return kInvalidArgument "unknown type"
// for a type the service does not handle).
using EventMapper = std::function<Result<InvalidationTargets>(const InvalidationEvent&)>;

// One event as it was handled (for metrics and tests).
struct HandledEvent {
  std::string topic;
  int32_t partition = -1;
  int64_t offset = -1;
  bool malformed = false;           // dead-lettered
  std::string dead_letter_reason;   // when malformed
  InvalidationEvent event;          // when not malformed
  size_t keys_applied = 0;          // tombstones written, groups moved to a new generation
  size_t keys_ignored = 0;          // already at this version or newer
  std::chrono::system_clock::time_point applied_at;
};

struct InvalidationConsumerOptions {
  std::string brokers;            // required
  std::string group_id;           // required: one group per service
  std::vector<std::string> topics;  // required
  std::string dead_letter_topic;  // required
  // Messages applied in one InvalidateMany at most. > 0.
  size_t max_batch = 1000;
  // How long the broker may hold a fetch for more data (fetch.wait.max.ms):
  // the main term of the invalidation lag. > 0.
  milliseconds fetch_wait{5};
  // How often stored offsets are committed (auto.commit.interval.ms). > 0.
  milliseconds auto_commit_interval{1000};
  // Backoff of a partition whose apply failed: doubles from min to max.
  milliseconds retry_backoff_min{20};
  milliseconds retry_backoff_max{2000};
  // How long a dead-letter publish may take before the partition retries it.
  milliseconds dead_letter_timeout{5000};
  milliseconds session_timeout{10000};  // session.timeout.ms
  // Where a group without committed offsets starts: "earliest" or "latest".
  std::string auto_offset_reset = "earliest";
  std::string client_id = "tiercache-invalidation";
  // Events by outcome, invalidation lag at stage kL2, consumer lag per
  // partition; null: none. Not owned; must outlive the consumer.
  Metrics* metrics = nullptr;
  std::vector<std::pair<std::string, std::string>> extra;  // more librdkafka properties
  // Called on the consumer's thread after each event was applied or
  // dead-lettered (its offset is stored right after). May be empty.
  std::function<void(const HandledEvent&)> on_handled;
};

struct InvalidationConsumerStats {
  uint64_t events = 0;          // applied or ignored (not dead-lettered)
  uint64_t events_ignored = 0;  // every key already at this version or newer
  uint64_t keys_applied = 0;
  uint64_t keys_ignored = 0;
  uint64_t dead_lettered = 0;
  uint64_t batches = 0;
  uint64_t apply_retries = 0;   // partitions paused and rewound after an L2 error
  uint64_t rebalances = 0;      // assignments received
};

class InvalidationConsumer {
 public:
  // Errors: kInvalidArgument (a required option missing or out of range, a
  // property librdkafka refuses, null cache/dead_letters/mapper).
  static Result<std::unique_ptr<InvalidationConsumer>> Create(InvalidationConsumerOptions options, Cache* cache,
                                                              EventMapper mapper, Publisher* dead_letters);
  ~InvalidationConsumer();  // Stop()
  InvalidationConsumer(const InvalidationConsumer&) = delete;
  InvalidationConsumer& operator=(const InvalidationConsumer&) = delete;

  // Joins the group and starts the consumer's thread. Errors: kInternal
  // (librdkafka could not subscribe), kFailedPrecondition (started twice).
  Status Start();
  // Finishes the batch in hand, commits stored offsets synchronously, leaves
  // the group and joins the thread. Idempotent. Blocks up to about the
  // session timeout when the broker is unreachable.
  void Stop();

  InvalidationConsumerStats stats() const;

  struct Impl;

 private:
  explicit InvalidationConsumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache::kafka

#endif  // TIERCACHE_KAFKA_INVALIDATION_CONSUMER_H_
