// Validation and small pure helpers behind L1Cache: option checks, key and
// TTL checks, the weigher call, TTL jitter. Internal to src/l1/.
#ifndef TIERCACHE_L1_L1_OPTIONS_H_
#define TIERCACHE_L1_L1_OPTIONS_H_

#include <cstddef>
#include <string_view>

#include "tiercache/clock.h"
#include "tiercache/l1_cache.h"
#include "tiercache/status.h"

namespace tiercache::l1 {

inline constexpr std::size_t kMaxShards = 1024;
inline constexpr std::size_t kMaxValueStripes = 16;
inline constexpr std::size_t kAutoValueStripesMax = 4;
inline constexpr std::size_t kMaxKeyBytesLimit = std::size_t{1} << 20;
// The largest charge one entry may have, whatever max_bytes: a node keeps
// its charge in 32 bits.
inline constexpr std::size_t kMaxEntryChargeLimit = 0xFFFFFFFFu;

// kInvalidArgument naming the first nonsensical option, else OK.
Status ValidateOptions(const L1Options& options);

// options.num_shards, halved until every shard gets at least one entry and
// one byte. REQUIRES: ValidateOptions(options).ok().
std::size_t EffectiveShardCount(const L1Options& options);
// value_stripes, with 0 (automatic) resolved for this machine.
std::size_t EffectiveValueStripes(const L1Options& options);

// The kInvalidArgument for a key that is empty or longer than `max_key_bytes`.
Status KeyError(std::string_view key, std::size_t max_key_bytes);

// kInvalidArgument unless 0 <= ttl <= kL1MaxTtl (zero = "use the default").
Status CheckTtl(Clock::Duration ttl, std::string_view what);

// The entry's charge: the user's weigher (kInternal if it throws) or the default.
Result<std::size_t> Weigh(const L1Weigher& weigher, std::string_view key, std::string_view value);

// kResourceExhausted if `charge` cannot fit (whole cache, one shard's share,
// or above kMaxEntryChargeLimit).
Status CheckCharge(std::size_t charge, std::size_t max_bytes, std::size_t max_entry_charge);

// `fill_ttl`, or the options' default for `kind` when it is zero.
Clock::Duration BaseTtl(const L1Options& options, L1EntryKind kind, Clock::Duration fill_ttl);

// ttl * (1 + jitter * (2u - 1)) for u in [0, 1); at least 1 ns.
Clock::Duration Jitter(Clock::Duration ttl, double jitter, double u);

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_L1_OPTIONS_H_
