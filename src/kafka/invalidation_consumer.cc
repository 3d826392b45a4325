// InvalidationConsumer over librdkafka's high-level consumer (C API).
//
// One thread runs everything: polls (which also serves the rebalance
// callback), parses, maps, applies a batch through Cache::InvalidateMany,
// dead-letters, stores offsets. So a revoke never races an apply: when the
// rebalance callback runs, no batch is half-applied, and the offsets it
// commits are exactly those of applied messages.
#include "tiercache/kafka/invalidation_consumer.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "common/log_limiter.h"
#include "kafka/rdkafka_util.h"
#include "tiercache/log.h"

namespace tiercache::kafka {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kPollMs = 100;  // longest a poll blocks (so how fast Stop is noticed)
constexpr int kSeekTimeoutMs = 1000;
// A paused partition fetches nothing, so its lag is asked of the broker:
// every kLagRefresh, one request for all of them, at most kLagQueryMs.
constexpr std::chrono::seconds kLagRefresh{2};
constexpr int kLagQueryMs = 500;

// Constant-initialized (no dynamic initialization): safe to use from other
// translation units' static initializers.
constexpr std::string_view kManaged[] = {
    "bootstrap.servers",        "metadata.broker.list", "group.id",          "client.id",
    "enable.auto.commit",       "enable.auto.offset.store", "auto.commit.interval.ms", "auto.offset.reset",
    "fetch.wait.max.ms",        "session.timeout.ms",   "partition.assignment.strategy", "enable.partition.eof",
};

Status Validate(const InvalidationConsumerOptions& o) {
  if (o.brokers.empty()) return Status::InvalidArgument("InvalidationConsumerOptions::brokers is empty");
  if (o.group_id.empty()) return Status::InvalidArgument("InvalidationConsumerOptions::group_id is empty");
  if (o.topics.empty()) return Status::InvalidArgument("InvalidationConsumerOptions::topics is empty");
  if (o.dead_letter_topic.empty()) {
    return Status::InvalidArgument("InvalidationConsumerOptions::dead_letter_topic is empty");
  }
  for (const std::string& t : o.topics) {
    if (t.empty() || t == o.dead_letter_topic) {
      return Status::InvalidArgument("InvalidationConsumerOptions::topics: empty, or the dead-letter topic");
    }
  }
  if (o.max_batch == 0 || o.max_batch > 100000) {
    return Status::InvalidArgument("InvalidationConsumerOptions::max_batch must be in [1, 100000]");
  }
  if (o.fetch_wait <= milliseconds(0) || o.auto_commit_interval <= milliseconds(0) ||
      o.retry_backoff_min <= milliseconds(0) || o.retry_backoff_max < o.retry_backoff_min ||
      o.dead_letter_timeout <= milliseconds(0) || o.session_timeout <= milliseconds(0)) {
    return Status::InvalidArgument("InvalidationConsumerOptions: every duration must be > 0 (backoff max >= min)");
  }
  if (o.auto_offset_reset != "earliest" && o.auto_offset_reset != "latest") {
    return Status::InvalidArgument("InvalidationConsumerOptions::auto_offset_reset must be earliest or latest");
  }
  return CheckExtra(o.extra, kManaged, "InvalidationConsumerOptions");
}

// One message, copied out of librdkafka.
struct Message {
  std::string topic;
  int32_t partition = -1;
  int64_t offset = -1;
  std::string key;
  std::string payload;
};

using TopicPartition = std::pair<std::string, int32_t>;

// A partition held back after a failed apply.
struct Paused {
  int64_t rewind_to = -1;         // first message not applied
  SteadyClock::time_point resume_at;
  milliseconds backoff{0};
};

}  // namespace

struct InvalidationConsumer::Impl {
  InvalidationConsumerOptions o;
  Cache* cache = nullptr;
  EventMapper mapper;
  Publisher* dead_letters = nullptr;
  Metrics* metrics = nullptr;  // never null
  LogLimiter dead_letter_log{std::chrono::seconds(1)};  // a stream of poison events: a line a second
  rd_kafka_t* rk = nullptr;

