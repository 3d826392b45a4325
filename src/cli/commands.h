// The commands of the `tiercache` CLI (main.cc parses the arguments), for the
// people on call: where a key lives, what L2 holds for it, and invalidating
// it by hand. Each command writes its findings to `out`, a one-line reason to
// `err` when it fails, and returns the process exit code:
//   0  done (get: a current value was found)
//   2  bad arguments or malformed input
//   3  get / inspect: nothing current / nothing stored for the key
//   4  a server did not answer (unreachable, timed out)
//   5  a server answered with an error, or L2 held bytes that are not an envelope
#ifndef TIERCACHE_CLI_COMMANDS_H_
#define TIERCACHE_CLI_COMMANDS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tiercache/events.h"
#include "tiercache/status.h"

namespace tiercache::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitUnreachable = 4;
inline constexpr int kExitServerError = 5;

// Where the servers are (flags shared by every command).
struct Connection {
  std::string redis = "127.0.0.1:7000";  // a seed of the Redis Cluster, host:port
  std::string redis_user;
  std::string redis_password;
  std::chrono::milliseconds timeout{2000};  // per server call
};

// The exit code for a failed call's status.
int ExitCodeOf(const Status& s);

int Keyslot(const Connection& c, const std::vector<std::string>& keys, std::ostream& out, std::ostream& err);
int Cluster(const Connection& c, std::ostream& out, std::ostream& err);
int Inspect(const Connection& c, const std::string& key, const std::string& group, std::ostream& out,
            std::ostream& err);
int Get(const Connection& c, const std::string& key, const std::string& group, std::ostream& out,
        std::ostream& err);
// Exactly one of `key` and `group` is non-empty.
int Invalidate(const Connection& c, const std::string& key, const std::string& group,
               std::optional<uint64_t> version, std::ostream& out, std::ostream& err);
// `outbox status`: the transactional outbox in PostgreSQL. `conninfo` is a
// libpq key=value string or a postgresql:// URI, used as given: its options,
// PGOPTIONS and the other PG* variables apply. Prints
//   unsent       N rows
//   oldest       N ms old | none
//   sent, kept   ~N rows (estimate ...) | unknown (...)
// The unsent rows and the age of the oldest are exact, read through the
// partial index of unsent rows; the sent rows kept until the relay's
// retention are an estimate (pg_class.reltuples as of the table's last VACUUM
// or ANALYZE, minus the unsent rows; unknown before the first): counting them
// would read the whole table.
// Bounded by `timeout`: connecting and the query share one client-side
// deadline (a server that accepts and never answers included); a query still
// running then is cancelled (the cancel request may take 200 ms more), and
// the session's statement_timeout is set to `timeout` as well (over one in
// the options). connect_timeout (in `conninfo` or PGCONNECT_TIMEOUT; 1 counts
// as 2, as in libpq) bounds each host within that deadline, as in psql: with
// several hosts they are tried one at a time, each given connect_timeout,
// the next one tried after a host that failed or did not answer in time.
// Limits of that: the timeout is per host, not per address of a host name
// that resolves to several; a connect_timeout set only in a service file is
// not seen; with a service (service=, PGSERVICE), target_session_attrs=
// prefer-standby, or an empty entry in the host, hostaddr or port lists,
// libpq's single attempt runs, bounded as a whole by connect_timeout (a first
// host that never answers then ends the command, exit 4, the others untried).
// Not bounded: libpq's host name lookup.
// The password is never printed: libpq's parse errors are not shown (they
// quote the input); a URI whose password holds an unescaped '@' or '/' is
// refused before connecting (libpq would take part of the password for the
// host, the port or the database name, look it up and quote it): a host
// with '@' or '/' (a Unix socket directory, starting with '/', is fine), a
// port that is not digits and commas, a URI's database name with '@'; and
// the password (the password option, a URI's user-info, the pieces of its
// password between '@', '/' and ':'; each of 3 characters or more) is
// replaced with [hidden] in every message and notice printed.
// Messages are one line, libpq's or the server's text cut at 300 bytes.
// Exit codes: 2 a conninfo libpq cannot parse, or refused as above (the
// message names the option, not its value); 4 no answer (unreachable, timed
// out, the connection closed by the server, the statement cancelled: SQLSTATE
// 57014, a server shutting down or starting: 57P01-57P03, class 08); 5 the
// server answered with an error or an answer refused (no such database or
// role, authentication failed, no outbox table, SSL required by sslmode but
// not offered, target_session_attrs not met, an error message libpq cannot
// read: over 30000 bytes).
int OutboxStatus(const std::string& conninfo, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err);

// `events tail`: the invalidation events of `topics`, decoded, one line each
// with partition, offset, lag (messages behind the partition's end) and age.
// A message that is not an event is printed as MALFORMED with the reason, one
// with a null payload (a compaction tombstone) as NULL-PAYLOAD, a null key as
// key=(null); the tail goes on. Partitions added to the topics while it runs
// are found within about 5 s (one metadata look every 5 s, at most 1 s long)
// and read from their beginning. A start below a partition's log start
// (--last N beyond what retention kept, a tail fallen behind retention) goes
// on from the log start. Offsets are never committed (no consumer group joins).
struct TailOptions {
  std::string brokers = "127.0.0.1:9092";
  std::vector<std::string> topics;
  bool from_beginning = false;  // else from the end (only new events)
  int64_t last = 0;             // > 0: the last N of each partition first
  int64_t max_events = 0;       // > 0: stop after that many messages
  bool exit_at_end = false;     // stop once every partition's end is reached
  std::chrono::milliseconds timeout{2000};  // for the topics' metadata
  // Set (by a signal handler) to stop; seen within 1 s while the metadata is
  // awaited too.
  const std::atomic<bool>* stop = nullptr;
};
// Exit codes: 0 (stopped by max_events, exit_at_end or `stop`, also before
// the metadata came), 2 (bad options), 3 (a topic does not exist), 4 (no
// broker answered within the timeout), 5 (a broker's error).
int EventsTail(const TailOptions& o, std::ostream& out, std::ostream& err);

// `events publish`: one hand-made event, validated (ValidateEvent), then
// published with the idempotent publisher keyed by its partition key, and
// waited for. Either `json` (the whole event) or the fields of `event`. The
// topic is looked up first, with a consumer's metadata request, which does
// not create it: a producer's would have a broker with
// auto.create.topics.enable create a mistyped topic and take the event.
struct PublishOptions {
  std::string brokers = "127.0.0.1:9092";
  std::string topic;
  std::string json;        // non-empty: the event as JSON, parsed with ParseEvent
  InvalidationEvent event;  // else: event_id generated when empty, occurred_at now when unset
  // For the topic's lookup, then for the delivery report (whose wait adds
  // 2 s: librdkafka looks for expired messages once a second).
  std::chrono::milliseconds timeout{2000};
};
// Exit codes: 0 (acknowledged), 2 (malformed event or options: nothing is
// published), 3 (the topic does not exist: nothing is published and the topic
// is not created), 4 (no broker answered the lookup within the timeout:
// nothing is published; or no acknowledgement within the timeout: it may
// still be delivered), 5 (the broker refused it).
int EventsPublish(const PublishOptions& o, std::ostream& out, std::ostream& err);

}  // namespace tiercache::cli

#endif  // TIERCACHE_CLI_COMMANDS_H_
