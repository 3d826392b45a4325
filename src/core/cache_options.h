// Validation of CacheOptions and the per-call settings a get runs with.
#ifndef TIERCACHE_CORE_CACHE_OPTIONS_H_
#define TIERCACHE_CORE_CACHE_OPTIONS_H_

#include "tiercache/cache.h"

namespace tiercache {

// The effective settings of one call: the cache's options with the call's
// overrides applied.
struct CallSettings {
  milliseconds ttl;
  milliseconds negative_ttl;
  milliseconds soft_timeout;
  milliseconds hard_timeout;
  milliseconds max_stale;
  double beta;
  std::string group;  // GetOptions::group; empty: none
};

// kOk, or kInvalidArgument naming the first offending field.
Status ValidateCacheOptions(const CacheOptions& o);

// Applies `g` to `o`. Errors: kInvalidArgument for a nonsensical override.
Result<CallSettings> ResolveCallSettings(const CacheOptions& o, const GetOptions& g);

}  // namespace tiercache

#endif  // TIERCACHE_CORE_CACHE_OPTIONS_H_
