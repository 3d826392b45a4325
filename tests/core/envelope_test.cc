#include "tiercache/envelope.h"

#include <gtest/gtest.h>

#include <string>

namespace tiercache {
namespace {

using std::chrono::milliseconds;

std::string FromHex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::string ToHex(std::string_view bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

WallTime UnixMs(int64_t ms) { return WallTime(milliseconds(ms)); }

EnvelopeView SampleValue() {
  EnvelopeView e;
  e.kind = EntryKind::kValue;
  e.codec_id = kCodecString;
  e.version = 0x0102030405060708ULL;
  e.expires_at = UnixMs(1767225600000);  // 2026-01-01T00:00:00Z
  e.written_at = UnixMs(1767225599000);
  e.load_duration = std::chrono::microseconds(50000);
  e.payload = "hello";
  return e;
}

TEST(Crc32cTest, MatchesTheStandardCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  // Continuation gives the same result as one pass.
  EXPECT_EQ(Crc32c("56789", Crc32c("1234")), 0xE3069283u);
}

// The golden bytes freeze format version 1 (docs/envelope.md). They were
// derived by hand from the spec, the CRC by an independent implementation. If
// this test fails, the format drifted: bump kEnvelopeFormatVersion instead.
TEST(EnvelopeTest, GoldenBytesOfAValue) {
  Result<std::string> bytes = EncodeEnvelope(SampleValue());
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(ToHex(*bytes),
            "5443"               // magic "TC"
            "01"                 // format version
            "00"                 // kind: value
            "01"                 // codec: string
            "000000"             // reserved
            "0102030405060708"   // domain version
            "0000019b76daa800"   // logical expiry, unix ms
            "0000019b76daa418"   // written at, unix ms
            "0000c350"           // load duration, us (50 ms)
            "00000005"           // payload length
            "68656c6c6f"         // payload
            "e6278d08");         // CRC-32C of everything before
}

TEST(EnvelopeTest, GoldenBytesOfATombstone) {
  EnvelopeView e;
  e.kind = EntryKind::kTombstone;
  e.version = 42;
  e.expires_at = UnixMs(1767225600000);
  e.written_at = UnixMs(1767225599000);
  Result<std::string> bytes = EncodeEnvelope(e);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(ToHex(*bytes),
            "5443010200000000000000000000002a0000019b76daa8000000019b76daa41800000000000000001023e897");
}

// Format 2: a group member. Same derivation as above (the CRC by a bitwise
// implementation in Python, independent of Crc32c's table).
TEST(EnvelopeTest, GoldenBytesOfAGroupMember) {
  EnvelopeView e = SampleValue();
  e.grouped = true;
  e.group_generation = 0x123456789abcULL;
  Result<std::string> bytes = EncodeEnvelope(e);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(ToHex(*bytes),
            "5443"               // magic "TC"
            "02"                 // format version 2: grouped
            "00" "01" "000000"   // kind, codec, reserved
            "0102030405060708"   // domain version
            "0000019b76daa800"   // logical expiry, unix ms
            "0000019b76daa418"   // written at, unix ms
            "0000c350"           // load duration, us
            "00000005"           // payload length
            "0000123456789abc"   // group generation
            "68656c6c6f"         // payload
            "1a54de69");         // CRC-32C of everything before
  Result<EnvelopeView> back = DecodeEnvelope(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->grouped);
  EXPECT_EQ(back->group_generation, 0x123456789abcULL);
  EXPECT_EQ(back->payload, "hello");
  EXPECT_EQ(back->version, 0x0102030405060708ULL);
  for (size_t n = 0; n < bytes->size(); ++n) EXPECT_FALSE(DecodeEnvelope(bytes->substr(0, n)).ok()) << n;
}

// The L1 hit path reads accepted envelopes with PeekDecodedEnvelope instead
// of DecodeEnvelope: both must see the same payload and expiry, and the peek
// must refuse what would take it out of bounds or is not a value of the codec.
TEST(EnvelopeTest, PeekOfAnAcceptedEnvelopeReadsWhatDecodeReads) {
  for (bool grouped : {false, true}) {
    for (size_t size : {size_t{0}, size_t{1}, size_t{200}, size_t{70000}}) {
      EnvelopeView e = SampleValue();
      const std::string payload(size, 'p');
      e.payload = payload;
      e.grouped = grouped;
      e.group_generation = grouped ? 42 : 0;
      Result<std::string> bytes = EncodeEnvelope(e);
      ASSERT_TRUE(bytes.ok());
      Result<EnvelopeView> decoded = DecodeEnvelope(*bytes);
      ASSERT_TRUE(decoded.ok());
      DecodedEnvelopeFields peek;
      ASSERT_TRUE(PeekDecodedEnvelope(*bytes, e.codec_id, &peek));
      EXPECT_EQ(peek.payload, decoded->payload) << grouped << " " << size;
      EXPECT_EQ(peek.payload.data(), decoded->payload.data());
      EXPECT_EQ(peek.expires_at, decoded->expires_at);
      EXPECT_FALSE(PeekDecodedEnvelope(*bytes, static_cast<uint8_t>(e.codec_id + 1), &peek)) << "another codec";
      for (size_t n = 0; n < bytes->size() && n < 100; ++n) {
        EXPECT_FALSE(PeekDecodedEnvelope(bytes->substr(0, n), e.codec_id, &peek)) << "truncated to " << n;
      }
      EXPECT_FALSE(PeekDecodedEnvelope(*bytes + "x", e.codec_id, &peek)) << "trailing byte";
    }
  }
  DecodedEnvelopeFields peek;
  EXPECT_FALSE(PeekDecodedEnvelope(std::string(60, 'x'), kCodecString, &peek)) << "not an envelope";
  EnvelopeView tombstone = SampleValue();
  tombstone.kind = EntryKind::kTombstone;
  tombstone.payload = {};
  EXPECT_FALSE(PeekDecodedEnvelope(*EncodeEnvelope(tombstone), tombstone.codec_id, &peek)) << "not a value";
}

TEST(EnvelopeTest, AnUngroupedEnvelopeStaysFormat1) {
  Result<EnvelopeView> e = DecodeEnvelope(*EncodeEnvelope(SampleValue()));
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->grouped);
  EXPECT_EQ(e->group_generation, 0u);
}

TEST(EnvelopeTest, RoundTripsEveryField) {
  Result<std::string> bytes = EncodeEnvelope(SampleValue());
  ASSERT_TRUE(bytes.ok());
  Result<EnvelopeView> e = DecodeEnvelope(*bytes);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->kind, EntryKind::kValue);
  EXPECT_EQ(e->codec_id, kCodecString);
  EXPECT_EQ(e->version, 0x0102030405060708ULL);
  EXPECT_EQ(e->expires_at, UnixMs(1767225600000));
  EXPECT_EQ(e->written_at, UnixMs(1767225599000));
  EXPECT_EQ(e->load_duration, std::chrono::microseconds(50000));
  EXPECT_EQ(e->payload, "hello");
}

TEST(EnvelopeTest, DecodesTheGoldenBytes) {
  Result<EnvelopeView> e = DecodeEnvelope(FromHex(
      "5443010200000000000000000000002a0000019b76daa8000000019b76daa41800000000000000001023e897"));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->kind, EntryKind::kTombstone);
  EXPECT_EQ(e->version, 42u);
  EXPECT_TRUE(e->payload.empty());
}

