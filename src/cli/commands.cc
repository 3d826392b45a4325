#include "cli/commands.h"

#include <algorithm>
#include <charconv>
#include <memory>
#include <utility>

#include "cli/output.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/outbox.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache::cli {
namespace {

using redis::Reply;
using std::chrono::milliseconds;

Result<redis::Endpoint> ParseEndpoint(const std::string& s) {
  const size_t colon = s.rfind(':');
  int port = 0;
  const char* end = s.data() + s.size();
  const auto parsed = colon == std::string::npos ? std::from_chars_result{end, std::errc::invalid_argument}
                                                 : std::from_chars(s.data() + colon + 1, end, port);
  if (colon == std::string::npos || colon == 0 || parsed.ec != std::errc() || parsed.ptr != end || port < 1 ||
      port > 65535) {
    return Status::InvalidArgument("--redis must be host:port, got '" + s + "'");
  }
  redis::Endpoint e;
  e.host = s.substr(0, colon);
  e.port = port;
  return e;
}

Result<std::shared_ptr<redis::RedisClient>> Connect(const Connection& c) {
  Result<redis::Endpoint> seed = ParseEndpoint(c.redis);
  if (!seed.ok()) return seed.status();
  redis::RedisClientOptions o;
  o.seeds = {*seed};
  o.username = c.redis_user;
  o.password = c.redis_password;
  o.connect_timeout = c.timeout;
  o.command_timeout = c.timeout;
  Result<std::unique_ptr<redis::RedisClient>> client = redis::RedisClient::Create(o);
  if (!client.ok()) return client.status();
  return std::shared_ptr<redis::RedisClient>(std::move(*client));
}

// One slot range of CLUSTER SLOTS: its master first, then its replicas.
struct SlotRange {
  int first = 0, last = 0;
  std::vector<std::string> nodes;  // host:port
};

Result<std::vector<SlotRange>> ClusterSlots(redis::RedisClient& client, milliseconds timeout) {
  redis::CommandOptions o;
  o.key_index = -1;
  o.idempotent = true;
  o.call.timeout = timeout;
  Result<Reply> r = client.Command({"CLUSTER", "SLOTS"}, o);
  if (!r.ok()) return r.status();
  if (r->IsError()) return Status::Internal("CLUSTER SLOTS: " + r->str);
  if (!r->IsArray()) return Status::Internal("CLUSTER SLOTS: unexpected reply " + r->ToString());
  std::vector<SlotRange> ranges;
  for (const Reply& e : r->elements) {
    if (!e.IsArray() || e.elements.size() < 3 || !e.elements[0].IsInteger() || !e.elements[1].IsInteger()) {
      return Status::Internal("CLUSTER SLOTS: unexpected entry " + e.ToString());
    }
    SlotRange range{static_cast<int>(e.elements[0].integer), static_cast<int>(e.elements[1].integer), {}};
    for (size_t i = 2; i < e.elements.size(); ++i) {
      const Reply& n = e.elements[i];
      if (n.IsArray() && n.elements.size() >= 2 && n.elements[0].IsString() && n.elements[1].IsInteger()) {
        range.nodes.push_back(n.elements[0].str + ":" + std::to_string(n.elements[1].integer));
      }
    }
    ranges.push_back(std::move(range));
  }
  std::sort(ranges.begin(), ranges.end(), [](const SlotRange& a, const SlotRange& b) { return a.first < b.first; });
  return ranges;
}

std::string Millis(WallTime t) {
  const auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
  const auto now = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch());
  const long long in = ms - now.count();
  return std::to_string(ms) + " ms since the epoch (" + (in >= 0 ? "in " : "") + std::to_string(in >= 0 ? in : -in) +
         " ms" + (in >= 0 ? "" : " ago") + ")";
}

std::string_view KindName(EntryKind k) {
  switch (k) {
    case EntryKind::kValue: return "value";
    case EntryKind::kNegative: return "negative (the source said: not found)";
    case EntryKind::kTombstone: return "tombstone (invalidated)";
  }
  return "unknown";
}

// A plain GET of an internal key (lease, fence, group generation), and its PTTL.
struct Raw {
  std::optional<std::string> value;
  int64_t pttl_ms = -2;
};

