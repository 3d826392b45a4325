// The read path: L1, then L2, and what L2's bytes mean.
#include "core/cache_impl.h"
#include "core/envelope_internal.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

// What FillL1 records in L1Fill::user_data for a value envelope, so that an
// L1 hit reads neither the envelope's header nor its checks again: a mark
// (bit 63), the payload's offset (bits 48..55) and the logical expiry in
// Unix milliseconds (bits 0..47). 0 (nothing recorded: a value too odd to
// describe, or bytes Set through l1()) sends the hit to the checked peek.
constexpr uint64_t kL1Described = uint64_t{1} << 63;
constexpr uint64_t kL1ExpiryMask = (uint64_t{1} << 48) - 1;

uint64_t DescribeForL1(size_t payload_offset, WallTime expires_at) {
  const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(expires_at.time_since_epoch()).count();
  if (payload_offset > 0xFF || ms < 0 || static_cast<uint64_t>(ms) > kL1ExpiryMask) return 0;
  return kL1Described | (uint64_t{payload_offset} << 48) | static_cast<uint64_t>(ms);
}

// The payload and expiry a DescribeForL1() `user_data` records for `bytes`;
// false for bytes too short for the offset it names (the payload is then
// still in bounds: never past the trailer).
// (Written straight into the caller's fields: a struct filled field by field
// and then copied whole stalls on store forwarding, on every hit.)
bool ReadL1Description(uint64_t user_data, const std::string& bytes, std::string_view* payload,
                       WallTime* expires_at) {
  const size_t offset = (user_data >> 48) & 0xFF;
  const size_t size = bytes.size();
  if (size < offset + kEnvelopeTrailerSize) return false;
  *payload = std::string_view(bytes.data() + offset, size - offset - kEnvelopeTrailerSize);
  constexpr int64_t kMaxMs =
      std::chrono::duration_cast<std::chrono::milliseconds>(WallTime::duration::max()).count();
  const int64_t ms = std::min(static_cast<int64_t>(user_data & kL1ExpiryMask), kMaxMs);
  *expires_at = WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds(ms)));
  return true;
}

}  // namespace

using std::chrono::duration_cast;
using std::chrono::nanoseconds;
using cache_internal::L2Read;

Status Cache::Impl::CheckKey(std::string_view key) const {
  if (key.empty()) return Status::InvalidArgument("empty key");
  if (key.size() > o_.l1.max_key_bytes) {
    return Status::InvalidArgument("key of " + std::to_string(key.size()) + " bytes exceeds max_key_bytes " +
                                   std::to_string(o_.l1.max_key_bytes));
  }
  if (IsCompanionKeyName(key)) {
    return Status::InvalidArgument("key '" + std::string(key) +
                                   "' has the shape of a lease or fence key (\":lease\" / \":fence\"), which the "
                                   "cache keeps beside every key");
  }
  return Status::Ok();
}

Status Cache::Impl::CheckMember(std::string_view key, const CallSettings& s) const {
  if (s.group.empty() || redis::KeySlot(key) == redis::KeySlot(s.group)) return Status::Ok();
  return Status::InvalidArgument("key '" + std::string(key) + "' is not in the hash slot of its group '" + s.group +
                                 "': give it the group's hash tag");
}

Result<std::optional<CachedValue>> Cache::Impl::FromEnvelope(std::shared_ptr<const std::string>&& bytes,
                                                             ValueSource source, bool verify) const {
  // Decoded into a local view and written field by field into the one
  // Result returned (no whole-struct copies of fields just written: they
  // stall on store forwarding, once per value of a GetMany).
  Result<std::optional<CachedValue>> out{std::optional<CachedValue>()};
  EnvelopeView e;
  Status bad = envelope_internal::DecodeEnvelopeInto(*bytes, verify, &e);
  if (bad.ok() && e.kind == EntryKind::kValue && e.codec_id != o_.codec_id) {
    bad = Status::DataLoss("payload written by codec " + std::to_string(e.codec_id) + ", this cache uses " +
                           std::to_string(o_.codec_id));
  }
  if (!bad.ok()) {
    out = Result<std::optional<CachedValue>>(std::move(bad));
  } else if (e.kind != EntryKind::kTombstone) {  // a tombstone: nullopt
    CachedValue& v = out->emplace();
    v.found_ = e.kind == EntryKind::kValue;
    v.payload_ = v.found_ ? e.payload : std::string_view();
    v.version_ = e.version;
    v.expires_at_ = e.expires_at;
    v.load_duration_ = e.load_duration;
    v.group_generation_ = e.grouped ? e.group_generation : 0;
    v.source_ = source;
    v.envelope_ = std::move(bytes);
  }
  return out;
}

