#include "core/cache_options.h"

#include <string>

#include "core/circuit_breaker.h"

namespace tiercache {
namespace {

Status Positive(milliseconds v, const char* name) {
  if (v <= milliseconds::zero()) return Status::InvalidArgument(std::string(name) + " must be > 0");
  return Status::Ok();
}

}  // namespace

Status ValidateCacheOptions(const CacheOptions& o) {
  TIERCACHE_RETURN_IF_ERROR(Positive(o.l2_timeout, "l2_timeout"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.ttl, "ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.negative_ttl, "negative_ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.tombstone_ttl, "tombstone_ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.soft_timeout, "soft_timeout"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.hard_timeout, "hard_timeout"));
  if (o.soft_timeout > o.hard_timeout) return Status::InvalidArgument("soft_timeout must be <= hard_timeout");
  if (o.max_stale < milliseconds::zero()) return Status::InvalidArgument("max_stale must be >= 0");
  if (o.max_load_age < o.hard_timeout) return Status::InvalidArgument("max_load_age must be >= hard_timeout");
  if (o.max_load_age > kFenceLifetime / 2) {
    return Status::InvalidArgument("max_load_age must be <= " + std::to_string((kFenceLifetime / 2).count()) +
                                   " ms (half the fence lifetime)");
  }
  if (o.max_hung_loads < 0) return Status::InvalidArgument("max_hung_loads must be >= 0");
  if (!(o.ttl_jitter >= 0 && o.ttl_jitter <= 0.5)) return Status::InvalidArgument("ttl_jitter must be in [0, 0.5]");
  if (!(o.early_refresh_beta >= 0)) return Status::InvalidArgument("early_refresh_beta must be >= 0");
  TIERCACHE_RETURN_IF_ERROR(Positive(o.lease.ttl, "lease.ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.lease.max_wait, "lease.max_wait"));
  TIERCACHE_RETURN_IF_ERROR(Positive(o.lease.poll_min, "lease.poll_min"));
  if (o.lease.poll_max < o.lease.poll_min) return Status::InvalidArgument("lease.poll_max must be >= lease.poll_min");
  TIERCACHE_RETURN_IF_ERROR(
      CircuitBreaker::Validate({o.breaker_failure_threshold, o.breaker_open_duration}));
  if (o.loader_threads < 1 || o.loader_queue < 1) {
    return Status::InvalidArgument("loader_threads and loader_queue must be >= 1");
  }
  if (o.async_threads < 1 || o.async_queue < 1) {
    return Status::InvalidArgument("async_threads and async_queue must be >= 1");
  }
  if (o.max_value_bytes < 1 || o.max_value_bytes > kEnvelopeMaxPayload) {
    return Status::InvalidArgument("max_value_bytes must be in [1, 512 MiB]");
  }
  if (o.use_l1 && o.l1.max_key_bytes == 0) return Status::InvalidArgument("l1.max_key_bytes must be >= 1");
  return Status::Ok();
}

Result<CallSettings> ResolveCallSettings(const CacheOptions& o, const GetOptions& g) {
  CallSettings s{g.ttl.value_or(o.ttl),
                 g.negative_ttl.value_or(o.negative_ttl),
                 g.soft_timeout.value_or(o.soft_timeout),
                 g.hard_timeout.value_or(o.hard_timeout),
                 g.max_stale.value_or(o.max_stale),
                 g.early_refresh_beta.value_or(o.early_refresh_beta),
                 g.group};
  TIERCACHE_RETURN_IF_ERROR(Positive(s.ttl, "ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(s.negative_ttl, "negative_ttl"));
  TIERCACHE_RETURN_IF_ERROR(Positive(s.soft_timeout, "soft_timeout"));
  TIERCACHE_RETURN_IF_ERROR(Positive(s.hard_timeout, "hard_timeout"));
  if (s.max_stale < milliseconds::zero()) return Status::InvalidArgument("max_stale must be >= 0");
  if (!(s.beta >= 0)) return Status::InvalidArgument("early_refresh_beta must be >= 0");
  if (s.soft_timeout > s.hard_timeout) s.soft_timeout = s.hard_timeout;
  if (!s.group.empty()) {
    TIERCACHE_RETURN_IF_ERROR(CheckGroupName(s.group));
    if (!o.l2) return Status::FailedPrecondition("groups need an L2 (the group's generation lives there)");
  }
  return s;
}

}  // namespace tiercache
