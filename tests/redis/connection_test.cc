// Write coalescing on hand-built connection states: the decision
// (HoldForReplies), and that held bytes are released by the replies they
// waited for, however the reads fall.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "redis/connection.h"
#include "redis/reply_reader.h"

namespace tiercache::redis::internal {

// Builds connection states the socket code reaches only through traffic.
struct ConnectionTestAccess {
  // Makes `c` a ready connection that has sent `sent` bytes and holds
  // `waiting` unsent ones; `inflight_starts` are the stream offsets of the
  // commands awaiting replies, oldest first.
  static void Fill(Connection& c, uint64_t sent, size_t waiting, std::initializer_list<uint64_t> inflight_starts) {
    c.state_ = Connection::State::kReady;
    c.out_base_ = sent;
    c.out_.assign(waiting, 'x');
    for (uint64_t s : inflight_starts) c.inflight_.push_back({nullptr, Connection::InFlight::kUser, s});
  }
  // Makes `c` a ready connection on `fd`.
  static void Adopt(Connection& c, int fd) {
    c.fd_ = fd;
    c.reader_.Reset();
    c.state_ = Connection::State::kReady;
  }
  static void SetWantWrite(Connection& c, bool on) { c.want_write_ = on; }
  static void DropLastUnsentByte(Connection& c) { c.out_.pop_back(); }
};

namespace {

using Access = ConnectionTestAccess;

// A node for hand-built connections; the engine makes its own.
Node TestNode(ConnectionObserver* observer) { return Node(0, Endpoint{"test", 1}, observer, 1); }

TEST(HoldForRepliesTest, HoldsNewCommandsWhileASentCommandsReplyIsDue) {
  // 100 bytes sent (commands at 0 and 40, unanswered); 30 new bytes at 100.
  Connection c(nullptr, nullptr);
  Access::Fill(c, 100, 30, {0, 40, 100});
  EXPECT_TRUE(c.HoldForReplies(true));
  EXPECT_FALSE(c.HoldForReplies(false));  // option off
}

TEST(HoldForRepliesTest, SendsAtOnceWhenNothingSentIsUnanswered) {
  Connection idle(nullptr, nullptr);
  Access::Fill(idle, 100, 30, {100});  // only the new command is in flight
  EXPECT_FALSE(idle.HoldForReplies(true));
  Connection fresh(nullptr, nullptr);
  Access::Fill(fresh, 0, 30, {0});  // a new connection's first command
  EXPECT_FALSE(fresh.HoldForReplies(true));
}

TEST(HoldForRepliesTest, NeverHoldsAPartialWrite) {
  // The command at 40 left only in part (a write stopped at 100 and armed
  // EPOLLOUT): its reply cannot come until the rest is sent.
  Connection c(nullptr, nullptr);
  Access::Fill(c, 100, 30, {40});
  Access::SetWantWrite(c, true);
  EXPECT_FALSE(c.HoldForReplies(true));
  Access::SetWantWrite(c, false);  // had the write been whole, waiting would be right
  EXPECT_TRUE(c.HoldForReplies(true));
}

TEST(HoldForRepliesTest, SendsOnceEnoughIsWaiting) {
  Connection c(nullptr, nullptr);
  Access::Fill(c, 100, kCoalesceMaxBytes, {0, 100});
  EXPECT_FALSE(c.HoldForReplies(true));
  Access::DropLastUnsentByte(c);
  EXPECT_TRUE(c.HoldForReplies(true));
}

// The connection's owner, as the socket code sees it: records what it is
// told; closes the connection when told it failed, or when a test asks it to
// close after a reply.
class FakeObserver final : public ConnectionObserver {
 public:
  int epoll_fd() const override { return -1; }  // epoll_ctl on it fails harmlessly
  bool OnIoThread() const override { return true; }
  bool coalesce_writes() const override { return true; }
  bool TryOwn(Connection*) override { return true; }
  void OnConnectionReady(Connection*) override { ++ready; }
  void OnConnectionFailed(Connection* c, const std::string& reason) override {
    failures.push_back(reason);
    c->Close();
  }
  bool OnReply(Connection* c, Connection::InFlight, Reply&& reply, TimePoint) override {
    replies.push_back(reply.str);
    if (close_after_reply) {
      c->Close();
      return false;
    }
    return true;
  }
  void MarkDirty(Connection* c) override {
    c->owner.dirty = true;
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
    Access::Adopt(c, fds[0]);
  }
  ~Wired() {
    ::close(fds[1]);
    c.Close();
  }
  void ServerSends(const std::string& bytes) {
    ASSERT_EQ(::send(fds[1], bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  void Expect(int replies) { c.ExpectOrphanReplies(replies); }

  int fds[2] = {-1, -1};
  FakeObserver observer;
  Node node = TestNode(&observer);
  Connection c{&observer, &node};
};

// The replies a connection waited for arrive as exactly one full read buffer
// (64 KiB) and then EAGAIN: the held command must still be queued for
// flushing (marked dirty), or it waits for a reply nobody owes it.
TEST(HoldForRepliesTest, AReadThatFillsTheBufferStillReleasesHeldCommands) {
  Wired w;
  Access::Fill(w.c, 100, 30, {});
  w.Expect(1);  // sent, reply due
  ASSERT_TRUE(w.c.HoldForReplies(true));

  // "$65526\r\n" + 65,526 bytes + "\r\n" = 65,536 bytes: one full buffer.
  std::string reply = "$65526\r\n" + std::string(65526, 'v') + "\r\n";
  ASSERT_EQ(reply.size(), 64u * 1024);
  w.ServerSends(reply);
  EXPECT_TRUE(w.c.OnEvent(EPOLLIN));
  EXPECT_TRUE(w.c.inflight().empty());  // the reply was read and matched
  EXPECT_EQ(w.observer.replies.size(), 1u);
  EXPECT_FALSE(w.c.HoldForReplies(true));
  EXPECT_TRUE(w.c.owner.dirty) << "held bytes left with no flush scheduled";
}

TEST(ConnectionTest, RepliesGoToTheObserverInOrder) {
  Wired w;
  w.Expect(3);
  w.ServerSends("+one\r\n$3\r\ntwo\r\n-ERR three\r\n");
  EXPECT_TRUE(w.c.OnEvent(EPOLLIN));
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
  EXPECT_FALSE(w.c.OnEvent(EPOLLIN));
  EXPECT_EQ(w.observer.replies, std::vector<std::string>{"one"});
  EXPECT_FALSE(w.c.open());
}

TEST(ConnectionTest, AReplyNobodyAskedForOrGarbageFailsTheConnection) {
  {
    Wired w;  // nothing in flight
    w.ServerSends("+surprise\r\n");
    EXPECT_FALSE(w.c.OnEvent(EPOLLIN));
    EXPECT_EQ(w.observer.failures, std::vector<std::string>{"reply without a request"});
  }
  {
    Wired w;
    w.Expect(1);
    w.ServerSends("?not resp\r\n");
    EXPECT_FALSE(w.c.OnEvent(EPOLLIN));
    ASSERT_EQ(w.observer.failures.size(), 1u);
    EXPECT_EQ(w.observer.failures[0].rfind("protocol error", 0), 0u) << w.observer.failures[0];
  }
  {
    Wired w;
    w.Expect(1);
    ::close(w.fds[1]);
    w.fds[1] = -1;
    EXPECT_FALSE(w.c.OnEvent(EPOLLIN));
    EXPECT_EQ(w.observer.failures, std::vector<std::string>{"connection closed by server"});
  }
}

}  // namespace
}  // namespace tiercache::redis::internal
