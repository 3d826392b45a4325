// Write coalescing's decision (HoldForReplies) on hand-built connection
// states: hold only while a whole sent command's reply is due.
#include <gtest/gtest.h>

#include "redis/connection_io.h"
#include "redis/engine.h"

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

}  // namespace
}  // namespace tiercache::redis::internal
