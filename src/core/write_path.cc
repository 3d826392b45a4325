// Writes: Set (write-through) and Invalidate.
#include <map>

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
  TIERCACHE_RETURN_IF_ERROR(CheckMember(key, *s));
  const std::string k(key);
  std::optional<uint64_t> generation;  // a group member is written at its group's generation
  if (!s->group.empty()) {
    Result<std::vector<FenceSnapshot>> snap =
        guard_.Run(ShardOf(k), clock_->Now() + o_.l2_timeout,
                   [&](milliseconds dl) { return o_.l2->SnapshotInGroup({k}, s->group, dl); });
    if (!snap.ok()) return snap.status();
    if (snap->size() != 1 || !(*snap)[0].group_generation) return Status::Internal("SnapshotInGroup: no generation");
    generation = (*snap)[0].group_generation;
  }
  LoadResult r;
  r.payload = std::string(payload);
  r.version = version;
  Result<CachedValue> v = MakeValue(r, nanoseconds(0), *s, generation);
  if (!v.ok()) return v.status();
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
    f.group = s->group;
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
      if (out->verdict == FillVerdict::kInvalidated) {
        return Status::Aborted("set of '" + k + "' refused: its group '" + s->group + "' was invalidated meanwhile");
      }
      // Below what is stored, or the key's floor, or the group's floor.
      return Status::Aborted("set of version " + std::to_string(v->version_) + " refused: L2 holds version " +
                             std::to_string(out->stored_version) + (s->group.empty() ? "" : " (or its group's floor)"));
    }
    l2_status = out.status();
  }
  // This pod's loads in flight lose to the write; then L1 takes it, unless
  // another local write or invalidation came since local_epoch was read
  // (then whichever of us bumped last decides L1: it must not be us).
  const bool alone = local_fence_.Bump(k) == local_epoch;
  if (l1_) {
    l1_->Erase(k).IgnoreError();
    // A group member is left to the next read: its fill would also have to
    // race the group's local fence.
    if (alone && s->group.empty()) FillL1(k, *v, *s, local_epoch + 1);
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
  // Whatever L2 did (it may lose the tombstone in a failover): L2 reads
  // below `v` are not served here for tombstone_ttl.
  if (v != 0) seen_.Note(k, v, clock_->Now());
  // After L2 (see LocalFence): a get that read the old L2 value before the
  // tombstone and fills L1 after this either sees the bump or is erased here.
  local_fence_.Bump(k);
  if (l1_) {
    Status s = v == 0 ? l1_->Erase(k) : l1_->Invalidate(k, v, o_.tombstone_ttl);
    if (!s.ok() && l2_status.ok()) return s;
  }
  return l2_status;
}

Result<uint64_t> Cache::Impl::InvalidateGroup(std::string_view group, std::optional<uint64_t> version) {
  std::vector<uint64_t> generation;
  std::vector<Result<Cache::InvalidationResult>> r =
      InvalidateMany({Cache::Invalidation{std::string(group), version.value_or(0), true, ""}}, &generation);
  if (!r[0].ok()) return r[0].status();
  return generation[0];
}