Result<Raw> ReadRaw(redis::RedisClient& client, const std::string& key, milliseconds timeout) {
  redis::CallOptions call;
  call.timeout = timeout;
  Result<std::optional<std::string>> v = client.Get(key, call);
  if (!v.ok()) return v.status();
  redis::CommandOptions o;
  o.idempotent = true;
  o.call.timeout = timeout;
  Result<Reply> ttl = client.Command({"PTTL", key}, o);
  if (!ttl.ok()) return ttl.status();
  return Raw{std::move(*v), ttl->IsInteger() ? ttl->integer : -2};
}

std::string TtlText(int64_t pttl) {
  if (pttl == -1) return "no expiry";
  if (pttl < 0) return "none";
  return std::to_string(pttl) + " ms left";
}

// The fence key's "<epoch>|<8-byte big-endian floor>" (l2_store.h).
std::string FenceText(const std::string& v) {
  const size_t bar = v.rfind('|');
  if (bar == std::string::npos || v.size() - bar - 1 != 8) return Preview(v) + " (not a fence value)";
  uint64_t floor = 0;
  for (size_t i = bar + 1; i < v.size(); ++i) floor = (floor << 8) | static_cast<unsigned char>(v[i]);
  return "epoch " + Preview(v.substr(0, bar)) + ", floor " + std::to_string(floor);
}

}  // namespace

int ExitCodeOf(const Status& s) {
  if (s.ok()) return kExitOk;
  if (s.IsInvalidArgument()) return kExitUsage;
  if (s.IsUnavailable() || s.IsDeadlineExceeded()) return kExitUnreachable;
  return kExitServerError;
}

int Keyslot(const Connection& c, const std::vector<std::string>& keys, std::ostream& out, std::ostream& err) {
  for (const std::string& k : keys) {
    if (k.empty()) {
      err << "tiercache: keyslot: an empty key\n";
      return kExitUsage;
    }
  }
  Result<std::shared_ptr<redis::RedisClient>> client = Connect(c);
  Result<std::vector<SlotRange>> ranges =
      client.ok() ? ClusterSlots(**client, c.timeout) : Result<std::vector<SlotRange>>(client.status());
  for (const std::string& k : keys) {
    const uint16_t slot = redis::KeySlot(k);
    out << k << "\tslot " << slot;
    if (ranges.ok()) {
      const auto it = std::find_if(ranges->begin(), ranges->end(),
                                   [&](const SlotRange& r) { return r.first <= slot && slot <= r.last; });
      out << "\tmaster " << (it == ranges->end() || it->nodes.empty() ? "(none: the slot is not served)" : it->nodes[0]);
    }
    out << "\n";
  }
  if (!ranges.ok()) return Fail(err, "keyslot: owners unknown (the slots above need no server)", ranges.status());
  return kExitOk;
}

int Cluster(const Connection& c, std::ostream& out, std::ostream& err) {
  Result<std::shared_ptr<redis::RedisClient>> client = Connect(c);
  if (!client.ok()) return Fail(err, "cluster", client.status());
  Result<std::vector<SlotRange>> ranges = ClusterSlots(**client, c.timeout);
  if (!ranges.ok()) return Fail(err, "cluster", ranges.status());
  int served = 0;
  for (const SlotRange& r : *ranges) {
    served += r.last - r.first + 1;
    out << "slots " << r.first << "-" << r.last << "\tmaster " << (r.nodes.empty() ? "?" : r.nodes[0]);
    for (size_t i = 1; i < r.nodes.size(); ++i) out << (i == 1 ? "\treplicas " : ",") << r.nodes[i];
    out << "\n";
  }
  out << served << " of " << redis::kSlotCount << " slots served\n";
  return kExitOk;
}

