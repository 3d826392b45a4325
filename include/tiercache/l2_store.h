// L2Store: the shared tier as the tiered cache sees it.
//
// The production store is Redis (cluster or standalone) through tiercache's
// own client: MakeRedisL2Store(). The in-memory store has the same semantics
// inside one process; unit tests of the cache's logic use it, and it can back
// a cache that has no Redis at all.
//
// Semantics every implementation keeps (docs/envelope.md):
//   * FencedFill stores a value or negative envelope unless the stored
//     envelope (of any kind) has a higher domain version; it then releases the
//     lease `lease_key` if that still holds `lease_token`, whatever the outcome.
//   * Tombstone stores a tombstone of version v unless the stored envelope is
//     newer, or is a value/negative entry of the same version.
//   * A stored value that is not a decodable envelope never blocks a write.
//   * Leases: AcquireLease is SET NX PX of the lease key and, in the same
//     atomic step, a read of the value key (so a caller that takes a lease
//     just freed by a finished load sees that load's value instead of
//     loading again); ReleaseLease deletes only when the lease still holds
//     the caller's token.
//   * Every call ends within `timeout` (kDeadlineExceeded) or fails with
//     kUnavailable when the store cannot be reached.
//
// Thread-safety: implementations are safe to call from any thread at once.
#ifndef TIERCACHE_L2_STORE_H_
#define TIERCACHE_L2_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/clock.h"
#include "tiercache/status.h"

namespace tiercache {

using std::chrono::milliseconds;

namespace redis {
class RedisClient;
}

struct LeaseOutcome {
  bool won = false;                  // the lease was free and is now ours
  std::optional<std::string> value;  // the value key's bytes at that moment
};

struct FenceOutcome {
  bool stored = false;
  uint64_t stored_version = 0;  // when refused: the version that won
};

class L2Store {
 public:
  virtual ~L2Store() = default;

  // The stored bytes of `key`, or nullopt when there are none.
  virtual Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) = 0;

  // Like Get for many keys, in their order; implementations batch them (one
  // round trip per slot group on a cluster).
  virtual Result<std::vector<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                                  milliseconds timeout) = 0;

  // See the class comment. `lease_key` empty: no lease to release.
  // Errors: also kInvalidArgument if `envelope` is not a value/negative envelope.
  virtual Result<FenceOutcome> FencedFill(std::string_view key, std::string_view envelope,
                                          std::chrono::milliseconds physical_ttl, std::string_view lease_key,
                                          std::string_view lease_token, milliseconds timeout) = 0;

  // Stores `envelope` without any fence (CacheOptions::version_fencing off:
  // only to demonstrate the race the fence prevents).
  virtual Status Put(std::string_view key, std::string_view envelope, std::chrono::milliseconds physical_ttl,
                     milliseconds timeout) = 0;

  virtual Result<FenceOutcome> Tombstone(std::string_view key, std::string_view envelope,
                                         std::chrono::milliseconds ttl, milliseconds timeout) = 0;

  // Takes the lease `lease_key` (same slot as `key`) if free, and reads `key`.
  virtual Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view lease_key,
                                            std::string_view token, std::chrono::milliseconds ttl,
                                            milliseconds timeout) = 0;

  // Pushes the lease's expiry to `ttl` from now if it still holds `token`.
  // True when extended.
  virtual Result<bool> ExtendLease(std::string_view lease_key, std::string_view token, std::chrono::milliseconds ttl,
                                   milliseconds timeout) = 0;

  // True when the lease held `token` and was released.
  virtual Result<bool> ReleaseLease(std::string_view lease_key, std::string_view token,
                                    milliseconds timeout) = 0;
};

// The L2Store over Redis (cluster or standalone): GET, MGET (one per slot
// group, sent together), SET NX PX for leases, and the Lua scripts of
// src/core/scripts.cc (EVALSHA, loaded on NOSCRIPT) for fills, tombstones
// and lease release. REQUIRES: client non-null; shared, it may serve others.
std::shared_ptr<L2Store> MakeRedisL2Store(std::shared_ptr<redis::RedisClient> client);

// An L2Store inside this process. `clock` (null: Clock::Real()) drives TTLs;
// not owned, must outlive the store.
std::shared_ptr<L2Store> MakeInMemoryL2Store(Clock* clock = nullptr);

// Test hook of the in-memory store: overwrites `key` with raw bytes (e.g. a
// corrupt payload). REQUIRES: `store` came from MakeInMemoryL2Store.
void InMemoryL2StorePutRaw(L2Store* store, std::string_view key, std::string_view bytes);

}  // namespace tiercache

#endif  // TIERCACHE_L2_STORE_H_