  std::thread thread;
  std::atomic<bool> stop{false};
  bool started = false;  // Start/Stop are called by the owner, not concurrently

  mutable std::mutex stats_mu;
  InvalidationConsumerStats stats;  // GUARDED_BY(stats_mu)

  // Touched only by the consumer thread (the rebalance callback runs on it).
  std::map<TopicPartition, Paused> paused;
  std::map<TopicPartition, milliseconds> backoff;  // last backoff, reset on success
  SteadyClock::time_point next_lag_refresh{};

  ~Impl() {
    if (rk != nullptr) rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
  }

  void Run();
  void ResumeDue();
  void RefreshPausedLag();
  void Process(std::vector<Message>& batch);
  Status DeadLetter(const Message& m, const std::string& reason);
  void PauseAndRewind(const TopicPartition& tp, int64_t offset);
  void Close();

  template <typename F>
  void Count(F f) {
    std::lock_guard<std::mutex> lock(stats_mu);
    f(stats);
  }
};

namespace {

void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
  auto* self = static_cast<InvalidationConsumer::Impl*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->Count([](InvalidationConsumerStats& s) { ++s.rebalances; });
    self->paused.clear();  // a new assignment starts from the committed offsets
    rd_kafka_assign(rk, parts);
    // librdkafka keeps an application pause across unassign/assign: a
    // partition paused before the rebalance would never be fetched again.
    rd_kafka_resume_partitions(rk, parts);
    return;
  }
  // Revoke (or an error): what was applied is stored; commit it now, before
  // another member takes the partitions, unless they are already lost.
  if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !rd_kafka_assignment_lost(rk)) {
    rd_kafka_commit(rk, nullptr, /*async=*/0);  // errors: the next owner re-applies (idempotent)
  }
  for (int i = 0; parts != nullptr && i < parts->cnt; ++i) {
    self->metrics->RemoveConsumerLag(parts->elems[i].topic, parts->elems[i].partition);
  }
  if (!self->paused.empty()) {
    PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(self->paused.size())));
    for (const auto& [tp, p] : self->paused) rd_kafka_topic_partition_list_add(list.get(), tp.first.c_str(), tp.second);
    rd_kafka_resume_partitions(rk, list.get());
  }
  self->paused.clear();
  rd_kafka_assign(rk, nullptr);
}

}  // namespace

void InvalidationConsumer::Impl::Run() {
  std::vector<Message> batch;
  while (!stop.load()) {
    ResumeDue();
    RefreshPausedLag();
    batch.clear();
    int wait = kPollMs;
    while (batch.size() < o.max_batch) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, wait);
      if (m == nullptr) break;
      wait = 0;  // take what is already fetched, then apply
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        // Consumer errors (broker down, ...) are transient here; librdkafka
        // retries by itself. Fatal ones end the loop.
        const bool fatal = m->err == RD_KAFKA_RESP_ERR__FATAL;
        rd_kafka_message_destroy(m);
        if (fatal) return;
        continue;
      }
      Message msg;
      msg.topic = rd_kafka_topic_name(m->rkt);
      msg.partition = m->partition;
      msg.offset = m->offset;
      if (m->key != nullptr) msg.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload != nullptr) msg.payload.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_message_destroy(m);
      // A partition being rewound: drop what was fetched past the rewind
      // point before the seek took effect.
      auto p = paused.find({msg.topic, msg.partition});
      if (p != paused.end()) continue;
      batch.push_back(std::move(msg));
    }
    if (!batch.empty()) Process(batch);
  }
}

void InvalidationConsumer::Impl::ResumeDue() {
  const auto now = SteadyClock::now();
  for (auto it = paused.begin(); it != paused.end();) {
    if (now < it->second.resume_at) {
      ++it;
      continue;
    }
    // Rewind, then resume: fetching restarts at the first message not
    // applied. A seek that fails keeps the partition paused for another round.
    PartitionListPtr list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), it->first.first.c_str(), it->first.second)->offset =
        it->second.rewind_to;
    rd_kafka_error_t* error = rd_kafka_seek_partitions(rk, list.get(), kSeekTimeoutMs);
    const bool sought = error == nullptr && list->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (error != nullptr) rd_kafka_error_destroy(error);
    if (!sought) {
      it->second.resume_at = now + it->second.backoff;
      ++it;
      continue;
    }
    rd_kafka_resume_partitions(rk, list.get());
    it = paused.erase(it);
  }
}

