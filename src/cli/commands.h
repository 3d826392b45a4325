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

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

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
// The transactional outbox in PostgreSQL (`conninfo`, libpq's format): rows
// not sent yet, the age of the oldest, sent rows kept until retention.
int OutboxStatus(const std::string& conninfo, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err);

}  // namespace tiercache::cli

#endif  // TIERCACHE_CLI_COMMANDS_H_
