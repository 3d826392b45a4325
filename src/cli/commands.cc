#include "cli/commands.h"

#include <poll.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "cli/output.h"
#include "outbox/pg.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
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

namespace {

// ---- outbox status ----------------------------------------------------------

namespace pg = outbox::pg;
using SteadyTime = std::chrono::steady_clock::time_point;

// How long the cancel request of a query that ran past the deadline may take.
constexpr milliseconds kCancelGrace{200};

// The unsent rows are read through the partial index tiercache_outbox_unsent:
// the WHERE clause is its predicate word for word (schema.cc), so the planner
// reads those rows only. The sent ones are not counted (that would read the
// whole table): pg_class.reltuples, the table's row count as of its last
// VACUUM or ANALYZE (-1: never), stands in for the total.
constexpr char kOutboxStatusSql[] =
    "SELECT u.unsent, u.oldest_ms, c.reltuples::bigint "
    "FROM (SELECT count(*) AS unsent, "
    "             coalesce(extract(epoch FROM clock_timestamp() - min(created_at)) * 1000, 0)::bigint AS oldest_ms "
    "      FROM tiercache_outbox WHERE sent_at IS NULL) u, "
    "     pg_catalog.pg_class c "
    "WHERE c.oid = 'tiercache_outbox'::regclass";

struct OutboxCounts {
  int64_t unsent = 0;
  int64_t oldest_ms = 0;
  int64_t rows_estimate = -1;  // all rows, sent or not; -1: unknown
};

milliseconds Left(SteadyTime deadline) {
  return std::chrono::ceil<milliseconds>(deadline - std::chrono::steady_clock::now());
}

// How much of libpq's or the server's text an error line shows.
constexpr size_t kMessageLimit = 300;

std::vector<std::string> SplitList(const std::string& v) {
  std::vector<std::string> out;
  for (size_t at = 0;; ++at) {
    const size_t comma = v.find(',', at);
    out.push_back(v.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) return out;
    at = comma;
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecoded(std::string_view v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size() && HexDigit(v[i + 1]) >= 0 && HexDigit(v[i + 2]) >= 0) {
      out += static_cast<char>(HexDigit(v[i + 1]) * 16 + HexDigit(v[i + 2]));
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

// One option of a conninfo, as PQconninfoParse gives it.
struct ConnOption {
  std::string keyword;
  std::optional<std::string> given;  // in --pg
  const char* envvar = nullptr;      // libpq's default from the environment, if any
  std::optional<std::string> compiled;
};

// --pg as libpq reads it, and what must never be printed of it.
struct ParsedConninfo {
  std::vector<ConnOption> options;
  // The password, the user-info of a URI and the pieces of its password
  // (3 characters and more), longest first: taken out of every message.
  std::vector<std::string> secrets;

  const ConnOption* Find(std::string_view keyword) const {
    for (const ConnOption& o : options) {
      if (o.keyword == keyword) return &o;
    }
    return nullptr;
  }
  // As libpq resolves it: given, else its environment variable, else the
  // compiled-in default (the service file aside).
  std::string Effective(std::string_view keyword) const {
    const ConnOption* o = Find(keyword);
    if (o == nullptr) return {};
    if (o->given) return *o->given;
    if (o->envvar != nullptr) {
      if (const char* env = std::getenv(o->envvar)) return env;
    }
    return o->compiled.value_or("");
  }
};

// The user-info of a postgresql:// URI: from "://" to the last '@' before
// the query string (a password may hold '@' or '/'); empty if none.
std::string UriUserInfo(const std::string& conninfo) {
  for (const char* scheme : {"postgresql://", "postgres://"}) {
    if (conninfo.rfind(scheme, 0) != 0) continue;
    const std::string rest = conninfo.substr(std::strlen(scheme));
    const std::string before_query = rest.substr(0, rest.find('?'));
    const size_t at = before_query.rfind('@');
    return at == std::string::npos ? std::string() : before_query.substr(0, at);
  }
  return {};
}

std::vector<std::string> Secrets(const std::string& conninfo, const std::optional<std::string>& password) {
  std::vector<std::string> out;
  const auto add = [&out](const std::string& s) {
    for (const std::string& whole : {s, PercentDecoded(s)}) {
      if (whole.size() >= 3) out.push_back(whole);
      for (size_t at = 0; at < whole.size();) {  // its pieces, as a misread URI splits them
        const size_t end = std::min(whole.find_first_of("@/:", at), whole.size());
        if (end - at >= 3 && end - at < whole.size()) out.push_back(whole.substr(at, end - at));
        at = end + 1;
      }
    }
  };
  if (password) add(*password);
  const std::string userinfo = UriUserInfo(conninfo);
  if (const size_t colon = userinfo.find(':'); colon != std::string::npos) {
    if (userinfo.size() >= 3) out.push_back(userinfo);
    add(userinfo.substr(colon + 1));
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// `text` with every occurrence of a secret replaced with "[hidden]" (runs
// that overlap or touch: one).
std::string Scrubbed(const std::string& text, const std::vector<std::string>& secrets) {
  std::vector<bool> hidden(text.size(), false);
  for (const std::string& s : secrets) {
    for (size_t at = 0; (at = text.find(s, at)) != std::string::npos; ++at) {
      std::fill(hidden.begin() + static_cast<std::ptrdiff_t>(at),
                hidden.begin() + static_cast<std::ptrdiff_t>(at + s.size()), true);
    }
  }
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!hidden[i]) {
      out += text[i];
    } else if (i == 0 || !hidden[i - 1]) {
      out += "[hidden]";
    }
  }
  return out;
}

// libpq's parser, for its verdict (its message is not shown: it quotes the
// input, which may hold a password), then what libpq would misread: a URI
// whose password holds an unescaped '@' or '/' parses, with part of the
// password taken for the host, the port or the database name, and libpq's
// error would quote it. Such a value is refused, named but not shown.
Result<ParsedConninfo> ParseConninfo(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) return Status::InvalidArgument("--pg is not a valid libpq connection string");
  ParsedConninfo p;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    ConnOption c;
    c.keyword = o->keyword;
    if (o->val != nullptr) c.given = o->val;
    c.envvar = o->envvar;  // static strings of libpq
    if (o->compiled != nullptr) c.compiled = o->compiled;
    p.options.push_back(std::move(c));
  }
  PQconninfoFree(options);
  constexpr char kEncode[] = " (a password with '@' or '/' must be percent-encoded)";
  if (const ConnOption* host = p.Find("host"); host != nullptr && host->given) {
    for (const std::string& h : SplitList(*host->given)) {
      if (h.find_first_of("@/") != std::string::npos && h[0] != '/') {  // '/...': a Unix socket directory
        return Status::InvalidArgument(std::string("--pg: the host contains '@' or '/'") + kEncode);
      }
    }
  }
  if (const ConnOption* port = p.Find("port"); port != nullptr && port->given) {
    if (port->given->find_first_not_of("0123456789,") != std::string::npos) {
      return Status::InvalidArgument(std::string("--pg: the port is not a number") + kEncode);
    }
  }
  for (const char* scheme : {"postgresql://", "postgres://"}) {
    if (conninfo.rfind(scheme, 0) != 0) continue;
    const std::string rest = conninfo.substr(std::strlen(scheme));
    const size_t slash = rest.find('/');
    if (slash != std::string::npos && rest.substr(slash, rest.find('?', slash) - slash).find('@') != std::string::npos) {
      return Status::InvalidArgument(
          "--pg: the URI's database name contains '@' (a password with '@' or '/' must be percent-encoded, and so "
          "must an '@' in a database name)");
    }
  }
  p.secrets = Secrets(conninfo, p.Find("password") ? p.Find("password")->given : std::nullopt);
  return p;
}

// libpq's or a server's text as one line of at most kMessageLimit bytes
// (more: cut, with the size), control characters blanked.
std::string OneLine(const std::string& text) {
  std::string line;
  std::istringstream lines(text);
  for (std::string l; std::getline(lines, l);) {
    while (!l.empty() && (l.back() == ' ' || l.back() == '\t' || l.back() == '\r')) l.pop_back();
    const size_t first = l.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    line += (line.empty() ? "" : "; ") + l.substr(first);
  }
  for (char& ch : line) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
  }
  if (line.size() <= kMessageLimit) return line;
  size_t cut = kMessageLimit;
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
  return line.substr(0, cut) + "... (" + std::to_string(line.size()) + " bytes)";
}

// The status as printed: the password out, the message one line, cut.
Status Shown(const Status& s, const std::vector<std::string>& secrets) {
  if (s.ok()) return s;
  std::string msg = Scrubbed(std::string(s.message()), secrets);
  std::string suffix;
  if (const size_t at = msg.rfind(" (SQLSTATE "); at != std::string::npos && msg.size() - at == 17) {
    suffix = msg.substr(at);
    msg.erase(at);
  }
  std::string prefix;
  for (const char* p : {"postgresql: cannot connect: ", "postgresql: connection lost: ", "postgresql: "}) {
    if (msg.rfind(p, 0) == 0) {
      prefix = p;
      msg.erase(0, prefix.size());
      break;
    }
  }
  return Status(s.code(), prefix + OneLine(msg) + suffix);
}

// A server's error, as pg.cc words it ("... (SQLSTATE xxxxx)"), classed for
// ExitCodeOf: a cancelled statement (statement_timeout, our cancel, an
// operator's) and a server going away or not accepting connections yet are
// "did not answer" (4); the other errors stay the server's (5).
Status Classified(const Status& s) {
  const std::string msg(s.message());
  const size_t at = msg.rfind("(SQLSTATE ");
  if (!s.IsInternal() || at == std::string::npos) return s;
  const std::string state = msg.substr(at + 10, 5);
  if (state == "57014") return Status::DeadlineExceeded(msg);
  if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P02" || state == "57P03") {
    return Status::Unavailable(msg);
  }
  return s;
}

