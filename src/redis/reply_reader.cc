#include "redis/reply_reader.h"

#include <algorithm>
#include <charconv>

namespace tiercache::redis::internal {
namespace {

// Consumed bytes are dropped from the front of the buffer once they are at
// least this many and at least half of it (each byte is moved at most once
// on average); a buffer emptied while holding more than kKeepCapacity is
// released, so one huge reply does not pin its memory to the connection.
constexpr size_t kCompactAt = 4096;
constexpr size_t kKeepCapacity = 1024 * 1024;

// A decimal integer, optionally negative, filling [p, end): false when
// anything else is there or it does not fit.
bool ParseInt64(const char* p, const char* end, int64_t* out) {
  const bool negative = p != end && *p == '-';
  if (negative) ++p;
  if (p == end || end - p > 18) {  // 18 digits always fit; longer: the slow way
    if (p == end) return false;
    auto r = std::from_chars(negative ? p - 1 : p, end, *out);
    return r.ec == std::errc() && r.ptr == end;
  }
  int64_t v = 0;
  for (; p != end; ++p) {
    const unsigned d = static_cast<unsigned char>(*p) - unsigned{'0'};
    if (d > 9) return false;
    v = v * 10 + d;
  }
  *out = negative ? -v : v;
  return true;
}

// The offset in `s` of the first "\r\n" at or after `from`, or npos. Reply
// headers are a few bytes long: a plain loop beats a call to memchr.
size_t FindCrlf(std::string_view s, size_t from) {
  for (size_t i = from; i + 1 < s.size(); ++i) {
    if (s[i] == '\r' && s[i + 1] == '\n') return i;
  }
  return std::string_view::npos;
}

ReplyState Bad(std::string* error, const char* what) {
  *error = std::string("protocol error: ") + what;
  return ReplyState::kProtocolError;
}

// Makes `r` an empty value of `type` (it may hold an earlier reply).
void Clear(Reply* r, Reply::Type type) {
  r->type = type;
  r->str.clear();
  r->integer = 0;
  if (!r->elements.empty()) r->elements.clear();
}

}  // namespace

void ReplyReader::Feed(const char* bytes, size_t n) {
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ >= kCompactAt && pos_ * 2 >= buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes, n);
}

Reply* ReplyReader::NextTarget(Reply* out) {
  if (frames_.empty()) return out;
  const Frame& f = frames_.back();
  std::vector<Reply>& elements = f.array->elements;
  // The last element is still being parsed when more were started than
  // completed; else the next one starts here.
  const int64_t completed = f.announced - f.left;
  if (static_cast<int64_t>(elements.size()) == completed) elements.emplace_back();
  return &elements.back();
}

ReplyState ReplyReader::ParseValue(Reply* target, std::string* error) {
  const char* base = buf_.data();
  const size_t size = buf_.size();
  if (pos_ >= size) return ReplyState::kNeedMore;
  const std::string_view rest(base + pos_, size - pos_);
  const char type = rest[0];
  if (type != '+' && type != '-' && type != ':' && type != '$' && type != '*') {
    return Bad(error, "unknown reply type");
  }
  const size_t crlf = FindCrlf(rest, 1);
  if (crlf == std::string_view::npos) {
    const size_t limit = type == '+' || type == '-' ? kMaxLineBytes : kMaxNumberLine;
    return rest.size() > limit ? Bad(error, "reply line too long") : ReplyState::kNeedMore;
  }
  const char* line = rest.data() + 1;
  const char* line_end = rest.data() + crlf;
  const size_t after = pos_ + crlf + 2;  // the first byte after the line
  switch (rest[0]) {
    case '+':
    case '-':
      Clear(target, rest[0] == '+' ? Reply::Type::kStatus : Reply::Type::kError);
      target->str.assign(line, line_end);
      pos_ = after;
      return ReplyState::kReply;
    case ':': {
      int64_t v = 0;
      if (!ParseInt64(line, line_end, &v)) return Bad(error, "bad integer");
      Clear(target, Reply::Type::kInteger);
      target->integer = v;
      pos_ = after;
      return ReplyState::kReply;
    }
    case '$': {
      int64_t len = 0;
      if (!ParseInt64(line, line_end, &len) || len < -1 || len > kMaxBulkBytes) return Bad(error, "bad bulk length");
      if (len == -1) {
        Clear(target, Reply::Type::kNil);
        pos_ = after;
        return ReplyState::kReply;
      }
      const auto n = static_cast<size_t>(len);
      if (size - after < n + 2) return ReplyState::kNeedMore;
      if (base[after + n] != '\r' || base[after + n + 1] != '\n') return Bad(error, "bulk string not terminated");
      Clear(target, Reply::Type::kString);
      // Built at its size and moved in: cheaper than assign()'s general path.
      target->str = std::string(base + after, n);
      pos_ = after + n + 2;
      return ReplyState::kReply;
    }
    case '*': {
      int64_t count = 0;
      if (!ParseInt64(line, line_end, &count) || count < -1 || count > kMaxElements) {
        return Bad(error, "bad array length");
      }
      if (count == -1) {
        Clear(target, Reply::Type::kNil);
        pos_ = after;
        return ReplyState::kReply;
      }
      if (count > 0 && frames_.size() >= kMaxDepth) return Bad(error, "arrays nested too deep");
      pos_ = after;
      Clear(target, Reply::Type::kArray);
      if (count == 0) return ReplyState::kReply;
      // Elements are added as their bytes arrive (NextTarget), not as announced.
      target->elements.reserve(static_cast<size_t>(std::min<int64_t>(count, 64)));
      frames_.push_back({target, count, count});
      return ReplyState::kReply;
    }
    default:
      return Bad(error, "unknown reply type");
  }
}

ReplyState ReplyReader::Next(Reply* out, std::string* error) {
  for (;;) {
    const size_t depth = frames_.size();
    const ReplyState state = ParseValue(NextTarget(out), error);
    if (state == ReplyState::kProtocolError) return state;
    if (state == ReplyState::kNeedMore) {
      if (pos_ == buf_.size() && buf_.capacity() > kKeepCapacity) {
        std::string().swap(buf_);
        pos_ = 0;
      }
      return state;
    }
    if (frames_.size() > depth) {  // an array opened: its elements follow
      if (depth == 0) {
        // A top-level array may take several calls to fill: it is built in
        // root_, not in the caller's *out. (It has no elements yet.)
        root_ = std::move(*out);
        frames_[0].array = &root_;
      }
      continue;
    }
    // A whole value: it completes an element of the array being filled,
    // which may complete that array, and so on up.
    while (!frames_.empty() && --frames_.back().left == 0) frames_.pop_back();
    if (frames_.empty()) {
      // A scalar was parsed into *out already; an array is moved there.
      if (depth > 0) *out = std::move(root_);
      return ReplyState::kReply;
    }
  }
}

Result<std::vector<Reply>> ParseReplies(const std::vector<std::string_view>& chunks) {
  ReplyReader reader;
  std::vector<Reply> out;
  std::string error;
  for (std::string_view chunk : chunks) {
    reader.Feed(chunk.data(), chunk.size());
    for (Reply reply;;) {
      const ReplyState state = reader.Next(&reply, &error);
      if (state == ReplyState::kProtocolError) return Status::Internal(error);
      if (state == ReplyState::kNeedMore) break;
      out.push_back(std::move(reply));
    }
  }
  return out;
}

}  // namespace tiercache::redis::internal