std::vector<Result<Cache::InvalidationResult>> Cache::Impl::InvalidateMany(
    const std::vector<Cache::Invalidation>& list, std::vector<uint64_t>* generations) {
  using R = Cache::InvalidationResult;
  std::vector<Result<R>> out(list.size(), R::kApplied);
  std::vector<uint64_t> gen(list.size(), 0);  // a group's new (or current) generation
  std::vector<uint64_t> move(list.size(), 0);  // a group's move number (GroupTable)
  std::vector<InvalidateRequest> requests;
  std::vector<size_t> index;  // requests[j] is list[index[j]]
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].group) {
      if (Status bad = CheckGroupName(list[i].key); !bad.ok()) {
        out[i] = bad;
      } else if (!o_.l2) {
        out[i] = Status::FailedPrecondition("groups need an L2 (the group's generation lives there)");
      } else {
        InvalidateRequest q;
        q.key = list[i].key;
        q.group = true;
        q.event_id = list[i].event_id;
        q.group_floor = list[i].version;  // 0: the floor stays
        move[i] = groups_.BeginMove();
        requests.push_back(std::move(q));
        index.push_back(i);
      }
      continue;
    }
    if (Status bad = CheckKey(list[i].key); !bad.ok()) {
      out[i] = bad;
      continue;
    }
    if (!o_.l2) continue;
    EnvelopeView e;
    e.kind = EntryKind::kTombstone;
    e.version = list[i].version;
    e.written_at = clock_->WallNow();
    e.expires_at = e.written_at + o_.tombstone_ttl;
    Result<std::string> bytes = EncodeEnvelope(e);
    if (!bytes.ok()) {
      out[i] = bytes.status();
      continue;
    }
    requests.push_back(InvalidateRequest{list[i].key, std::move(*bytes), o_.tombstone_ttl, cache_internal::NewToken()});
    index.push_back(i);
  }
  const Clock::TimePoint deadline = clock_->Now() + o_.l2_timeout;
  // Sends `which` (indexes into requests) through the per-shard breakers.
  auto send = [&](const std::vector<size_t>& which) {
    std::vector<InvalidateRequest> sent;
    std::vector<size_t> sent_idx;
    std::map<int, bool> allowed;
    for (size_t j : which) {
      const int shard = ShardOf(requests[j].key);
      auto it = allowed.find(shard);
      if (it == allowed.end()) it = allowed.emplace(shard, guard_.Allow(shard)).first;
      if (!it->second) {
        out[index[j]] = Status::Unavailable("L2 circuit breaker open for shard " + std::to_string(shard));
        continue;
      }
      sent.push_back(requests[j]);
      sent_idx.push_back(j);
    }
    if (sent.empty()) return std::vector<size_t>();
    const milliseconds left = duration_cast<milliseconds>(deadline - clock_->Now());
    std::vector<Result<FenceOutcome>> got =
        o_.l2->InvalidateMany(sent, kFenceLifetime, std::max(left, milliseconds(1)));
    std::map<int, Status> worst;  // one outcome per shard for its breaker
    std::vector<size_t> ignored;
    for (size_t a = 0; a < sent.size(); ++a) {
      const size_t j = sent_idx[a];
      const int shard = ShardOf(requests[j].key);
      auto [w, added] = worst.emplace(shard, got[a].status());
      if (!added && w->second.ok() && !got[a].ok()) w->second = got[a].status();
      if (!got[a].ok()) {
        out[index[j]] = got[a].status();
      } else if (got[a]->stored()) {
        out[index[j]] = R::kApplied;
        gen[index[j]] = got[a]->stored_version;
      } else if (requests[j].group) {  // its event had moved it already: the current generation
        out[index[j]] = R::kIgnored;
        gen[index[j]] = got[a]->stored_version;
      } else {
        out[index[j]] = R::kIgnored;
        ignored.push_back(j);
      }
    }
    for (const auto& [shard, st] : worst) {
      if (allowed[shard]) guard_.Record(shard, st);
    }
    return ignored;
  };
  std::vector<size_t> all(requests.size());
  for (size_t j = 0; j < all.size(); ++j) all[j] = j;
  const std::vector<size_t> ignored = send(all);
  // A CRC-corrupt entry with a high version would swallow an invalidation:
  // remove such entries and apply those invalidations again.
  if (!ignored.empty()) {
    std::vector<std::string> keys;
    for (size_t j : ignored) keys.push_back(requests[j].key);
    const milliseconds left = duration_cast<milliseconds>(deadline - clock_->Now());
    std::vector<Result<std::optional<std::string>>> raw = o_.l2->GetMany(keys, std::max(left, milliseconds(1)));
    std::vector<size_t> again;
    for (size_t a = 0; a < ignored.size(); ++a) {
      if (!raw[a].ok() || !raw[a]->has_value()) continue;
      const std::string& bytes = **raw[a];
      if (DecodeEnvelope(bytes).ok() || !DecodeEnvelope(bytes, /*verify_checksum=*/false).ok()) continue;
      metrics_->Add(Counter::kDecodeError, Tier::kL2);
      Result<bool> removed = guard_.Run(ShardOf(keys[a]), deadline, [&](milliseconds dl) {
        return o_.l2->RemoveCorrupt(keys[a], bytes, dl);
      });
      if (removed.ok() && *removed) again.push_back(ignored[a]);
    }
    if (!again.empty()) send(again);
  }
  // This pod: after L2, as Invalidate.
  for (size_t i = 0; i < list.size(); ++i) {
    if (!out[i].ok() && (out[i].status().IsInvalidArgument() || out[i].status().code() == StatusCode::kFailedPrecondition)) {
      continue;
    }
    if (list[i].group) {
      // L1 members below the new generation are not served from now on; if
      // it is unknown, none is until a later invalidation of the group.
      // L2 reads of its members respect the same for tombstone_ttl (L2 may
      // not have applied the move, or lose it in a failover).
      const Clock::TimePoint until = clock_->Now() + o_.tombstone_ttl;
      auto record = [&] {
        return out[i].ok() ? groups_.Raise(list[i].key, gen[i], move[i], until)
                           : groups_.Poison(list[i].key, move[i], until);
      };
      if (!record()) {
        // The table is full: empty L1 (fills in flight erase themselves)
        // while the old bounds still hold, then forget them.
        local_fence_.BumpAll();
        if (l1_) l1_->Clear();
        groups_.Reset();
        record();
      }
      // Gets that start from now on neither join a flight or load of a
      // member begun before, nor keep an L1 fill of one (LocalEpoch).
      local_fence_.Bump(list[i].key);
      continue;
    }
    if (list[i].version != 0) seen_.Note(list[i].key, list[i].version, clock_->Now());  // as Invalidate
    local_fence_.Bump(list[i].key);
    if (l1_) {
      Status s = list[i].version == 0 ? l1_->Erase(list[i].key)
                                      : l1_->Invalidate(list[i].key, list[i].version, o_.tombstone_ttl);
      if (!s.ok() && out[i].ok()) out[i] = s;
    }
  }
  if (generations != nullptr) *generations = std::move(gen);
  return out;
}

Status Cache::Impl::InvalidateLocal(std::string_view key, uint64_t version) {
  TIERCACHE_RETURN_IF_ERROR(CheckKey(key));
  // L2 may not have applied this invalidation yet (or lose it): its values
  // below `version` are not served here for tombstone_ttl (SeenVersions).
  if (version != 0) seen_.Note(key, version, clock_->Now());
  local_fence_.Bump(key);  // loads in flight here do not fill L1 (LocalFence)
  if (!l1_) return Status::Ok();
  // Versioned: an L1 tombstone refuses fills below `version`, also from an L2
  // that has not applied this invalidation yet.
  return version == 0 ? l1_->Erase(key) : l1_->Invalidate(key, version, o_.tombstone_ttl);
}

void Cache::Impl::FenceL1(bool drop) {
  l1_trusted_.store(false, std::memory_order_release);  // no reads or fills from now on
  if (!drop) return;
  local_fence_.BumpAll();  // fills in flight erase what they store
  if (l1_) l1_->Clear();
}

}  // namespace tiercache