// libpq's message for a failed connection and the SQLSTATE in it, if a
// server's error: with PQERRORS_VERBOSE that reads "FATAL:  <SQLSTATE>:
// <text>", followed by a LOCATION line (dropped).
std::pair<std::string, std::string> SplitSqlState(std::string msg) {
  std::string state;
  for (size_t at = msg.find(":  "); at != std::string::npos && state.empty(); at = msg.find(":  ", at + 1)) {
    const std::string_view code = std::string_view(msg).substr(at + 3, 7);
    const auto state_char = [](char ch) {
      return std::isdigit(static_cast<unsigned char>(ch)) || (ch >= 'A' && ch <= 'Z');
    };
    if (code.size() == 7 && code.substr(5) == ": " && std::all_of(code.begin(), code.begin() + 5, state_char)) {
      state = std::string(code.substr(0, 5));
      msg.erase(at + 3, 7);
    }
  }
  std::string text;
  std::istringstream lines(msg);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.rfind("LOCATION:", 0) != 0) text += (text.empty() ? "" : "\n") + line;
  }
  return {text, state};
}

// Whether libpq's message says the connection went away (the server closed
// or reset it) rather than that the server answered something refused.
bool ConnectionLost(const std::string& text) {
  for (const char* lost : {"closed the connection unexpectedly", "EOF detected", "connection has been closed",
                           "Connection reset by peer", "could not receive data from server",
                           "could not send data to server", "Broken pipe"}) {
    if (text.find(lost) != std::string::npos) return true;
  }
  return false;
}

