// L2Store over tiercache's Redis client.
#include <algorithm>
#include <charconv>
#include <map>

#include "core/scripts.h"
#include "core/slot_memo.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

Result<redis::CallOptions> CallBy(milliseconds timeout) {
  if (timeout < milliseconds(1)) return Status::DeadlineExceeded("L2 call started after its deadline");
  redis::CallOptions call;
  call.timeout = timeout;
  return call;
}

std::string Ms(milliseconds d) { return std::to_string(std::max<int64_t>(d.count(), 1)); }

uint64_t BigEndian(const std::string& bytes) {
  uint64_t v = 0;
  for (unsigned char c : bytes) v = (v << 8) | c;
  return v;
}

// Reads the scripts' {1} / {0, reason, <8-byte version>} reply.
Result<FenceOutcome> ParseFenceReply(const redis::Reply& r) {
  if (!r.IsArray() || r.elements.empty() || !r.elements[0].IsInteger()) {
    return Status::Internal("unexpected fence script reply: " + r.ToString());
  }
  FenceOutcome out;
  if (r.elements[0].integer == 1) {  // {1} or {1, <8-byte version stored>}
    if (r.elements.size() > 1 && r.elements[1].IsString()) out.stored_version = BigEndian(r.elements[1].str);
    return out;
  }
  if (r.elements.size() < 2 || !r.elements[1].IsInteger() || r.elements[1].integer < 1 ||
      r.elements[1].integer > 3) {
    return Status::Internal("unexpected fence script reply: " + r.ToString());
  }
  out.verdict = static_cast<FillVerdict>(r.elements[1].integer);
  if (r.elements.size() > 2 && r.elements[2].IsString()) out.stored_version = BigEndian(r.elements[2].str);
  return out;
}

Result<FenceOutcome> ParseFence(const Result<redis::Reply>& r) {
  if (!r.ok()) return r.status();
  return ParseFenceReply(*r);
}

// A group generation as stored (canonical decimal in [1, 2^53), as the
// scripts read it), or as Redis returns it; nullopt for anything else.
std::optional<uint64_t> Generation(std::string_view s) {
  uint64_t v = 0;
  if (s.empty() || s[0] == '0') return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v >= kMaxGroupGeneration) return std::nullopt;
  return v;
}
std::optional<uint64_t> Generation(const redis::Reply& r) {
  if (r.IsInteger()) {
    if (r.integer < 1 || static_cast<uint64_t>(r.integer) >= kMaxGroupGeneration) return std::nullopt;
    return static_cast<uint64_t>(r.integer);
  }
  if (!r.IsString()) return std::nullopt;
  return Generation(std::string_view(r.str));
}

Status CheckSameSlot(const std::vector<std::string>& keys, std::string_view group) {
  const uint16_t slot = redis::KeySlot(group);
  TagPrefixSlotMemo slot_of;
  for (const std::string& k : keys) {
    if (slot_of(k) != slot) {
      return Status::InvalidArgument("key '" + k + "' is not in the hash slot of its group '" + std::string(group) + "'");
    }
  }
  return Status::Ok();
}

// Groups indexes of `keys` by hash slot, in first-seen order.
std::vector<std::vector<size_t>> BySlot(const std::vector<std::string>& keys) {
  std::map<uint16_t, size_t> group_of;
  std::vector<std::vector<size_t>> groups;
  TagPrefixSlotMemo slot_of;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [it, added] = group_of.emplace(slot_of(keys[i]), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  return groups;
}

// True when every key of `keys` (not empty) is in one hash slot.
bool InOneSlot(const std::vector<std::string>& keys) {
  TagPrefixSlotMemo slot_of;
  const uint16_t slot = slot_of(keys[0]);
  for (size_t i = 1; i < keys.size(); ++i) {
    if (slot_of(keys[i]) != slot) return false;
  }
  return true;
}

// Hands out a pipelined per-slot-group reply: for group gi, the reply is an
// array of `lead` leading elements, then one element per key of the group.
// Each key gets `each(reply, element index)`, or its group's error.
template <typename T, typename Each>
// `each` may move out of the reply it is given.
void Scatter(const std::vector<std::vector<size_t>>& groups, std::vector<Result<redis::Reply>>& replies,
             size_t lead, const char* what, std::vector<Result<T>>& out, Each each) {
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    Result<redis::Reply>& r = replies[gi];
    const bool shaped = r.ok() && r->IsArray() && r->elements.size() == groups[gi].size() + lead;
    for (size_t j = 0; j < groups[gi].size(); ++j) {
      const size_t i = groups[gi][j];
      if (!r.ok()) {
        out[i] = r.status();
      } else if (!shaped) {
        out[i] = Status::Internal(std::string("unexpected ") + what + " reply: " + r->ToString());
      } else {
        out[i] = each(*r, lead + j);
      }
    }
  }
}

