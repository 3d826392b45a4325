// Cluster topology: CLUSTER SLOTS refreshes (coalesced: one in flight;
// rate-limited by min_refresh_interval; periodic), each a round over the
// known nodes and then the seeds, and installing the result (connections to
// nodes that left the map are closed). I/O thread only.
#include <algorithm>

#include "redis/engine.h"
#include "tiercache/log.h"

namespace tiercache::redis::internal {

void Engine::MaybeRefresh(TimePoint now) {
  AssertIoThread();
  if (options_.mode != Mode::kCluster || shutting_down_ || !refresh_.Due(now, have_topology_)) return;
  PlanRefreshRound();
  StartRefresh(now);
}

void Engine::PlanRefreshRound() {
  AssertIoThread();
  // A fixed list per round (RefreshRoundOrder): each node is asked once, and
  // the seeds are reached even while known nodes answer without a map.
  std::vector<int> healthy, seeds, failing;
  for (const auto& n : nodes_) {
    if (!n->in_topology) continue;
    const Connection* c = n->primary();
    bool failed = c->state() == Connection::State::kDisconnected && !c->owner.last_error.empty();
    (failed ? failing : healthy).push_back(n->id());
  }
  for (const Endpoint& seed : options_.seeds) seeds.push_back(EnsureNode(seed)->id());
  round_seed_only_.clear();
  for (int id : seeds) {
    if (std::find(healthy.begin(), healthy.end(), id) == healthy.end()) round_seed_only_.push_back(id);
  }
  std::sort(round_seed_only_.begin(), round_seed_only_.end());
  refresh_.BeginRound(RefreshRoundOrder(std::move(healthy), seeds, failing, refresh_.NextRotation()));
}

void Engine::StartRefresh(TimePoint now) {
  AssertIoThread();
  const int node_id = refresh_.Next(now);  // REQUIRES: refresh_.HasNext() (seeds are never empty)
  auto* req = new Request;
  req->internal = true;
  AppendCommand(req->cmd, std::vector<std::string_view>{"CLUSTER", "SLOTS"});
  req->target_node = node_id;
  req->deadline = now + std::min<std::chrono::milliseconds>(options_.connect_timeout + options_.command_timeout,
                                                            options_.topology_probe_timeout);
  req->callback = [this, node_id](Result<Reply> r) { OnRefreshReply(node_id, std::move(r)); };
  counters_.topology_refreshes.fetch_add(1, std::memory_order_relaxed);
  Dispatch(req, now);
}

void Engine::OnRefreshReply(int node_id, Result<Reply> r) {
  AssertIoThread();
  if (shutting_down_) {
    refresh_.Abandon();
    return;
  }
  TimePoint now = SteadyClock::now();
  const Node* asked = nodes_[node_id].get();
  if (r.ok()) {
    Result<std::vector<SlotRange>> ranges = ParseClusterSlots(*r, asked->endpoint().host);
    if (ranges.ok() && !ranges->empty()) {
      if (have_topology_ && std::binary_search(round_seed_only_.begin(), round_seed_only_.end(), node_id)) {
        counters_.seed_fallbacks.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kWarning, "Redis cluster: no node of the slot map answered; map fetched from seed " +
                                    asked->name() + " (last error: " + refresh_.last_error() + ")");
      }
      refresh_.Succeeded(now);
      ApplyTopology(*ranges);
      if (topology_waiter_ != nullptr) {
        Finish(topology_waiter_, Reply::Nil());
        topology_waiter_ = nullptr;
      }
      return;
    }
    refresh_.Failed(asked->name() + ": " +
                    (ranges.ok() ? std::string("empty CLUSTER SLOTS") : std::string(ranges.status().message())));
  } else {
    refresh_.Failed(std::string(r.status().message()));
  }
  if (refresh_.HasNext()) {
    StartRefresh(now);  // the next candidate of this round
    return;
  }
  refresh_.RoundFailed();
  if (topology_waiter_ != nullptr) {
    Finish(topology_waiter_, Status::Unavailable("no node answered CLUSTER SLOTS; last error: " + refresh_.last_error()));
    topology_waiter_ = nullptr;
  }
}

void Engine::ApplyTopology(const std::vector<SlotRange>& ranges) {
  AssertIoThread();
  std::vector<SlotMap::Range> by_id;
  by_id.reserve(ranges.size());
  for (const SlotRange& range : ranges) {
    SlotMap::Range r{range.first, range.last, EnsureNode(range.master)->id(), {}};
    for (const Endpoint& e : range.replicas) r.replicas.push_back(EnsureNode(e)->id());
    by_id.push_back(std::move(r));
  }
  if (slots_.Apply(by_id)) {
    counters_.topology_changes.fetch_add(1, std::memory_order_relaxed);
    // A line when the set of masters changes (a failover, a node added or
    // removed), not for slots moving between the same masters: a resharding
    // changes the map for minutes and is counted in topology_changes only.
    std::vector<std::string> names;
    for (int m : slots_.Masters()) names.push_back(nodes_[static_cast<size_t>(m)]->name());
    std::sort(names.begin(), names.end());
    if (names != logged_masters_) {
      if (have_topology_) {  // not the first map
        std::string who;
        for (const std::string& n : names) who += (who.empty() ? "" : ", ") + n;
        Log(LogLevel::kInfo, "Redis cluster topology changed: masters now " + who);
      }
      logged_masters_ = std::move(names);
    }
  }
  for (int s = 0; s < kSlotCount; ++s) PublishSlot(s);
  const std::vector<int> members = slots_.Members();
  have_topology_ = true;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node* n = nodes_[i].get();
    n->in_topology = std::binary_search(members.begin(), members.end(), n->id());
    if (n->in_topology) continue;
    // A node that left the map: close its connections; what was queued there
    // is routed again. A connection with commands in flight is left to finish
    // them and closed once idle (CloseIfDeparted): a node with no slot yet (one
    // importing its first slot, reached through ASK) is not in CLUSTER SLOTS
    // either, and failing its ASKed commands would turn a routine scale-out
    // into errors.
    for (auto& c : n->connections()) {
      if (!Acquire(c.get())) continue;  // lent to a caller: closed when handed back
      if (!c->inflight().empty()) continue;
      if (c->state() != Connection::State::kDisconnected || !c->owner.waiting.empty()) {
        DropConnection(c.get(), "node is no longer in the cluster topology", /*want_refresh=*/false);
      }
    }
  }
  RetryParked(SteadyClock::now(), /*all=*/true);
}

// Test hooks (through RunOnIoThread).

void Engine::SetSlotOwner(uint16_t slot, const Endpoint& owner) {
  AssertIoThread();
  Node* n = EnsureNode(owner);
  n->in_topology = true;
  slots_.Move(slot, n->id());
  PublishSlot(slot);
}

std::optional<Endpoint> Engine::SlotOwner(uint16_t slot) const {
  AssertIoThread();
  const int m = slots_.Master(slot);
  if (m < 0) return std::nullopt;
  return nodes_[m]->endpoint();
}

void Engine::SetTopology(const std::vector<Endpoint>& masters) {
  AssertIoThread();
  TIERCACHE_DCHECK(!masters.empty());
  std::vector<SlotRange> ranges;
  for (size_t i = 0; i < masters.size(); ++i) {
    SlotRange r;
    r.first = static_cast<uint16_t>(kSlotCount * i / masters.size());
    r.last = static_cast<uint16_t>(kSlotCount * (i + 1) / masters.size() - 1);
    r.master = masters[i];
    ranges.push_back(std::move(r));
  }
  ApplyTopology(ranges);
}

}  // namespace tiercache::redis::internal
