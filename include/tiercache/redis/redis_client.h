// RedisClient: tiercache's client for Redis Cluster (and standalone Redis
// through the same API), with its own RESP encoder and reply parser.
//
// Why our own: Debian ships hiredis 0.14 and no C++ cluster client. This one
// routes by hash slot, follows MOVED/ASK, refreshes its slot map (on MOVED, on
// a lost connection, on an uncovered slot, and every
// topology_refresh_interval), retries TRYAGAIN/CLUSTERDOWN/LOADING with
// backoff, and keeps working through a failover within each call's deadline.
//
// Engine: one I/O thread per client owns every socket (one connection per node
// by default). Commands from all caller threads are queued to it and written
// together in one send per node (automatic pipelining); while a connection
// awaits replies to what it sent, new commands gather and leave together when
// those replies arrive (RedisClientOptions::coalesce_writes); replies are
// matched in order. Sync calls block the caller until the reply or the deadline;
// async calls run a callback on the I/O thread. A lone sync caller (nothing
// else in flight) uses "direct I/O": it borrows the idle connection and does
// the send and receive itself, which keeps single-call latency at one round
// trip plus parsing (RedisClientOptions::direct_io).
//
// Thread-safety: every method may be called concurrently from any number of
// threads, except the destructor, which must not race with other calls.
// Blocking: sync calls block at most until their deadline (CallOptions or
// command_timeout); no call blocks longer. Create() blocks up to
// connect_timeout + command_timeout while it fetches the first slot map.
//
// Errors (every call returns a Status/Result, never throws):
//   kDeadlineExceeded   the deadline passed; the message names the node.
//   kUnavailable        no connection to the node owning the key, the
//                       connection was lost after a non-idempotent command was
//                       sent (it may have run), redirects exhausted, or the
//                       cluster stayed down (CLUSTERDOWN/TRYAGAIN) until the
//                       deadline left no time to retry. The message names the node.
//   kInternal           the server answered with an error (message:
//                       "server error from host:port: <error text>"), or a
//                       reply had an unexpected shape.
//   kFailedPrecondition a connection handshake (AUTH/READONLY) was rejected.
//   kResourceExhausted  more than max_outstanding_requests in flight.
//   kInvalidArgument    bad arguments (e.g. empty command).
//   kCancelled          the client is being destroyed.
#ifndef TIERCACHE_REDIS_REDIS_CLIENT_H_
#define TIERCACHE_REDIS_REDIS_CLIENT_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/redis/options.h"
#include "tiercache/redis/reply.h"
#include "tiercache/status.h"

namespace tiercache::redis {

namespace internal {
class Engine;
}

// A Lua script; its SHA-1 is computed once here. The client runs it with
// EVALSHA and, on NOSCRIPT, loads it (SCRIPT LOAD) on that node and retries.
class Script {
 public:
  explicit Script(std::string body);
  const std::string& body() const { return body_; }
  const std::string& sha1() const { return sha1_; }

 private:
  std::string body_;
  std::string sha1_;
};

// Counters since Create() (monotonic; read with relaxed ordering).
struct ClientStats {
  uint64_t moved = 0;                // MOVED redirections followed
  uint64_t ask = 0;                  // ASK redirections followed
  uint64_t retries = 0;              // TRYAGAIN/CLUSTERDOWN/LOADING/MASTERDOWN retries
  uint64_t connections_opened = 0;   // connections that became ready
  uint64_t connection_failures = 0;  // connects failed or connections lost
  uint64_t topology_refreshes = 0;   // CLUSTER SLOTS requests sent
  uint64_t topology_changes = 0;     // refreshes that changed the slot map
  // Slot maps fetched from a seed because no node of the client's map
  // answered (every one failing, or answering without a map): the way back
  // after a full outage, or when the cluster moved to other addresses.
  uint64_t seed_fallbacks = 0;
  uint64_t writes = 0;               // buffer flushes to the sockets (pipelined: fewer than commands)
};

// Callbacks of the async API run on the client's I/O thread (or, when the
// request is rejected at submission, inline in the calling thread). They must
// not block: a blocking callback stalls every request of the client. They may
// submit further async requests; they must not make sync calls.
using ReplyCallback = std::function<void(Result<Reply>)>;
using GetCallback = std::function<void(Result<std::optional<std::string>>)>;

class RedisClient {
 public:
  // Validates `options`, starts the I/O thread and (cluster mode) fetches the
  // slot map from the seeds. kInvalidArgument for bad options; kUnavailable
  // when no seed answers CLUSTER SLOTS in time. In standalone mode Create()
  // does not touch the network: the first call connects.
  static Result<std::unique_ptr<RedisClient>> Create(RedisClientOptions options);