// Expiry and written-at come from untrusted bytes: the extremes must decode
// (clamped), not overflow in the conversion to the clock's nanoseconds.
TEST(EnvelopeTest, ExtremeTimesAreClampedNotOverflowed) {
  EnvelopeView e;
  e.version = 1;
  std::string bytes = *EncodeEnvelope(e);
  for (int i = 0; i < 8; ++i) {
    bytes[16 + i] = static_cast<char>(i == 0 ? 0x7F : 0xFF);  // expiry: INT64_MAX ms
    bytes[24 + i] = static_cast<char>(i == 0 ? 0x80 : 0x00);  // written: INT64_MIN ms
  }
  const uint32_t crc = Crc32c(std::string_view(bytes).substr(0, kEnvelopeHeaderSize));
  for (int i = 0; i < 4; ++i) bytes[kEnvelopeHeaderSize + i] = static_cast<char>(crc >> (24 - 8 * i));
  Result<EnvelopeView> d = DecodeEnvelope(bytes);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const WallTime now = std::chrono::system_clock::now();
  EXPECT_GT(d->expires_at, now + std::chrono::hours(24 * 365 * 200));
  EXPECT_LT(d->written_at, now - std::chrono::hours(24 * 365 * 200));
}

TEST(EnvelopeTest, LoadDurationSaturates) {
  EnvelopeView e = SampleValue();
  e.load_duration = std::chrono::hours(5);
  Result<std::string> bytes = EncodeEnvelope(e);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(DecodeEnvelope(*bytes)->load_duration, std::chrono::microseconds(0xFFFFFFFFu));
}

void ExpectDataLoss(std::string_view bytes, std::string_view reason) {
  Result<EnvelopeView> e = DecodeEnvelope(bytes);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().IsDataLoss()) << e.status().ToString();
  EXPECT_NE(e.status().message().find(reason), std::string_view::npos) << e.status().ToString();
}

TEST(EnvelopeTest, CorruptTruncatedAndForeignBytesAreDataLoss) {
  const std::string good = *EncodeEnvelope(SampleValue());
  ExpectDataLoss("", "magic");
  ExpectDataLoss("{\"id\":7,\"title\":\"a foreign JSON value\"}", "magic");
  ExpectDataLoss(good.substr(0, 20), "truncated");
  ExpectDataLoss(good.substr(0, good.size() - 1), "length");
  ExpectDataLoss(good + "x", "length");

  std::string flipped = good;
  flipped[kEnvelopeHeaderSize + 1] ^= 0x20;  // a payload bit
  ExpectDataLoss(flipped, "checksum");

  std::string future = good;
  future[2] = 3;  // a format this build does not know
  ExpectDataLoss(future, "format version 3");

  std::string claims_grouped = good;  // format 2 says 8 more header bytes than there are
  claims_grouped[2] = 2;
  ExpectDataLoss(claims_grouped, "truncated");

  std::string bad_kind = good;
  bad_kind[3] = 9;
  ExpectDataLoss(bad_kind, "kind");

  std::string reserved = good;
  reserved[6] = 1;
  ExpectDataLoss(reserved, "reserved");
}

TEST(EnvelopeTest, EveryTruncationIsRejected) {
  const std::string good = *EncodeEnvelope(SampleValue());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeEnvelope(good.substr(0, n)).ok()) << "prefix of " << n << " bytes decoded";
  }
}

}  // namespace
}  // namespace tiercache
