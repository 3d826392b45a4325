#include "tiercache/envelope.h"

#include "core/envelope_internal.h"

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
uint32_t LoadBe32(const char* p) noexcept {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_bswap32(v);
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

namespace envelope_internal {

// Reads every field with one fixed-size load (not a byte loop), straight
// into the caller's fields: it runs on every value read from L2, a hundred
// times per GetMany of 100 keys, and a view built field by field and then
// copied whole into a Result stalls on store forwarding.
Status DecodeEnvelopeInto(std::string_view in, bool verify_checksum, EnvelopeView* out) {
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
  const char* p = in.data();
  const auto kind = static_cast<uint8_t>(p[3]);
  if (kind > static_cast<uint8_t>(EntryKind::kTombstone)) {
    return Status::DataLoss("unknown envelope kind " + std::to_string(kind));
  }
  if (p[5] != '\0' || p[6] != '\0' || p[7] != '\0') return Status::DataLoss("envelope reserved bytes not zero");
  const uint64_t length = LoadBe32(p + 36);
  if (in.size() != header + length + kEnvelopeTrailerSize) {
    return Status::DataLoss("envelope length mismatch: header says " + std::to_string(length) +
                            " payload bytes, have " + std::to_string(in.size()));
  }
  const size_t body = header + length;
  if (verify_checksum && Crc32c(std::string_view(p, body)) != LoadBe32(p + body)) {
    return Status::DataLoss("envelope checksum mismatch");
  }
  EnvelopeView& e = *out;
  e.kind = static_cast<EntryKind>(kind);
  e.codec_id = static_cast<uint8_t>(p[4]);
  e.version = LoadBe64(p + 8);
  e.expires_at = FromUnixMs(static_cast<int64_t>(LoadBe64(p + 16)));
  e.written_at = FromUnixMs(static_cast<int64_t>(LoadBe64(p + 24)));
  e.load_duration = std::chrono::microseconds(LoadBe32(p + 32));
  e.grouped = grouped;
  e.group_generation = grouped ? LoadBe64(p + kEnvelopeHeaderSize) : 0;
  e.payload = std::string_view(p + header, length);
  return Status::Ok();
}

}  // namespace envelope_internal

Result<EnvelopeView> DecodeEnvelope(std::string_view in, bool verify_checksum) {
  Result<EnvelopeView> out{EnvelopeView{}};
  if (Status bad = envelope_internal::DecodeEnvelopeInto(in, verify_checksum, &*out); !bad.ok()) {
    out = Result<EnvelopeView>(std::move(bad));
  }
  return out;  // the one return: built in the caller's storage
}

}  // namespace tiercache