std::optional<CachedValue> Cache::Impl::ReadL1(std::string_view key, const CallSettings& s,
                                               std::optional<CachedValue>* stale) {
  if (!l1_ || !l1_trusted_.load(std::memory_order_acquire)) return std::nullopt;  // as ReadL1Into: a miss
  CachedValue v;
  switch (ReadL1Into(key, s, &v)) {
    case L1Read::kFresh: return v;
    case L1Read::kStale: *stale = std::move(v); break;
    case L1Read::kMiss: break;
  }
  return std::nullopt;
}

// Inline (only this file calls it): the hit path's body.
[[gnu::always_inline]] inline Cache::Impl::L1Read Cache::Impl::ReadL1Into(std::string_view key,
                                                                         const CallSettings& s,
                                                                         CachedValue* out, L1Seen* seen) {
  if (!l1_ || !l1_trusted_.load(std::memory_order_acquire)) return L1Read::kMiss;
  L1Entry e;
  if (l1_->GetStaleInto(key, s.max_stale, &e) == L1Cache::Read::kMiss) {
    metrics_->Add(Counter::kMiss, Tier::kL1);
    return L1Read::kMiss;
  }
  // A group member is served only in its group, at a generation this pod has
  // not seen the group move past; an entry outside any group only outside.
  if ((!s.group.empty() || e.tag != 0) && (s.group.empty() || e.tag == 0 || !groups_.Accepts(s.group, e.tag))) {
    metrics_->Add(Counter::kMiss, Tier::kL1);
    return L1Read::kMiss;  // not even stale: the group was invalidated
  }
  CachedValue& v = *out;
  v.version_ = e.version;
  v.group_generation_ = e.tag;
  v.source_ = ValueSource::kL1;
  if (e.kind == L1EntryKind::kValue) {
    // Every value the cache puts in L1 is an envelope of its codec that
    // FromEnvelope accepted (FillL1), stored with its version, δ, group
    // generation and, in user_data, its payload offset and logical expiry:
    // the hit reads none of the envelope's bytes. Without that description
    // (bytes written through l1()) it peeks, and bytes that fail the peek's
    // checks are a miss.
    if ((e.user_data & kL1Described) != 0) {
      if (!ReadL1Description(e.user_data, *e.value, &v.payload_, &v.expires_at_)) {
        metrics_->Add(Counter::kMiss, Tier::kL1);
        return L1Read::kMiss;
      }
      if (seen != nullptr) *seen = L1Seen{e.expiry, e.read_at};  // described: one of FillL1's copies
    } else {
      DecodedEnvelopeFields f;
      if (!PeekDecodedEnvelope(*e.value, o_.codec_id, &f)) {
        metrics_->Add(Counter::kMiss, Tier::kL1);
        return L1Read::kMiss;
      }
      v.payload_ = f.payload;
      v.expires_at_ = f.expires_at;
    }
    v.found_ = true;
    v.load_duration_ = duration_cast<std::chrono::microseconds>(e.load_duration);
    v.envelope_ = std::move(e.value);  // moved, not copied: one reference count less per hit
  }
  if (e.stale) {  // past its expiry at the lookup (GetStale)
    metrics_->Add(Counter::kMiss, Tier::kL1);
    v.stale_ = true;
    return L1Read::kStale;
  }
  if (metrics_on_) metrics_->Add(v.found_ ? Counter::kHit : Counter::kNegativeHit, Tier::kL1);
  return L1Read::kFresh;
}

// ---- the entry points: Get ----------------------------------------------------
// Here, with ReadL1Into, so that the hit path compiles into one function.

Result<CachedValue> Cache::Impl::Get(std::string_view key, const Loader& loader, const GetOptions& g) {
  TIERCACHE_RETURN_IF_ERROR(CheckKey(key));  // before the options, as always
  CallSettings storage;
  Result<const CallSettings*> resolved = Settings(g, &storage);
  if (!resolved.ok()) return resolved.status();
  const CallSettings& s = **resolved;
  if (!PassesChecksFast(key, s)) TIERCACHE_RETURN_IF_ERROR(CheckMember(key, s));
  return GetWith(key, loader, s);
}

[[gnu::always_inline]] inline Result<CachedValue> Cache::Impl::Get(std::string_view key, const Loader& loader) {
  const CallSettings& s = default_settings_;
  if (!PassesChecksFast(key, s)) [[unlikely]] {
    TIERCACHE_RETURN_IF_ERROR(CheckKey(key));
    TIERCACHE_RETURN_IF_ERROR(CheckMember(key, s));
  }
  return GetWith(key, loader, s);
}

