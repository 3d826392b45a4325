#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <optional>

#include "tiercache/events.h"

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

Status Malformed(const std::string& why) { return Status::InvalidArgument("malformed event: " + why); }

Status CheckField(std::string_view name, std::string_view value) {
  if (value.empty()) return Malformed(std::string(name) + " is empty");
  if (value.size() > kMaxEventFieldBytes) {
    return Malformed(std::string(name) + " is " + std::to_string(value.size()) + " bytes (at most " +
                     std::to_string(kMaxEventFieldBytes) + ")");
  }
  return Status::Ok();
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// civil-from-days inverse, written out).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// RFC 3339 in UTC: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00|-00:00); 't'
// and 'z' accepted. Sub-millisecond digits are truncated.
std::optional<system_clock::time_point> ParseTime(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!Digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, &mo) || s[7] != '-' ||
      !Digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !Digits(s, 11, 2, &h) || s[13] != ':' ||
      !Digits(s, 14, 2, &mi) || s[16] != ':' || !Digits(s, 17, 2, &sec)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  size_t pos = 19;
  int64_t ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) ms = ms * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (size_t i = digits; i < 3; ++i) ms *= 10;
  }
  const std::string_view zone = s.substr(pos);
  if (zone != "Z" && zone != "z" && zone != "+00:00" && zone != "-00:00") return std::nullopt;
  const int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  const int64_t total_ms = ((days * 24 + h) * 60 + mi) * 60000 + static_cast<int64_t>(sec) * 1000 + ms;
  return system_clock::time_point(std::chrono::duration_cast<system_clock::duration>(milliseconds(total_ms)));
}

Result<std::string> StringField(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return Malformed(std::string("no ") + name);
  if (!it->is_string()) return Malformed(std::string(name) + " is not a string");
  std::string v = it->get<std::string>();
  TIERCACHE_RETURN_IF_ERROR(CheckField(name, v));
  return v;
}

Result<uint64_t> VersionField(const nlohmann::json& j) {
  auto it = j.find("version");
  if (it == j.end()) return Malformed("no version");
  uint64_t v = 0;
  if (it->is_number_unsigned()) {
    v = it->get<uint64_t>();
  } else if (it->is_number_integer()) {
    return Malformed("version is negative");
  } else if (it->is_string()) {  // digits in a string: for producers whose numbers are doubles
    const std::string s = it->get<std::string>();
    if (s.empty() || s.size() > 20) return Malformed("version is not an unsigned 64-bit integer");
    for (char c : s) {
      if (c < '0' || c > '9') return Malformed("version is not an unsigned 64-bit integer");
      const uint64_t digit = static_cast<uint64_t>(c - '0');
      if (v > (UINT64_MAX - digit) / 10) return Malformed("version is above 2^64 - 1");
      v = v * 10 + digit;
    }
  } else {
    return Malformed("version is not an unsigned 64-bit integer");
  }
  if (v == 0) return Malformed("version is 0 (versions start at 1)");
  return v;
}

}  // namespace

std::string_view InvalidationEvent::entity() const {
  const size_t dot = type.find('.');
  return dot == std::string::npos ? std::string_view() : std::string_view(type).substr(0, dot);
}

std::string_view InvalidationEvent::action() const {
  const size_t dot = type.find('.');
  return dot == std::string::npos ? std::string_view() : std::string_view(type).substr(dot + 1);
}

Status ValidateEvent(const InvalidationEvent& e) {
  TIERCACHE_RETURN_IF_ERROR(CheckField("event_id", e.event_id));
  TIERCACHE_RETURN_IF_ERROR(CheckField("type", e.type));
  TIERCACHE_RETURN_IF_ERROR(CheckField("entity_id", e.entity_id));
  TIERCACHE_RETURN_IF_ERROR(CheckField("partition_key", e.partition_key));
  if (e.entity().empty() || e.action().empty()) return Malformed("type '" + e.type + "' is not <entity>.<action>");
  if (e.version == 0) return Malformed("version is 0 (versions start at 1)");
  return Status::Ok();
}

Result<InvalidationEvent> ParseEvent(std::string_view json) {
  if (json.size() > kMaxEventBytes) {
    return Malformed(std::to_string(json.size()) + " bytes (at most " + std::to_string(kMaxEventBytes) + ")");
  }
  nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Malformed("not JSON");
  if (!j.is_object()) return Malformed("not a JSON object");
  InvalidationEvent e;
  Result<std::string> s = StringField(j, "event_id");
  if (!s.ok()) return s.status();
  e.event_id = std::move(*s);
  s = StringField(j, "type");
  if (!s.ok()) return s.status();
  e.type = std::move(*s);
  s = StringField(j, "entity_id");
  if (!s.ok()) return s.status();
  e.entity_id = std::move(*s);
  s = StringField(j, "partition_key");
  if (!s.ok()) return s.status();
  e.partition_key = std::move(*s);
  Result<uint64_t> v = VersionField(j);
  if (!v.ok()) return v.status();
  e.version = *v;
  s = StringField(j, "occurred_at");
  if (!s.ok()) return s.status();
  std::optional<system_clock::time_point> t = ParseTime(*s);
  if (!t) return Malformed("occurred_at '" + *s + "' is not an RFC 3339 UTC time");
  e.occurred_at = *t;
  TIERCACHE_RETURN_IF_ERROR(ValidateEvent(e));
  return e;
}

std::string FormatEventTime(system_clock::time_point t) {
  const int64_t ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
  int64_t secs = ms / 1000;
  int64_t frac = ms % 1000;
  if (frac < 0) {
    frac += 1000;
    secs -= 1;
  }
  const std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(frac));
  return buf;
}

Result<std::string> EncodeEvent(const InvalidationEvent& e) {
  TIERCACHE_RETURN_IF_ERROR(ValidateEvent(e));
  // nlohmann's ordered_json keeps the documented field order.
  nlohmann::ordered_json j;
  j["event_id"] = e.event_id;
  j["type"] = e.type;
  j["entity_id"] = e.entity_id;
  j["partition_key"] = e.partition_key;
  j["version"] = e.version;
  j["occurred_at"] = FormatEventTime(e.occurred_at);
  try {
    return j.dump();
  } catch (const std::exception& ex) {  // invalid UTF-8 in a field
    return Status::InvalidArgument(std::string("event cannot be encoded as JSON: ") + ex.what());
  }
}

}  // namespace tiercache