// `answered`: the failed step was past the TCP connection (libpq had sent
// its startup or SSL request, so what failed was the server's answer).
Status ConnectError(PGconn* c, bool answered) {
  auto [text, state] = SplitSqlState(PQerrorMessage(c));
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n')) text.pop_back();
  if (text.empty() || text.back() == ':') {
    // libpq takes an ErrorResponse over 30000 bytes for a pre-3.0 server's
    // and reads nothing of it (or the peer is not PostgreSQL).
    text += std::string(text.empty() ? "" : " ") +
            "the server's answer could not be read (an error message over libpq's 30000-byte limit, or not a "
            "PostgreSQL server)";
  }
  const std::string msg = "postgresql: cannot connect: " + text;
  if (!state.empty()) return Classified(Status::Internal(msg + " (SQLSTATE " + state + ")"));
  // The server asked for a password and there is none: a refusal, not silence.
  if (PQconnectionNeedsPassword(c)) return Status::Internal(msg);
  // SSL refused (sslmode=require), a failed SSL handshake, a protocol error:
  // the server answered.
  if (answered && !ConnectionLost(text)) return Status::Internal(msg);
  return Status::Unavailable(msg);
}

// Waits for `c`'s socket to be ready for `events` until `deadline`.
Status WaitSocket(PGconn* c, short events, SteadyTime deadline, milliseconds timeout) {
  for (;;) {
    const milliseconds left = Left(deadline);
    if (left.count() <= 0) {
      return Status::DeadlineExceeded("postgresql: not connected within " + std::to_string(timeout.count()) + " ms");
    }
    pollfd p{PQsocket(c), events, 0};
    if (p.fd < 0) return Status::Unavailable("postgresql: cannot connect: no socket");
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) return Status::Unavailable(std::string("postgresql: poll: ") + std::strerror(errno));
  }
}