int Inspect(const Connection& c, const std::string& key, const std::string& group, std::ostream& out,
            std::ostream& err) {
  if (key.empty()) {
    err << "tiercache: inspect: an empty key\n";
    return kExitUsage;
  }
  if (!group.empty()) {
    if (Status bad = CheckGroupName(group); !bad.ok()) return Fail(err, "inspect", bad);
  }
  Result<std::shared_ptr<redis::RedisClient>> client = Connect(c);
  if (!client.ok()) return Fail(err, "inspect", client.status());
  redis::RedisClient& r = **client;
  Result<Raw> entry = ReadRaw(r, key, c.timeout);
  if (!entry.ok()) return Fail(err, "inspect " + key, entry.status());
  int code = kExitOk;
  out << "key          " << key << " (slot " << redis::KeySlot(key) << ")\n";
  std::optional<EnvelopeView> env;
  if (!entry->value) {
    out << "entry        none\n";
    code = kExitNotFound;
  } else {
    Result<EnvelopeView> e = DecodeEnvelope(*entry->value);
    if (!e.ok()) {
      out << "entry        " << entry->value->size() << " bytes that are not a tiercache envelope: "
          << e.status().message() << "\n";
      code = kExitServerError;
    } else {
      env = *e;
      out << "kind         " << KindName(e->kind) << "\n";
      out << "version      " << e->version << (e->version == 0 ? " (unversioned)" : "") << "\n";
      out << "expires      " << Millis(e->expires_at) << " (logical)\n";
      out << "physical ttl " << TtlText(entry->pttl_ms) << "\n";
      out << "written      " << Millis(e->written_at) << "\n";
      out << "load took    " << e->load_duration.count() << " us (delta, for early refresh)\n";
      out << "codec        " << static_cast<int>(e->codec_id) << "\n";
      if (e->grouped) out << "group gen    " << e->group_generation << " (filled under)\n";
      out << "payload      " << Preview(e->payload) << "\n";
    }
  }
  Result<Raw> lease = ReadRaw(r, LeaseKeyFor(key), c.timeout);
  if (!lease.ok()) return Fail(err, "inspect " + key + " (lease)", lease.status());
  out << "lease        "
      << (lease->value ? "held by " + Preview(*lease->value) + ", " + TtlText(lease->pttl_ms) : std::string("free"))
      << "\n";
  Result<Raw> fence = ReadRaw(r, FenceKeyFor(key), c.timeout);
  if (!fence.ok()) return Fail(err, "inspect " + key + " (fence)", fence.status());
  out << "fence        " << (fence->value ? FenceText(*fence->value) + ", " + TtlText(fence->pttl_ms) : std::string("none"))
      << "\n";
  if (!group.empty()) {
    Result<Raw> gen = ReadRaw(r, GroupKeyFor(group), c.timeout);
    if (!gen.ok()) return Fail(err, "inspect " + key + " (group)", gen.status());
    out << "group        " << group << " at generation " << (gen->value ? Preview(*gen->value) : std::string("none"));
    if (env && !env->grouped) {
      out << " (the entry is NOT a member: filled outside any group)";
    } else if (env) {
      const bool current = gen->value && std::to_string(env->group_generation) == *gen->value;
      out << (current ? " (the entry is current)" : " (the entry is NOT current: filled under another generation)");
    }
    out << "\n";
    Result<Raw> floor = ReadRaw(r, GroupFloorKeyFor(group), c.timeout);
    if (!floor.ok()) return Fail(err, "inspect " + key + " (group floor)", floor.status());
    out << "group floor  " << (floor->value ? Preview(*floor->value) : std::string("none")) << "\n";
  }
  return code;
}

