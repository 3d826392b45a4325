// The load path: everything after an L1 miss.
//
//   AfterL1Miss  single-flight per key and call settings
//   Fetch        L2 read; a fresh value ends here
//   LoadUnderLease  take the lease (which snapshots the fence) or wait for its
//                holder; serve stale meanwhile
//   Load         join the key's running load or start one (LoadRegistry),
//                then wait with the soft/hard timeouts
//   LoadAndFill  (loader thread) the loader, then the fenced fill
#include <algorithm>
#include <random>
#include <thread>

#include "core/cache_impl.h"

namespace tiercache {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::nanoseconds;
using cache_internal::FillResult;
using cache_internal::L2Read;
using cache_internal::LoadTicket;
using cache_internal::NewToken;
using cache_internal::SafeLoad;

namespace {

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

// The single-flight key: callers share a flight only with the same settings,
// so nobody gets a result shaped by another caller's options.
// And never across a local invalidation: a get that starts after this pod's
// Invalidate returned must not receive a flight that began before it.
std::string FlightKey(const std::string& key, const CallSettings& s, uint64_t local_epoch) {
  std::string k = key;
  k.push_back('\0');
  k.append(std::to_string(local_epoch)).push_back(',');
  for (int64_t v : {s.ttl.count(), s.negative_ttl.count(), s.soft_timeout.count(), s.hard_timeout.count(),
                    s.max_stale.count(), static_cast<int64_t>(s.beta * 1e6)}) {
    k.append(std::to_string(v)).push_back(',');
  }
  k.append(s.group);
  return k;
}

}  // namespace

std::string cache_internal::NewToken() {
  static const char* kHex = "0123456789abcdef";
  std::string t(32, '0');
  uint64_t a = Rng()(), b = Rng()();
  for (int i = 0; i < 16; ++i) {
    t[i] = kHex[(a >> (4 * i)) & 15];
    t[16 + i] = kHex[(b >> (4 * i)) & 15];
  }
  return t;
}

Result<CachedValue> Cache::Impl::AfterL1Miss(Call call, std::optional<CachedValue> stale) {
  const Clock::TimePoint deadline = call.deadline;
  const std::string flight = FlightKey(call.key, call.settings, LocalEpoch(call.key, call.settings));
  return flights_.Do(flight, deadline, [&] { return Fetch(call, std::move(stale)); });
}

Result<CachedValue> Cache::Impl::Fetch(const Call& call, std::optional<CachedValue> stale) {
  const uint64_t local_epoch = LocalEpoch(call.key, call.settings);
  L2Read read = ReadL2(call.key, call.settings, call.deadline, local_epoch);
  if (read.fresh) {
    MaybeRefreshEarly(call.key, *read.fresh, call.loader, call.settings);
    return std::move(*read.fresh);
  }
  stale = BestStale(std::move(stale), read);
  if (o_.l2 && !read.ok) {  // this key's shard is unreachable: load, cache nowhere
    LoadTicket ticket;
    ticket.local_epoch = local_epoch;
    ticket.taken = clock_->Now();
    return Load(call, std::move(stale), std::move(ticket));
  }
  return LoadUnderLease(call, std::move(stale), local_epoch);
}

Result<CachedValue> Cache::Impl::LoadUnderLease(const Call& call, std::optional<CachedValue> stale,
                                                uint64_t local_epoch) {
  LoadTicket ticket;
  ticket.local_epoch = local_epoch;
  if (!o_.l2) {
    ticket.l2_absent = true;
    ticket.taken = clock_->Now();
    return Load(call, std::move(stale), std::move(ticket));
  }
  const std::string token = NewToken();
  const Clock::TimePoint wait_until = std::min(call.deadline, call.start + o_.lease.max_wait);
  milliseconds backoff = o_.lease.poll_min;
  bool counted_wait = false;
  for (;;) {
    ticket.taken = clock_->Now();
    Result<LeaseOutcome> lease = AcquireLease(call, token);
    if (!lease.ok()) {
      if (clock_->Now() + milliseconds(1) > call.deadline) {
        // Not the shard: the call's own time ran out (the guard needs 1 ms).
        // Loading now would start a load nobody waits for and that no lease
        // or fence covers.
        if (counted_wait) metrics_->Add(Counter::kLeaseWaitTimeout, Tier::kL2);
        if (stale) return ServeStale(*stale);
        return Status::DeadlineExceeded("no time left to take the lease of '" + call.key + "'");
      }
      // The shard failed: waiting on it would only cost max_wait. Load
      // without the fence; the result is served, not cached.
      ticket.has_fence = false;
      return Load(call, std::move(stale), std::move(ticket));
    }
    ticket.fence = std::move(lease->fence);
    ticket.has_fence = true;
    L2Read now = Interpret(call.key, std::move(lease->value), ticket.fence.group_generation, call.settings,
                           local_epoch, /*count_misses=*/false);
    if (now.fresh) {  // a load finished meanwhile: use it, free the lease if we took it
      if (lease->won) ReleaseLease(call.key, token);
      return std::move(*now.fresh);
    }
    if (now.corrupt) {  // it would fence every fill: remove it (only if unchanged)
      guard_.Run(ShardOf(call.key), call.deadline, [&](milliseconds dl) {
        return o_.l2->RemoveCorrupt(call.key, *now.corrupt, dl);
      }).status().IgnoreError();
    }
    stale = BestStale(std::move(stale), now);
    if (lease->won) {
      metrics_->Add(Counter::kLeaseWon, Tier::kL2);
      ticket.lease_token = token;
      return Load(call, std::move(stale), std::move(ticket));
    }
    if (!counted_wait) {
      metrics_->Add(Counter::kLeaseWait, Tier::kL2);
      counted_wait = true;
    }
    if (stale) return ServeStale(*stale);  // stale-while-revalidate: the holder refreshes
    const Clock::TimePoint t = clock_->Now();
    if (t >= wait_until) {
      metrics_->Add(Counter::kLeaseWaitTimeout, Tier::kL2);
      if (o_.lease.on_wait_timeout == LeaseWaitTimeoutAction::kLoad && t < call.deadline) {
        return Load(call, std::move(stale), std::move(ticket));  // fenced by the last snapshot
      }
      return Status::DeadlineExceeded("waited for another pod's load of '" + call.key + "' past the lease wait");
    }
    // Wake before the wait ends, so the last poll still has time for its
    // L2 call (the guard refuses a call with under 1 ms left).
    const nanoseconds until_end = wait_until - t - milliseconds(2);
    if (until_end > nanoseconds(0)) {
      std::this_thread::sleep_for(std::min<nanoseconds>(backoff, until_end));
    } else {
      std::this_thread::sleep_for(wait_until - t);  // the next round ends the wait
    }
    backoff = std::min(backoff * 2, o_.lease.poll_max);
  }
}

Result<LeaseOutcome> Cache::Impl::AcquireLease(const Call& call, const std::string& token) {
  return guard_.Run(ShardOf(call.key), call.deadline, [&](milliseconds dl) {
    if (call.settings.group.empty()) return o_.l2->AcquireLease(call.key, token, o_.lease.ttl, dl);
    return o_.l2->AcquireLeaseInGroup(call.key, call.settings.group, token, o_.lease.ttl, dl);
  });
}

bool Cache::Impl::RemoveIfCorrupt(const std::string& key, Clock::TimePoint deadline) {
  Result<std::optional<std::string>> raw =
      guard_.Run(ShardOf(key), deadline, [&](milliseconds dl) { return o_.l2->Get(key, dl); });
  if (!raw.ok() || !raw->has_value()) return false;
  if (DecodeEnvelope(**raw).ok() || !DecodeEnvelope(**raw, /*verify_checksum=*/false).ok()) return false;
  metrics_->Add(Counter::kDecodeError, Tier::kL2);
  Result<bool> removed = guard_.Run(ShardOf(key), deadline, [&](milliseconds dl) {
    return o_.l2->RemoveCorrupt(key, **raw, dl);
  });
  return removed.ok() && *removed;
}

Result<CachedValue> Cache::Impl::Load(const Call& call, std::optional<CachedValue> stale, LoadTicket ticket) {
  // With a stale copy to serve, a key at its cap of loads serves it at once;
  // without one, the caller waits for room up to its deadline.
  const bool wait_for_room = !stale.has_value();
  Result<std::shared_ptr<LoadRegistry::Load>> load = StartOrJoin(call, std::move(ticket), wait_for_room);
  if (!load.ok()) {
    if (stale) return ServeStale(*stale);
    return load.status();
  }
  return WaitFor(call, **load, stale);
}

Result<std::shared_ptr<LoadRegistry::Load>> Cache::Impl::StartOrJoin(const Call& call, LoadTicket ticket,
                                                                     bool wait_for_room, bool* at_cap) {
  auto [load, fresh] = running_.Join(call.key, ticket.local_epoch);
  while (!fresh && !load && wait_for_room) {
    // The key is at its cap of loads (LoadRegistry): one begun before its
    // latest local invalidation and a newer one. Wait, up to the deadline,
    // for one to end, then join or start again. The lease is not held
    // meanwhile (other pods may load); the load then runs without one.
    if (!ticket.lease_token.empty()) {
      ReleaseLease(call.key, ticket.lease_token);
      ticket.lease_token.clear();
    }
    const Clock::TimePoint now = clock_->Now();
    if (now >= call.deadline) break;
    if (!running_.WaitForRoom(call.key, LoadRegistry::WaitStep(call.deadline, now))) {
      if (running_.stopping()) return LoadRegistry::StoppedWhileWaiting(call.key);
      continue;
    }
    // A new ticket: the load about to start is fenced from now, not from
    // before the wait (an invalidation during the wait would doom its fill,
    // and a wait longer than max_load_age would make it too old to store).
    ticket = NewTicket(call.key, call.settings, call.deadline);
    std::tie(load, fresh) = running_.Join(call.key, ticket.local_epoch);
  }
  if (at_cap != nullptr) *at_cap = !fresh && !load;
  if (!fresh) {  // one load per key per process: wait for the running one
    if (!ticket.lease_token.empty()) ReleaseLease(call.key, ticket.lease_token);
    if (!load) {
      if (wait_for_room) return LoadRegistry::CapOutlastedDeadline(call.key);
      return Status::ResourceExhausted("loads of '" + call.key +
                                       "' begun before its latest local invalidation are still running (a hung "
                                       "loader?): no further load of it until one ends");
    }
    return load;
  }
  if (keeper_ && !ticket.lease_token.empty()) {  // kept alive from now, also while queued
    keeper_->Add(ticket.lease_token, call.key, std::chrono::steady_clock::now() + o_.max_load_age);
  }
  const std::string token = ticket.lease_token;
  Status submitted = loaders_->Submit([this, call, ticket = std::move(ticket), load = load](bool cancelled) {
    Result<CachedValue> r = Status::Cancelled("cache shut down before the load ran");
    if (!cancelled) r = LoadAndFill(call, ticket);
    if (!ticket.lease_token.empty()) {
      if (keeper_) keeper_->Remove(ticket.lease_token);
      if (cancelled) ReleaseLease(call.key, ticket.lease_token);
    }
    running_.Finish(call.key, load, std::move(r));
  });
  if (!submitted.ok()) {
    if (!token.empty()) {
      if (keeper_) keeper_->Remove(token);
      ReleaseLease(call.key, token);
    }
    running_.Finish(call.key, load, submitted);
    return submitted;
  }
  return load;
}

Result<CachedValue> Cache::Impl::WaitFor(const Call& call, LoadRegistry::Load& load,
                                         const std::optional<CachedValue>& stale) {
  const Clock::TimePoint soft_at = call.start + call.settings.soft_timeout;
  for (;;) {
    const Clock::TimePoint now = clock_->Now();
    const Clock::TimePoint until = stale ? std::min(soft_at, call.deadline) : call.deadline;
    std::optional<Result<CachedValue>> r =
        load.WaitFor(std::clamp<nanoseconds>(until - now, nanoseconds(0), milliseconds(5)));
    if (r) {
      // A failed load leaves the stale copy as the fail-safe, unless the
      // fence refused it (kAborted): then something newer than the copy, or
      // an invalidation after it, reached L2 during the load.
      if (!r->ok() && stale && !r->status().IsAborted()) return ServeStale(*stale);
      return std::move(*r);
    }
    if (clock_->Now() >= until) {
      if (stale) return ServeStale(*stale);  // the load goes on in the background
      return Status::DeadlineExceeded("load of '" + call.key + "' did not finish within the hard timeout");
    }
  }
}

LoadTicket Cache::Impl::NewTicket(const std::string& key, const CallSettings& s, Clock::TimePoint deadline) {
  LoadTicket t;
  t.local_epoch = LocalEpoch(key, s);
  t.taken = clock_->Now();
  if (!o_.l2) {
    t.l2_absent = true;
    return t;
  }
  Result<std::vector<Result<FenceSnapshot>>> snap =
      guard_.Run(ShardOf(key), deadline, [&](milliseconds dl) -> Result<std::vector<Result<FenceSnapshot>>> {
        if (!s.group.empty()) {
          Result<std::vector<FenceSnapshot>> g = o_.l2->SnapshotInGroup({key}, s.group, dl);
          if (!g.ok()) return g.status();
          return std::vector<Result<FenceSnapshot>>(g->begin(), g->end());
        }
        std::vector<Result<FenceSnapshot>> v = o_.l2->Snapshot({key}, dl);
        if (!v[0].ok()) return v[0].status();
        return v;
      });
  if (snap.ok()) {
    t.fence = *(*snap)[0];
    t.has_fence = true;
  }
  return t;
}

Result<CachedValue> Cache::Impl::LoadAndFill(const Call& call, LoadTicket ticket) {
  for (int attempt = 0;; ++attempt) {
    const Clock::TimePoint t0 = clock_->Now();
    Result<LoadResult> r = SafeLoad(call.loader, std::string_view(call.key));
    const nanoseconds took = clock_->Now() - t0;
    metrics_->Add(Counter::kLoad, Tier::kLoader);
    metrics_->ObserveLoad(took);
    Result<CachedValue> v = r.ok() ? MakeValue(*r, took, call.settings, ticket.fence.group_generation)
                                   : Result<CachedValue>(r.status());
    if (!v.ok()) {
      if (!r.ok()) metrics_->Add(Counter::kLoadError, Tier::kLoader);
      if (!ticket.lease_token.empty()) ReleaseLease(call.key, ticket.lease_token);
      if (attempt > 0) {  // the fence refused the first load: no stale copy from before it may stand in
        return Status::Aborted("load of '" + call.key + "' was fenced off and its reload failed: " +
                               v.status().ToString());
      }
      return v.status();
    }
    const FillResult filled = Fill(call.key, *v, call.settings, ticket);
    if (filled != FillResult::kRefused) return v;
    if (clock_->Now() - ticket.taken > o_.max_load_age) {
      return Status::Aborted("load of '" + call.key + "' outlived max_load_age: not cached");
    }
    // The source moved on during the load: take the newer value from L2 if
    // there is one, else load once more under a fresh snapshot.
    const Clock::TimePoint deadline = clock_->Now() + o_.l2_timeout;
    L2Read now = ReadL2(call.key, call.settings, deadline, LocalEpoch(call.key, call.settings));
    if (now.fresh && now.fresh->version_ >= v->version_) return std::move(*now.fresh);
    if (now.corrupt) {
      guard_.Run(ShardOf(call.key), deadline, [&](milliseconds dl) {
        return o_.l2->RemoveCorrupt(call.key, *now.corrupt, dl);
      }).status().IgnoreError();
    }
    if (attempt >= 1) return Status::Aborted("the source kept changing during the load of '" + call.key + "'");
    ticket = NewTicket(call.key, call.settings, deadline);
  }
}

Result<CachedValue> Cache::Impl::MakeValue(const LoadResult& r, nanoseconds took, const CallSettings& s,
                                           std::optional<uint64_t> group_generation) const {
  const bool negative = !r.payload.has_value();
  EnvelopeView e;
  e.grouped = group_generation.has_value();
  e.group_generation = group_generation.value_or(0);
  e.kind = negative ? EntryKind::kNegative : EntryKind::kValue;
  e.codec_id = o_.codec_id;
  e.version = r.version.value_or(0);
  e.written_at = clock_->WallNow();
  milliseconds ttl = negative ? s.negative_ttl : s.ttl;
  if (o_.ttl_jitter > 0) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    const double f = std::uniform_real_distribution<double>(1.0 - o_.ttl_jitter, 1.0 + o_.ttl_jitter)(rng);
    ttl = std::max(milliseconds(1), milliseconds(static_cast<int64_t>(static_cast<double>(ttl.count()) * f)));
  }
  e.expires_at = e.written_at + ttl;
  e.load_duration = duration_cast<microseconds>(took);
  if (!negative) e.payload = *r.payload;
  Result<std::string> bytes = EncodeEnvelope(e);
  if (!bytes.ok()) return bytes.status();
  Result<std::optional<CachedValue>> v =
      FromEnvelope(std::make_shared<const std::string>(std::move(*bytes)), ValueSource::kLoader, false);
  if (!v.ok()) return v.status();
  return std::move(**v);
}