void InvalidationConsumer::Impl::RefreshPausedLag() {
  const auto now = SteadyClock::now();
  if (paused.empty() || now < next_lag_refresh) return;
  next_lag_refresh = now + kLagRefresh;
  // One ListOffsets for every paused partition, bounded as a whole:
  // offsets_for_times honours its timeout even when a leader answers slowly
  // (query_watermark_offsets waits for the broker's reply however long).
  PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(paused.size())));
  for (const auto& [tp, p] : paused) {
    rd_kafka_topic_partition_list_add(list.get(), tp.first.c_str(), tp.second)->offset = RD_KAFKA_OFFSET_END;
  }
  if (rd_kafka_offsets_for_times(rk, list.get(), kLagQueryMs) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
  for (int i = 0; i < list->cnt; ++i) {
    const rd_kafka_topic_partition_t& e = list->elems[i];
    auto it = paused.find({e.topic, e.partition});
    if (e.err != RD_KAFKA_RESP_ERR_NO_ERROR || e.offset < 0 || it == paused.end()) continue;
    metrics->SetConsumerLag(e.topic, e.partition, std::max<int64_t>(0, e.offset - it->second.rewind_to));
  }
}

void InvalidationConsumer::Impl::PauseAndRewind(const TopicPartition& tp, int64_t offset) {
  milliseconds& b = backoff[tp];
  b = b == milliseconds(0) ? o.retry_backoff_min : std::min(b * 2, o.retry_backoff_max);
  paused[tp] = Paused{offset, SteadyClock::now() + b, b};
  PartitionListPtr list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), tp.first.c_str(), tp.second);
  rd_kafka_pause_partitions(rk, list.get());  // rewound when it resumes (ResumeDue)
  Count([](InvalidationConsumerStats& s) { ++s.apply_retries; });
}

Status InvalidationConsumer::Impl::DeadLetter(const Message& m, const std::string& reason) {
  Headers h = {{"tiercache-dead-letter-reason", reason},
               {"tiercache-source-topic", m.topic},
               {"tiercache-source-partition", std::to_string(m.partition)},
               {"tiercache-source-offset", std::to_string(m.offset)}};
  return dead_letters->PublishAndWait(o.dead_letter_topic, m.key, m.payload, o.dead_letter_timeout, h).status();
}

