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

// The connection's owner, as the socket code sees it: records what it is
// told; closes the connection when told it failed, or when a test asks it to
// close after a reply.
class FakeObserver final : public ConnectionObserver {
 public:
  int epoll_fd() const override { return -1; }  // epoll_ctl on it fails harmlessly
  bool coalesce_writes() const override { return true; }
  bool TryOwn(Connection*) override { return true; }
  void OnConnectionReady(Connection*) override { ++ready; }
  void OnConnectionFailed(Connection* c, const std::string& reason) override {
    failures.push_back(reason);
    ConnClose(c);
  }
  bool OnReply(Connection* c, Connection::InFlight, Reply reply, TimePoint) override {
    replies.push_back(reply.str);
    if (close_after_reply) {
      ConnClose(c);
      return false;
    }
    return true;
  }
  void MarkDirty(Connection* c) override {
    c->dirty = true;
    ++dirty_marks;
  }
  void CountWrite() override {}

  int ready = 0, dirty_marks = 0;
  bool close_after_reply = false;
  std::vector<std::string> failures, replies;
};

// A connection on one end of a socket pair, the test holding the other.
struct Wired {
  Wired() {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    node.name = "test";
    c.observer = &observer;
    c.node = &node;
    c.fd = fds[0];
    c.reader = NewReplyReader();
    c.state = Connection::State::kReady;
  }
  ~Wired() {
    ::close(fds[1]);
    ConnClose(&c);
  }
  void ServerSends(const std::string& bytes) {
    ASSERT_EQ(::send(fds[1], bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  void Expect(int replies) {
    for (int i = 0; i < replies; ++i) c.inflight.push_back({nullptr, Connection::InFlight::kDiscard, 0});
  }

  int fds[2] = {-1, -1};
  Node node;
  FakeObserver observer;
  Connection c;
};

// The replies a connection waited for arrive as exactly one full read buffer
// (64 KiB) and then EAGAIN: the held command must still be queued for
// flushing (marked dirty), or it waits for a reply nobody owes it.
TEST(HoldForRepliesTest, AReadThatFillsTheBufferStillReleasesHeldCommands) {
  Wired w;
  Fill(w.c, 100, 30, {});
  w.Expect(1);  // sent, reply due
  ASSERT_TRUE(HoldForReplies(w.c, true));

  // "$65526\r\n" + 65,526 bytes + "\r\n" = 65,536 bytes: one full buffer.
  std::string reply = "$65526\r\n" + std::string(65526, 'v') + "\r\n";
  ASSERT_EQ(reply.size(), 64u * 1024);
  w.ServerSends(reply);
  EXPECT_TRUE(ConnOnEvent(&w.c, EPOLLIN));
  EXPECT_TRUE(w.c.inflight.empty());  // the reply was read and matched
  EXPECT_EQ(w.observer.replies.size(), 1u);
  EXPECT_FALSE(HoldForReplies(w.c, true));
  EXPECT_TRUE(w.c.dirty) << "held bytes left with no flush scheduled";
}

TEST(ConnectionTest, RepliesGoToTheObserverInOrder) {
  Wired w;
  w.Expect(3);
  w.ServerSends("+one\r\n$3\r\ntwo\r\n-ERR three\r\n");
  EXPECT_TRUE(ConnOnEvent(&w.c, EPOLLIN));
  EXPECT_EQ(w.observer.replies, (std::vector<std::string>{"one", "two", "ERR three"}));
  EXPECT_TRUE(w.observer.failures.empty());
}

// The observer closed the connection while handling a reply: nothing more
// is read from it, and the caller is told it is closed.
TEST(ConnectionTest, AReplyHandlerThatClosesTheConnectionEndsTheRead) {
  Wired w;
  w.observer.close_after_reply = true;
  w.Expect(2);
  w.ServerSends("+one\r\n+two\r\n");
  EXPECT_FALSE(ConnOnEvent(&w.c, EPOLLIN));
  EXPECT_EQ(w.observer.replies, std::vector<std::string>{"one"});
  EXPECT_LT(w.c.fd, 0);
}

TEST(ConnectionTest, AReplyNobodyAskedForOrGarbageFailsTheConnection) {
  {
    Wired w;  // nothing in flight
    w.ServerSends("+surprise\r\n");
    EXPECT_FALSE(ConnOnEvent(&w.c, EPOLLIN));
    EXPECT_EQ(w.observer.failures, std::vector<std::string>{"reply without a request"});
  }
  {
    Wired w;
    w.Expect(1);
    w.ServerSends("?not resp\r\n");
    EXPECT_FALSE(ConnOnEvent(&w.c, EPOLLIN));
    ASSERT_EQ(w.observer.failures.size(), 1u);
    EXPECT_EQ(w.observer.failures[0].rfind("protocol error", 0), 0u) << w.observer.failures[0];
  }
  {
    Wired w;
    w.Expect(1);
    ::close(w.fds[1]);
    w.fds[1] = -1;
    EXPECT_FALSE(ConnOnEvent(&w.c, EPOLLIN));
    EXPECT_EQ(w.observer.failures, std::vector<std::string>{"connection closed by server"});
  }
}

}  // namespace
}  // namespace tiercache::redis::internal
