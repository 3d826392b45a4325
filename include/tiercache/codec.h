// Codecs: how a value becomes the payload of an L2 envelope and back.
//
// A codec is a type with a one-byte id (stored in the envelope, so a payload
// written by another codec is recognised as foreign rather than misread) and
// two static functions:
//
//   struct MyCodec {
//     using Value = MyType;
//     static constexpr uint8_t kId = 130;             // 128..255 are users'
//     static Result<std::string> Encode(const MyType&);   // InvalidArgument if not encodable
//     static Result<MyType> Decode(std::string_view);     // DataLoss if not decodable
//   };
//
// Built in: BytesCodec (any bytes), StringCodec (UTF-8 text, validated), and
// JsonCodec<T> (nlohmann-json, in tiercache/json_codec.h).
// Thread-safety: codecs are stateless; call them from any thread.
#ifndef TIERCACHE_CODEC_H_
#define TIERCACHE_CODEC_H_

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

#include "tiercache/envelope.h"
#include "tiercache/status.h"

namespace tiercache {

template <typename C>
concept Codec = requires(const typename C::Value& v, std::string_view bytes) {
  { C::kId } -> std::convertible_to<uint8_t>;
  { C::Encode(v) } -> std::same_as<Result<std::string>>;
  { C::Decode(bytes) } -> std::same_as<Result<typename C::Value>>;
};

// Opaque bytes, stored as they are.
struct BytesCodec {
  using Value = std::string;
  static constexpr uint8_t kId = kCodecBytes;
  static Result<std::string> Encode(const std::string& v) { return v; }
  static Result<std::string> Decode(std::string_view b) { return std::string(b); }
};

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view s);

// UTF-8 text. Encode: InvalidArgument on malformed UTF-8. Decode: DataLoss.
struct StringCodec {
  using Value = std::string;
  static constexpr uint8_t kId = kCodecString;
  static Result<std::string> Encode(const std::string& v) {
    if (!IsValidUtf8(v)) return Status::InvalidArgument("string value is not valid UTF-8");
    return v;
  }
  static Result<std::string> Decode(std::string_view b) {
    if (!IsValidUtf8(b)) return Status::DataLoss("string payload is not valid UTF-8");
    return std::string(b);
  }
};

// Decodes `e`'s payload with codec C, checking the codec id first.
// Errors: DataLoss if the id differs or C cannot decode the payload.
template <Codec C>
Result<typename C::Value> DecodePayload(const EnvelopeView& e) {
  if (e.codec_id != C::kId) {
    return Status::DataLoss("payload written by codec " + std::to_string(e.codec_id) + ", expected codec " +
                            std::to_string(C::kId));
  }
  return C::Decode(e.payload);
}

}  // namespace tiercache

#endif  // TIERCACHE_CODEC_H_
