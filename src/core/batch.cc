// GetMany: L1, one L2 round trip per slot group, then one batch load of what
// is missing and not already loading in this process.
#include <algorithm>
#include <bit>

#include "common/dcheck.h"
#include "core/cache_impl.h"

namespace tiercache {

using std::chrono::nanoseconds;
using cache_internal::FillResult;
using cache_internal::L2Read;
using cache_internal::LoadTicket;
using cache_internal::SafeLoad;

namespace {

// Records one outcome per shard for a multi-key call: the shard answered
// only if every key of it did.
class ShardOutcomes {
 public:
  void Add(int shard, const Status& s) {
    auto it = std::find_if(worst_.begin(), worst_.end(), [shard](const auto& w) { return w.first == shard; });
    if (it == worst_.end()) {
      worst_.emplace_back(shard, s);
    } else if (it->second.ok() && !s.ok()) {
      it->second = s;
    }
  }
  void RecordTo(L2Guard& guard) const {
    for (const auto& [shard, s] : worst_) guard.Record(shard, s);
  }

 private:
  std::vector<std::pair<int, Status>> worst_;  // a few shards (Redis masters) per call
};

}  // namespace

Result<std::vector<Result<CachedValue>>> Cache::Impl::GetMany(const std::vector<std::string>& keys,
                                                              const BatchLoader& loader, const GetOptions& g) {
  if (keys.empty()) return Status::InvalidArgument("GetMany: no keys");
  Result<CallSettings> settings = ResolveCallSettings(o_, g);
  if (!settings.ok()) return settings.status();
  const CallSettings s = *settings;
  const Clock::TimePoint start = clock_->Now();
  const Clock::TimePoint deadline = start + s.hard_timeout;

  // Each distinct key once: an open-addressed table of indexes into `first`
  // (one allocation, not one per key). A distinct key is named by the index
  // of its first occurrence in `keys`: no key is copied. Its hash also picks
  // its local fence stripe (LocalEpochHashed): each key is hashed once.
  // (Arrays sized once and written by index: no push_back per key.)
  std::vector<uint32_t> first(keys.size());  // distinct key j is keys[first[j]], j < m
  std::vector<uint64_t> hash_of(keys.size());  // LocalFence::Hash of distinct key j
  std::vector<uint32_t> index_of(keys.size());  // keys[i] is distinct key index_of[i]
  size_t m = 0;  // distinct keys
  {
    const size_t slots = std::bit_ceil(2 * keys.size());
    std::vector<uint32_t> table(slots, 0);  // 0: empty, else 1 + index into `first`
    constexpr size_t kAhead = 8;  // keys' bytes are scattered on the heap: start their cache misses early
    for (size_t i = 0; i < std::min(kAhead, keys.size()); ++i) __builtin_prefetch(keys[i].data());
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i + kAhead < keys.size()) __builtin_prefetch(keys[i + kAhead].data());
      const uint64_t h = LocalFence::Hash(keys[i]);
      for (size_t at = h & (slots - 1);; at = (at + 1) & (slots - 1)) {
        if (table[at] == 0) {
          table[at] = static_cast<uint32_t>(m + 1);
          index_of[i] = static_cast<uint32_t>(m);
          first[m] = static_cast<uint32_t>(i);
          hash_of[m] = h;
          ++m;
          PrefetchLocalEpoch(h);  // read after the L1 lookups below
          break;
        }
        if (hash_of[table[at] - 1] == h && keys[first[table[at] - 1]] == keys[i]) {
          index_of[i] = table[at] - 1;
          break;
        }
      }
    }
  }
  const auto key = [&](size_t j) -> const std::string& { return keys[first[j]]; };
  // The results, in order: distinct key j's at out[first[j]] (a repeated
  // key's copied there at the end). Written once, in place: no per-key
  // result held elsewhere and moved here.
  std::vector<Result<CachedValue>> out;
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) out.emplace_back(CachedValue());  // not copies of one: no variant visit
  // What else is known of each distinct key (one allocation for all of
  // them, 32 bytes each: a small working set for a call of many keys).
  struct KeyState {
    uint64_t local = 0;  // LocalEpoch, read before any source
    int shard = -1;      // ShardOf (a CRC16 and a slot lookup), once per key
    bool done = false;   // its result is in `out`
    bool l2_ok = false;  // L2 answered for it
    std::shared_ptr<LoadRegistry::Load> load;  // the load it joined or started
  };
  std::vector<KeyState> st(m);
  if (!o_.l2) {
    for (KeyState& k : st) k.l2_ok = true;
  }
  const auto finish = [&](size_t j, Result<CachedValue> r) {
    out[first[j]] = std::move(r);
    st[j].done = true;
  };
  // The same for a value (the usual case): moved into the value already
  // there, with no Result built and no switch of the variant's alternative.
  const auto finish_value = [&](size_t j, CachedValue&& v) {
    Result<CachedValue>& r = out[first[j]];
    if (r.ok()) {
      *r = std::move(v);
    } else {
      r = std::move(v);
    }
    st[j].done = true;
  };
  // The stale copy each key may still serve: few keys have one, so the
  // array is allocated when the first appears.
  std::vector<std::optional<CachedValue>> stale;
  const std::optional<CachedValue> no_stale;
  const auto stale_of = [&](size_t j) -> const std::optional<CachedValue>& {
    return stale.empty() ? no_stale : stale[j];
  };
  const auto set_stale = [&](size_t j, std::optional<CachedValue> v) {
    if (!v && stale.empty()) return;
    if (stale.empty()) stale.resize(m);
    stale[j] = std::move(v);
  };
  std::vector<size_t> missing(m);
  size_t misses = 0;
  for (size_t j = 0; j < m; ++j) {
    if (!PassesChecksFast(key(j), s)) {  // else CheckKey and CheckMember surely pass
      Status bad = CheckKey(key(j));
      if (bad.ok()) bad = CheckMember(key(j), s);
      if (!bad.ok()) {
        finish(j, std::move(bad));
        continue;
      }
    }
    std::optional<CachedValue> l1_stale;
    if (std::optional<CachedValue> hit = ReadL1(key(j), s, &l1_stale)) {
      finish_value(j, std::move(*hit));
    } else {
      missing[misses++] = j;
      set_stale(j, std::move(l1_stale));
    }
  }
  missing.resize(misses);
  // Each miss's local epoch, read before any source (after its L1 miss, as
  // Get does), in a loop of its own: the stripes' cache misses overlap.
  for (size_t j : missing) st[j].local = LocalEpochHashed(hash_of[j], s);

  // One L2 read for the L1 misses; shards whose breaker is open are skipped.
  const auto shard = [&](size_t j) {
    if (st[j].shard < 0) st[j].shard = ShardOf(key(j));
    return st[j].shard;
  };
  if (o_.l2 && !missing.empty()) {
    std::vector<std::pair<int, bool>> allowed;  // per shard met: its breaker's verdict (few shards)
    std::vector<size_t> asked_idx(missing.size());
    size_t asking = 0;
    for (size_t j : missing) {
      const int sh = shard(j);
      auto it = std::find_if(allowed.begin(), allowed.end(), [sh](const auto& a) { return a.first == sh; });
      if (it == allowed.end()) {
        allowed.emplace_back(sh, guard_.Allow(sh));
        it = allowed.end() - 1;
      }
      if (!it->second) continue;
      asked_idx[asking++] = j;
    }
    asked_idx.resize(asking);
    // Every key asked, none repeated (the usual case): `keys` itself, not a copy.
    std::vector<std::string> copies;
    const bool all_of_keys = asked_idx.size() == keys.size();
    if (!all_of_keys) {
      copies.reserve(asked_idx.size());
      for (size_t j : asked_idx) copies.push_back(key(j));
    }
    const std::vector<std::string>& asked = all_of_keys ? keys : copies;
    if (!asked.empty()) {
      const milliseconds left = std::chrono::duration_cast<milliseconds>(
          std::min(deadline, clock_->Now() + o_.l2_timeout) - clock_->Now());
      std::vector<Result<std::optional<std::string>>> got;
      std::optional<uint64_t> generation;
      if (s.group.empty()) {
        got = o_.l2->GetMany(asked, std::max(left, milliseconds(1)));
        if (got.size() != asked.size()) {
          got.assign(asked.size(), Status::Internal("L2 GetMany: wrong number of values"));
        }
      } else {  // every member in the group's slot: one MGET with the generation
        Result<GroupRead> g = o_.l2->GetInGroup(asked, s.group, std::max(left, milliseconds(1)));
        if (g.ok() && g->values.size() != asked.size()) g = Status::Internal("GetInGroup: wrong number of values");
        got.reserve(asked.size());
        for (size_t a = 0; a < asked.size(); ++a) {
          got.push_back(g.ok() ? Result<std::optional<std::string>>(std::move(g->values[a]))
                               : Result<std::optional<std::string>>(g.status()));
        }
        if (g.ok()) generation = g->generation;
      }
      // Every value of the reply is judged at one instant, after it arrived.
      const WallTime now = clock_->WallNow();
      ShardOutcomes outcomes;
      for (size_t a = 0; a < asked.size(); ++a) {
        const size_t j = asked_idx[a];
        outcomes.Add(shard(j), got[a].status());
        if (!got[a].ok()) continue;
        L2Read read = Interpret(key(j), std::move(*got[a]), generation, s, st[j].local, /*count_misses=*/true, &now);
        if (read.fresh) {
          finish_value(j, std::move(*read.fresh));
          continue;
        }
        if (read.corrupt) {  // it would fence the fill: remove it (only if unchanged)
          guard_.Run(shard(j), deadline, [&](milliseconds dl) {
            return o_.l2->RemoveCorrupt(key(j), *read.corrupt, dl);
          }).status().IgnoreError();
        }
        set_stale(j, BestStale(stale.empty() ? std::nullopt : std::move(stale[j]), read));
        st[j].l2_ok = true;
      }
      outcomes.RecordTo(guard_);
    }
  }

  // Join the loads already running; register the rest as one batch.
  std::vector<size_t> blocked;  // at their cap of loads, nothing stale
  std::vector<size_t> to_load;
  {
    std::vector<size_t> wanted;
    std::vector<std::string> wanted_keys;
    std::vector<uint64_t> wanted_epochs;
    for (size_t j : missing) {
      if (st[j].done) continue;
      wanted.push_back(j);
      wanted_keys.push_back(key(j));
      wanted_epochs.push_back(st[j].local);
    }
    auto joined = running_.JoinMany(wanted_keys, wanted_epochs);
    for (size_t w = 0; w < wanted.size(); ++w) {
      const size_t j = wanted[w];
      if (!joined[w].first) {  // too many loads of it running (LoadRegistry)
        if (stale_of(j)) {
          finish(j, ServeStale(*stale_of(j)));
        } else {
          blocked.push_back(j);  // loaded alone once one of them ends (below)
        }
        continue;
      }
      st[j].load = std::move(joined[w].first);
      if (joined[w].second) to_load.push_back(j);
    }
  }
  if (!to_load.empty()) {
    // Fence snapshots before the loader reads the source.
    std::vector<LoadTicket> tickets(to_load.size());
    std::vector<std::string> load_keys;
    std::vector<std::string> snap_keys;
    std::vector<size_t> snap_idx;
    for (size_t t = 0; t < to_load.size(); ++t) {
      const size_t j = to_load[t];
      load_keys.push_back(key(j));
      tickets[t].local_epoch = st[j].local;
      tickets[t].taken = clock_->Now();
      tickets[t].l2_absent = !o_.l2;
      if (o_.l2 && st[j].l2_ok) {
        snap_keys.push_back(key(j));
        snap_idx.push_back(t);
      }
    }
    if (!snap_keys.empty()) {
      const milliseconds left = std::chrono::duration_cast<milliseconds>(
          std::min(deadline, clock_->Now() + o_.l2_timeout) - clock_->Now());
      std::vector<Result<FenceSnapshot>> snaps;
      if (s.group.empty()) {
        snaps = o_.l2->Snapshot(snap_keys, std::max(left, milliseconds(1)));
      } else {
        Result<std::vector<FenceSnapshot>> g = o_.l2->SnapshotInGroup(snap_keys, s.group, std::max(left, milliseconds(1)));
        if (g.ok() && g->size() != snap_keys.size()) g = Status::Internal("SnapshotInGroup: wrong number of snapshots");
        for (size_t a = 0; a < snap_keys.size(); ++a) {
          snaps.push_back(g.ok() ? Result<FenceSnapshot>(std::move((*g)[a])) : Result<FenceSnapshot>(g.status()));
        }
      }
      ShardOutcomes outcomes;
      for (size_t a = 0; a < snap_keys.size(); ++a) {
        outcomes.Add(ShardOf(snap_keys[a]), snaps[a].status());
        if (snaps[a].ok()) {
          tickets[snap_idx[a]].fence = std::move(*snaps[a]);
          tickets[snap_idx[a]].has_fence = true;
        }
      }
      outcomes.RecordTo(guard_);
    }
    std::vector<std::shared_ptr<LoadRegistry::Load>> batch;
    for (size_t j : to_load) batch.push_back(st[j].load);
    Status submitted = loaders_->Submit([this, load_keys, tickets, batch, loader, s](bool cancelled) {
      std::vector<Result<CachedValue>> results(load_keys.size(),
                                               Status::Cancelled("cache shut down before the load ran"));
      if (!cancelled) results = LoadBatch(load_keys, loader, s, tickets);
      for (size_t t = 0; t < load_keys.size(); ++t) running_.Finish(load_keys[t], batch[t], std::move(results[t]));
    });
    if (!submitted.ok()) {
      for (size_t t = 0; t < load_keys.size(); ++t) running_.Finish(load_keys[t], batch[t], submitted);
    }
  }

  // Keys at their cap of loads wait, as Get would, for one of theirs to end
  // (all of them at once, up to the deadline); each then loads alone, the
  // batch loader called with that one key, with a ticket taken then.
  if (!blocked.empty()) {
    const Loader one = [loader](std::string_view key) -> Result<LoadResult> {
      Result<std::vector<LoadResult>> r = loader({std::string(key)});
      if (!r.ok()) return r.status();
      if (r->size() != 1) {
        return Status::Internal("batch loader returned " + std::to_string(r->size()) + " results for 1 key");
      }
      return std::move((*r)[0]);
    };
    std::vector<size_t> pending = std::move(blocked);
    while (!pending.empty()) {
      std::vector<size_t> still;
      for (size_t j : pending) {
        if (!running_.HasRoom(key(j))) {
          still.push_back(j);
          continue;
        }
        const Call call{key(j), one, s, start, deadline};
        bool at_cap = false;
        Result<std::shared_ptr<LoadRegistry::Load>> load =
            StartOrJoin(call, NewTicket(key(j), s, deadline), /*wait_for_room=*/false, &at_cap);
        if (load.ok()) {
          st[j].load = std::move(*load);  // waited for below
        } else if (at_cap) {
          still.push_back(j);  // another caller took the room first
        } else {
          finish(j, load.status());
        }
      }
      pending.swap(still);
      if (pending.empty()) break;
      const Clock::TimePoint now = clock_->Now();
      if (now >= deadline || running_.stopping()) {
        for (size_t j : pending) {
          finish(j, now >= deadline ? LoadRegistry::CapOutlastedDeadline(key(j))
                                    : LoadRegistry::StoppedWhileWaiting(key(j)));
        }
        break;
      }
      std::vector<std::string> waiting;
      for (size_t j : pending) waiting.push_back(key(j));
      running_.WaitForRoomAny(waiting, LoadRegistry::WaitStep(deadline, now));
    }
  }

  // Wait, per key, as Get would: stale at the soft timeout, error at the hard one.
  for (size_t j : missing) {
    if (st[j].done) continue;
    const Call call{key(j), Loader(), s, start, deadline};
    finish(j, WaitFor(call, *st[j].load, stale_of(j)));
  }
