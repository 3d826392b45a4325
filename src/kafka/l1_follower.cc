// L1Follower over librdkafka (C API): a group-less consumer assigned every
// partition, and a watcher that turns high watermarks into "caught up to".
#include "tiercache/kafka/l1_follower.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

#include "kafka/rdkafka_util.h"
#include "tiercache/log.h"

namespace tiercache::kafka {
namespace {

using SteadyClock = std::chrono::steady_clock;
using TopicPartition = std::pair<std::string, int32_t>;

constexpr int kPollMs = 100;
constexpr size_t kMaxCheckpoints = 1024;  // per partition
constexpr milliseconds kSetupTimeout{5000};
constexpr milliseconds kSetupBackoffMax{2000};

constexpr std::string_view kManaged[] = {  // constant-initialized, as in invalidation_consumer.cc
    "bootstrap.servers", "metadata.broker.list", "group.id",          "client.id",
    "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "fetch.wait.max.ms",
    "statistics.interval.ms", "topic.metadata.refresh.interval.ms",
};

Status Validate(const L1FollowerOptions& o) {
  if (o.brokers.empty()) return Status::InvalidArgument("L1FollowerOptions::brokers is empty");
  if (o.topics.empty()) return Status::InvalidArgument("L1FollowerOptions::topics is empty");
  for (const std::string& t : o.topics) {
    if (t.empty()) return Status::InvalidArgument("L1FollowerOptions::topics holds an empty name");
  }
  if (o.lookback < milliseconds(0) || o.fetch_wait <= milliseconds(0) || o.max_lag <= milliseconds(0) ||
      o.check_interval <= milliseconds(0)) {
    return Status::InvalidArgument("L1FollowerOptions: durations must be > 0 (lookback >= 0)");
  }
  return CheckExtra(o.extra, kManaged, "L1FollowerOptions");
}

// "Everything published before `at` is below offset `high`" (one partition).
struct Checkpoint {
  SteadyClock::time_point at;
  int64_t high = 0;
};

}  // namespace

struct L1Follower::Impl {
  L1FollowerOptions o;
  Cache* cache = nullptr;
  EventMapper mapper;
  Metrics* metrics = nullptr;  // never null
  rd_kafka_t* rk = nullptr;

  std::atomic<bool> stop{false};
  bool started = false;
  std::thread poller, watcher;
  std::mutex wake_mu;
  std::condition_variable wake;  // Stop wakes the watcher and the setup backoff

  mutable std::mutex mu;
  std::map<TopicPartition, int64_t> processed;  // GUARDED_BY(mu): next offset not yet handled
  bool ready = false;                           // GUARDED_BY(mu): assigned
  bool gap = false;                             // GUARDED_BY(mu): events lost (offset reset): drop L1
  L1FollowerStats stats;                        // GUARDED_BY(mu)
  std::optional<SteadyClock::time_point> caught_up_to;  // GUARDED_BY(mu)
  bool brokers_answered = false;                        // GUARDED_BY(mu): at the last statistics

  // Poll thread only (statistics are served by its polls).
  std::map<TopicPartition, std::deque<Checkpoint>> checkpoints;
  std::map<TopicPartition, SteadyClock::time_point> caught;  // per partition
  std::map<std::string, int64_t> last_rx;                    // broker name -> responses received
  std::optional<SteadyClock::time_point> last_stats;
  bool new_partitions = false;  // statistics show a partition not followed

  ~Impl() {
    if (rk != nullptr) rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
  }

  bool Sleep(milliseconds d) {  // false when stopping
    std::unique_lock<std::mutex> lock(wake_mu);
    wake.wait_for(lock, d, [this] { return stop.load(); });
    return !stop.load();
  }

