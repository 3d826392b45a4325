#include "tiercache/redis/slot.h"

#include <array>

namespace tiercache::redis {
namespace {

constexpr std::array<uint16_t, 256> MakeCrcTable() {
  std::array<uint16_t, 256> table{};
  for (int i = 0; i < 256; ++i) {
    uint16_t crc = static_cast<uint16_t>(i << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
    table[i] = crc;
  }
  return table;
}

constexpr std::array<uint16_t, 256> kCrcTable = MakeCrcTable();

// Two bytes per step ("slicing by 2"): the CRC is linear over XOR, so the
// two byte steps
//   c1 = (crc << 8) ^ T[(crc >> 8) ^ b0],  c2 = (c1 << 8) ^ T[(c1 >> 8) ^ b1]
// fold into c2 = T2[(crc >> 8) ^ b0] ^ T[(crc & 0xff) ^ b1], with
// T2[i] = ((T[i] & 0xff) << 8) ^ T[T[i] >> 8]: two independent look-ups.
constexpr std::array<uint16_t, 256> MakeCrcTable2() {
  std::array<uint16_t, 256> table{};
  for (int i = 0; i < 256; ++i) {
    const uint16_t t = kCrcTable[i];
    table[i] = static_cast<uint16_t>(((t & 0xff) << 8) ^ kCrcTable[t >> 8]);
  }
  return table;
}

constexpr std::array<uint16_t, 256> kCrcTable2 = MakeCrcTable2();

}  // namespace

uint16_t Crc16(std::string_view data) noexcept {
  uint16_t crc = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const auto* end = p + data.size();
  for (; end - p >= 2; p += 2) {
    crc = static_cast<uint16_t>(kCrcTable2[(crc >> 8) ^ p[0]] ^ kCrcTable[(crc & 0xff) ^ p[1]]);
  }
  if (p != end) crc = static_cast<uint16_t>((crc << 8) ^ kCrcTable[(crc >> 8) ^ *p]);
  return crc;
}

std::string_view HashTagOf(std::string_view key) noexcept {
  size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

uint16_t KeySlot(std::string_view key) noexcept {
  // One pass over the key: its CRC, unless a '{' shows up, in which case the
  // hash-tag rule decides what is hashed.
  uint16_t crc = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  const auto* end = p + key.size();
  for (; end - p >= 2; p += 2) {
    if (p[0] == '{' || p[1] == '{') return static_cast<uint16_t>(Crc16(HashTagOf(key)) & (kSlotCount - 1));
    crc = static_cast<uint16_t>(kCrcTable2[(crc >> 8) ^ p[0]] ^ kCrcTable[(crc & 0xff) ^ p[1]]);
  }
  if (p != end) {
    if (*p == '{') return static_cast<uint16_t>(Crc16(HashTagOf(key)) & (kSlotCount - 1));
    crc = static_cast<uint16_t>((crc << 8) ^ kCrcTable[(crc >> 8) ^ *p]);
  }
  return static_cast<uint16_t>(crc & (kSlotCount - 1));
}

std::string TaggedKey(std::string_view prefix, std::string_view tag, std::string_view suffix) {
  std::string key;
  key.reserve(prefix.size() + tag.size() + suffix.size() + 4);
  key.append(prefix).append(":{").append(tag).append("}");
  if (!suffix.empty()) key.append(":").append(suffix);
  return key;
}

}  // namespace tiercache::redis