  // Stops and joins the I/O thread, closes every socket. Requests still
  // outstanding complete with kCancelled (async callbacks run before return).
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // GET: the value, or nullopt when the key does not exist. Idempotent.
  Result<std::optional<std::string>> Get(std::string_view key, CallOptions call = {});

  // SET with optional PX and NX. True when the value was stored; false when
  // NX was asked and the key existed. Not idempotent with NX (never resent).
  Result<bool> Set(std::string_view key, std::string_view value, SetOptions options = {});

  // DEL / UNLINK of keys in any slots (split by slot); the number removed.
  // Idempotent (resent after a lost connection).
  Result<int64_t> Del(const std::vector<std::string>& keys, CallOptions call = {});
  Result<int64_t> Unlink(const std::vector<std::string>& keys, CallOptions call = {});

  // MGET of keys in any slots: split into one MGET per slot, sent together,
  // values returned in the order of `keys`. Fails as a whole if any part fails.
  Result<std::vector<std::optional<std::string>>> MGet(const std::vector<std::string>& keys,
                                                        CallOptions call = {});

  // EVALSHA of `script` on the node owning keys[0] (all keys should share a
  // hash tag; the server rejects cross-slot scripts). Keyless scripts go to
  // any master. Not resent after a lost connection.
  Result<Reply> Eval(const Script& script, const std::vector<std::string>& keys,
                     const std::vector<std::string>& args, CallOptions call = {});

  // Many runs of one script, each with its own keys and args (a call's keys
  // share a slot) and routed by its first key, sent together; one result per
  // call, in order. `call` bounds the whole batch. NOSCRIPT is handled as by
  // Eval. Not resent after a lost connection.
  struct ScriptCall {
    std::vector<std::string> keys;
    std::vector<std::string> args;
  };
  std::vector<Result<Reply>> EvalMany(const Script& script, const std::vector<ScriptCall>& calls,
                                      CallOptions call = {});

  // The id of the master serving `slot` in the client's current slot map, or
  // -1 when unknown (standalone mode: always 0). Ids are small, stable for
  // the client's life, one per node ever seen. Lock-free; no I/O. For health
  // tracking per shard.
  int NodeOfSlot(uint16_t slot) const;

  // Any command. args[0] is the command name; routing per `options`.
  // Connections are shared and pipelined, so commands that change connection
  // state (MULTI/EXEC, WATCH, SELECT, SUBSCRIBE, CLIENT REPLY, ...) are not
  // supported; use a Lua script (Eval) for atomic multi-step updates.
  Result<Reply> Command(const std::vector<std::string>& args, CommandOptions options = {});

  // Many commands, routed each by its own key (CommandOptions per command are
  // the defaults: key at index 1, not idempotent), sent together; one result
  // per command, in order. `call` bounds the whole batch.
  std::vector<Result<Reply>> Pipeline(const std::vector<std::vector<std::string>>& commands,
                                      CallOptions call = {});

  // Async forms. `done` is called exactly once (see ReplyCallback).
  void CommandAsync(const std::vector<std::string>& args, CommandOptions options, ReplyCallback done);
  void GetAsync(std::string_view key, CallOptions call, GetCallback done);
  std::future<Result<Reply>> CommandFuture(const std::vector<std::string>& args, CommandOptions options = {});

  ClientStats Stats() const;

  // ---- test hooks (block until the I/O thread has run them) ----
  // Makes the client believe `slot` is served by `owner` (to test MOVED).
  Status SetSlotOwnerForTesting(uint16_t slot, const Endpoint& owner);
  // The master the client would send `slot` to; kNotFound when uncovered.
  Result<Endpoint> SlotOwnerForTesting(uint16_t slot);
  // Installs a slot map as if CLUSTER SLOTS had named only `masters` (the
  // slots split evenly among them, no replicas): every other node leaves the
  // topology and its connections are closed, as after a real refresh. The
  // seeds are kept. To test recovery when every known node is gone.
  // kInvalidArgument when `masters` is empty.
  Status SetTopologyForTesting(const std::vector<Endpoint>& masters);

 private:
  explicit RedisClient(std::unique_ptr<internal::Engine> engine);
  std::unique_ptr<internal::Engine> engine_;
};

}  // namespace tiercache::redis

#endif  // TIERCACHE_REDIS_REDIS_CLIENT_H_
