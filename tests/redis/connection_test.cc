// Write coalescing on hand-built connection states: the decision
// (HoldForReplies), and that held bytes are released by the replies they
// waited for, however the reads fall.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "redis/connection_io.h"
#include "redis/engine.h"
#include "redis/reply_reader.h"

namespace tiercache::redis::internal {
namespace {

// Makes `c` a ready connection that has sent `sent` bytes and holds
// `waiting` unsent ones; `inflight_starts` are the stream offsets of the
// commands awaiting replies, oldest first.
void Fill(Connection& c, uint64_t sent, size_t waiting, std::initializer_list<uint64_t> inflight_starts) {
  c.state = Connection::State::kReady;
  c.out_base = sent;
  c.out.assign(waiting, 'x');
  for (uint64_t s : inflight_starts) c.inflight.push_back({nullptr, Connection::InFlight::kUser, s});
}

TEST(HoldForRepliesTest, HoldsNewCommandsWhileASentCommandsReplyIsDue) {
  // 100 bytes sent (commands at 0 and 40, unanswered); 30 new bytes at 100.
  Connection c;
  Fill(c, 100, 30, {0, 40, 100});
  EXPECT_TRUE(HoldForReplies(c, true));
  EXPECT_FALSE(HoldForReplies(c, false));  // option off
}

TEST(HoldForRepliesTest, SendsAtOnceWhenNothingSentIsUnanswered) {
  Connection idle;
  Fill(idle, 100, 30, {100});  // only the new command is in flight
  EXPECT_FALSE(HoldForReplies(idle, true));
  Connection fresh;
  Fill(fresh, 0, 30, {0});  // a new connection's first command
  EXPECT_FALSE(HoldForReplies(fresh, true));
}

TEST(HoldForRepliesTest, NeverHoldsAPartialWrite) {
  // The command at 40 left only in part (a write stopped at 100 and armed
  // EPOLLOUT): its reply cannot come until the rest is sent.
  Connection c;
  Fill(c, 100, 30, {40});
  c.want_write = true;
  EXPECT_FALSE(HoldForReplies(c, true));
  c.want_write = false;  // had the write been whole, waiting would be right
  EXPECT_TRUE(HoldForReplies(c, true));
}

TEST(HoldForRepliesTest, SendsOnceEnoughIsWaiting) {
  Connection c;
  Fill(c, 100, kCoalesceMaxBytes, {0, 100});
  EXPECT_FALSE(HoldForReplies(c, true));
  c.out.pop_back();
  EXPECT_TRUE(HoldForReplies(c, true));
}

// The replies a connection waited for arrive as exactly one full read buffer
// (64 KiB) and then EAGAIN: the held command must still be queued for
// flushing (marked dirty), or it waits for a reply nobody owes it.
TEST(HoldForRepliesTest, AReadThatFillsTheBufferStillReleasesHeldCommands) {
  Engine engine(RedisClientOptions{});  // not started: no I/O thread, no sockets
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  Node node;
  node.name = "test";
  Connection c;
  c.engine = &engine;
  c.node = &node;
  c.fd = fds[0];
  c.reader = NewReplyReader();
  Fill(c, 100, 30, {});
  c.inflight.push_back({nullptr, Connection::InFlight::kDiscard, 0});  // sent, reply due
  ASSERT_TRUE(HoldForReplies(c, true));

  // "$65526\r\n" + 65,526 bytes + "\r\n" = 65,536 bytes: one full buffer.
  std::string reply = "$65526\r\n" + std::string(65526, 'v') + "\r\n";
  ASSERT_EQ(reply.size(), 64u * 1024);
  ASSERT_EQ(::send(fds[1], reply.data(), reply.size(), 0), static_cast<ssize_t>(reply.size()));
  ConnOnEvent(&c, EPOLLIN);
  EXPECT_TRUE(c.inflight.empty());  // the reply was read and matched
  EXPECT_FALSE(HoldForReplies(c, true));
  EXPECT_TRUE(c.dirty) << "held bytes left with no flush scheduled";
  ::close(fds[1]);
  ConnClose(&c);
}

}  // namespace
}  // namespace tiercache::redis::internal