FillResult Cache::Impl::Fill(const std::string& key, CachedValue& v, const CallSettings& s,
                             const LoadTicket& ticket) {
  std::vector<CachedValue> values{v};
  const FillResult r = FillMany({key}, values, s, {ticket})[0];
  v = std::move(values[0]);
  return r;
}

std::vector<FillResult> Cache::Impl::FillMany(const std::vector<std::string>& keys,
                                              std::vector<CachedValue>& values, const CallSettings& s,
                                              const std::vector<LoadTicket>& tickets) {
  std::vector<FillResult> out(keys.size(), FillResult::kNotStored);
  const Clock::TimePoint now = clock_->Now();
  const Clock::TimePoint deadline = now + o_.l2_timeout;
  std::vector<size_t> to_l2;
  std::vector<FillRequest> requests;
  for (size_t i = 0; i < keys.size(); ++i) {
    const LoadTicket& t = tickets[i];
    const CachedValue& v = values[i];
    if (now - t.taken > o_.max_load_age) {
      out[i] = FillResult::kRefused;  // too old to prove it missed no invalidation
      if (!t.lease_token.empty()) ReleaseLease(keys[i], t.lease_token);
      continue;
    }
    if (t.l2_absent) {
      FillL1(keys[i], v, s, t.local_epoch);
      out[i] = FillResult::kStored;
      continue;
    }
    const bool too_large = v.payload_.size() > o_.max_value_bytes;
    const bool ungrouped = !s.group.empty() && v.group_generation_ == 0;  // no generation to fence by
    if (!t.has_fence || too_large || ungrouped) {  // cannot be fenced in L2: served, cached nowhere
      if (!t.lease_token.empty()) ReleaseLease(keys[i], t.lease_token);
      continue;
    }
    const milliseconds physical =
        duration_cast<milliseconds>(v.expires_at_ - clock_->WallNow()) + s.max_stale + milliseconds(1);
    if (!o_.version_fencing) {  // the demonstration mode: a plain SET
      guard_.Run(ShardOf(keys[i]), deadline, [&](milliseconds dl) {
        return o_.l2->Put(keys[i], *v.envelope_, physical, dl);
      }).IgnoreError();
      if (!t.lease_token.empty()) ReleaseLease(keys[i], t.lease_token);
      if (l1_) l1_->Erase(keys[i]).IgnoreError();
      FillL1(keys[i], v, s, LocalEpoch(keys[i], s));
      out[i] = FillResult::kStored;
      continue;
    }
    FillRequest& f = requests.emplace_back();
    f.key = keys[i];
    f.envelope = *v.envelope_;
    f.physical_ttl = physical;
    f.fence = t.fence;
    f.group = s.group;
    if (!t.lease_token.empty()) {
      f.lease_key = LeaseKeyFor(keys[i]);
      f.lease_token = t.lease_token;
    }
    to_l2.push_back(i);
  }
  if (requests.empty()) return out;
  // One pipelined call; each shard's breaker sees its own outcome.
  std::vector<Result<FenceOutcome>> got;
  std::vector<bool> allowed(requests.size());
  std::vector<FillRequest> sent;
  for (size_t j = 0; j < requests.size(); ++j) {
    allowed[j] = guard_.Allow(ShardOf(requests[j].key));
    if (allowed[j]) sent.push_back(requests[j]);
  }
  const milliseconds left = duration_cast<milliseconds>(deadline - clock_->Now());
  if (!sent.empty()) got = o_.l2->Fill(sent, o_.max_load_age, kFenceLifetime, std::max(left, milliseconds(1)));
  for (size_t j = 0, k = 0; j < requests.size(); ++j) {
    const size_t i = to_l2[j];
    if (!allowed[j]) continue;  // breaker open: not stored (the lease expires by itself)
    const Result<FenceOutcome>& r = got[k++];
    guard_.Record(ShardOf(requests[j].key), r.status());
    if (!r.ok()) continue;  // unknown: cached nowhere
    if (!r->stored()) {
      metrics_->Add(Counter::kRefusedFill, Tier::kL2);
      out[i] = FillResult::kRefused;
      continue;
    }
    if (r->stored_version != 0 && r->stored_version != values[i].version_) {
      // L2 stored it at another version (l2_store.h): so do the callers and L1.
      Result<EnvelopeView> e = DecodeEnvelope(*values[i].envelope_, /*verify_checksum=*/false);
      Result<std::string> bytes = e.ok() ? [&] {
        e->version = r->stored_version;
        return EncodeEnvelope(*e);
      }() : Result<std::string>(e.status());
      Result<std::optional<CachedValue>> again =
          bytes.ok() ? FromEnvelope(std::make_shared<const std::string>(std::move(*bytes)), ValueSource::kLoader, false)
                     : Result<std::optional<CachedValue>>(bytes.status());
      if (!again.ok() || !again->has_value()) {
        out[i] = FillResult::kNotStored;  // cannot happen with a well-formed envelope; then cache nothing here
        continue;
      }
      values[i] = std::move(**again);
    }
    FillL1(keys[i], values[i], s, tickets[i].local_epoch);
    out[i] = FillResult::kStored;
  }
  return out;
}

void Cache::Impl::ReleaseLease(const std::string& key, const std::string& token) {
  if (!keeper_ || token.empty()) return;
  keeper_->Release(token, key);  // on the keeper's thread; when dropped, the lease expires by itself
}

}  // namespace tiercache