class RedisL2Store final : public L2Store {
 public:
  explicit RedisL2Store(std::shared_ptr<redis::RedisClient> client)
      : client_(std::move(client)),
        fill_(std::string(scripts::kFill)),
        invalidate_(std::string(scripts::kInvalidate)),
        invalidate_many_(std::string(scripts::kInvalidateMany)),
        snapshot_(std::string(scripts::kSnapshot)),
        acquire_(std::string(scripts::kLeaseAcquire)),
        extend_(std::string(scripts::kLeaseExtend)),
        release_(std::string(scripts::kLeaseRelease)),
        remove_corrupt_(std::string(scripts::kRemoveCorrupt)) {}

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    return client_->Get(key, *call);
  }

  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return std::vector<Result<std::optional<std::string>>>(keys.size(), call.status());
    if (!keys.empty() && InOneSlot(keys)) {
      // The usual batch (keys of one hash tag): one MGET, which the client
      // sends from `keys` itself, without copying them into a command. Its
      // one reply is the group's, as in Scatter: an error or a malformed
      // reply fails every key.
      Result<std::vector<std::optional<std::string>>> r = client_->MGet(keys, *call);
      if (r.ok() && r->size() != keys.size()) r = Status::Internal("unexpected MGET reply size");
      if (!r.ok()) return std::vector<Result<std::optional<std::string>>>(keys.size(), r.status());
      // Each value moved into a Result built in place (not a default one
      // built first and then assigned).
      std::vector<Result<std::optional<std::string>>> out;
      out.reserve(keys.size());
      for (std::optional<std::string>& v : *r) out.emplace_back(std::move(v));
      return out;
    }
    std::vector<Result<std::optional<std::string>>> out(keys.size(), std::optional<std::string>());
    const std::vector<std::vector<size_t>> groups = BySlot(keys);
    std::vector<std::vector<std::string>> commands;
    for (const auto& g : groups) {
      std::vector<std::string>& c = commands.emplace_back();
      c.push_back("MGET");
      for (size_t i : g) c.push_back(keys[i]);
    }
    std::vector<Result<redis::Reply>> replies = client_->Pipeline(commands, *call);
    Scatter(groups, replies, 0, "MGET", out, [](redis::Reply& r, size_t e) -> Result<std::optional<std::string>> {
      if (r.elements[e].IsString()) return std::optional<std::string>(std::move(r.elements[e].str));
      return std::optional<std::string>();
    });
    return out;
  }

  Result<GroupRead> GetInGroup(const std::vector<std::string>& keys, std::string_view group,
                               milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    TIERCACHE_RETURN_IF_ERROR(CheckSameSlot(keys, group));
    std::vector<std::string> all = keys;
    all.push_back(GroupKeyFor(group));
    Result<std::vector<std::optional<std::string>>> r = client_->MGet(all, *call);
    if (!r.ok()) return r.status();
    if (r->size() != all.size()) return Status::Internal("unexpected MGET reply size");
    GroupRead out;
    out.values.assign(std::make_move_iterator(r->begin()), std::make_move_iterator(r->end() - 1));
    if (r->back()) out.generation = Generation(std::string_view(*r->back()));
    return out;
  }

  Result<std::vector<FenceSnapshot>> SnapshotInGroup(const std::vector<std::string>& keys, std::string_view group,
                                                     milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    TIERCACHE_RETURN_IF_ERROR(CheckSameSlot(keys, group));
    std::vector<std::string> script_keys;
    for (const std::string& k : keys) script_keys.push_back(FenceKeyFor(k));
    script_keys.push_back(GroupKeyFor(group));
    Result<redis::Reply> r = client_->Eval(snapshot_, script_keys, {"g"}, *call);
    if (!r.ok()) return r.status();
    std::optional<uint64_t> gen;
    if (r->IsArray() && r->elements.size() == keys.size() + 2) gen = Generation(r->elements.back());
    if (!gen || !r->elements[0].IsInteger()) return Status::Internal("unexpected snapshot reply: " + r->ToString());
    std::vector<FenceSnapshot> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i].store_ms = r->elements[0].integer;
      if (r->elements[i + 1].IsString()) out[i].epoch = r->elements[i + 1].str;
      out[i].group_generation = gen;
    }
    return out;
  }

  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys,
                                              milliseconds timeout) override {
    std::vector<Result<FenceSnapshot>> out(keys.size(), FenceSnapshot());
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return Fail(keys.size(), call.status(), out);
    const std::vector<std::vector<size_t>> groups = BySlot(keys);
    std::vector<redis::RedisClient::ScriptCall> calls;
    for (const auto& g : groups) {
      redis::RedisClient::ScriptCall& c = calls.emplace_back();
      for (size_t i : g) c.keys.push_back(FenceKeyFor(keys[i]));
    }
    std::vector<Result<redis::Reply>> replies = client_->EvalMany(snapshot_, calls, *call);
    Scatter(groups, replies, 1, "snapshot", out, [](const redis::Reply& r, size_t e) -> Result<FenceSnapshot> {
      if (!r.elements[0].IsInteger()) return Status::Internal("unexpected snapshot reply: " + r.ToString());
      FenceSnapshot s;
      s.store_ms = r.elements[0].integer;
      if (r.elements[e].IsString()) s.epoch = r.elements[e].str;
      return s;
    });
    return out;
  }

  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds max_age,
                                         milliseconds fence_ttl, milliseconds timeout) override {
    std::vector<Result<FenceOutcome>> out(fills.size(), FenceOutcome());
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return Fail(fills.size(), call.status(), out);
    std::vector<redis::RedisClient::ScriptCall> calls;
    calls.reserve(fills.size());
    for (const FillRequest& f : fills) {
      redis::RedisClient::ScriptCall& c = calls.emplace_back();
      c.keys = {f.key, FenceKeyFor(f.key)};
      c.args = {f.envelope, Ms(f.physical_ttl)};
      if (f.write_through) {
        c.args.insert(c.args.end(), {"w", f.new_epoch, "0", Ms(fence_ttl)});
      } else {
        c.args.insert(c.args.end(), {"f", f.fence.epoch, std::to_string(f.fence.store_ms), Ms(max_age)});
      }
      if (!f.lease_key.empty() || !f.group.empty()) {
        c.keys.push_back(f.lease_key.empty() ? LeaseKeyFor(f.key) : f.lease_key);
        c.args.push_back(f.lease_token);
      }
      if (!f.group.empty()) {
        c.keys.push_back(GroupKeyFor(f.group));
        c.keys.push_back(GroupFloorKeyFor(f.group));
      }
    }
    std::vector<Result<redis::Reply>> replies = client_->EvalMany(fill_, calls, *call);
    for (size_t i = 0; i < fills.size(); ++i) out[i] = ParseFence(replies[i]);
    return out;
  }

  Status Put(std::string_view key, std::string_view envelope, milliseconds ttl, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    redis::SetOptions set;
    set.ttl = std::max(ttl, milliseconds(1));
    set.call = *call;
    return client_->Set(key, envelope, set).status();
  }

  Result<FenceOutcome> Invalidate(const InvalidateRequest& q, milliseconds fence_ttl,
                                  milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    return ParseFence(client_->Eval(invalidate_, {q.key, FenceKeyFor(q.key)},
                                    {q.tombstone, Ms(q.tombstone_ttl), q.new_epoch, Ms(fence_ttl)}, *call));
  }

  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    std::vector<Result<FenceOutcome>> out(requests.size(), FenceOutcome());
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return Fail(requests.size(), call.status(), out);
    std::vector<std::string> keys;
    keys.reserve(requests.size());
    for (const InvalidateRequest& q : requests) keys.push_back(q.key);
    const std::vector<std::vector<size_t>> by_slot = BySlot(keys);
    // Per slot: the key requests in order, then the group requests; the
    // script answers in that order.
    std::vector<std::vector<size_t>> order;
    std::vector<redis::RedisClient::ScriptCall> calls;
    for (const auto& g : by_slot) {
      std::vector<size_t>& o = order.emplace_back();
      redis::RedisClient::ScriptCall& c = calls.emplace_back();
      c.args = {Ms(fence_ttl), "0"};
      for (size_t i : g) {
        if (requests[i].group) continue;
        o.push_back(i);
        c.keys.push_back(requests[i].key);
        c.keys.push_back(FenceKeyFor(requests[i].key));
        c.args.push_back(requests[i].tombstone);
        c.args.push_back(Ms(requests[i].tombstone_ttl));
        c.args.push_back(requests[i].new_epoch);
      }
      c.args[1] = std::to_string(o.size());
      for (size_t i : g) {
        if (!requests[i].group) continue;
        o.push_back(i);
        c.keys.push_back(GroupKeyFor(requests[i].key));
        c.keys.push_back(RecentEventsKeyFor(requests[i].key));
        c.keys.push_back(GroupFloorKeyFor(requests[i].key));
        c.args.push_back(requests[i].event_id);
        c.args.push_back(std::to_string(requests[i].group_floor));
      }
    }
    std::vector<Result<redis::Reply>> replies = client_->EvalMany(invalidate_many_, calls, *call);
    Scatter(order, replies, 0, "invalidate-many", out, [&](const redis::Reply& r, size_t e) -> Result<FenceOutcome> {
      const redis::Reply& one = r.elements[e];
      if (one.IsArray() && !one.elements.empty() && one.elements[0].IsInteger() && one.elements[0].integer == -1) {
        return Status::InvalidArgument("invalidate: not a tombstone envelope");
      }
      if (one.IsArray() && one.elements.size() == 2 && one.elements[0].IsInteger() && one.elements[1].IsInteger()) {
        // a group: {1, new generation} or {0, current generation}
        std::optional<uint64_t> gen = Generation(one.elements[1]);
        if (!gen) return Status::Internal("unexpected group reply: " + one.ToString());
        return FenceOutcome{one.elements[0].integer == 1 ? FillVerdict::kStored : FillVerdict::kOlderVersion, *gen};
      }
      return ParseFenceReply(one);
    });
    return out;
  }

  Result<bool> RemoveCorrupt(std::string_view key, std::string_view bytes, milliseconds timeout) override {
    return Flag(remove_corrupt_, std::string(key), {std::string(bytes)}, timeout);
  }

  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view token, milliseconds ttl,
                                    milliseconds timeout) override {
    return Lease(key, "", token, ttl, timeout);
  }

  Result<LeaseOutcome> AcquireLeaseInGroup(std::string_view key, std::string_view group, std::string_view token,
                                           milliseconds ttl, milliseconds timeout) override {
    TIERCACHE_RETURN_IF_ERROR(CheckSameSlot({std::string(key)}, group));
    return Lease(key, group, token, ttl, timeout);
  }

  Result<bool> ExtendLease(std::string_view key, std::string_view token, milliseconds ttl,
                           milliseconds timeout) override {
    return Flag(extend_, LeaseKeyFor(key), {std::string(token), Ms(ttl)}, timeout);
  }

  Result<bool> ReleaseLease(std::string_view key, std::string_view token, milliseconds timeout) override {
    return Flag(release_, LeaseKeyFor(key), {std::string(token)}, timeout);
  }

  int ShardOf(std::string_view key) const override {
    // Asked once per key of a GetMany, whose keys usually share a tag.
    thread_local TagPrefixSlotMemo slot_of;
    const int node = client_->NodeOfSlot(slot_of(key));
    return node < 0 ? 0 : node % 4096;
  }

 private:
  template <typename T>
  static std::vector<Result<T>> Fail(size_t n, const Status& s, std::vector<Result<T>>& out) {
    for (size_t i = 0; i < n; ++i) out[i] = s;
    return std::move(out);
  }

  // The lease script, in `group` when not empty ({won, value, fence, server
  // ms[, generation]}).
  Result<LeaseOutcome> Lease(std::string_view key, std::string_view group, std::string_view token, milliseconds ttl,
                             milliseconds timeout) {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    std::vector<std::string> keys = {std::string(key), LeaseKeyFor(key), FenceKeyFor(key)};
    if (!group.empty()) keys.push_back(GroupKeyFor(group));
    Result<redis::Reply> r = client_->Eval(acquire_, keys, {std::string(token), Ms(ttl)}, *call);
    if (!r.ok()) return r.status();
    std::optional<uint64_t> gen;
    const size_t size = group.empty() ? 4 : 5;
    bool shaped = r->IsArray() && r->elements.size() == size && r->elements[0].IsInteger() && r->elements[3].IsInteger();
    if (shaped && !group.empty()) shaped = (gen = Generation(r->elements[4])).has_value();
    if (!shaped) {
      // Give back a lease this call may have taken (best effort; it expires anyway).
      Flag(release_, LeaseKeyFor(key), {std::string(token)}, timeout).status().IgnoreError();
      return Status::Internal("unexpected lease script reply: " + r->ToString());
    }
    LeaseOutcome out;
    out.won = r->elements[0].integer == 1;
    if (r->elements[1].IsString()) out.value = std::move(r->elements[1].str);
    if (r->elements[2].IsString()) out.fence.epoch = std::move(r->elements[2].str);
    out.fence.store_ms = r->elements[3].integer;
    out.fence.group_generation = gen;
    return out;
  }

  // Runs a one-key script answering 1 or 0.
  Result<bool> Flag(const redis::Script& script, std::string key, std::vector<std::string> args,
                    milliseconds timeout) {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    Result<redis::Reply> r = client_->Eval(script, {std::move(key)}, args, *call);
    if (!r.ok()) return r.status();
    return r->IsInteger() && r->integer == 1;
  }

  std::shared_ptr<redis::RedisClient> client_;
  const redis::Script fill_;
  const redis::Script invalidate_;
  const redis::Script invalidate_many_;
  const redis::Script snapshot_;
  const redis::Script acquire_;
  const redis::Script extend_;
  const redis::Script release_;
  const redis::Script remove_corrupt_;
};

}  // namespace

std::shared_ptr<L2Store> MakeRedisL2Store(std::shared_ptr<redis::RedisClient> client) {
  return std::make_shared<RedisL2Store>(std::move(client));
}

}  // namespace tiercache
