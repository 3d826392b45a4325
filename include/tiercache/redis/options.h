// Options of the Redis client: plain structs, defaults inline, validated once
// by RedisClient::Create (which returns kInvalidArgument for nonsense).
//
// Every timeout is finite by default. Durations use std::chrono; a zero where
// zero is meaningless is rejected at Create().
#ifndef TIERCACHE_REDIS_OPTIONS_H_
#define TIERCACHE_REDIS_OPTIONS_H_

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "tiercache/status.h"

namespace tiercache::redis {

struct Endpoint {
  std::string host = "127.0.0.1";  // IPv4 address or a resolvable name.
  int port = 6379;                 // 1..65535.

  // "host:port".
  std::string ToString() const { return host + ":" + std::to_string(port); }
};

enum class Mode : uint8_t {
  kCluster,     // Redis Cluster: topology from CLUSTER SLOTS, MOVED/ASK followed.
  kStandalone,  // One server (the first seed); every key goes to it.
};

struct RedisClientOptions {
  // Where to start: at least one node. In cluster mode any node will do; the
  // seeds are tried again whenever every known node fails.
  std::vector<Endpoint> seeds;
  Mode mode = Mode::kCluster;

  // AUTH on every connection: `password` alone is the legacy AUTH <password>;
  // with `username` it is the ACL form AUTH <username> <password>. Empty
  // password: no AUTH. A username without a password is rejected.
  std::string username;
  std::string password;

  // Bound on establishing a TCP connection and its handshake (AUTH, READONLY).
  std::chrono::milliseconds connect_timeout{1000};
  // Default deadline of a call, from its start to its completion, including
  // redirections and retries. A per-call timeout (CallOptions) overrides it.
  std::chrono::milliseconds command_timeout{1000};

  // TCP connections per node. Commands from all threads are pipelined on them,
  // so 1 is usually enough.
  int connections_per_node = 1;

  // MOVED/ASK hops a single command may follow before failing with
  // kUnavailable ("redirects exhausted").
  int max_redirects = 5;

  // Backoff between retries after TRYAGAIN, CLUSTERDOWN, LOADING or a lost
  // connection: starts at retry_backoff_min, doubles, capped at _max.
  std::chrono::milliseconds retry_backoff_min{5};
  std::chrono::milliseconds retry_backoff_max{200};

  // Periodic topology refresh (cluster mode), and the least time between two
  // refreshes triggered by events (MOVED, lost connection, uncovered slot).
  std::chrono::milliseconds topology_refresh_interval{10000};
  std::chrono::milliseconds min_refresh_interval{100};
  // How long a refresh waits for one node's CLUSTER SLOTS (connecting to it
  // included, capped at connect_timeout + command_timeout) before it asks
  // the next node of its round: a node that accepts connections but does
  // not answer (hung, overloaded) costs this much, not the full timeouts.
  // Raise it with connect_timeout on slow networks.
  std::chrono::milliseconds topology_probe_timeout{500};

  // Reconnection attempts to a node are spaced by at least this much.
  std::chrono::milliseconds reconnect_backoff{100};

  // Route commands marked read_only to replicas (after READONLY). Off by
  // default: replica reads may be stale.
  bool read_from_replicas = false;

  // Requests submitted but not yet completed, over the whole client. A call
  // beyond it fails at once with kResourceExhausted.
  size_t max_outstanding_requests = 100000;

  // How long a synchronous caller spins before sleeping (only one caller of
  // the client spins at a time; the others sleep at once), and how long the
  // I/O thread polls without sleeping after it last had work. Spinning saves
  // a sleep/wake-up per call (tens of microseconds) and costs CPU.
  std::chrono::microseconds caller_spin{100};
  std::chrono::microseconds io_busy_poll{0};

  // Direct I/O for single sync calls (Get, Set, Command): when no other call
  // of the client is in progress and the connection of the key's node is
  // idle, the calling thread sends the command and reads the reply itself
  // instead of handing it to the I/O thread and back. Concurrent calls
  // pipeline through the I/O thread as usual.
  bool direct_io = true;

  // Write coalescing: while a connection has commands sent and not yet
  // answered, new commands for it wait in its buffer and leave together when
  // those replies arrive (or at once when 16 KiB are waiting). Fewer, larger
  // writes: each write costs this client a send() and the server a read and
  // a wake-up. A command on an idle connection leaves at once; a waiting one
  // waits at most for the replies already due on its connection. Measured
  // on a 2-core VM (bench_redis, paired runs): about +10% throughput for 64
  // sync callers; no change beyond noise for 64 async requests in flight.
  bool coalesce_writes = true;

  // kOk, or kInvalidArgument naming the first offending field.
  Status Validate() const;
};

// Per-call options.
struct CallOptions {
  // Deadline of this call relative to its start; 0 means the client's
  // command_timeout.
  std::chrono::milliseconds timeout{0};
};

// How a generic command is routed and retried.
struct CommandOptions {
  // Index in args of the key that chooses the slot (1 for most commands);
  // -1 (or an index past the end of args) for a keyless command, which goes
  // to any master.
  int key_index = 1;
  // True if running the command twice is harmless: then it is resent when its
  // connection breaks after it was written. Never resent otherwise.
  bool idempotent = false;
  // True if the command only reads: with read_from_replicas it may go to a
  // replica.
  //
  // Blocking commands (BLPOP, ...) must finish within the call's deadline;
  // a connection silent for max(2 x command_timeout, 1 s) with replies due is
  // treated as dead and reconnected.
  bool read_only = false;
  CallOptions call;
};

// SET modifiers.
struct SetOptions {
  // Expiry (PX); 0 means no expiry.
  std::chrono::milliseconds ttl{0};
  // NX: only set when the key does not exist.
  bool only_if_absent = false;
  CallOptions call;
};

}  // namespace tiercache::redis

#endif  // TIERCACHE_REDIS_OPTIONS_H_