// Where the server's notices go: `err`, the password taken out.
struct NoticeSink {
  std::ostream* err;
  const std::vector<std::string>* secrets;
};

void ForwardNotice(void* arg, const char* message) {
  const auto* sink = static_cast<NoticeSink*>(arg);
  *sink->err << Scrubbed(message, *sink->secrets);
}

// One connection attempt (libpq's nonblocking way) with `keys`/`values`,
// before `deadline`.
Result<pg::ConnPtr> ConnectAttempt(const std::vector<std::string>& keys, const std::vector<std::string>& values,
                                   bool expand_dbname, SteadyTime deadline, milliseconds timeout,
                                   NoticeSink* notices) {
  std::vector<const char*> k, v;
  for (size_t i = 0; i < keys.size(); ++i) k.push_back(keys[i].c_str()), v.push_back(values[i].c_str());
  k.push_back(nullptr);
  v.push_back(nullptr);
  pg::ConnPtr c(PQconnectStartParams(k.data(), v.data(), expand_dbname ? 1 : 0));
  if (c == nullptr) return Status::ResourceExhausted("postgresql: out of memory");
  PQsetErrorVerbosity(c.get(), PQERRORS_VERBOSE);  // a startup error's SQLSTATE, for ConnectError
  PQsetNoticeProcessor(c.get(), ForwardNotice, notices);
  ConnStatusType before = CONNECTION_STARTED;  // the step the last PQconnectPoll took
  for (PostgresPollingStatusType st = PGRES_POLLING_WRITING; st != PGRES_POLLING_OK;) {
    if (st == PGRES_POLLING_FAILED || PQstatus(c.get()) == CONNECTION_BAD) {
      const bool answered = before != CONNECTION_STARTED && before != CONNECTION_MADE && before != CONNECTION_NEEDED &&
                            before != CONNECTION_BAD;
      return ConnectError(c.get(), answered);
    }
    TIERCACHE_RETURN_IF_ERROR(WaitSocket(c.get(), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline, timeout));
    before = PQstatus(c.get());
    st = PQconnectPoll(c.get());
  }
  PQsetErrorVerbosity(c.get(), PQERRORS_DEFAULT);
  return c;
}

// connect_timeout as libpq counts it (in --pg or PGCONNECT_TIMEOUT; 1 is
// 2); 0: none.
int ConnectTimeoutSeconds(const ParsedConninfo& p) {
  const std::string v = p.Effective("connect_timeout");
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || end == v.c_str() || std::string_view(end).find_first_not_of(" \t") != std::string_view::npos ||
      n <= 0) {
    return 0;
  }
  return static_cast<int>(std::clamp<long>(n, 2, 86400));  // above --timeout-ms's range anyway
}

