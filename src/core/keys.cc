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

}  // namespace tiercache
