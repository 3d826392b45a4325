#include "tiercache/redis/redis_client.h"

#include <array>
#include <map>
#include <memory>

#include "redis/engine.h"
#include "redis/protocol.h"
#include "redis/request.h"
#include "redis/sha1.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis {

using internal::Request;
using internal::SyncRequest;
using internal::SteadyClock;
using internal::ToOptionalString;

namespace {

internal::TimePoint DeadlineOf(const CallOptions& call, const RedisClientOptions& o) {
  auto t = call.timeout.count() > 0 ? call.timeout : o.command_timeout;
  return SteadyClock::now() + t;
}

template <typename Args>
Request* NewRequest(const Args& args, int key_index, bool idempotent, internal::TimePoint deadline) {
  auto* req = new Request;
  internal::AppendCommand(req->cmd, args);
  if (key_index >= 0 && static_cast<size_t>(key_index) < args.size()) req->slot = KeySlot(args[key_index]);
  req->idempotent = idempotent;
  req->deadline = deadline;
  return req;
}

}  // namespace

Script::Script(std::string body) : body_(std::move(body)), sha1_(internal::Sha1Hex(body_)) {}

RedisClient::RedisClient(std::unique_ptr<internal::Engine> engine) : engine_(std::move(engine)) {}
RedisClient::~RedisClient() = default;

Result<std::unique_ptr<RedisClient>> RedisClient::Create(RedisClientOptions options) {
  TIERCACHE_RETURN_IF_ERROR(options.Validate());
  auto engine = std::make_unique<internal::Engine>(std::move(options));
  TIERCACHE_RETURN_IF_ERROR(engine->Start());
  return std::unique_ptr<RedisClient>(new RedisClient(std::move(engine)));
}

Result<Reply> RedisClient::Command(const std::vector<std::string>& args, CommandOptions options) {
  if (args.empty()) return Status::InvalidArgument("empty command");
  SyncRequest req(NewRequest(args, options.key_index, options.idempotent, DeadlineOf(options.call, engine_->options())));
  req->read_only = options.read_only;
  return engine_->Call(std::move(req));
}

Result<std::optional<std::string>> RedisClient::Get(std::string_view key, CallOptions call) {
  const std::array<std::string_view, 2> args{"GET", key};
  SyncRequest req(NewRequest(args, 1, true, DeadlineOf(call, engine_->options())));
  req->read_only = true;
  return ToOptionalString(engine_->Call(std::move(req)));
}

Result<bool> RedisClient::Set(std::string_view key, std::string_view value, SetOptions options) {
  std::string px;
  std::vector<std::string_view> args{"SET", key, value};
  if (options.ttl.count() > 0) {
    px = std::to_string(options.ttl.count());
    args.push_back("PX");
    args.push_back(px);
  }
  if (options.only_if_absent) args.push_back("NX");
  Result<Reply> r =
      engine_->Call(SyncRequest(NewRequest(args, 1, !options.only_if_absent, DeadlineOf(options.call, engine_->options()))));
  if (!r.ok()) return r.status();
  if (r->IsNil()) return false;
  if (r->IsStatus() && r->str == "OK") return true;
  return Status::Internal("SET: unexpected reply " + r->ToString());
}

