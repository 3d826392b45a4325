#include "tiercache/envelope.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace tiercache {
namespace {

constexpr unsigned char kMagic0 = 'T';
constexpr unsigned char kMagic1 = 'C';

void PutBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

uint64_t GetBe(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

int64_t ToUnixMs(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Untrusted bytes: times beyond the clock's range (about ±292 years at
// nanosecond resolution) are clamped instead of overflowing.
WallTime FromUnixMs(int64_t ms) {
  constexpr int64_t kMaxMs = std::chrono::duration_cast<std::chrono::milliseconds>(WallTime::duration::max()).count();
  constexpr int64_t kMinMs = std::chrono::duration_cast<std::chrono::milliseconds>(WallTime::duration::min()).count();
  ms = std::clamp(ms, kMinMs, kMaxMs);
  return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds(ms)));
}

static_assert(std::endian::native == std::endian::little, "LoadBe64 assumes a little-endian host");

uint64_t LoadBe64(const char* p) noexcept {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_bswap64(v);  // the envelope is big-endian; this host is little-endian (x86-64, arm64)
}

}  // namespace

bool PeekDecodedEnvelope(std::string_view in, uint8_t codec_id, DecodedEnvelopeFields* out) noexcept {
  if (in.size() < kEnvelopeHeaderSize + kEnvelopeTrailerSize || static_cast<unsigned char>(in[0]) != kMagic0 ||
      static_cast<unsigned char>(in[1]) != kMagic1) {
    return false;
  }
  const auto format = static_cast<uint8_t>(in[2]);
  if (format != kEnvelopeFormatVersion && format != kEnvelopeGroupedFormatVersion) return false;
  const size_t header = format == kEnvelopeGroupedFormatVersion ? kEnvelopeGroupedHeaderSize : kEnvelopeHeaderSize;
  if (in.size() < header + kEnvelopeTrailerSize || static_cast<uint8_t>(in[3]) != static_cast<uint8_t>(EntryKind::kValue) ||
      static_cast<uint8_t>(in[4]) != codec_id) {
    return false;
  }
  uint32_t length;
  std::memcpy(&length, in.data() + 36, sizeof length);
  if (__builtin_bswap32(length) != in.size() - header - kEnvelopeTrailerSize) return false;
  out->payload = in.substr(header, in.size() - header - kEnvelopeTrailerSize);
  out->expires_at = FromUnixMs(static_cast<int64_t>(LoadBe64(in.data() + 16)));
  return true;
}

Result<std::string> EncodeEnvelope(const EnvelopeView& e) {
  if (e.payload.size() > kEnvelopeMaxPayload) {
    return Status::InvalidArgument("envelope payload of " + std::to_string(e.payload.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kEnvelopeMaxPayload));
  }
  std::string out;
  out.reserve(kEnvelopeGroupedHeaderSize + e.payload.size() + kEnvelopeTrailerSize);
  out.push_back(static_cast<char>(kMagic0));
  out.push_back(static_cast<char>(kMagic1));
  out.push_back(static_cast<char>(e.grouped ? kEnvelopeGroupedFormatVersion : kEnvelopeFormatVersion));
  out.push_back(static_cast<char>(e.kind));
  out.push_back(static_cast<char>(e.codec_id));
  out.append(3, '\0');
  PutBe(&out, e.version, 8);
  PutBe(&out, static_cast<uint64_t>(ToUnixMs(e.expires_at)), 8);
  PutBe(&out, static_cast<uint64_t>(ToUnixMs(e.written_at)), 8);
  const int64_t delta_us = std::clamp<int64_t>(e.load_duration.count(), 0, std::numeric_limits<uint32_t>::max());
  PutBe(&out, static_cast<uint64_t>(delta_us), 4);
  PutBe(&out, e.payload.size(), 4);
  if (e.grouped) PutBe(&out, e.group_generation, 8);
  out.append(e.payload);
  PutBe(&out, Crc32c(out), 4);
  return out;
}

Result<EnvelopeView> DecodeEnvelope(std::string_view in, bool verify_checksum) {
  if (in.size() < 2 || static_cast<unsigned char>(in[0]) != kMagic0 || static_cast<unsigned char>(in[1]) != kMagic1) {
    return Status::DataLoss("not a tiercache envelope (bad magic)");
  }
  if (in.size() < kEnvelopeHeaderSize + kEnvelopeTrailerSize) {
    return Status::DataLoss("envelope truncated: " + std::to_string(in.size()) + " bytes");
  }
  const auto format = static_cast<uint8_t>(in[2]);
  if (format != kEnvelopeFormatVersion && format != kEnvelopeGroupedFormatVersion) {
    return Status::DataLoss("unsupported envelope format version " + std::to_string(format));
  }
  const bool grouped = format == kEnvelopeGroupedFormatVersion;
  const size_t header = grouped ? kEnvelopeGroupedHeaderSize : kEnvelopeHeaderSize;
  if (in.size() < header + kEnvelopeTrailerSize) {
    return Status::DataLoss("envelope truncated: " + std::to_string(in.size()) + " bytes");
  }
  const auto kind = static_cast<uint8_t>(in[3]);
  if (kind > static_cast<uint8_t>(EntryKind::kTombstone)) {
    return Status::DataLoss("unknown envelope kind " + std::to_string(kind));
  }
  if (in[5] != '\0' || in[6] != '\0' || in[7] != '\0') return Status::DataLoss("envelope reserved bytes not zero");
  const uint64_t length = GetBe(in, 36, 4);
  if (in.size() != header + length + kEnvelopeTrailerSize) {
    return Status::DataLoss("envelope length mismatch: header says " + std::to_string(length) +
                            " payload bytes, have " + std::to_string(in.size()));
  }
  const size_t body = header + length;
  if (verify_checksum && Crc32c(in.substr(0, body)) != static_cast<uint32_t>(GetBe(in, body, 4))) {
    return Status::DataLoss("envelope checksum mismatch");
  }
  EnvelopeView e;
  e.kind = static_cast<EntryKind>(kind);
  e.codec_id = static_cast<uint8_t>(in[4]);
  e.version = GetBe(in, 8, 8);
  e.expires_at = FromUnixMs(static_cast<int64_t>(GetBe(in, 16, 8)));
  e.written_at = FromUnixMs(static_cast<int64_t>(GetBe(in, 24, 8)));
  e.load_duration = std::chrono::microseconds(GetBe(in, 32, 4));
  e.grouped = grouped;
  e.group_generation = grouped ? GetBe(in, kEnvelopeHeaderSize, 8) : 0;
  e.payload = in.substr(header, length);
  return e;
}

}  // namespace tiercache