  // Assigns every partition of the topics: from `lookback` before now, or
  // with `keep`, partitions already followed at their position and new ones
  // from their beginning.
  Status Setup(bool keep = false);
  void Poll();
  void Watch();
  void Handle(const rd_kafka_message_t& m);
  void OnStats(std::string_view json);
  void Advance();  // REQUIRES: poll thread
  void Fence(L1FenceCause cause, bool drop);
};

Status L1Follower::Impl::Setup(bool keep) {
  PartitionListPtr list(rd_kafka_topic_partition_list_new(8));
  for (const std::string& topic : o.topics) {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, static_cast<int>(kSetupTimeout.count()));
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Unavailable(std::string("metadata: ") + rd_kafka_err2str(err));
    Status s = Status::Ok();
    if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topics[0].partition_cnt == 0) {
      s = Status::Unavailable("topic '" + topic + "' has no partitions (yet)");
    } else {
      for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
        rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), md->topics[0].partitions[p].id);
      }
    }
    rd_kafka_metadata_destroy(md);
    TIERCACHE_RETURN_IF_ERROR(s);
  }
  // Start `lookback` before now; a partition with nothing since then starts
  // at its end.
  const int64_t since = std::chrono::duration_cast<milliseconds>(
                            (std::chrono::system_clock::now() - o.lookback).time_since_epoch())
                            .count();
  for (int i = 0; i < list->cnt; ++i) list->elems[i].offset = since;
  rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(rk, list.get(), static_cast<int>(kSetupTimeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable(std::string("offsets for times: ") + rd_kafka_err2str(err));
  }
  std::map<TopicPartition, int64_t> start;
  std::map<TopicPartition, int64_t> known;  // a re-assignment keeps the positions of partitions followed
  if (keep) {
    std::lock_guard<std::mutex> lock(mu);
    known = processed;
  }
  for (int i = 0; i < list->cnt; ++i) {
    rd_kafka_topic_partition_t& tp = list->elems[i];
    if (auto k = known.find({tp.topic, tp.partition}); k != known.end()) {
      tp.offset = k->second;
    } else if (keep) {  // a partition added since: from its beginning
      int64_t lo = 0, hi = 0;
      err = rd_kafka_query_watermark_offsets(rk, tp.topic, tp.partition, &lo, &hi,
                                             static_cast<int>(kSetupTimeout.count()));
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return Status::Unavailable(std::string("watermarks: ") + rd_kafka_err2str(err));
      }
      tp.offset = lo;
    } else if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::Unavailable(std::string("offsets for times: ") + rd_kafka_err2str(tp.err));
    }
    if (tp.offset < 0) {  // nothing that recent: the end
      int64_t lo = 0, hi = 0;
      err = rd_kafka_query_watermark_offsets(rk, tp.topic, tp.partition, &lo, &hi,
                                             static_cast<int>(kSetupTimeout.count()));
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return Status::Unavailable(std::string("watermarks: ") + rd_kafka_err2str(err));
      }
      tp.offset = hi;
    }
    start[{tp.topic, tp.partition}] = tp.offset;
  }
  if (rd_kafka_resp_err_t e = rd_kafka_assign(rk, list.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Internal(std::string("assign: ") + rd_kafka_err2str(e));
  }
  checkpoints.clear();
  caught.clear();
  new_partitions = false;
  for (const auto& [tp, offset] : start) checkpoints[tp];  // ours: statistics fill them
  std::lock_guard<std::mutex> lock(mu);
  processed = std::move(start);
  caught_up_to.reset();
  ready = true;
  return Status::Ok();
}

void L1Follower::Impl::Handle(const rd_kafka_message_t& m) {
  const TopicPartition tp{rd_kafka_topic_name(m.rkt), m.partition};
  Result<InvalidationEvent> e =
      ParseEvent(std::string_view(m.payload == nullptr ? "" : static_cast<const char*>(m.payload), m.len));
  Result<InvalidationTargets> targets = Status::InvalidArgument("malformed");
  if (e.ok()) {
    try {
      targets = mapper(*e);
    } catch (...) {
      targets = Status::Internal("mapper threw");
    }
  }
  size_t dropped = 0;
  if (targets.ok()) {
    for (const std::string& key : targets->keys) {
      if (cache->InvalidateLocal(key, e->version).ok()) ++dropped;
    }
    // Groups: this pod moves each group itself (one round trip for all),
    // and its L1 stops serving the earlier generations as soon as L2 says
    // which generation is current, without waiting for the service's
    // consumer. The event id makes the move happen once per event, however
    // many pods (and the consumer) apply it; the others learn the generation.
    // The event's version is the group's floor, so a member loaded by this
    // pod from a replica behind the event is refused even before the
    // consumer applied it.
    if (!targets->groups.empty()) {
      std::vector<Cache::Invalidation> groups;
      for (const std::string& g : targets->groups) groups.push_back({g, e->version, true, e->event_id});
      for (const auto& r : cache->InvalidateMany(groups)) {
        if (r.ok()) ++dropped;  // else L1 serves none of the group's members until a later move (Poison)
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    processed[tp] = m.offset + 1;
    if (targets.ok()) {
      ++stats.events;
      stats.keys_dropped += dropped;
    } else {
      ++stats.malformed;
    }
  }
  if (targets.ok()) {
    const auto now = std::chrono::system_clock::now();
    metrics->ObserveInvalidationLag(InvalidationStage::kL1, now - e->occurred_at);
    if (o.on_dropped) o.on_dropped(*e, now);
  }
  Advance();
}

void L1Follower::Impl::Poll() {
  milliseconds backoff{50};
  while (!stop.load()) {
    Status s = Setup();
    if (s.ok()) break;
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, kSetupBackoffMax);
  }
  while (!stop.load()) {
    if (new_partitions) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ready = false;  // not caught up until the new partitions are read too
      }
      Fence(L1FenceCause::kPartitionsAdded, /*drop=*/false);
      if (!Setup(/*keep=*/true).ok() && !Sleep(milliseconds(200))) return;
      continue;
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, kPollMs);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      Handle(*m);
    } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET || m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
      // Events this pod never saw were deleted (retention): a real gap.
      {
        std::lock_guard<std::mutex> lock(mu);
        gap = true;
        ready = false;
      }
      rd_kafka_message_destroy(m);
      m = nullptr;
      Fence(L1FenceCause::kEventsLost, /*drop=*/true);
      while (!stop.load() && !Setup().ok()) {
        if (!Sleep(milliseconds(200))) break;
      }
      std::lock_guard<std::mutex> lock(mu);
      gap = false;
    }
    // Other errors (brokers down, ...) are transient: the watcher decides.
    if (m != nullptr) rd_kafka_message_destroy(m);
  }
}

