// Connection: one TCP connection to a Redis node, and Node: a node's address
// and its connections. Internal to tiercache_redis.
//
// A Connection owns its socket, its reply reader, its output buffer
// and the queue of commands written to it that await replies (in stream
// order: replies are matched to them one by one). Those are private: only
// its own methods change them, so the rules that tie them together (every
// in-flight entry's stream offset, what has been sent, when EPOLLOUT is
// armed) live in one file, connection.cc. It reports to its owner through a
// ConnectionObserver (the Engine) and never sees the owner itself.
//
// What the owner keeps about a connection (requests waiting for it to be
// ready, reconnection backoff, the lending state of direct I/O, ...) is in
// `owner`, which the connection's own code never reads or writes.
//
// Thread-safety: I/O thread only (checked: ConnectionObserver::OnIoThread),
// except Exchange(), which a caller thread runs on a connection it borrowed
// (see Owner::lend), and the atomic Owner::lend itself.
#ifndef TIERCACHE_SRC_REDIS_CONNECTION_H_
#define TIERCACHE_SRC_REDIS_CONNECTION_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "redis/reply_reader.h"
#include "redis/request.h"
#include "tiercache/redis/options.h"
#include "tiercache/redis/reply.h"

namespace tiercache::redis::internal {

class ConnectionObserver;
class Node;

// How Connection::Exchange ended.
enum class DirectResult : uint8_t {
  kReply,             // *reply holds the reply
  kNotSentInTime,     // the deadline passed before a byte was sent: the connection is intact
  kNotSentBroken,     // sending failed before a byte left: the connection is broken, resending is safe
  kTimedOut,          // sent; the deadline passed before the reply (one orphan reply due)
  kBrokenAfterSend,   // the connection failed after (part of) the command left
};

// Write coalescing: bytes are held for replies already due on the
// connection only while less than this is waiting (see HoldForReplies).
constexpr size_t kCoalesceMaxBytes = 16 * 1024;

class Connection {
 public:
  enum class State : uint8_t { kDisconnected, kConnecting, kHandshake, kReady };
  // A command written to the connection whose reply is due.
  struct InFlight {
    enum Kind : uint8_t {
      kUser,       // a request's command: its reply goes to the request
      kDiscard,    // ASKING, SCRIPT LOAD, an orphan reply of direct I/O: dropped
      kHandshake,  // AUTH, READONLY
    };
    Request* req;  // null unless kind == kUser
    Kind kind;
    uint64_t start = 0;  // stream offset of the command's first byte
  };

  // The owner's bookkeeping about this connection. The connection's own
  // methods never read or write it; the owner's rules for it are its own
  // (engine.h, engine_events.cc, direct.cc).
  struct Owner {
    std::deque<Request*> waiting;  // routed here before the connection is ready
    bool dirty = false;            // in the owner's flush list
    int handshake_left = 0;        // handshake replies still expected
    bool handshake_rejected = false;  // AUTH/READONLY refused: fail, do not retry
    TimePoint connect_started{};
    TimePoint next_connect{};  // reconnection backoff
    TimePoint last_read{};     // for stall detection
    std::string last_error;    // why it last failed; empty once ready

    // Direct I/O: an idle ready connection may be lent to one caller thread,
    // which then sends its command and reads the reply itself (Exchange).
    // While lent (kBorrowed/kReclaim) only the borrower touches the socket
    // and the reader. kReturning: handed back with work for the I/O thread
    // (orphan reply, broken socket, queued requests); nobody may use it
    // until that runs.
    enum Lend : int { kOwned = 0, kLendable = 1, kBorrowed = 2, kReclaim = 3, kReturning = 4 };
    std::atomic<int> lend{kOwned};
    // Set by the borrower before it hands the connection back with a task.
    int orphan_replies = 0;  // replies still due to a borrower that gave up
    bool borrow_broken = false;
    std::string borrow_error;
  };