// One attempt per host, each with every other option of --pg: when
// connect_timeout is set and several hosts are listed (libpq applies
// connect_timeout only to its blocking connect, so its nonblocking one
// would spend the whole --timeout-ms on a first host that never answers).
// Empty when libpq's own single attempt applies: one host, a service file
// (which may list hosts), target_session_attrs=prefer-standby (two passes
// over the hosts), an empty or mismatched entry in the host, hostaddr or
// port lists (libpq reports the mismatch).
struct HostAttempt {
  std::string where;  // host:port, for messages
  std::vector<std::string> keys, values;
};
std::vector<HostAttempt> PerHostAttempts(const ParsedConninfo& p) {
  if (!p.Effective("service").empty() || p.Effective("target_session_attrs") == "prefer-standby") return {};
  const std::string host = p.Effective("host"), hostaddr = p.Effective("hostaddr");
  const std::vector<std::string> hosts = host.empty() ? std::vector<std::string>{} : SplitList(host);
  const std::vector<std::string> addrs = hostaddr.empty() ? std::vector<std::string>{} : SplitList(hostaddr);
  const std::vector<std::string> ports = SplitList(p.Effective("port"));
  const size_t n = !addrs.empty() ? addrs.size() : hosts.size();
  if (n < 2 || (!hosts.empty() && hosts.size() != n) || (ports.size() != 1 && ports.size() != n)) return {};
  const ConnOption* port_option = p.Find("port");
  std::vector<HostAttempt> out(n);
  for (size_t i = 0; i < n; ++i) {
    HostAttempt& a = out[i];
    bool app_name = false;
    for (const ConnOption& o : p.options) {
      if (!o.given || o.keyword == "host" || o.keyword == "hostaddr" || o.keyword == "port") continue;
      a.keys.push_back(o.keyword);
      a.values.push_back(*o.given);
      app_name = app_name || o.keyword == "fallback_application_name";
    }
    if (!app_name) a.keys.push_back("fallback_application_name"), a.values.push_back("tiercache-cli");
    std::string port = ports.size() == 1 ? ports[0] : ports[i];
    if (port.empty() && port_option != nullptr) port = port_option->compiled.value_or("");
    if ((!hosts.empty() && hosts[i].empty()) || (!addrs.empty() && addrs[i].empty()) || port.empty()) return {};
    if (!hosts.empty()) a.keys.push_back("host"), a.values.push_back(hosts[i]);
    if (!addrs.empty()) a.keys.push_back("hostaddr"), a.values.push_back(addrs[i]);
    a.keys.push_back("port");
    a.values.push_back(port);
    a.where = (hosts.empty() ? addrs[i] : hosts[i]) + ":" + port;
  }
  return out;
}

// Connects before `deadline`. `conninfo` goes in as an expanded dbname, so
// key=value strings and URIs both work and the user's options, PGOPTIONS and
// the other PG* variables apply as they would anywhere. connect_timeout (or
// PGCONNECT_TIMEOUT) bounds each host as it does in psql, within
// `deadline`: with several hosts, they are tried one at a time
// (PerHostAttempts). The server's notices go to `notices`.
Result<pg::ConnPtr> ConnectBefore(const std::string& conninfo, const ParsedConninfo& p, SteadyTime deadline,
                                  milliseconds timeout, NoticeSink* notices) {
  const int per_host_s = ConnectTimeoutSeconds(p);
  const auto attempt_deadline = [&] {
    return per_host_s == 0 ? deadline
                           : std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(per_host_s));
  };
  const auto late = [&](const Status& s, const std::string& where) {
    if (!s.IsDeadlineExceeded() || std::chrono::steady_clock::now() >= deadline) return s;
    return Status::DeadlineExceeded("postgresql: cannot connect: " + where + "no answer within connect_timeout (" +
                                    std::to_string(per_host_s) + " s)");
  };
  const std::vector<HostAttempt> hosts = per_host_s > 0 ? PerHostAttempts(p) : std::vector<HostAttempt>{};
  if (hosts.empty()) {
    Result<pg::ConnPtr> c = ConnectAttempt({"fallback_application_name", "dbname"}, {"tiercache-cli", conninfo},
                                           /*expand_dbname=*/true, attempt_deadline(), timeout, notices);
    if (!c.ok()) return late(c.status(), "");
    return c;
  }
  std::string failures;  // of the hosts tried, as libpq lists them
  Status last;
  for (const HostAttempt& h : hosts) {
    Result<pg::ConnPtr> c =
        ConnectAttempt(h.keys, h.values, /*expand_dbname=*/false, attempt_deadline(), timeout, notices);
    if (c.ok()) return c;
    last = late(c.status(), h.where + ": ");
    std::string msg(last.message());
    if (msg.rfind("postgresql: cannot connect: ", 0) == 0) msg.erase(0, 28);
    failures += (failures.empty() ? "" : "; ") + msg;
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  return Status(last.code(), "postgresql: cannot connect: " + failures);
}