void InvalidationConsumer::Impl::Process(std::vector<Message>& batch) {
  struct Item {
    HandledEvent handled;
    size_t first = 0, count = 0;  // its invalidations in `list`
    bool ok = true;               // applied (or dead-lettered)
  };
  std::vector<Item> items(batch.size());
  std::vector<Cache::Invalidation> list;
  for (size_t i = 0; i < batch.size(); ++i) {
    Item& it = items[i];
    it.handled.topic = batch[i].topic;
    it.handled.partition = batch[i].partition;
    it.handled.offset = batch[i].offset;
    Result<InvalidationEvent> e = ParseEvent(batch[i].payload);
    if (!e.ok()) {
      it.handled.malformed = true;
      it.handled.dead_letter_reason = std::string(e.status().message());
      continue;
    }
    Result<InvalidationTargets> targets = Status::Internal("mapper threw");
    try {
      targets = mapper(*e);
    } catch (const std::exception& ex) {
      targets = Status::Internal(std::string("mapper threw: ") + ex.what());
    } catch (...) {
    }
    if (!targets.ok()) {
      it.handled.malformed = true;
      it.handled.dead_letter_reason = std::string(targets.status().message());
      continue;
    }
    it.handled.event = std::move(*e);
    it.first = list.size();
    for (std::string& k : targets->keys) list.push_back({std::move(k), it.handled.event.version, false, ""});
    // A group moves once per event, whichever pod's consumer or follower
    // applies it first, and its floor rises to the event's version.
    for (std::string& g : targets->groups) {
      list.push_back({std::move(g), it.handled.event.version, true, it.handled.event.event_id});
    }
    it.count = targets->keys.size() + targets->groups.size();
  }
  std::vector<Result<Cache::InvalidationResult>> results;
  if (!list.empty()) results = cache->InvalidateMany(list);
  const auto applied_at = std::chrono::system_clock::now();
  for (size_t i = 0; i < batch.size(); ++i) {
    Item& it = items[i];
    if (it.handled.malformed) continue;
    for (size_t k = it.first; k < it.first + it.count; ++k) {
      if (results[k].ok()) {
        (*results[k] == Cache::InvalidationResult::kApplied ? it.handled.keys_applied : it.handled.keys_ignored)++;
      } else if (results[k].status().IsInvalidArgument()) {  // a key the cache refuses: the mapper's fault
        it.handled.malformed = true;
        it.handled.dead_letter_reason =
            std::string(list[k].group ? "group '" : "key '") + list[k].key + "' refused by the cache: " + std::string(results[k].status().message());
      } else {
        it.ok = false;  // its shard failed: retry the partition from here
      }
    }
    it.handled.applied_at = applied_at;
  }
  // Per partition, in offset order: everything up to the first failure is
  // done (dead letters must be acknowledged first); from it on, rewind.
  std::map<TopicPartition, int64_t> store;  // next offset to consume
  std::map<TopicPartition, bool> failed;
  for (size_t i = 0; i < batch.size(); ++i) {
    Item& it = items[i];
    const TopicPartition tp{it.handled.topic, it.handled.partition};
    if (failed[tp]) continue;
    if (it.ok && it.handled.malformed) {
      Status dl = DeadLetter(batch[i], it.handled.dead_letter_reason);
      if (!dl.ok()) it.ok = false;
    }
    if (!it.ok) {
      failed[tp] = true;
      PauseAndRewind(tp, it.handled.offset);
      continue;
    }
    store[tp] = it.handled.offset + 1;
    backoff.erase(tp);
    if (it.handled.malformed) {
      metrics->AddEvents(EventOutcome::kDeadLettered);
      if (uint64_t left_out = 0; dead_letter_log.Admit(std::chrono::steady_clock::now(), &left_out)) {
        Log(LogLevel::kWarning, "event dead-lettered (" + tp.first + "[" + std::to_string(tp.second) + "] offset " +
                                    std::to_string(it.handled.offset) + "): " + it.handled.dead_letter_reason +
                                    LogLimiter::Note(left_out));
      }
    } else {
      metrics->AddEvents(it.handled.keys_applied > 0 ? EventOutcome::kApplied : EventOutcome::kIgnored);
      metrics->ObserveInvalidationLag(InvalidationStage::kL2, it.handled.applied_at - it.handled.event.occurred_at);
    }
    Count([&](InvalidationConsumerStats& s) {
      if (it.handled.malformed) {
        ++s.dead_lettered;
        return;
      }
      ++s.events;
      s.keys_applied += it.handled.keys_applied;
      s.keys_ignored += it.handled.keys_ignored;
      if (it.handled.keys_applied == 0) ++s.events_ignored;
    });
    if (o.on_handled) o.on_handled(it.handled);
  }
  if (!store.empty()) {
    PartitionListPtr offsets(rd_kafka_topic_partition_list_new(static_cast<int>(store.size())));
    for (const auto& [tp, next] : store) {
      rd_kafka_topic_partition_list_add(offsets.get(), tp.first.c_str(), tp.second)->offset = next;
    }
    // Fails (per partition) only for partitions no longer assigned: their new
    // owner re-applies from the committed offset, harmlessly.
    rd_kafka_offsets_store(rk, offsets.get());
    for (int i = 0; i < offsets->cnt; ++i) {  // the watermark as of the last fetch: no broker call
      const rd_kafka_topic_partition_t& tp = offsets->elems[i];
      if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;  // revoked meanwhile: not ours to report
      int64_t low = 0, high = 0;
      if (rd_kafka_get_watermark_offsets(rk, tp.topic, tp.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          high >= 0) {
        metrics->SetConsumerLag(tp.topic, tp.partition, std::max<int64_t>(0, high - tp.offset));
      }
    }
  }
  Count([](InvalidationConsumerStats& s) { ++s.batches; });
}

void InvalidationConsumer::Impl::Close() {
  // Commit what is stored, then leave the group (the revoke callback runs
  // and commits again), bounded in time.
  rd_kafka_commit(rk, nullptr, /*async=*/0);
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  if (rd_kafka_error_t* e = rd_kafka_consumer_close_queue(rk, q)) {
    rd_kafka_error_destroy(e);
  } else {
    const auto deadline = SteadyClock::now() + o.session_timeout + std::chrono::seconds(5);
    while (!rd_kafka_consumer_closed(rk) && SteadyClock::now() < deadline) {
      rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 100);
      if (ev == nullptr) continue;
      if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
        OnRebalance(rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), this);
      }
      rd_kafka_event_destroy(ev);
    }
  }
  rd_kafka_queue_destroy(q);
}