  // `observer` and `node` must outlive the connection.
  Connection(ConnectionObserver* observer, Node* node) : observer_(observer), node_(node) {}
  ~Connection() { Close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Node* node() const { return node_; }
  State state() const { return state_; }
  bool open() const { return fd_ >= 0; }
  const std::deque<InFlight>& inflight() const { return inflight_; }
  bool has_unsent() const { return !out_.empty(); }
  // Stream offset up to which bytes were sent: a command starting at or
  // after it never left.
  uint64_t sent_upto() const { return out_base_; }

  // ---- Socket (I/O thread) ----

  // Starts a non-blocking connect to the node (kConnecting); false (with
  // `error`) when it fails at once. REQUIRES: !open() and nothing in flight
  // (checked): replies on the new stream must not meet old requests.
  bool Open(std::string* error);
  // Closes the socket and the reader and drops unsent bytes
  // (kDisconnected). The in-flight queue is left: TakeInFlight.
  void Close();
  // The owner's handshake has begun / ended (OnConnectionReady).
  // REQUIRES: open() (checked).
  void BeginHandshake();
  void MarkReady();
  // Sends as much of the output as the socket takes; arms EPOLLOUT for the
  // rest. Sends nothing while HoldForReplies. False when the connection is
  // closed (it was, or a send failed and the observer closed it).
  bool Flush();
  // Handles epoll events: connect completion, writability, replies (each to
  // the observer's OnReply). False when the connection is closed afterwards.
  bool OnEvent(uint32_t events);
  // Write coalescing: true when the output should wait for replies already
  // due (a whole command sent and unanswered, no partial write draining,
  // less than kCoalesceMaxBytes waiting).
  bool HoldForReplies(bool coalesce) const;

  // ---- Commands (I/O thread) ----

  // Appends one command's RESP bytes and the in-flight entry for its reply.
  // The bytes leave at the next Flush. REQUIRES: kind != kUser || req (checked).
  void Write(std::string_view resp, InFlight::Kind kind, Request* req = nullptr);
  void Write(std::span<const std::string_view> args, InFlight::Kind kind);
  // `n` replies are due for commands a borrower sent (Exchange) and gave up
  // on: they are read and dropped before any later command's reply.
  void ExpectOrphanReplies(int n);
  // Empties the in-flight queue (after Close, or at shutdown) and returns it.
  std::deque<InFlight> TakeInFlight();

  // ---- Direct exchange (a borrower thread) ----

  // Sends `cmd` and reads one reply, waiting at most until `deadline`. On
  // failure, *error says why. REQUIRES: nothing in flight or unsent (checked).
  DirectResult Exchange(std::string_view cmd, TimePoint deadline, Reply* reply, std::string* error);

  Owner owner;

 private:
  friend struct ConnectionTestAccess;  // tests/redis/connection_test.cc

  void SetEvents(bool want_write);
  // Reads what the socket holds and hands out every whole reply (OnEvent's
  // EPOLLIN side). False when the connection is closed afterwards.
  bool ReadReplies();
  // The replies complete in the reader, in order, to the observer. False
  // when the stream is broken (*error says why) or the observer closed the
  // connection (*error empty).
  bool HandOutReplies(std::string* error);
  uint64_t stream_end() const { return out_base_ + out_.size(); }

  ConnectionObserver* const observer_;
  Node* const node_;
  int fd_ = -1;
  State state_ = State::kDisconnected;
  ReplyReader reader_;
  std::string out_;          // bytes not yet sent
  uint64_t out_base_ = 0;    // stream offset of out_[0] (= bytes sent so far)
  bool want_write_ = false;  // EPOLLOUT armed
  std::deque<InFlight> inflight_;  // written, awaiting replies, in order
};

// What a connection reports to its owner, and the little it asks of it.
// Called on the I/O thread only.
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  virtual int epoll_fd() const = 0;
  // True on the thread that may use the connection's socket (checked by
  // every Connection method but Exchange, which must run elsewhere).
  virtual bool OnIoThread() const = 0;
  virtual bool coalesce_writes() const = 0;
  // Takes the connection back from a borrower; false when a caller has it.
  virtual bool TryOwn(Connection* c) = 0;
  // The TCP connect completed: the owner sends its handshake (BeginHandshake)
  // or marks the connection ready.
  virtual void OnConnectionReady(Connection* c) = 0;
  // Closes the connection (Close) and deals with its queues.
  virtual void OnConnectionFailed(Connection* c, const std::string& reason) = 0;
  // One reply, with the in-flight entry it answers. False when handling it
  // closed the connection (nothing more may be read from it).
  virtual bool OnReply(Connection* c, Connection::InFlight entry, Reply&& reply, TimePoint now) = 0;
  // Bytes are waiting to be sent: flush them at the end of the loop pass.
  virtual void MarkDirty(Connection* c) = 0;
  virtual void CountWrite() = 0;
};

// A Redis node the client knows: its address and its connections. Id,
// endpoint and name never change (the name's address is handed to callers
// for error messages).
class Node {
 public:
  Node(int id, Endpoint endpoint, ConnectionObserver* observer, int connections);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  int id() const { return id_; }
  const Endpoint& endpoint() const { return endpoint_; }
  const std::string& name() const { return name_; }  // "host:port"

  // In the slot map last installed (or reached through MOVED / a test hook).
  bool in_topology = false;

  // The first connection: the one direct I/O lends, whose state tells
  // whether the node is failing.
  Connection* primary() const { return conns_.front().get(); }
  // The connection for the next command (round robin over them).
  Connection* Pick() { return conns_.size() == 1 ? primary() : conns_[next_conn_++ % conns_.size()].get(); }
  const std::vector<std::unique_ptr<Connection>>& connections() const { return conns_; }

 private:
  const int id_;
  const Endpoint endpoint_;
  const std::string name_;
  size_t next_conn_ = 0;
  std::vector<std::unique_ptr<Connection>> conns_;
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_CONNECTION_H_
