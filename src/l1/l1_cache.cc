#include "tiercache/l1_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include "l1/hash.h"
#include "l1/l1_options.h"
#include "l1/mix.h"
#include "l1/shard.h"
#include "tiercache/single_flight.h"

namespace tiercache {
namespace {

using l1::HashKey;
using l1::Mix;

// Uniform in [0, 1), per thread, for TTL jitter (no shared RNG state).
double UnitRandom() {
  thread_local std::uint64_t state =
      Mix(reinterpret_cast<std::uintptr_t>(&state) ^
          static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  state += 0x9E3779B97F4A7C15ULL;
  return static_cast<double>(Mix(state) >> 11) * 0x1.0p-53;
}

}  // namespace

struct L1Cache::Impl {
  explicit Impl(const L1Options& o)
      : options(o), clock(o.clock ? o.clock : Clock::Real()), flights(clock) {}

  l1::Shard& ShardFor(std::uint64_t hash) { return shards[(hash >> 40) & shard_mask]; }

  L1Options options;
  Clock* clock;
  std::unique_ptr<l1::Shard[]> shards;
  std::size_t shard_count = 1;
  std::size_t shard_mask = 0;
  std::size_t max_entry_charge = 0;
  std::size_t value_stripes = 1;
  SingleFlight<L1Entry> flights;
};

Result<std::unique_ptr<L1Cache>> L1Cache::Create(const L1Options& options) {
  TIERCACHE_RETURN_IF_ERROR(l1::ValidateOptions(options));
  auto impl = std::make_unique<Impl>(options);
  const std::size_t n = l1::EffectiveShardCount(options);
  impl->shard_count = n;
  impl->shard_mask = n - 1;
  impl->shards = std::make_unique<l1::Shard[]>(n);
  impl->value_stripes = l1::EffectiveValueStripes(options);
  // Split both bounds exactly: the shards' sum is the configured bound.
  for (std::size_t i = 0; i < n; ++i) {
    l1::ShardLimits limits;
    limits.max_entries = options.max_entries / n + (i < options.max_entries % n ? 1 : 0);
    limits.max_bytes = options.max_bytes / n + (i < options.max_bytes % n ? 1 : 0);
    limits.policy = options.policy;
    limits.window_fraction = options.window_fraction;
    limits.max_stale = options.max_stale;
    limits.value_stripes = impl->value_stripes;
    impl->shards[i].Configure(limits);
  }
  impl->max_entry_charge = std::min(options.max_bytes / n, l1::kMaxEntryChargeLimit);
  return std::unique_ptr<L1Cache>(new L1Cache(std::move(impl)));
}

L1Cache::L1Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
L1Cache::~L1Cache() = default;

Result<std::optional<L1Entry>> L1Cache::Get(std::string_view key) {
  return Lookup(key, std::nullopt);
}

Result<std::optional<L1Entry>> L1Cache::GetStale(std::string_view key,
                                                  Clock::Duration max_stale) {
  if (max_stale < Clock::Duration::zero()) {
    return Status::InvalidArgument("get_stale: max_stale must be >= 0");
  }
  return Lookup(key, std::min(max_stale, impl_->options.max_stale));
}

Result<std::optional<L1Entry>> L1Cache::Lookup(std::string_view key,
                                               std::optional<Clock::Duration> stale_bound) {
  // One named result on every path, so it is built in the caller's return
  // slot (a second return expression would make it a local, then moved).
  Result<std::optional<L1Entry>> result{std::optional<L1Entry>(std::in_place)};  // filled in place
  if (key.empty() || key.size() > impl_->options.max_key_bytes) {
    result = l1::KeyError(key, impl_->options.max_key_bytes);
    return result;
  }
  const std::uint64_t hash = HashKey(key);
  if (impl_->ShardFor(hash).Lookup(hash, key, *impl_->clock, stale_bound, l1::Accounting::kCount,
                                   &**result) == l1::LookupOutcome::kMiss) {
    result->reset();
  }
  return result;
}

L1Cache::Read L1Cache::GetStaleInto(std::string_view key, Clock::Duration max_stale, L1Entry* out) {
  if (key.empty() || key.size() > impl_->options.max_key_bytes || max_stale < Clock::Duration::zero()) {
    return Read::kMiss;
  }
  const std::uint64_t hash = HashKey(key);
  switch (impl_->ShardFor(hash).Lookup(hash, key, *impl_->clock, std::min(max_stale, impl_->options.max_stale),
                                       l1::Accounting::kCount, out)) {
    case l1::LookupOutcome::kFresh: return Read::kFresh;
    case l1::LookupOutcome::kStale: return Read::kStale;
    case l1::LookupOutcome::kMiss: break;
  }
  return Read::kMiss;
}

Status L1Cache::Set(std::string_view key, L1Value value, const L1Fill& fill) {
  if (value == nullptr) return Status::InvalidArgument("set: null value (use set_negative)");
  return Store(key, std::move(value), L1EntryKind::kValue, fill, nullptr);
}

Status L1Cache::SetNegative(std::string_view key, const L1Fill& fill) {
  return Store(key, nullptr, L1EntryKind::kNegative, fill, nullptr);
}

Status L1Cache::Invalidate(std::string_view key, std::uint64_t version,
                           Clock::Duration tombstone_ttl) {
  L1Fill fill;
  fill.version = version;
  fill.ttl = tombstone_ttl;
  // A tombstone Store cannot keep erases the entry (see Store).
  Status s = Store(key, nullptr, L1EntryKind::kTombstone, fill, nullptr);
  if (s.IsAborted()) return Status::Ok();  // a newer version is present: no-op
  return s;
}

Status L1Cache::Store(std::string_view key, L1Value value, L1EntryKind kind, const L1Fill& fill,
                      L1Entry* built) {
  const L1Options& o = impl_->options;
  if (key.empty() || key.size() > o.max_key_bytes) return l1::KeyError(key, o.max_key_bytes);
  const std::uint64_t hash = HashKey(key);
  l1::Shard& shard = impl_->ShardFor(hash);
  // An invalidation must not leave the value it invalidates: a tombstone
  // that cannot be stored (a bad ttl, the weigher threw, its charge is too
  // large, no memory) erases the entry (which needs no memory), and with it
  // the version guard the tombstone would have been. Where the error is
  // made after the check (its message allocates), the entry goes first.
  const auto erase_if_invalidation = [&] {
    if (kind == L1EntryKind::kTombstone) shard.Erase(hash, key);
  };
  if (Status s = l1::CheckTtl(fill.ttl, "ttl"); !s.ok()) {
    erase_if_invalidation();
    return s;
  }
  const std::string_view bytes = value ? std::string_view(*value) : std::string_view();
  Result<std::size_t> charge = l1::Weigh(o.weigher, key, bytes);
  if (!charge.ok()) {
    erase_if_invalidation();
    return charge.status();
  }

  const Clock::TimePoint now = impl_->clock->Now();
  Clock::Duration ttl = l1::BaseTtl(o, kind, fill.ttl);
  if (kind != L1EntryKind::kTombstone && o.ttl_jitter > 0) {
    ttl = l1::Jitter(ttl, o.ttl_jitter, UnitRandom());
  }
  Clock::TimePoint expiry = now + ttl;
  if (fill.not_after.has_value() && *fill.not_after < expiry) expiry = *fill.not_after;
  l1::NodeFields fields;
  fields.kind = kind;
  fields.version = fill.version;
  fields.expiry = expiry;
  fields.load_duration = fill.load_duration;
  fields.tag = fill.tag;
  fields.user_data = fill.user_data;
  fields.charge = *charge;
  // The entry as it would have been stored, for a store that cannot keep it.
  const auto describe = [&] {
    if (built == nullptr) return;
    *built = L1Entry{};
    built->kind = kind;
    built->value = value;
    built->version = fill.version;
    built->expiry = expiry;
    built->load_duration = l1::DecodeLoadDuration(l1::EncodeLoadDuration(fill.load_duration));  // as stored
    built->tag = fill.tag;
    built->user_data = fill.user_data;
  };
  if (*charge > o.max_bytes || *charge > impl_->max_entry_charge) {
    describe();
    erase_if_invalidation();
    return l1::CheckCharge(*charge, o.max_bytes, impl_->max_entry_charge);
  }
  l1::NodePtr node;
  try {
    node = l1::NewFilledNode(key, std::move(value), fields, shard.arena());
  } catch (const std::bad_alloc&) {
    describe();  // `value` is still ours: NewFilledNode takes it only once the node exists
    erase_if_invalidation();
    return Status::ResourceExhausted("no memory for the entry's node");
  }
  if (built != nullptr) node->CopyTo(built);

  // A refused invalidation is a no-op, not a refused fill.
  const bool count_refusal = kind != L1EntryKind::kTombstone;
  bool stored;
  try {
    stored = shard.Upsert(hash, std::move(node), now, count_refusal);
  } catch (const std::bad_alloc&) {  // the table or the policy records could not grow: unchanged
    return Status::ResourceExhausted("no memory to add an entry to the shard");
  }
  if (!stored) {
    return Status::Aborted("version " + std::to_string(fill.version) +
                           " refused: a higher version is cached for this key");
  }
  return Status::Ok();
}

Status L1Cache::Erase(std::string_view key) {
  if (key.empty() || key.size() > impl_->options.max_key_bytes) {
    return l1::KeyError(key, impl_->options.max_key_bytes);
  }
  const std::uint64_t hash = HashKey(key);
  impl_->ShardFor(hash).Erase(hash, key);
  return Status::Ok();
}

void L1Cache::Clear() {
  for (std::size_t i = 0; i < impl_->shard_count; ++i) impl_->shards[i].Clear();
}

std::size_t L1Cache::PurgeExpired() {
  std::size_t purged = 0;
  for (std::size_t i = 0; i < impl_->shard_count; ++i) {
    purged += impl_->shards[i].PurgeDead(impl_->clock->Now());
  }
  return purged;
}

Result<L1Entry> L1Cache::GetOrLoad(std::string_view key, const L1Loader& loader,
                                     Clock::TimePoint deadline) {
  Result<std::optional<L1Entry>> hit = Get(key);
  if (!hit.ok()) return hit.status();
  if (hit->has_value()) return std::move(**hit);
  return impl_->flights.Do(key, deadline, [&]() { return LoadAndFill(key, loader); });
}

// Runs as the single-flight leader. A loader exception propagates to
// SingleFlight, which turns it into kInternal for every caller.
Result<L1Entry> L1Cache::LoadAndFill(std::string_view key, const L1Loader& loader) {
  const std::uint64_t hash = HashKey(key);
  l1::Shard& shard = impl_->ShardFor(hash);
  L1Entry current;
  // A flight that ended between our miss and our becoming leader filled it.
  if (shard.Lookup(hash, key, *impl_->clock, std::nullopt, l1::Accounting::kQuiet,
                   &current) == l1::LookupOutcome::kFresh) {
    return current;
  }
  const Clock::TimePoint start = impl_->clock->Now();
  Result<L1Loaded> loaded = loader();
  if (!loaded.ok()) return loaded.status();
  L1Fill fill;
  fill.version = loaded->version;
  fill.ttl = loaded->ttl;
  fill.load_duration = impl_->clock->Now() - start;
  const L1EntryKind kind = loaded->value ? L1EntryKind::kValue : L1EntryKind::kNegative;
  L1Entry built;
  Status s = Store(key, std::move(loaded->value), kind, fill, &built);
  if (s.ok() || s.IsResourceExhausted()) return built;  // too big: served, not cached
  if (!s.IsAborted()) return s;
  // Refused: a newer entry (or tombstone) is present. Serve a fresh newer one.
  if (shard.Lookup(hash, key, *impl_->clock, std::nullopt, l1::Accounting::kQuiet,
                   &current) == l1::LookupOutcome::kFresh) {
    return current;
  }
  return s;
}

L1Stats L1Cache::Stats() const {
  L1Stats total;
  for (std::size_t i = 0; i < impl_->shard_count; ++i) impl_->shards[i].AddStats(&total);
  return total;
}

std::size_t L1Cache::max_entry_charge() const noexcept { return impl_->max_entry_charge; }
std::size_t L1Cache::shard_count() const noexcept { return impl_->shard_count; }

}  // namespace tiercache