int Get(const Connection& c, const std::string& key, const std::string& group, std::ostream& out,
        std::ostream& err) {
  if (key.empty()) {
    err << "tiercache: get: an empty key\n";
    return kExitUsage;
  }
  Result<std::shared_ptr<redis::RedisClient>> client = Connect(c);
  if (!client.ok()) return Fail(err, "get", client.status());
  std::shared_ptr<L2Store> l2 = MakeRedisL2Store(*client);
  std::optional<std::string> bytes;
  std::optional<uint64_t> generation;
  if (group.empty()) {
    Result<std::optional<std::string>> v = l2->Get(key, c.timeout);
    if (!v.ok()) return Fail(err, "get " + key, v.status());
    bytes = std::move(*v);
  } else {
    Result<GroupRead> g = l2->GetInGroup({key}, group, c.timeout);
    if (!g.ok()) return Fail(err, "get " + key, g.status());
    if (g->values.size() == 1) bytes = std::move(g->values[0]);
    generation = g->generation;
  }
  if (!bytes) {
    err << "tiercache: get " << key << ": nothing stored\n";
    return kExitNotFound;
  }
  Result<EnvelopeView> e = DecodeEnvelope(*bytes);
  if (!e.ok()) return Fail(err, "get " + key + ": not a tiercache envelope", e.status());
  if (e->kind != EntryKind::kValue) {
    err << "tiercache: get " << key << ": " << KindName(e->kind) << " at version " << e->version << "\n";
    return kExitNotFound;
  }
  if (group.empty() && e->grouped) {
    err << "tiercache: get " << key << ": a member of a group (filled under generation " << e->group_generation
        << "): name it with --group to see whether it is current\n";
    return kExitNotFound;
  }
  if (!group.empty() && (!e->grouped || !generation || e->group_generation != *generation)) {
    err << "tiercache: get " << key << ": not current in group " << group << " (filled under generation "
        << e->group_generation << ")\n";
    return kExitNotFound;
  }
  if (std::chrono::system_clock::now() >= e->expires_at) {
    err << "tiercache: get " << key << ": expired (a stale copy, version " << e->version << ")\n";
    return kExitNotFound;
  }
  out << e->payload;
  if (e->payload.empty() || e->payload.back() != '\n') out << "\n";
  return kExitOk;
}

int Invalidate(const Connection& c, const std::string& key, const std::string& group,
               std::optional<uint64_t> version, std::ostream& out, std::ostream& err) {
  if (key.empty() == group.empty()) {
    err << "tiercache: invalidate: name a KEY or a --group, not both\n";
    return kExitUsage;
  }
  Result<std::shared_ptr<redis::RedisClient>> client = Connect(c);
  if (!client.ok()) return Fail(err, "invalidate", client.status());
  CacheOptions o;
  o.l2 = MakeRedisL2Store(*client);
  o.use_l1 = false;
  o.l2_timeout = c.timeout;
  Result<std::unique_ptr<Cache>> cache = Cache::Create(o);
  if (!cache.ok()) return Fail(err, "invalidate", cache.status());
  Cache::Invalidation inv;
  inv.key = group.empty() ? key : group;
  inv.group = !group.empty();
  inv.version = version.value_or(0);
  std::vector<Result<Cache::InvalidationResult>> r = (*cache)->InvalidateMany({inv});
  const std::string what = (group.empty() ? "key " : "group ") + inv.key;
  if (r.size() != 1) return Fail(err, "invalidate " + what, Status::Internal("no result"));
  if (!r[0].ok()) return Fail(err, "invalidate " + what, r[0].status());
  if (*r[0] == Cache::InvalidationResult::kApplied) {
    out << "invalidated " << what << (version ? " at version " + std::to_string(*version) : std::string())
        << " in L2 (no event published: other pods' L1 copies live until their L1 TTL)\n";
  } else {
    out << "ignored: " << what << " was already at version " << inv.version << " or newer\n";
  }
  return kExitOk;
}

int OutboxStatus(const std::string& conninfo, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err) {
  // Bounded: the connection by connect_timeout (whole seconds), the query by
  // statement_timeout, unless the conninfo sets them.
  std::string info = conninfo;
  if (info.find("connect_timeout") == std::string::npos) {
    info += " connect_timeout=" + std::to_string(std::max<int64_t>(1, (timeout.count() + 999) / 1000));
  }
  if (info.find("options") == std::string::npos) {
    info += " options='-c statement_timeout=" + std::to_string(timeout.count()) + "'";
  }
  Result<outbox::OutboxStatus> s = outbox::GetOutboxStatus(info);
  if (!s.ok()) return Fail(err, "outbox status", s.status());
  out << "unsent       " << s->unsent << " rows\n";
  out << "oldest       " << (s->unsent == 0 ? std::string("none") : std::to_string(s->oldest_unsent_age.count()) + " ms old")
      << "\n";
  out << "sent, kept   " << s->sent_retained << " rows (deleted after the relay's retention)\n";
  return kExitOk;
}

}  // namespace tiercache::cli
