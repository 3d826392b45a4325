// Redis Cluster key slots: which of the 16384 slots a key belongs to.
//
// A key's slot is CRC16-XMODEM(key) & 16383, where only the hash tag is hashed
// when the key has one: the bytes between the first '{' and the first '}'
// after it, provided they are not empty. Keys sharing a tag share a slot, so
// multi-key commands and Lua scripts over them run on one node.
//
// Thread-safety: the functions are pure, callable from any thread;
// KeySlotMemo is not thread-safe (one per thread or per call).
#ifndef TIERCACHE_REDIS_SLOT_H_
#define TIERCACHE_REDIS_SLOT_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tiercache::redis {

inline constexpr int kSlotCount = 16384;

// CRC16-XMODEM (poly 0x1021, init 0) of `data`. Crc16("123456789") == 0x31C3.
uint16_t Crc16(std::string_view data) noexcept;

// The part of `key` that is hashed: its non-empty hash tag, else the key.
std::string_view HashTagOf(std::string_view key) noexcept;

// The cluster slot of `key`, in [0, 16383].
uint16_t KeySlot(std::string_view key) noexcept;

// KeySlot for a sequence of keys that often share a hash tag (a group's
// keys, one entity's batch): the CRC16 is computed once per run of keys with
// equal tags. Exact, since a slot depends on the tag's bytes alone; an
// untagged key is its own tag.
class KeySlotMemo {
 public:
  uint16_t operator()(std::string_view key) {
    const std::string_view tag = HashTagOf(key);
    if (!valid_ || tag != tag_) {
      slot_ = static_cast<uint16_t>(Crc16(tag) & (kSlotCount - 1));
      tag_.assign(tag);
      valid_ = true;
    }
    return slot_;
  }

 private:
  std::string tag_;
  uint16_t slot_ = 0;
  bool valid_ = false;
};

// Builds "<prefix>:{<tag>}:<suffix>", e.g. TaggedKey("posts", "community:42", "7")
// == "posts:{community:42}:7". An empty suffix gives "<prefix>:{<tag>}".
// REQUIRES: `tag` is non-empty and contains no '}' (else the slot would not be
// the tag's); violations are not checked.
std::string TaggedKey(std::string_view prefix, std::string_view tag, std::string_view suffix);

}  // namespace tiercache::redis

#endif  // TIERCACHE_REDIS_SLOT_H_