void L1Follower::Impl::Fence(L1FenceCause cause, bool drop) {
  cache->FenceL1(drop);
  metrics->SetL1Fenced(true);
  bool counted = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    const bool was_trusted = stats.trusted;
    stats.trusted = false;
    if (was_trusted || drop) {
      ++stats.fences;
      ++stats.fences_by_cause[std::string(L1FenceCauseName(cause))];
      metrics->AddL1Fence(cause);
      counted = true;
    }
  }
  if (counted) {  // outside mu: a sink is the user's code
    Log(LogLevel::kWarning, "L1 fenced (" + std::string(L1FenceCauseName(cause)) +
                                (drop ? "; its entries dropped" : "") +
                                "): this pod reads L2 until it is sure it has seen every invalidation");
  }
}

void L1Follower::Impl::OnStats(std::string_view json) {
  const auto now = SteadyClock::now();
  nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return;
  // Brokers that answered since the previous statistics.
  std::set<int64_t> answered;
  if (auto brokers = j.find("brokers"); brokers != j.end() && brokers->is_object()) {
    for (const auto& [name, b] : brokers->items()) {
      // Logical brokers (the group coordinator's handle) share a node id
      // with the real connection: count real connections only.
      if (b.value("source", std::string()) == "logical") continue;
      const int64_t id = b.value("nodeid", int64_t{-1});
      const int64_t rx = b.value("rx", int64_t{0});
      if (id < 0) continue;
      auto [it, added] = last_rx.emplace(name, rx);
      if (!added && rx > it->second) answered.insert(id);
      it->second = rx;
    }
  }
  // A watermark from a broker that answered since `last_stats` is at least
  // as new as last_stats: a checkpoint at that time.
  if (last_stats) {
    if (auto topics = j.find("topics"); topics != j.end() && topics->is_object()) {
      for (const auto& [topic, t] : topics->items()) {
        auto parts = t.find("partitions");
        if (parts == t.end() || !parts->is_object()) continue;
        for (const auto& [pid, p] : parts->items()) {
          const int32_t partition = static_cast<int32_t>(p.value("partition", int64_t{-1}));
          const int64_t leader = p.value("leader", int64_t{-1});
          const int64_t high = p.value("hi_offset", int64_t{-1});
          const TopicPartition tp{topic, partition};
          if (partition < 0) continue;
          auto cp = checkpoints.find(tp);
          if (cp == checkpoints.end()) {
            // A partition of a followed topic this follower does not read:
            // added in place since it started. Re-assign, fenced meanwhile.
            if (std::find(o.topics.begin(), o.topics.end(), topic) != o.topics.end()) new_partitions = true;
            continue;
          }
          if (high < 0 || answered.count(leader) == 0) continue;
          cp->second.push_back({*last_stats, high});
          if (cp->second.size() > kMaxCheckpoints) cp->second.pop_front();
        }
      }
    }
  }
  last_stats = now;
  {
    std::lock_guard<std::mutex> lock(mu);
    brokers_answered = !answered.empty();
  }
  Advance();
}

void L1Follower::Impl::Advance() {
  std::map<TopicPartition, int64_t> done;
  {
    std::lock_guard<std::mutex> lock(mu);
    done = processed;
  }
  std::optional<SteadyClock::time_point> all;
  bool every = !done.empty();
  for (const auto& [tp, next] : done) {
    std::deque<Checkpoint>& dq = checkpoints[tp];
    while (!dq.empty() && dq.front().high <= next) {
      caught[tp] = dq.front().at;
      dq.pop_front();
    }
    auto c = caught.find(tp);
    if (c == caught.end()) {
      every = false;
      break;
    }
    if (!all || c->second < *all) all = c->second;
  }
  std::lock_guard<std::mutex> lock(mu);
  caught_up_to = every ? all : std::nullopt;
}

