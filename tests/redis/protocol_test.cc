// Protocol logic without a server: RESP encoding, error classification
// (MOVED/ASK/TRYAGAIN/...), CLUSTER SLOTS parsing, script SHA-1.
#include "redis/protocol.h"

#include <gtest/gtest.h>

#include <array>

#include "redis/reply_reader.h"
#include "redis/sha1.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache::redis::internal {
namespace {

TEST(ProtocolTest, EncodesCommandsAsRespArraysOfBulkStrings) {
  std::string out;
  AppendCommand(out, std::vector<std::string>{"SET", "k", std::string("a\0b", 3)});
  EXPECT_EQ(out, std::string("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n", 29));
  out.clear();
  AppendCommand(out, std::vector<std::string_view>{"GET", ""});
  EXPECT_EQ(out, "*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
}

TEST(ProtocolTest, CommandBytesHoldTheSameEncodingInlineAndOnTheHeap) {
  for (size_t len : {size_t{0}, size_t{1}, size_t{9}, size_t{10}, size_t{70}, size_t{90}, size_t{200}, size_t{5000}}) {
    const std::string value(len, 'v');
    const std::array<std::string_view, 3> args{"SET", "k", value};
    std::string expected;
    AppendCommand(expected, args);
    CommandBytes bytes;
    AppendCommand(bytes, args);
    EXPECT_EQ(bytes.view(), expected) << len;
    // A second command appended moves inline bytes to the heap when needed.
    AppendCommand(expected, args);
    AppendCommand(bytes, args);
    EXPECT_EQ(bytes.view(), expected) << len;
    EXPECT_EQ(bytes.size(), expected.size());
  }
}

TEST(ProtocolTest, ParsesMoved) {
  ErrorInfo e = ClassifyError("MOVED 3999 127.0.0.1:6381", "10.0.0.1");
  EXPECT_EQ(e.kind, ErrorKind::kMoved);
  EXPECT_EQ(e.slot, 3999);
  EXPECT_EQ(e.target.host, "127.0.0.1");
  EXPECT_EQ(e.target.port, 6381);
}

TEST(ProtocolTest, ParsesAskAndFillsAnEmptyHost) {
  ErrorInfo e = ClassifyError("ASK 16383 :7002", "10.0.0.1");
  EXPECT_EQ(e.kind, ErrorKind::kAsk);
  EXPECT_EQ(e.slot, 16383);
  EXPECT_EQ(e.target.host, "10.0.0.1");
  EXPECT_EQ(e.target.port, 7002);
}

TEST(ProtocolTest, ParsesIpv6Redirect) {
  ErrorInfo e = ClassifyError("MOVED 1 ::1:7000", "x");
  EXPECT_EQ(e.kind, ErrorKind::kMoved);
  EXPECT_EQ(e.target.host, "::1");
  EXPECT_EQ(e.target.port, 7000);
}

TEST(ProtocolTest, MalformedRedirectsAreOrdinaryErrors) {
  EXPECT_EQ(ClassifyError("MOVED", "h").kind, ErrorKind::kOther);
  EXPECT_EQ(ClassifyError("MOVED 99999 h:1", "h").kind, ErrorKind::kOther);
  EXPECT_EQ(ClassifyError("MOVED 1 h:notaport", "h").kind, ErrorKind::kOther);
  EXPECT_EQ(ClassifyError("ASK x h:1", "h").kind, ErrorKind::kOther);
  EXPECT_EQ(ClassifyError("MOVED 1 h:70000", "h").kind, ErrorKind::kOther);
}

TEST(ProtocolTest, ClassifiesRetryableAndScriptErrors) {
  EXPECT_EQ(ClassifyError("TRYAGAIN Multiple keys request during rehashing of slot", "h").kind, ErrorKind::kTryAgain);
  EXPECT_EQ(ClassifyError("CLUSTERDOWN The cluster is down", "h").kind, ErrorKind::kClusterDown);
  EXPECT_EQ(ClassifyError("LOADING Redis is loading the dataset in memory", "h").kind, ErrorKind::kLoading);
  EXPECT_EQ(ClassifyError("MASTERDOWN Link with MASTER is down", "h").kind, ErrorKind::kMasterDown);
  EXPECT_EQ(ClassifyError("NOSCRIPT No matching script. Please use EVAL.", "h").kind, ErrorKind::kNoScript);
  EXPECT_EQ(ClassifyError("WRONGTYPE Operation against a key", "h").kind, ErrorKind::kOther);
  EXPECT_EQ(ClassifyError("ERR unknown command", "h").kind, ErrorKind::kOther);
}

Reply NodeEntry(const std::string& host, int port) {
  return Reply::Array({Reply::String(host), Reply::Integer(port), Reply::String("id")});
}

TEST(ProtocolTest, ParsesClusterSlots) {
  Reply r = Reply::Array({
      Reply::Array({Reply::Integer(0), Reply::Integer(5460), NodeEntry("127.0.0.1", 7000), NodeEntry("127.0.0.1", 7004)}),
      Reply::Array({Reply::Integer(5461), Reply::Integer(10922), NodeEntry("", 7001)}),
  });
  auto ranges = ParseClusterSlots(r, "10.1.1.1");
  ASSERT_TRUE(ranges.ok()) << ranges.status().ToString();
  ASSERT_EQ(ranges->size(), 2u);
  EXPECT_EQ((*ranges)[0].first, 0);
  EXPECT_EQ((*ranges)[0].last, 5460);
  EXPECT_EQ((*ranges)[0].master.ToString(), "127.0.0.1:7000");
  ASSERT_EQ((*ranges)[0].replicas.size(), 1u);
  EXPECT_EQ((*ranges)[0].replicas[0].ToString(), "127.0.0.1:7004");
  EXPECT_EQ((*ranges)[1].master.ToString(), "10.1.1.1:7001");
  EXPECT_TRUE((*ranges)[1].replicas.empty());
}

TEST(ProtocolTest, RejectsMalformedClusterSlots) {
  EXPECT_FALSE(ParseClusterSlots(Reply::String("x"), "h").ok());
  EXPECT_FALSE(ParseClusterSlots(Reply::Array({Reply::Array({Reply::Integer(0)})}), "h").ok());
  EXPECT_FALSE(
      ParseClusterSlots(Reply::Array({Reply::Array({Reply::Integer(5), Reply::Integer(2), NodeEntry("h", 1)})}), "h")
          .ok());
  EXPECT_FALSE(
      ParseClusterSlots(Reply::Array({Reply::Array({Reply::Integer(0), Reply::Integer(2), NodeEntry("h", 0)})}), "h")
          .ok());
  auto s = ParseClusterSlots(Reply::Array({Reply::Array({Reply::Integer(0), Reply::Integer(16384), NodeEntry("h", 1)})}), "h");
  EXPECT_TRUE(s.status().IsInternal());
}

TEST(ProtocolTest, ParsesEndpoints) {
  Endpoint e;
  EXPECT_TRUE(ParseEndpoint("redis.local:6379", &e));
  EXPECT_EQ(e.host, "redis.local");
  EXPECT_EQ(e.port, 6379);
  EXPECT_FALSE(ParseEndpoint("noport", &e));
  EXPECT_FALSE(ParseEndpoint("h:", &e));
}

TEST(ProtocolTest, Sha1MatchesKnownDigests) {
  EXPECT_EQ(Sha1Hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(Sha1Hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(Sha1Hex(std::string(1000, 'a')), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
  // What Redis returns for SCRIPT LOAD "return 1".
  EXPECT_EQ(Script("return 1").sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

TEST(ReplyTest, RendersForMessages) {
  EXPECT_EQ(Reply::Nil().ToString(), "(nil)");
  EXPECT_EQ(Reply::Array({Reply::Integer(1), Reply::String("a")}).ToString(), "[1, \"a\"]");
  EXPECT_EQ(Reply::Error("ERR x").ToString(), "(error) ERR x");
}

}  // namespace
}  // namespace tiercache::redis::internal

namespace tiercache::redis::internal {
namespace {

TEST(ReplyReaderTest, ParsesEveryReplyTypeAcrossChunkBoundaries) {
  std::string bulk("a\0b\r\nc", 6);
  std::string wire = "+OK\r\n-MOVED 1 127.0.0.1:7001\r\n:42\r\n$-1\r\n$6\r\n" + bulk +
                     "\r\n*3\r\n$1\r\nx\r\n*-1\r\n*2\r\n:1\r\n$0\r\n\r\n";
  // Fed one byte at a time, replies still come out whole and in order.
  std::vector<std::string> bytes;
  for (char c : wire) bytes.emplace_back(1, c);
  std::vector<std::string_view> chunks(bytes.begin(), bytes.end());
  auto replies = ParseReplies(chunks);
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 6u);
  const auto& r = *replies;
  EXPECT_TRUE(r[0].IsStatus());
  EXPECT_EQ(r[0].str, "OK");
  EXPECT_TRUE(r[1].IsError());
  EXPECT_EQ(ClassifyError(r[1].str, "h").kind, ErrorKind::kMoved);
  EXPECT_TRUE(r[2].IsInteger());
  EXPECT_EQ(r[2].integer, 42);
  EXPECT_TRUE(r[3].IsNil());
  EXPECT_TRUE(r[4].IsString());
  EXPECT_EQ(r[4].str, bulk);
  ASSERT_TRUE(r[5].IsArray());
  ASSERT_EQ(r[5].elements.size(), 3u);
  EXPECT_EQ(r[5].elements[0].str, "x");
  EXPECT_TRUE(r[5].elements[1].IsNil());
  ASSERT_EQ(r[5].elements[2].elements.size(), 2u);
  EXPECT_EQ(r[5].elements[2].elements[0].integer, 1);
  EXPECT_TRUE(r[5].elements[2].elements[1].IsString());
  EXPECT_EQ(r[5].elements[2].elements[1].str, "");
}

TEST(ReplyReaderTest, IncompleteInputYieldsNothingYet) {
  auto replies = ParseReplies({"$5\r\nhel"});
  ASSERT_TRUE(replies.ok());
  EXPECT_TRUE(replies->empty());
}

TEST(ReplyReaderTest, ProtocolErrorIsAnError) {
  auto replies = ParseReplies({"?garbage\r\n"});
  EXPECT_FALSE(replies.ok());
  EXPECT_TRUE(replies.status().IsInternal());
}

TEST(ReplyReaderTest, ParsesAClusterSlotsReplyFromTheWire) {
  std::string wire =
      "*1\r\n*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n";
  auto replies = ParseReplies({wire});
  ASSERT_TRUE(replies.ok());
  ASSERT_EQ(replies->size(), 1u);
  auto ranges = ParseClusterSlots((*replies)[0], "h");
  ASSERT_TRUE(ranges.ok()) << ranges.status().ToString();
  EXPECT_EQ((*ranges)[0].last, 5460);
  EXPECT_EQ((*ranges)[0].replicas[0].port, 7003);
}

using Ids = std::vector<int>;

TEST(RefreshRoundOrderTest, KnownNodesThenSeedsThenFailingNodes) {
  EXPECT_EQ(RefreshRoundOrder({1, 2}, {7, 8}, {3}, 0), (Ids{1, 2, 7, 8, 3}));
}

TEST(RefreshRoundOrderTest, SeedsAreTriedWhenNoKnownNodeIsHealthy) {
  EXPECT_EQ(RefreshRoundOrder({}, {7}, {1, 2, 3}, 5), (Ids{7, 1, 2, 3}));
  EXPECT_EQ(RefreshRoundOrder({}, {7}, {}, 0), (Ids{7}));  // the first refresh
}

TEST(RefreshRoundOrderTest, EachNodeIsAskedOnceAtItsFirstPlace) {
  // Seed 2 is a healthy member (asked among the known nodes); seed 3 is a
  // failing member (asked with the seeds, before the other failing nodes).
  EXPECT_EQ(RefreshRoundOrder({1, 2}, {2, 3, 3}, {4, 3}, 0), (Ids{1, 2, 3, 4}));
}

TEST(RefreshRoundOrderTest, RotationSpreadsRoundsOverTheHealthyNodesOnly) {
  EXPECT_EQ(RefreshRoundOrder({1, 2, 3}, {9}, {5}, 1), (Ids{2, 3, 1, 9, 5}));
  EXPECT_EQ(RefreshRoundOrder({1, 2, 3}, {9}, {5}, 5), (Ids{3, 1, 2, 9, 5}));
}

}  // namespace
}  // namespace tiercache::redis::internal