// Asks the server to cancel `c`'s running query. PQcancel (libpq 15) blocks
// on a connection of its own with no timeout, so it runs on a thread waited
// for `grace` at most; a server that never answers leaves that thread blocked
// until the process exits.
void RequestCancel(PGconn* c, milliseconds grace) {
  PGcancel* cancel = PQgetCancel(c);
  if (cancel == nullptr) return;
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  std::thread([cancel, done] {
    char error[256];
    PQcancel(cancel, error, sizeof error);
    PQfreeCancel(cancel);
    done->set_value();
  }).detach();
  finished.wait_for(grace);
}

Result<int64_t> IntCell(const PGresult* r, int col) {
  const std::string_view v = pg::Cell(r, 0, col);
  int64_t n = 0;
  const auto parsed = std::from_chars(v.data(), v.data() + v.size(), n);
  if (parsed.ec != std::errc() || parsed.ptr != v.data() + v.size()) {
    return Status::Internal("postgresql: unexpected reply '" + Preview(v) + "'");
  }
  return n;
}

// statement_timeout server-side as well (belt and braces: the client's
// deadline is what bounds the wait), then the counts, before `deadline`.
Result<OutboxCounts> QueryCounts(PGconn* c, SteadyTime deadline, milliseconds timeout) {
  const std::string set = "SET statement_timeout = " + std::to_string(timeout.count());
  Result<pg::ResultPtr> r = pg::ExecFor(c, set, {}, PGRES_COMMAND_OK, Left(deadline), -1);
  if (r.ok()) r = pg::ExecFor(c, kOutboxStatusSql, {}, PGRES_TUPLES_OK, Left(deadline), -1);
  if (!r.ok() && r.status().IsDeadlineExceeded()) {
    RequestCancel(c, kCancelGrace);
    return Status::DeadlineExceeded("postgresql: no answer within " + std::to_string(timeout.count()) +
                                    " ms (cancel requested)");
  }
  if (!r.ok()) return Classified(r.status());
  if (PQntuples(r->get()) != 1 || PQnfields(r->get()) != 3) return Status::Internal("postgresql: unexpected reply");
  Result<int64_t> unsent = IntCell(r->get(), 0), oldest = IntCell(r->get(), 1), rows = IntCell(r->get(), 2);
  for (const auto* v : {&unsent, &oldest, &rows}) {
    if (!v->ok()) return v->status();
  }
  return OutboxCounts{*unsent, *oldest, *rows};
}

}  // namespace

int OutboxStatus(const std::string& conninfo, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err) {
  Result<ParsedConninfo> parsed = ParseConninfo(conninfo);
  if (!parsed.ok()) return Fail(err, "outbox status", parsed.status());
  const std::vector<std::string>& secrets = parsed->secrets;
  NoticeSink notices{&err, &secrets};
  const SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
  Result<pg::ConnPtr> conn = ConnectBefore(conninfo, *parsed, deadline, timeout, &notices);
  if (!conn.ok()) return Fail(err, "outbox status", Shown(conn.status(), secrets));
  Result<OutboxCounts> n = QueryCounts(conn->get(), deadline, timeout);
  if (!n.ok()) return Fail(err, "outbox status", Shown(n.status(), secrets));
  out << "unsent       " << n->unsent << " rows\n";
  out << "oldest       " << (n->unsent == 0 ? std::string("none") : std::to_string(n->oldest_ms) + " ms old") << "\n";
  if (n->rows_estimate < 0) {
    out << "sent, kept   unknown (estimated from the table's statistics: none yet, never vacuumed or analyzed)\n";
  } else {
    out << "sent, kept   ~" << std::max<int64_t>(0, n->rows_estimate - n->unsent)
        << " rows (estimate from the table's statistics; deleted after the relay's retention)\n";
  }
  return kExitOk;
}

}  // namespace tiercache::cli