namespace {

// Runs `name key...` split by slot; the replies of the parts, in slot order,
// each with the indexes (in `keys`) it covers.
struct SlotPart {
  std::vector<size_t> indexes;
  SyncRequest req;  // submitted, or else AwaitPart runs it with Engine::Call
};

// The reply of `p`. A lone part is not queued by SplitBySlot: it runs as
// Engine::Call runs a single command, in the caller's thread over an idle
// connection when the caller is alone, saving two thread hand-offs.
Result<Reply> AwaitPart(internal::Engine& engine, SlotPart& p) {
  return p.req.submitted() ? engine.Await(std::move(p.req)) : engine.Call(std::move(p.req));
}

// One request for `keys` (all in `slot`), given as indexes into them.
SlotPart PartFor(std::string_view name, const std::vector<std::string>& keys, std::vector<size_t> idx,
                 uint16_t slot, bool idempotent, internal::TimePoint deadline) {
  std::vector<std::string_view> args;
  args.reserve(idx.size() + 1);
  args.push_back(name);
  for (size_t i : idx) args.push_back(keys[i]);
  SyncRequest req(NewRequest(args, -1, idempotent, deadline));
  req->slot = slot;
  req->read_only = name == "MGET";
  return SlotPart{std::move(idx), std::move(req)};
}

std::vector<SlotPart> SplitBySlot(internal::Engine& engine, std::string_view name,
                                  const std::vector<std::string>& keys, bool idempotent,
                                  internal::TimePoint deadline) {
  std::vector<SlotPart> parts;
  if (keys.empty()) return parts;
  // The usual batch is one hash tag's keys: one slot, one part, no map.
  KeySlotMemo slot_of;
  std::vector<uint16_t> slots(keys.size());
  bool one_slot = true;
  for (size_t i = 0; i < keys.size(); ++i) {
    slots[i] = slot_of(keys[i]);
    one_slot = one_slot && slots[i] == slots[0];
  }
  if (one_slot) {
    std::vector<size_t> all(keys.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    parts.push_back(PartFor(name, keys, std::move(all), slots[0], idempotent, deadline));
    return parts;
  }
  std::map<uint16_t, std::vector<size_t>> by_slot;
  for (size_t i = 0; i < keys.size(); ++i) by_slot[slots[i]].push_back(i);
  parts.reserve(by_slot.size());
  std::vector<Request*> reqs;
  reqs.reserve(by_slot.size());
  for (auto& [slot, idx] : by_slot) {
    parts.push_back(PartFor(name, keys, std::move(idx), slot, idempotent, deadline));
    reqs.push_back(parts.back().req.ForEngine());
  }
  engine.SubmitBatch(reqs.data(), reqs.size());
  for (SlotPart& p : parts) p.req.MarkSubmitted();
  return parts;
}

Result<int64_t> CountKeys(internal::Engine& engine, std::string_view name, const std::vector<std::string>& keys,
                          const CallOptions& call) {
  if (keys.empty()) return int64_t{0};
  auto parts = SplitBySlot(engine, name, keys, true, DeadlineOf(call, engine.options()));
  int64_t total = 0;
  Status first_error;
  for (SlotPart& p : parts) {
    Result<Reply> r = AwaitPart(engine, p);
    if (!r.ok()) {
      if (first_error.ok()) first_error = r.status();
    } else if (r->IsInteger()) {
      total += r->integer;
    } else if (first_error.ok()) {
      first_error = Status::Internal(std::string(name) + ": unexpected reply " + r->ToString());
    }
  }
  if (!first_error.ok()) return first_error;
  return total;
}

}  // namespace

Result<int64_t> RedisClient::Del(const std::vector<std::string>& keys, CallOptions call) {
  return CountKeys(*engine_, "DEL", keys, call);
}

Result<int64_t> RedisClient::Unlink(const std::vector<std::string>& keys, CallOptions call) {
  return CountKeys(*engine_, "UNLINK", keys, call);
}

Result<std::vector<std::optional<std::string>>> RedisClient::MGet(const std::vector<std::string>& keys,
                                                                   CallOptions call) {
  std::vector<std::optional<std::string>> values(keys.size());
  if (keys.empty()) return values;
  auto parts = SplitBySlot(*engine_, "MGET", keys, true, DeadlineOf(call, engine_->options()));
  Status first_error;
  for (SlotPart& p : parts) {
    Result<Reply> r = AwaitPart(*engine_, p);
    if (!first_error.ok()) continue;
    if (!r.ok()) {
      first_error = r.status();
    } else if (!r->IsArray() || r->elements.size() != p.indexes.size()) {
      first_error = Status::Internal("MGET: unexpected reply " + r->ToString());
    } else {
      for (size_t j = 0; j < p.indexes.size(); ++j) {
        Reply& e = r->elements[j];
        if (e.IsString()) values[p.indexes[j]] = std::move(e.str);
      }
    }
  }
  if (!first_error.ok()) return first_error;
  return values;
}

Result<Reply> RedisClient::Eval(const Script& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args, CallOptions call) {
  std::string numkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv{"EVALSHA", script.sha1(), numkeys};
  for (const auto& k : keys) argv.push_back(k);
  for (const auto& a : args) argv.push_back(a);
  SyncRequest req(NewRequest(argv, keys.empty() ? -1 : 3, false, DeadlineOf(call, engine_->options())));
  req->script = script.body();
  engine_->Submit(req);
  return engine_->Await(std::move(req));
}

std::vector<Result<Reply>> RedisClient::EvalMany(const Script& script, const std::vector<ScriptCall>& calls,
                                                 CallOptions call) {
  const auto deadline = DeadlineOf(call, engine_->options());
  std::vector<SyncRequest> handles;
  std::vector<Request*> reqs;
  handles.reserve(calls.size());
  reqs.reserve(calls.size());
  for (const ScriptCall& c : calls) {
    std::string numkeys = std::to_string(c.keys.size());
    std::vector<std::string_view> argv{"EVALSHA", script.sha1(), numkeys};
    for (const auto& k : c.keys) argv.push_back(k);
    for (const auto& a : c.args) argv.push_back(a);
    SyncRequest req(NewRequest(argv, c.keys.empty() ? -1 : 3, false, deadline));
    req->script = script.body();
    reqs.push_back(req.ForEngine());
    handles.push_back(std::move(req));
  }
  engine_->SubmitBatch(reqs.data(), reqs.size());
  for (SyncRequest& h : handles) h.MarkSubmitted();
  std::vector<Result<Reply>> results;
  results.reserve(handles.size());
  for (SyncRequest& r : handles) results.emplace_back(engine_->Await(std::move(r)));
  return results;
}

int RedisClient::NodeOfSlot(uint16_t slot) const { return engine_->NodeOfSlot(slot); }

std::vector<Result<Reply>> RedisClient::Pipeline(const std::vector<std::vector<std::string>>& commands,
                                                 CallOptions call) {
  auto deadline = DeadlineOf(call, engine_->options());
  std::vector<SyncRequest> handles;  // empty handle: an empty command
  handles.reserve(commands.size());
  for (const auto& args : commands) {
    handles.push_back(args.empty() ? SyncRequest() : SyncRequest(NewRequest(args, 1, false, deadline)));
  }
  std::vector<Result<Reply>> results;
  results.reserve(commands.size());
  if (handles.size() == 1 && handles[0]) {  // one command: as Command() runs it (see AwaitPart)
    results.emplace_back(engine_->Call(std::move(handles[0])));
    return results;
  }
  std::vector<Request*> live;
  for (SyncRequest& h : handles) {
    if (h) live.push_back(h.ForEngine());
  }
  engine_->SubmitBatch(live.data(), live.size());
  for (SyncRequest& h : handles) {
    if (h) h.MarkSubmitted();
  }
  for (SyncRequest& h : handles) {
    if (!h) {
      results.emplace_back(Status::InvalidArgument("empty command"));
    } else {
      results.emplace_back(engine_->Await(std::move(h)));
    }
  }
  return results;
}

void RedisClient::CommandAsync(const std::vector<std::string>& args, CommandOptions options, ReplyCallback done) {
  if (args.empty()) {
    done(Status::InvalidArgument("empty command"));
    return;
  }
  Request* req = NewRequest(args, options.key_index, options.idempotent, DeadlineOf(options.call, engine_->options()));
  req->read_only = options.read_only;
  req->callback = std::move(done);
  engine_->Submit(req);
}

void RedisClient::GetAsync(std::string_view key, CallOptions call, GetCallback done) {
  const std::array<std::string_view, 2> args{"GET", key};
  Request* req = NewRequest(args, 1, true, DeadlineOf(call, engine_->options()));
  req->read_only = true;
  req->string_callback = std::move(done);
  engine_->Submit(req);
}

std::future<Result<Reply>> RedisClient::CommandFuture(const std::vector<std::string>& args, CommandOptions options) {
  auto promise = std::make_shared<std::promise<Result<Reply>>>();
  std::future<Result<Reply>> f = promise->get_future();
  CommandAsync(args, options, [promise](Result<Reply> r) { promise->set_value(std::move(r)); });
  return f;
}

ClientStats RedisClient::Stats() const {
  const auto& c = engine_->counters();
  ClientStats s;
  s.moved = c.moved.load(std::memory_order_relaxed);
  s.ask = c.ask.load(std::memory_order_relaxed);
  s.retries = c.retries.load(std::memory_order_relaxed);
  s.connections_opened = c.reconnects.load(std::memory_order_relaxed);
  s.connection_failures = c.connection_failures.load(std::memory_order_relaxed);
  s.topology_refreshes = c.topology_refreshes.load(std::memory_order_relaxed);
  s.topology_changes = c.topology_changes.load(std::memory_order_relaxed);
  s.seed_fallbacks = c.seed_fallbacks.load(std::memory_order_relaxed);
  s.writes = c.writes.load(std::memory_order_relaxed);
  return s;
}

Status RedisClient::SetSlotOwnerForTesting(uint16_t slot, const Endpoint& owner) {
  if (slot >= kSlotCount) return Status::InvalidArgument("slot out of range");
  return engine_->RunOnIoThread([this, slot, owner] { engine_->SetSlotOwner(slot, owner); },
                                std::chrono::milliseconds(5000));
}

Result<Endpoint> RedisClient::SlotOwnerForTesting(uint16_t slot) {
  if (slot >= kSlotCount) return Status::InvalidArgument("slot out of range");
  // Shared with the task: after a timeout it may still run, and must not
  // write into this frame.
  auto owner = std::make_shared<std::optional<Endpoint>>();
  TIERCACHE_RETURN_IF_ERROR(engine_->RunOnIoThread([this, slot, owner] { *owner = engine_->SlotOwner(slot); },
                                                   std::chrono::milliseconds(5000)));
  if (!*owner) return Status::NotFound("slot " + std::to_string(slot) + " is not covered");
  return **owner;
}

Status RedisClient::SetTopologyForTesting(const std::vector<Endpoint>& masters) {
  if (masters.empty()) return Status::InvalidArgument("no masters");
  return engine_->RunOnIoThread([this, masters] { engine_->SetTopology(masters); }, std::chrono::milliseconds(5000));
}

}  // namespace tiercache::redis
