// The lease and fence keys of a value key: in the value key's hash slot.
#include <string>
#include <vector>

#include "tiercache/l2_store.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

// For every cluster slot, a short string that hashes to it.
const std::vector<std::string>& SlotTags() {
  static const std::vector<std::string>* tags = [] {
    auto* t = new std::vector<std::string>(redis::kSlotCount);
    int filled = 0;
    for (uint64_t n = 0; filled < redis::kSlotCount; ++n) {
      std::string s = std::to_string(n);
      std::string& slot = (*t)[redis::KeySlot(s)];
      if (slot.empty()) {
        slot = std::move(s);
        ++filled;
      }
    }
    return t;
  }();
  return *tags;
}

std::string CompanionKey(std::string_view key, std::string_view suffix) {
  // A key with a hash tag keeps it when a suffix is appended.
  if (redis::HashTagOf(key).size() < key.size()) return std::string(key) + ":" + std::string(suffix);
  // Otherwise prefix a tag that hashes to the key's own slot.
  return "{" + SlotTags()[redis::KeySlot(key)] + "}:" + std::string(suffix) + ":" + std::string(key);
}

}  // namespace

std::string LeaseKeyFor(std::string_view key) { return CompanionKey(key, "lease"); }
std::string FenceKeyFor(std::string_view key) { return CompanionKey(key, "fence"); }
std::string GroupKeyFor(std::string_view group) { return std::string(group) + ":group"; }
std::string RecentEventsKeyFor(std::string_view group) { return std::string(group) + ":group:recent"; }
std::string GroupFloorKeyFor(std::string_view group) { return std::string(group) + ":group:floor"; }

Status CheckGroupName(std::string_view group) {
  if (group.empty()) return Status::InvalidArgument("empty group name");
  if (redis::HashTagOf(group).size() == group.size()) {
    return Status::InvalidArgument("group '" + std::string(group) +
                                   "' has no hash tag: a group and its members must share a hash slot, e.g. "
                                   "feed:{community:42}");
  }
  if (IsCompanionKeyName(group)) {
    return Status::InvalidArgument("group '" + std::string(group) + "' has the shape of a companion key");
  }
  return Status::Ok();
}

bool IsCompanionKeyName(std::string_view key) {
  // Every get checks its key: most keys end in none of the suffixes' last
  // letters and do not start with '{', and are decided by two byte tests.
  if (!MaybeCompanionKeyName(key)) return false;
  for (std::string_view suffix : {std::string_view(":lease"), std::string_view(":fence"), std::string_view(":group"),
                                  std::string_view(":group:recent"), std::string_view(":group:floor")}) {
    if (key.size() >= suffix.size() && key.substr(key.size() - suffix.size()) == suffix) return true;
  }
  if (key.empty() || key[0] != '{') return false;
  const size_t close = key.find('}');
  if (close == std::string_view::npos) return false;
  const std::string_view rest = key.substr(close + 1);
  return rest.substr(0, 7) == ":lease:" || rest.substr(0, 7) == ":fence:";
}

}  // namespace tiercache
