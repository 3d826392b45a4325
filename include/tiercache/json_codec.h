// JsonCodec<T>: values as JSON text via nlohmann-json (Debian's
// nlohmann-json3-dev). T needs nlohmann's to_json / from_json (for example
// through NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE). No exception escapes: parse
// errors and type mismatches are DataLoss, unencodable values InvalidArgument.
#ifndef TIERCACHE_JSON_CODEC_H_
#define TIERCACHE_JSON_CODEC_H_

#include <nlohmann/json.hpp>

#include <exception>
#include <string>
#include <string_view>

#include "tiercache/codec.h"

namespace tiercache {

template <typename T>
struct JsonCodec {
  using Value = T;
  static constexpr uint8_t kId = kCodecJson;

  static Result<std::string> Encode(const T& v) {
    try {
      return nlohmann::json(v).dump();
    } catch (const std::exception& e) {
      return Status::InvalidArgument(std::string("value cannot be encoded as JSON: ") + e.what());
    }
  }

  static Result<T> Decode(std::string_view b) {
    nlohmann::json j = nlohmann::json::parse(b.begin(), b.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Status::DataLoss("payload is not valid JSON");
    try {
      return j.get<T>();
    } catch (const std::exception& e) {
      return Status::DataLoss(std::string("JSON payload does not match the value type: ") + e.what());
    }
  }
};

}  // namespace tiercache

#endif  // TIERCACHE_JSON_CODEC_H_
