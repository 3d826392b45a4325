// The cache keys of the reference platform, and what a post event
// invalidates. Shared by feeds-service (its consumers map events with it) and
// posts-service (which invalidates L2 right after its commit).
//
//   feed:{community:C}             the group of every page and the counter of C's feed
//   feed:{community:C}:page:N      page N's post ids        (member of the group)
//   counters:{community:C}:posts   C's post count           (member of the group)
//   posts:{community:C}:ID         one post (a page's posts share C's slot: one MGET)
//   postmap:{post:ID}              the post's community, for GET /posts/:id
#ifndef TIERCACHE_DEMO_COMMON_FEED_KEYS_H_
#define TIERCACHE_DEMO_COMMON_FEED_KEYS_H_

#include <string>
#include <string_view>

#include "tiercache/events.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/status.h"

namespace demo {

inline std::string FeedGroup(std::string_view c) { return "feed:{community:" + std::string(c) + "}"; }
inline std::string PageKey(std::string_view c, int page) { return FeedGroup(c) + ":page:" + std::to_string(page); }
inline std::string CounterKey(std::string_view c) { return "counters:{community:" + std::string(c) + "}:posts"; }
inline std::string PostKey(std::string_view c, std::string_view id) {
  return "posts:{community:" + std::string(c) + "}:" + std::string(id);
}
inline std::string PostMapKey(std::string_view id) { return "postmap:{post:" + std::string(id) + "}"; }

inline bool AllDigits(std::string_view s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// A post event (post.created / post.updated / post.deleted, partition key =
// community id) invalidates the post at the event's version. A post that
// appears or disappears also invalidates its community mapping and the
// community's feed group (every page and the counter: the lists of ids
// change) with the event's version as the group's floor. An edit changes no
// page (a page holds ids; the posts are read by key), so it leaves the group.
// Errors: kInvalidArgument for another entity or ids that are not decimal.
inline tiercache::Result<tiercache::kafka::InvalidationTargets> MapPostEvent(const tiercache::InvalidationEvent& e) {
  if (e.entity() != "post") return tiercache::Status::InvalidArgument("unknown type " + e.type);
  if (!AllDigits(e.partition_key) || !AllDigits(e.entity_id)) {
    return tiercache::Status::InvalidArgument("partition_key and entity_id must be decimal ids");
  }
  tiercache::kafka::InvalidationTargets t;
  t.keys.push_back(PostKey(e.partition_key, e.entity_id));
  if (e.action() != "updated") {
    t.keys.push_back(PostMapKey(e.entity_id));
    t.groups.push_back(FeedGroup(e.partition_key));
  }
  return t;
}

}  // namespace demo

#endif  // TIERCACHE_DEMO_COMMON_FEED_KEYS_H_
