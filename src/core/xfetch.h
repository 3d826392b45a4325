// Probabilistic early refresh ("XFetch", Vattani, Chierichetti, Lowenstein:
// "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015).
//
// A reader refreshes a still-fresh value early when
//     now − δ · β · ln(u) ≥ expiry,     u uniform in (0, 1]
// where δ is how long the value took to load and β ≥ 0 tunes eagerness
// (1 is optimal in the paper; > 1 refreshes earlier, 0 never early). Readers
// spread their decisions so that, with a lease, about one of them reloads just
// before expiry, instead of all of them at expiry.
#ifndef TIERCACHE_CORE_XFETCH_H_
#define TIERCACHE_CORE_XFETCH_H_

#include <chrono>
#include <cmath>

namespace tiercache {

// `u` must be in (0, 1]; the caller draws it (so tests can fix it).
template <typename TimePoint>
bool XFetchShouldRefresh(TimePoint now, TimePoint expiry, std::chrono::nanoseconds delta, double beta, double u) {
  if (now >= expiry) return true;
  if (beta <= 0 || delta <= std::chrono::nanoseconds::zero() || u <= 0) return false;
  const double gap_ns = -static_cast<double>(delta.count()) * beta * std::log(u);
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(expiry - now).count()) <= gap_ns;
}

}  // namespace tiercache

#endif  // TIERCACHE_CORE_XFETCH_H_