void L1Follower::Impl::Watch() {
  while (Sleep(o.check_interval)) {
    const auto now = SteadyClock::now();
    bool has_gap, answered, trusted;
    std::optional<SteadyClock::time_point> up_to;
    {
      std::lock_guard<std::mutex> lock(mu);
      has_gap = gap || !ready;
      answered = brokers_answered;
      up_to = caught_up_to;
      trusted = stats.trusted;
    }
    const int64_t behind = up_to ? std::chrono::duration_cast<milliseconds>(now - *up_to).count() : -1;
    const bool sure = up_to && !has_gap && behind <= o.max_lag.count();
    {
      std::lock_guard<std::mutex> lock(mu);
      stats.behind_ms = behind;
    }
    if (trusted && !sure) {
      // Unreachable brokers: events committed meanwhile are not published
      // yet (L1FollowerOptions::drop_when_unreachable).
      Fence(answered ? L1FenceCause::kLagging : L1FenceCause::kBrokersUnreachable,
            /*drop=*/!answered && o.drop_when_unreachable);
    } else if (!trusted && sure) {
      cache->TrustL1();
      metrics->SetL1Fenced(false);
      Log(LogLevel::kInfo, "L1 trusted again: the follower has caught up with the invalidation events");
      std::lock_guard<std::mutex> lock(mu);
      stats.trusted = true;
    }
  }
}

namespace {

// Served by the follower's polls (its thread); librdkafka frees `json` (0).
int OnStatsCb(rd_kafka_t*, char* json, size_t len, void* opaque) {
  try {
    static_cast<L1Follower::Impl*>(opaque)->OnStats(std::string_view(json, len));
  } catch (...) {  // nothing crosses the C callback
  }
  return 0;
}

}  // namespace

// ---- L1Follower ---------------------------------------------------------------

L1Follower::L1Follower(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
L1Follower::~L1Follower() { Stop(); }

Result<std::unique_ptr<L1Follower>> L1Follower::Create(L1FollowerOptions options, Cache* cache, EventMapper mapper) {
  if (cache == nullptr || !mapper) return Status::InvalidArgument("L1Follower needs a cache and a mapper");
  TIERCACHE_RETURN_IF_ERROR(Validate(options));
  Properties props = {
      {"bootstrap.servers", options.brokers},
      // Never joins a group (assign only) and never commits; the id only
      // names it in broker logs.
      {"group.id", options.client_id},
      {"client.id", options.client_id},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "error"},  // a retention gap is an error here, not a silent jump
      {"fetch.wait.max.ms", Ms(options.fetch_wait)},
      {"socket.nagle.disable", "true"},
      {"statistics.interval.ms", Ms(options.check_interval)},
      // Partitions added in place show up in the statistics after a refresh.
      {"topic.metadata.refresh.interval.ms", "5000"},
  };
  auto impl = std::make_unique<Impl>();
  Result<rd_kafka_t*> rk = NewConsumer(std::move(props), options.extra, [&impl](rd_kafka_conf_t* conf) {
    rd_kafka_conf_set_stats_cb(conf, &OnStatsCb);
    rd_kafka_conf_set_opaque(conf, impl.get());
  });
  if (!rk.ok()) return rk.status();
  impl->rk = *rk;
  impl->o = std::move(options);
  impl->cache = cache;
  impl->mapper = std::move(mapper);
  impl->metrics = impl->o.metrics != nullptr ? impl->o.metrics : Metrics::Noop();
  return std::unique_ptr<L1Follower>(new L1Follower(std::move(impl)));
}

Status L1Follower::Start() {
  Impl& m = *impl_;
  if (m.started) return Status::FailedPrecondition("L1Follower already started");
  m.Fence(L1FenceCause::kStarting, /*drop=*/true);
  m.started = true;
  try {
    m.poller = std::thread([&m] { m.Poll(); });
    m.watcher = std::thread([&m] { m.Watch(); });
  } catch (const std::system_error& e) {
    m.stop.store(true);
    if (m.poller.joinable()) m.poller.join();
    return Status::Internal(std::string("follower thread: ") + e.what());
  }
  return Status::Ok();
}

void L1Follower::Stop() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.wake_mu);
    m.stop.store(true);
  }
  m.wake.notify_all();
  if (m.poller.joinable()) m.poller.join();
  if (m.watcher.joinable()) m.watcher.join();
}

L1FollowerStats L1Follower::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace tiercache::kafka
