#include "l1/l1_options.h"

#include <bit>
#include <cmath>
#include <exception>
#include <string>
#include <thread>

namespace tiercache::l1 {
namespace {

Status CheckPositiveTtl(Clock::Duration ttl, std::string_view name) {
  if (ttl <= Clock::Duration::zero() || ttl > kL1MaxTtl) {
    return Status::InvalidArgument(std::string(name) + " must be in (0, 365 days]");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateOptions(const L1Options& o) {
  if (o.max_entries == 0) return Status::InvalidArgument("max_entries must be > 0");
  if (o.max_bytes == 0) return Status::InvalidArgument("max_bytes must be > 0");
  if (o.num_shards == 0 || o.num_shards > kMaxShards || !std::has_single_bit(o.num_shards)) {
    return Status::InvalidArgument("num_shards must be a power of two in [1, 1024]");
  }
  if (o.policy != L1Policy::kLru && o.policy != L1Policy::kTinyLfu) {
    return Status::InvalidArgument("policy is not a known L1Policy");
  }
  // Written so that NaN fails too.
  if (!(o.window_fraction > 0.0 && o.window_fraction <= 0.5)) {
    return Status::InvalidArgument("window_fraction must be in (0, 0.5]");
  }
  TIERCACHE_RETURN_IF_ERROR(CheckPositiveTtl(o.default_ttl, "default_ttl"));
  TIERCACHE_RETURN_IF_ERROR(CheckPositiveTtl(o.negative_ttl, "negative_ttl"));
  TIERCACHE_RETURN_IF_ERROR(CheckPositiveTtl(o.tombstone_ttl, "tombstone_ttl"));
  if (o.max_stale < Clock::Duration::zero() || o.max_stale > kL1MaxTtl) {
    return Status::InvalidArgument("max_stale must be in [0, 365 days]");
  }
  if (!(o.ttl_jitter >= 0.0 && o.ttl_jitter <= 0.5)) {
    return Status::InvalidArgument("ttl_jitter must be in [0, 0.5]");
  }
  if (o.value_stripes != 0 &&
      (o.value_stripes > kMaxValueStripes || !std::has_single_bit(o.value_stripes))) {
    return Status::InvalidArgument("value_stripes must be 0 or a power of two in [1, 16]");
  }
  if (o.max_key_bytes == 0 || o.max_key_bytes > kMaxKeyBytesLimit) {
    return Status::InvalidArgument("max_key_bytes must be in [1, 1 MiB]");
  }
  return Status::Ok();
}

std::size_t EffectiveValueStripes(const L1Options& o) {
  if (o.value_stripes != 0) return o.value_stripes;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  return std::bit_ceil(std::min<std::size_t>(cpus, kAutoValueStripesMax));
}

std::size_t EffectiveShardCount(const L1Options& o) {
  std::size_t n = o.num_shards;
  while (n > 1 && (n > o.max_entries || n > o.max_bytes)) n /= 2;
  return n;
}

Status KeyError(std::string_view key, std::size_t max_key_bytes) {
  if (key.empty()) return Status::InvalidArgument("key is empty");
  return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                 " bytes exceeds max_key_bytes " + std::to_string(max_key_bytes));
}

Status CheckTtl(Clock::Duration ttl, std::string_view what) {
  if (ttl < Clock::Duration::zero() || ttl > kL1MaxTtl) {
    return Status::InvalidArgument(std::string(what) + " must be in [0, 365 days]");
  }
  return Status::Ok();
}

Result<std::size_t> Weigh(const L1Weigher& weigher, std::string_view key, std::string_view value) {
  if (!weigher) return key.size() + value.size() + kL1EntryOverheadBytes;
  try {
    return weigher(key, value);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("weigher threw: ") + e.what());
  } catch (...) {
    return Status::Internal("weigher threw a non-std exception");
  }
}

Status CheckCharge(std::size_t charge, std::size_t max_bytes, std::size_t max_entry_charge) {
  if (charge > max_bytes) {
    return Status::ResourceExhausted("entry charge " + std::to_string(charge) +
                                     " exceeds the whole cache (max_bytes " +
                                     std::to_string(max_bytes) + ")");
  }
  if (charge > kMaxEntryChargeLimit) {
    return Status::ResourceExhausted("entry charge " + std::to_string(charge) +
                                     " exceeds the largest one entry may have (" +
                                     std::to_string(kMaxEntryChargeLimit) + ")");
  }
  if (charge > max_entry_charge) {
    return Status::ResourceExhausted("entry charge " + std::to_string(charge) +
                                     " exceeds one shard's share of max_bytes (" +
                                     std::to_string(max_entry_charge) + ")");
  }
  return Status::Ok();
}

Clock::Duration BaseTtl(const L1Options& o, L1EntryKind kind, Clock::Duration fill_ttl) {
  if (fill_ttl > Clock::Duration::zero()) return fill_ttl;
  switch (kind) {
    case L1EntryKind::kValue: return o.default_ttl;
    case L1EntryKind::kNegative: return o.negative_ttl;
    case L1EntryKind::kTombstone: return o.tombstone_ttl;
  }
  return o.default_ttl;
}

Clock::Duration Jitter(Clock::Duration ttl, double jitter, double u) {
  const double factor = 1.0 + jitter * (2.0 * u - 1.0);
  const auto ns = static_cast<Clock::Duration::rep>(std::llround(static_cast<double>(ttl.count()) * factor));
  return Clock::Duration(ns > 0 ? ns : 1);
}

}  // namespace tiercache::l1
