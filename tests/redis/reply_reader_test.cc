// ReplyReader (reply_reader.h): RESP2 replies parsed incrementally, whatever
// the chunking, and everything Redis never sends refused.
#include "redis/reply_reader.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace tiercache::redis::internal {
namespace {

void Encode(const Reply& r, std::string* out) {
  switch (r.type) {
    case Reply::Type::kNil:
      out->append("$-1\r\n");
      return;
    case Reply::Type::kStatus:
      out->append("+").append(r.str).append("\r\n");
      return;
    case Reply::Type::kError:
      out->append("-").append(r.str).append("\r\n");
      return;
    case Reply::Type::kInteger:
      out->append(":").append(std::to_string(r.integer)).append("\r\n");
      return;
    case Reply::Type::kString:
      out->append("$").append(std::to_string(r.str.size())).append("\r\n").append(r.str).append("\r\n");
      return;
    case Reply::Type::kArray:
      out->append("*").append(std::to_string(r.elements.size())).append("\r\n");
      for (const Reply& e : r.elements) Encode(e, out);
      return;
  }
}

bool Same(const Reply& a, const Reply& b) {
  if (a.type != b.type || a.str != b.str || a.integer != b.integer || a.elements.size() != b.elements.size()) {
    return false;
  }
  for (size_t i = 0; i < a.elements.size(); ++i) {
    if (!Same(a.elements[i], b.elements[i])) return false;
  }
  return true;
}

Reply RandomReply(std::mt19937& rng, int depth) {
  const int kind = static_cast<int>(rng() % (depth < 4 ? 7 : 6));
  auto text = [&](bool line) {
    std::string s(rng() % (rng() % 8 == 0 ? 3000 : 12), 'x');
    for (char& c : s) {
      c = static_cast<char>(line ? 'a' + rng() % 26 : rng() % 256);  // bulk strings: any byte
    }
    return s;
  };
  switch (kind) {
    case 0: return Reply::Nil();
    case 1: return Reply::StatusReply(text(true));
    case 2: return Reply::Error("ERR " + text(true));
    case 3: return Reply::Integer(static_cast<int64_t>(rng()) - (int64_t{1} << 31) * static_cast<int64_t>(rng() % 3));
    case 4:
    case 5: return Reply::String(text(false));
    default: {
      std::vector<Reply> e(rng() % 6);
      for (Reply& x : e) x = RandomReply(rng, depth + 1);
      return Reply::Array(std::move(e));
    }
  }
}

// Feeds `wire` in random chunks, taking replies after each.
std::vector<Reply> ParseInChunks(const std::string& wire, std::mt19937& rng, ReplyReader* reader) {
  std::vector<Reply> out;
  std::string error;
  for (size_t at = 0; at < wire.size();) {
    const size_t n = std::min<size_t>(wire.size() - at, 1 + rng() % (rng() % 4 == 0 ? 5000 : 40));
    reader->Feed(wire.data() + at, n);
    at += n;
    for (Reply r;;) {
      const ReplyState s = reader->Next(&r, &error);
      EXPECT_NE(s, ReplyState::kProtocolError) << error;
      if (s != ReplyState::kReply) break;
      out.push_back(std::move(r));
    }
  }
  return out;
}

TEST(ReplyReaderTest, RandomRepliesComeOutWholeAndInOrderWhateverTheChunking) {
  std::mt19937 rng(20261207);
  for (int round = 0; round < 300; ++round) {
    std::vector<Reply> sent(1 + rng() % 20);
    std::string wire;
    for (Reply& r : sent) {
      r = RandomReply(rng, 0);
      Encode(r, &wire);
    }
    ReplyReader reader;
    std::vector<Reply> got = ParseInChunks(wire, rng, &reader);
    ASSERT_EQ(got.size(), sent.size()) << "round " << round;
    for (size_t i = 0; i < sent.size(); ++i) {
      ASSERT_TRUE(Same(got[i], sent[i])) << "round " << round << " reply " << i << ": " << got[i].ToString()
                                         << " vs " << sent[i].ToString();
    }
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(ReplyReaderTest, KeepsOnlyTheUnfinishedReplyBuffered) {
  ReplyReader reader;
  Reply r;
  std::string error;
  std::string wire;
  for (int i = 0; i < 2000; ++i) wire += "$3\r\nabc\r\n";
  reader.Feed(wire.data(), wire.size());
  reader.Feed("$5\r\nhe", 6);
  int n = 0;
  while (reader.Next(&r, &error) == ReplyState::kReply) ++n;
  EXPECT_EQ(n, 2000);
  EXPECT_EQ(reader.buffered(), 6u);
  reader.Feed("llo\r\n", 5);
  ASSERT_EQ(reader.Next(&r, &error), ReplyState::kReply);
  EXPECT_EQ(r.str, "hello");
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(ReplyReaderTest, NestsUpToTheDepthLimit) {
  std::string ok;
  for (size_t i = 0; i < ReplyReader::kMaxDepth; ++i) ok += "*1\r\n";
  ok += ":7\r\n";
  auto replies = ParseReplies({ok});
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 1u);
  const Reply* r = &(*replies)[0];
  for (size_t i = 0; i < ReplyReader::kMaxDepth; ++i) {
    ASSERT_TRUE(r->IsArray());
    r = &r->elements[0];
  }
  EXPECT_EQ(r->integer, 7);
  EXPECT_FALSE(ParseReplies({"*1\r\n" + ok}).ok());
}

TEST(ReplyReaderTest, AnArrayIsAllocatedAsItsElementsArriveNotAsAnnounced) {
  ReplyReader reader;
  Reply r;
  std::string error;
  const std::string wire = "*2147483647\r\n:1\r\n:2\r\n";
  reader.Feed(wire.data(), wire.size());
  EXPECT_EQ(reader.Next(&r, &error), ReplyState::kNeedMore);
  EXPECT_FALSE(ParseReplies({"*2147483648\r\n"}).ok());
}

TEST(ReplyReaderTest, RefusesWhatRedisNeverSends) {
  for (const char* wire : {"?x\r\n", "$-2\r\n", "$abc\r\n", "$\r\n", "*-2\r\n", ":12a\r\n", ":\r\n", "$3\r\nabcXY",
                           "$536870913\r\n", "*1\r\n$1\r\nab\r\n"}) {
    auto replies = ParseReplies({wire});
    EXPECT_FALSE(replies.ok()) << wire;
    EXPECT_TRUE(replies.ok() || replies.status().IsInternal()) << wire;
  }
  // The largest bulk string Redis may send is only waited for.
  auto replies = ParseReplies({"$536870912\r\nabc"});
  ASSERT_TRUE(replies.ok());
  EXPECT_TRUE(replies->empty());
}

TEST(ReplyReaderTest, IntegersAtTheEdgesOfTheRange) {
  auto replies = ParseReplies({":0\r\n:-42\r\n:9223372036854775807\r\n:-9223372036854775808\r\n:007\r\n"});
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 5u);
  EXPECT_EQ((*replies)[0].integer, 0);
  EXPECT_EQ((*replies)[1].integer, -42);
  EXPECT_EQ((*replies)[2].integer, INT64_MAX);
  EXPECT_EQ((*replies)[3].integer, INT64_MIN);
  EXPECT_EQ((*replies)[4].integer, 7);
  for (const char* wire : {":9223372036854775808\r\n", ":-9223372036854775809\r\n", ":-\r\n", ":--1\r\n", ":+1\r\n",
                           ":1 \r\n", "$+3\r\nabc\r\n"}) {
    EXPECT_FALSE(ParseReplies({wire}).ok()) << wire;
  }
}

TEST(ReplyReaderTest, EmptyAndNilAggregates) {
  auto replies = ParseReplies({"*0\r\n*-1\r\n$0\r\n\r\n*2\r\n*0\r\n$-1\r\n"});
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_TRUE((*replies)[0].IsArray());
  EXPECT_TRUE((*replies)[0].elements.empty());
  EXPECT_TRUE((*replies)[1].IsNil());
  EXPECT_TRUE((*replies)[2].IsString());
  EXPECT_EQ((*replies)[2].str, "");
  ASSERT_EQ((*replies)[3].elements.size(), 2u);
  EXPECT_TRUE((*replies)[3].elements[0].IsArray());
  EXPECT_TRUE((*replies)[3].elements[1].IsNil());
}

// A line that never ends must not grow the buffer for ever: a number's line
// is refused past kMaxNumberLine bytes without CRLF, a status or error line
// past kMaxLineBytes; an unknown type byte at once. Lines just within the
// limits are waited for; a whole line of up to the limit parses.
TEST(ReplyReaderTest, LinesWithoutAnEndAreRefusedPastTheirLimit) {
  for (const std::string type : {":", "$", "*"}) {
    std::string wire = type + std::string(ReplyReader::kMaxNumberLine - 1, '1');
    auto waiting = ParseReplies({wire});
    ASSERT_TRUE(waiting.ok()) << type << ": " << waiting.status().ToString();
    EXPECT_TRUE(waiting->empty());
    EXPECT_FALSE(ParseReplies({wire, "1"}).ok()) << type;
  }
  const std::string long_status(ReplyReader::kMaxLineBytes - 1, 'x');
  auto waiting = ParseReplies({"+" + long_status});
  ASSERT_TRUE(waiting.ok()) << waiting.status().ToString();
  EXPECT_TRUE(waiting->empty());
  auto whole = ParseReplies({"+" + long_status, "\r\n"});
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  ASSERT_EQ(whole->size(), 1u);
  EXPECT_EQ((*whole)[0].str.size(), long_status.size());
  EXPECT_FALSE(ParseReplies({"-" + long_status, "xx"}).ok());
  EXPECT_FALSE(ParseReplies({"!"}).ok()) << "an unknown type byte is refused without waiting for its line";
}

}  // namespace
}  // namespace tiercache::redis::internal
