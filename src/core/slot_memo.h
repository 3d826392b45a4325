// TagPrefixSlotMemo: redis::KeySlot for a run of keys that share a prefix
// through their hash tag (a GetMany's keys, usually "posts:{community:42}:N"),
// found by one comparison of that prefix instead of a search for the tag.
//
// Exact: a key K' that begins with the bytes of the last key K up to and
// including the '}' that closes K's non-empty hash tag has K's first '{' at
// the same place (the bytes before it are K's, none a '{') and the first '}'
// after it at the same place, so the same tag and the same slot. Any other
// key (and a key without a non-empty tag, which is its own tag) has its
// tag found and hashed, as redis::KeySlot does.
//
// Thread-safety: none (one per thread or per call).
#ifndef TIERCACHE_CORE_SLOT_MEMO_H_
#define TIERCACHE_CORE_SLOT_MEMO_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "tiercache/redis/slot.h"

namespace tiercache {

class TagPrefixSlotMemo {
 public:
  uint16_t operator()(std::string_view key) {
    if (!prefix_.empty() && key.size() >= prefix_.size() &&
        std::memcmp(key.data(), prefix_.data(), prefix_.size()) == 0) {
      return slot_;
    }
    const std::string_view tag = redis::HashTagOf(key);
    slot_ = static_cast<uint16_t>(redis::Crc16(tag) & (redis::kSlotCount - 1));
    if (tag.size() < key.size()) {  // a non-empty tag: the prefix through its '}'
      prefix_.assign(key.data(), static_cast<size_t>(tag.data() - key.data()) + tag.size() + 1);
    } else {
      prefix_.clear();
    }
    return slot_;
  }

 private:
  std::string prefix_;  // empty: none remembered
  uint16_t slot_ = 0;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_SLOT_MEMO_H_