#if TIERCACHE_DCHECK_IS_ON
  for (const KeyState& k : st) TIERCACHE_DCHECK(k.done);  // else its placeholder would be answered
#endif
  // A repeated key gets a copy of its first occurrence's result.
  if (m != keys.size()) {
    for (size_t i = 0; i < keys.size(); ++i) {
      if (first[index_of[i]] != i) out[i] = out[first[index_of[i]]];
    }
  }
  return out;
}

std::vector<Result<CachedValue>> Cache::Impl::LoadBatch(const std::vector<std::string>& keys,
                                                        const BatchLoader& loader, const CallSettings& s,
                                                        const std::vector<LoadTicket>& tickets) {
  const Clock::TimePoint t0 = clock_->Now();
  Result<std::vector<LoadResult>> r = SafeLoad(loader, keys);
  const std::chrono::nanoseconds took = clock_->Now() - t0;
  metrics_->Add(Counter::kLoad, Tier::kLoader);
  metrics_->ObserveLoad(took);
  if (r.ok() && r->size() != keys.size()) {
    r = Status::Internal("batch loader returned " + std::to_string(r->size()) + " results for " +
                         std::to_string(keys.size()) + " keys");
  }
  if (!r.ok()) {
    metrics_->Add(Counter::kLoadError, Tier::kLoader);
    return std::vector<Result<CachedValue>>(keys.size(), r.status());
  }
  std::vector<Result<CachedValue>> out;
  std::vector<std::string> fill_keys;
  std::vector<CachedValue> fill_values;
  std::vector<LoadTicket> fill_tickets;
  std::vector<size_t> fill_idx;
  for (size_t i = 0; i < keys.size(); ++i) {
    out.push_back(MakeValue((*r)[i], took, s, tickets[i].has_fence ? tickets[i].fence.group_generation : std::nullopt));
    if (!out.back().ok()) continue;
    fill_keys.push_back(keys[i]);
    fill_values.push_back(*out.back());
    fill_tickets.push_back(tickets[i]);
    fill_idx.push_back(i);
  }
  const std::vector<FillResult> filled = FillMany(fill_keys, fill_values, s, fill_tickets);
  for (size_t f = 0; f < filled.size(); ++f) {
    if (filled[f] == FillResult::kStored) out[fill_idx[f]] = fill_values[f];  // as stored (its version may differ)
    if (filled[f] != FillResult::kRefused) continue;
    // The source moved on during the load: a newer value in L2, or an error.
    L2Read now = ReadL2(fill_keys[f], s, clock_->Now() + o_.l2_timeout, LocalEpoch(fill_keys[f], s));
    if (now.fresh && now.fresh->version_ >= fill_values[f].version_) {
      out[fill_idx[f]] = std::move(*now.fresh);
    } else {
      out[fill_idx[f]] = Status::Aborted("fill of '" + fill_keys[f] + "' refused: the source moved on during the load");
    }
  }
  return out;
}

}  // namespace tiercache
