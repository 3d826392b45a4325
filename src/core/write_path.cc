// Writes: Set (write-through) and Invalidate.
#include "core/cache_impl.h"

namespace tiercache {

using std::chrono::duration_cast;
using std::chrono::nanoseconds;

Status Cache::Impl::Set(std::string_view key, std::string_view payload, std::optional<uint64_t> version,
                        const GetOptions& g) {
  TIERCACHE_RETURN_IF_ERROR(CheckKey(key));
  Result<CallSettings> s = ResolveCallSettings(o_, g);
  if (!s.ok()) return s.status();
  if (payload.size() > o_.max_value_bytes) {
    return Status::InvalidArgument("value of " + std::to_string(payload.size()) + " bytes exceeds max_value_bytes " +
                                   std::to_string(o_.max_value_bytes));
  }
  LoadResult r;
  r.payload = std::string(payload);
  r.version = version;
  Result<CachedValue> v = MakeValue(r, nanoseconds(0), *s);
  if (!v.ok()) return v.status();
  const std::string k(key);
  // Read before the L2 write: a local invalidation that lands between the
  // write and our own bump below must keep the value out of L1.
  const uint64_t local_epoch = local_fence_.Read(k);
  Status l2_status;
  if (o_.l2) {
    FillRequest f;
    f.key = k;
    f.envelope = *v->envelope_;
    f.physical_ttl = duration_cast<milliseconds>(v->expires_at_ - clock_->WallNow()) + s->max_stale + milliseconds(1);
    f.write_through = true;
    f.new_epoch = cache_internal::NewToken();
    const Clock::TimePoint deadline = clock_->Now() + o_.l2_timeout;
    auto write = [&](milliseconds dl) -> Result<FenceOutcome> {
      if (!o_.version_fencing) {  // the demonstration mode: a plain SET
        TIERCACHE_RETURN_IF_ERROR(o_.l2->Put(k, f.envelope, f.physical_ttl, dl));
        return FenceOutcome();
      }
      return o_.l2->Fill({f}, o_.max_load_age, kFenceLifetime, dl)[0];
    };
    Result<FenceOutcome> out = guard_.Run(ShardOf(k), deadline, write);
    if (out.ok() && !out->stored() && RemoveIfCorrupt(k, deadline)) out = guard_.Run(ShardOf(k), deadline, write);
    if (out.ok() && !out->stored()) {
      metrics_->Add(Counter::kRefusedFill, Tier::kL2);
      return Status::Aborted("set of version " + std::to_string(v->version_) + " refused: L2 holds version " +
                             std::to_string(out->stored_version));
    }
    l2_status = out.status();
  }
  // This pod's loads in flight lose to the write; then L1 takes it, unless
  // another local write or invalidation came since local_epoch was read
  // (then whichever of us bumped last decides L1: it must not be us).
  const bool alone = local_fence_.Bump(k) == local_epoch;
  if (l1_) {
    l1_->Erase(k).IgnoreError();
    if (alone) FillL1(k, *v, local_epoch + 1);
  }
  return l2_status;
}

Status Cache::Impl::Invalidate(std::string_view key, std::optional<uint64_t> version) {
  TIERCACHE_RETURN_IF_ERROR(CheckKey(key));
  const uint64_t v = version.value_or(0);
  const std::string k(key);
  Status l2_status;
  if (o_.l2) {
    EnvelopeView e;
    e.kind = EntryKind::kTombstone;
    e.version = v;
    e.written_at = clock_->WallNow();
    e.expires_at = e.written_at + o_.tombstone_ttl;
    Result<std::string> bytes = EncodeEnvelope(e);
    if (!bytes.ok()) return bytes.status();
    InvalidateRequest q{k, std::move(*bytes), o_.tombstone_ttl, cache_internal::NewToken()};
    const Clock::TimePoint deadline = clock_->Now() + o_.l2_timeout;
    auto invalidate = [&](milliseconds dl) { return o_.l2->Invalidate(q, kFenceLifetime, dl); };
    Result<FenceOutcome> r = guard_.Run(ShardOf(k), deadline, invalidate);
    // A corrupt entry with a high version would swallow the invalidation.
    if (r.ok() && !r->stored() && RemoveIfCorrupt(k, deadline)) r = guard_.Run(ShardOf(k), deadline, invalidate);
    l2_status = r.status();  // refused (a newer entry is stored) is success: nothing to invalidate
  }
  // After L2 (see LocalFence): a get that read the old L2 value before the
  // tombstone and fills L1 after this either sees the bump or is erased here.
  local_fence_.Bump(k);
  if (l1_) {
    Status s = v == 0 ? l1_->Erase(k) : l1_->Invalidate(k, v, o_.tombstone_ttl);
    if (!s.ok() && l2_status.ok()) return s;
  }
  return l2_status;
}

}  // namespace tiercache