// ---- InvalidationConsumer ----------------------------------------------------

InvalidationConsumer::InvalidationConsumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

InvalidationConsumer::~InvalidationConsumer() { Stop(); }

Result<std::unique_ptr<InvalidationConsumer>> InvalidationConsumer::Create(InvalidationConsumerOptions options,
                                                                           Cache* cache, EventMapper mapper,
                                                                           Publisher* dead_letters) {
  if (cache == nullptr || dead_letters == nullptr || !mapper) {
    return Status::InvalidArgument("InvalidationConsumer needs a cache, a mapper and a dead-letter publisher");
  }
  TIERCACHE_RETURN_IF_ERROR(Validate(options));
  Properties props = {
      {"bootstrap.servers", options.brokers},
      {"group.id", options.group_id},
      {"client.id", options.client_id},
      {"enable.auto.commit", "true"},
      {"enable.auto.offset.store", "false"},
      {"auto.commit.interval.ms", Ms(options.auto_commit_interval)},
      {"auto.offset.reset", options.auto_offset_reset},
      {"fetch.wait.max.ms", Ms(options.fetch_wait)},
      {"session.timeout.ms", Ms(options.session_timeout)},
      {"partition.assignment.strategy", "range"},
      {"enable.partition.eof", "false"},
      {"socket.nagle.disable", "true"},
  };
  auto impl = std::make_unique<Impl>();
  Result<rd_kafka_t*> rk = NewConsumer(std::move(props), options.extra, [&impl](rd_kafka_conf_t* conf) {
    rd_kafka_conf_set_rebalance_cb(conf, &OnRebalance);
    rd_kafka_conf_set_opaque(conf, impl.get());
  });
  if (!rk.ok()) return rk.status();
  impl->rk = *rk;
  impl->o = std::move(options);
  impl->cache = cache;
  impl->mapper = std::move(mapper);
  impl->dead_letters = dead_letters;
  impl->metrics = impl->o.metrics != nullptr ? impl->o.metrics : Metrics::Noop();
  return std::unique_ptr<InvalidationConsumer>(new InvalidationConsumer(std::move(impl)));
}

Status InvalidationConsumer::Start() {
  Impl& m = *impl_;
  if (m.started) return Status::FailedPrecondition("InvalidationConsumer already started");
  PartitionListPtr topics(rd_kafka_topic_partition_list_new(static_cast<int>(m.o.topics.size())));
  for (const std::string& t : m.o.topics) {
    rd_kafka_topic_partition_list_add(topics.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  }
  if (rd_kafka_resp_err_t err = rd_kafka_subscribe(m.rk, topics.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Internal(std::string("subscribe: ") + rd_kafka_err2str(err));
  }
  m.started = true;
  try {
    m.thread = std::thread([&m] {
      m.Run();
      m.Close();
    });
  } catch (const std::system_error& e) {
    m.started = false;
    return Status::Internal(std::string("consumer thread: ") + e.what());
  }
  return Status::Ok();
}

void InvalidationConsumer::Stop() {
  Impl& m = *impl_;
  m.stop.store(true);
  if (m.thread.joinable()) m.thread.join();
}

InvalidationConsumerStats InvalidationConsumer::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace tiercache::kafka
