// The invalidation event contract (docs/events.md): what an owning service
// publishes when an entity changes, and what every cache consumer reads.
//
// An event is one JSON object, UTF-8, at most kMaxEventBytes:
//   {"event_id": "...", "type": "post.updated", "entity_id": "7",
//    "partition_key": "42", "version": 3,
//    "occurred_at": "2026-12-06T10:14:00.123Z"}
// published on a topic per entity and schema version ("community.posts.v1")
// with the message key = partition_key, so events of one partition key keep
// their order. Unknown fields are ignored (a newer producer may add some);
// anything else that does not fit is malformed.
//
// Thread-safety: free functions, no shared state.
#ifndef TIERCACHE_EVENTS_H_
#define TIERCACHE_EVENTS_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "tiercache/status.h"

namespace tiercache {

// Events above this size are malformed (an event names keys, it does not
// carry the entity).
inline constexpr size_t kMaxEventBytes = 64 * 1024;
// Longest event_id, entity_id, partition_key and type.
inline constexpr size_t kMaxEventFieldBytes = 512;

struct InvalidationEvent {
  std::string event_id;       // unique per event (a UUID); duplicates are redeliveries
  std::string type;           // "<entity>.<action>", e.g. "post.updated"
  std::string entity_id;      // the changed entity's id
  std::string partition_key;  // the message key: e.g. the community id
  uint64_t version = 0;       // the entity's version after the change, >= 1
  std::chrono::system_clock::time_point occurred_at;  // when the change committed (ms precision)

  // "<entity>" and "<action>" of `type` (empty if it has no '.').
  std::string_view entity() const;
  std::string_view action() const;
};

// Parses one event. Errors: kInvalidArgument "malformed event: <reason>"
// (not JSON, not an object, too large, a required field missing, empty, too
// long or of the wrong JSON type, version not an unsigned 64-bit integer
// >= 1 (a JSON number or a string of digits), occurred_at not RFC 3339 UTC
// ("...T...Z" or "+00:00"), type without a '.').
Result<InvalidationEvent> ParseEvent(std::string_view json);

// Checks what ParseEvent checks, on an event built in code.
// Errors: kInvalidArgument as ParseEvent.
Status ValidateEvent(const InvalidationEvent& e);

// The canonical JSON of `e` (fields in the order above, occurred_at in ms,
// "Z"). Errors: kInvalidArgument when ValidateEvent fails.
Result<std::string> EncodeEvent(const InvalidationEvent& e);

// occurred_at as RFC 3339 UTC with milliseconds ("2026-12-06T10:14:00.123Z").
std::string FormatEventTime(std::chrono::system_clock::time_point t);

}  // namespace tiercache

#endif  // TIERCACHE_EVENTS_H_
