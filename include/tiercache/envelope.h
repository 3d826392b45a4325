// Envelope: the versioned binary format of every value tiercache stores in L2.
//
// An envelope wraps a codec's payload with what the cache needs to stay
// correct across pods: the kind of entry (value / negative / tombstone), the
// domain version that fences fills, the logical expiry (wall-clock, shared by
// every pod), when it was written, and how long the load that produced it took
// (δ, for probabilistic early refresh). The byte layout is specified in
// docs/envelope.md and frozen by a golden-bytes test; change it only by
// bumping kEnvelopeFormatVersion.
//
// Thread-safety: pure functions over values; safe from any thread.
#ifndef TIERCACHE_ENVELOPE_H_
#define TIERCACHE_ENVELOPE_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "tiercache/status.h"

namespace tiercache {

// Format 1: an entry outside any group. Format 2: the same, plus the group
// generation the entry was filled under (8 bytes after the format-1 header).
// Encoders write format 1 whenever they can, so ungrouped bytes never change.
inline constexpr uint8_t kEnvelopeFormatVersion = 1;
inline constexpr uint8_t kEnvelopeGroupedFormatVersion = 2;
inline constexpr size_t kEnvelopeHeaderSize = 40;   // bytes before the payload (format 1)
inline constexpr size_t kEnvelopeGroupedHeaderSize = 48;  // format 2
inline constexpr size_t kEnvelopeTrailerSize = 4;   // CRC-32C after the payload
inline constexpr size_t kEnvelopeMaxPayload = 512u * 1024 * 1024;  // Redis' string limit

enum class EntryKind : uint8_t {
  kValue = 0,      // a value the loader produced
  kNegative = 1,   // the loader said the key does not exist
  kTombstone = 2,  // invalidated at `version`: refuses fills of older versions
};

// Codec ids 0..127 are tiercache's; 128..255 are free for users' codecs.
inline constexpr uint8_t kCodecBytes = 0;
inline constexpr uint8_t kCodecString = 1;
inline constexpr uint8_t kCodecJson = 2;

using WallTime = std::chrono::system_clock::time_point;

// A decoded envelope. `payload` views the bytes passed to DecodeEnvelope (or
// the caller's buffer when encoding): it lives as long as they do.
struct EnvelopeView {
  EntryKind kind = EntryKind::kValue;
  uint8_t codec_id = kCodecBytes;
  uint64_t version = 0;
  WallTime expires_at{};   // logical expiry, millisecond precision
  WallTime written_at{};   // millisecond precision
  std::chrono::microseconds load_duration{0};  // δ; saturates at ~71 minutes
  // A member of a group (Cache's GetOptions::group): the group's generation
  // when the entry was filled; the entry is current only while the group is
  // still at it. Encoded as format 2.
  bool grouped = false;
  uint64_t group_generation = 0;
  std::string_view payload;
};

// Serializes `e`. Negative entries and tombstones may carry an empty payload.
// Errors: InvalidArgument if the payload exceeds kEnvelopeMaxPayload.
Result<std::string> EncodeEnvelope(const EnvelopeView& e);

// Parses `bytes` (as read from L2). The result's payload views `bytes`.
// Reads formats 1 and 2.
// Errors (all DataLoss, with the reason in the message): shorter than a
// header, not a tiercache envelope (magic), an unknown format version, an
// unknown kind, non-zero reserved bytes, a length mismatch (truncated or
// trailing bytes), a checksum mismatch.
// Times outside what WallTime can hold are clamped to its range.
// With verify_checksum == false the CRC is not computed (for bytes this
// process encoded itself and kept in memory, e.g. in L1); every other check
// still runs.
Result<EnvelopeView> DecodeEnvelope(std::string_view bytes, bool verify_checksum = true);

// The payload and logical expiry of a value envelope of codec `codec_id`,
// for bytes DecodeEnvelope already accepted once (e.g. kept in memory since):
// the hit path's read. It checks only what keeps the read in bounds and the
// kind and codec (size, magic, format, kind, codec, payload length: all in the
// first 40 bytes), not the checksum nor the reserved bytes. False (and *out
// untouched) for any bytes that fail those checks.
struct DecodedEnvelopeFields {
  std::string_view payload;
  WallTime expires_at{};
};
bool PeekDecodedEnvelope(std::string_view bytes, uint8_t codec_id, DecodedEnvelopeFields* out) noexcept;

// CRC-32C (Castagnoli) of `data`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace tiercache

#endif  // TIERCACHE_ENVELOPE_H_