// Both Get()s, once the key and settings passed their checks. The hit path
// builds the one Result returned in place (one return object: GCC then
// constructs it in the caller's slot) and reads no clock beyond the L1
// lookup's when the value is far from its early-refresh window.
[[gnu::always_inline]] inline Result<CachedValue> Cache::Impl::GetWith(std::string_view key, const Loader& loader,
                                                                       const CallSettings& s) {
  Result<CachedValue> out{CachedValue()};
  CachedValue& v = *out;
  L1Seen seen;
  const L1Read read = ReadL1Into(key, s, &v, &seen);
  if (read == L1Read::kFresh) [[likely]] {
    if (!FarFromEarlyRefresh(seen, v, s)) MaybeRefreshEarly(key, v, loader, s);
  } else {
    out = GetAfterL1(key, loader, s, read == L1Read::kStale ? &v : nullptr);
  }
  return out;
}

Result<CachedValue> Cache::Impl::GetAfterL1(std::string_view key, const Loader& loader, const CallSettings& s,
                                            CachedValue* l1_stale) {
  std::optional<CachedValue> stale;
  if (l1_stale != nullptr) stale = std::move(*l1_stale);
  const Clock::TimePoint start = clock_->Now();
  return AfterL1Miss(Call{std::string(key), loader, s, start, start + s.hard_timeout}, std::move(stale));
}

Result<CachedValue> Cache::Get(std::string_view key, const Loader& loader, const GetOptions& options) {
  return impl_->Get(key, loader, options);
}

Result<CachedValue> Cache::Get(std::string_view key, const Loader& loader) { return impl_->Get(key, loader); }

L2Read Cache::Impl::ReadL2(std::string_view key, const CallSettings& s, Clock::TimePoint deadline,
                           uint64_t local_epoch) {
  if (!o_.l2) return L2Read();
  if (!s.group.empty()) {  // the member and its group's generation, one round trip
    Result<GroupRead> r = guard_.Run(ShardOf(key), deadline, [&](milliseconds dl) {
      return o_.l2->GetInGroup({std::string(key)}, s.group, dl);
    });
    if (!r.ok() || r->values.size() != 1) return L2Read();
    return Interpret(key, std::move(r->values[0]), r->generation, s, local_epoch);
  }
  Result<std::optional<std::string>> r =
      guard_.Run(ShardOf(key), deadline, [&](milliseconds dl) { return o_.l2->Get(key, dl); });
  if (!r.ok()) return L2Read();
  return Interpret(key, std::move(*r), std::nullopt, s, local_epoch);
}

L2Read Cache::Impl::Interpret(std::string_view key, std::optional<std::string>&& raw,
                              std::optional<uint64_t> group_generation, const CallSettings& s, uint64_t local_epoch,
                              bool count_misses, const WallTime* now_taken) {
  L2Read out;
  out.ok = true;
  out.group_generation = group_generation;
  const uint64_t miss = count_misses ? 1 : 0;
  if (!raw) {
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    return out;
  }
  auto bytes = std::make_shared<const std::string>(std::move(*raw));
  // The bytes live on in `bytes`, or in the value built over them (then
  // only that value's path below follows): FromEnvelope moves `bytes` into
  // a value it returns, and leaves it otherwise.
  const std::string& held = *bytes;
  Result<std::optional<CachedValue>> v = FromEnvelope(std::move(bytes), ValueSource::kL2, /*verify=*/true);
  if (!v.ok()) {
    metrics_->Add(Counter::kDecodeError, Tier::kL2, miss);  // a miss; the next fill overwrites it
    if (!DecodeEnvelope(held).ok() && DecodeEnvelope(held, /*verify_checksum=*/false).ok()) {
      out.corrupt = held;  // well-formed but for its CRC: it would fence (l2_store.h)
    }
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    return out;
  }
  if (!v->has_value()) {  // a tombstone: this pod's L1 drops what it supersedes
    Result<EnvelopeView> e = DecodeEnvelope(held, /*verify_checksum=*/false);
    out.tombstone = e.ok() ? e->version : 0;
    if (l1_) {
      if (*out.tombstone == 0) {
        l1_->Erase(key).IgnoreError();
      } else {
        l1_->Invalidate(key, *out.tombstone, o_.tombstone_ttl).IgnoreError();
      }
    }
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    return out;
  }
  CachedValue& got = **v;
  if ((!s.group.empty() || got.group_generation_ != 0) &&
      (s.group.empty() || !group_generation || got.group_generation_ != *group_generation)) {
    // Filled under an earlier generation of its group (invalidated with
    // it), or stored in a group this get does not name, or the reverse:
    // not current, not even as a stale copy.
    out.not_current = true;
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    return out;
  }
  out.newest = got.version_;
  if (BehindLocal(key, got, s)) {
    // This pod has seen an invalidation L2 has not applied (or lost): a
    // miss, not even a stale copy; the load's fill passes over it.
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    metrics_->Add(Counter::kL2BehindLocal, Tier::kL2, miss);
    return out;
  }
  // A caller interpreting many values of one read (GetMany) reads the clock
  // once, after the reply arrived: every value is judged at that instant.
  const WallTime now = now_taken ? *now_taken : clock_->WallNow();
  if (now < got.expires_at_) {
    metrics_->Add(got.found_ ? Counter::kHit : Counter::kNegativeHit, Tier::kL2);
    FillL1(key, got, s, local_epoch);
    out.fresh = std::move(got);
  } else {
    metrics_->Add(Counter::kMiss, Tier::kL2, miss);
    if (now - got.expires_at_ <= s.max_stale) {
      got.stale_ = true;
      out.stale = std::move(got);
    }
  }
  return out;
}

bool Cache::Impl::BehindLocal(std::string_view key, const CachedValue& v, const CallSettings& s) const {
  // Keys: below the version of a local invalidation still remembered. An
  // unversioned entry (0) is below every versioned one (as in L2's fill
  // rules: an unversioned value never replaces a versioned entry).
  const uint64_t floor = seen_.Floor(key, *clock_);
  if (floor != 0 && v.version_ < floor) return true;
  // Group members: the same-MGET check (Interpret) proved v is at L2's
  // current generation; this pod may know that generation is behind.
  return !s.group.empty() && !groups_.ServesFromL2(s.group, v.group_generation_, clock_->Now());
}

std::optional<CachedValue> Cache::Impl::BestStale(std::optional<CachedValue> mine, L2Read& read) {
  // L2 answered and holds nothing for the key: the copy's L2 entry, which
  // outlives it by max_stale, is gone (a tombstone expired, an eviction):
  // it cannot be shown current, so it is not served.
  if (mine && read.ok && !read.newest && !read.tombstone && !read.corrupt) mine.reset();
  if (mine && read.tombstone) {
    const uint64_t t = *read.tombstone;
    // Invalidated: the tombstone is the newest write of the key, so a copy
    // of its version or below predates it (an unversioned invalidation
    // tombstones at the version it found; a versioned one at v never
    // replaces an entry of version v).
    if (t == 0 || mine->version_ <= t) mine.reset();
  }
  if (mine && read.newest && mine->version_ < *read.newest) mine.reset();  // superseded
  // A group member: only while L2 shows its group still at its generation.
  if (mine && read.ok && mine->group_generation_ != 0 &&
      (!read.group_generation || *read.group_generation != mine->group_generation_)) {
    mine.reset();
  }
  if (read.stale && (!mine || read.stale->version_ >= mine->version_)) return std::move(read.stale);
  return mine;
}

void Cache::Impl::FillL1(std::string_view key, const CachedValue& v, const CallSettings& s, uint64_t local_epoch) {
  if (!l1_ || !l1_trusted_.load(std::memory_order_acquire)) return;
  const auto left = v.expires_at_ - clock_->WallNow();
  if (left <= WallTime::duration::zero()) return;
  L1Fill fill;
  fill.version = v.version_;
  fill.not_after = clock_->Now() + duration_cast<nanoseconds>(left);
  fill.load_duration = v.load_duration_;
  fill.tag = v.group_generation_;
  if (v.found_) {
    // payload_ views envelope_'s bytes (FromEnvelope); checked, not assumed.
    const auto base = reinterpret_cast<uintptr_t>(v.envelope_->data());
    const auto payload = reinterpret_cast<uintptr_t>(v.payload_.data());
    if (payload >= base && payload - base + v.payload_.size() + kEnvelopeTrailerSize == v.envelope_->size()) {
      fill.user_data = DescribeForL1(payload - base, v.expires_at_);
    }
  }
  Status stored = v.found_ ? l1_->Set(key, v.envelope_, fill) : l1_->SetNegative(key, fill);
  if (stored.IsAborted()) metrics_->Add(Counter::kRefusedFill, Tier::kL1);
  // Other L1 errors (too large) only mean it is not cached there.
  if (stored.ok() && LocalEpoch(key, s) != local_epoch) {
    l1_->Erase(key).IgnoreError();  // a local invalidation raced this fill: it wins
    metrics_->Add(Counter::kRefusedFill, Tier::kL1);
  }
}

Result<CachedValue> Cache::Impl::ServeStale(const CachedValue& v) {
  metrics_->Add(Counter::kStaleServe, v.source_ == ValueSource::kL1 ? Tier::kL1 : Tier::kL2);
  return v;
}

}  // namespace tiercache
