// `tiercache events tail` and `tiercache events publish` (commands.h).
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "cli/commands.h"
#include "cli/output.h"
#include "kafka/rdkafka_util.h"
#include "tiercache/kafka/publisher.h"

namespace tiercache::cli {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const {
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
};
struct TopicDeleter {
  void operator()(rd_kafka_topic_t* t) const { rd_kafka_topic_destroy(t); }
};
struct MetadataDeleter {
  void operator()(const rd_kafka_metadata_t* m) const { rd_kafka_metadata_destroy(m); }
};
struct MessageDeleter {
  void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};

// The CLI reports errors itself, one line each: librdkafka's own log lines
// (several per broker down, on its threads) are dropped.
void NoLog(const rd_kafka_t*, int, const char*, const char*) {}

// Kafka's rule for topic names.
bool ValidTopic(const std::string& t) {
  if (t.empty() || t.size() > 249 || t == "." || t == "..") return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

Status StatusOfKafka(rd_kafka_resp_err_t e, const std::string& what) {
  const std::string text = what + ": " + rd_kafka_err2str(e);
  switch (e) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
      return Status::Unavailable(text);
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
      return Status::NotFound(text);
    default:
      return Status::Internal(text);
  }
}

int ExitOf(const Status& s) { return s.IsNotFound() ? kExitNotFound : ExitCodeOf(s); }

// The partitions of `topic` in the brokers' metadata `md`.
Result<int> PartitionsIn(const rd_kafka_metadata_t& md, const std::string& topic) {
  if (md.topic_cnt != 1) return Status::Internal("metadata for '" + topic + "' names no topic");
  const rd_kafka_metadata_topic_t& t = md.topics[0];
  if (t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return Status::NotFound("topic '" + topic + "' does not exist");
  if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR) return StatusOfKafka(t.err, "topic '" + topic + "'");
  if (t.partition_cnt <= 0) return Status::NotFound("topic '" + topic + "' has no partitions");
  return t.partition_cnt;
}

// The partitions of `topic`, from the brokers' metadata, asked for at most
// `timeout`. `rk` is a consumer (allow.auto.create.topics=false): asking does
// not create the topic. The wait is cut in slices, `stop` looked at between
// them (then kCancelled): 250 ms while no broker is connected (nothing is
// asked); a request still unanswered at the end of its slice is abandoned and
// the next slice is twice as long, up to 1 s, so a broker slow to answer is
// still heard.
Result<int> PartitionCount(rd_kafka_t* rk, const std::string& topic, milliseconds timeout,
                           const std::atomic<bool>* stop) {
  std::unique_ptr<rd_kafka_topic_t, TopicDeleter> rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  if (!rkt) return Status::InvalidArgument("topic '" + topic + "' refused by librdkafka");
  const steady_clock::time_point deadline = steady_clock::now() + timeout;
  milliseconds slice(250);
  for (;;) {
    if (stop != nullptr && stop->load()) return Status::Cancelled("stopped");
    const steady_clock::time_point now = steady_clock::now();
    const milliseconds wait =
        std::clamp(std::chrono::duration_cast<milliseconds>(deadline - now), milliseconds(1), slice);
    const rd_kafka_metadata_t* raw = nullptr;
    const rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt.get(), &raw, static_cast<int>(wait.count()));
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::unique_ptr<const rd_kafka_metadata_t, MetadataDeleter> md(raw);
      return PartitionsIn(*md, topic);
    }
    std::this_thread::sleep_until(std::min(now + wait, deadline));  // an error at once: not a busy loop
    if (steady_clock::now() >= deadline) {
      return Status::Unavailable("no broker answered within " + std::to_string(timeout.count()) + " ms (" +
                                 rd_kafka_err2str(e) + ")");
    }
    // __TRANSPORT: no broker connected within the slice, nothing was asked.
    if (e != RD_KAFKA_RESP_ERR__TRANSPORT) slice = std::min(slice * 2, milliseconds(1000));
  }
}

// Messages behind the partition's end after `offset` (from the watermarks of
// the last fetch; -1 when not known yet).
int64_t LagAfter(rd_kafka_t* rk, const char* topic, int32_t partition, int64_t offset) {
  int64_t low = 0, high = 0;
  if (rd_kafka_get_watermark_offsets(rk, topic, partition, &low, &high) != RD_KAFKA_RESP_ERR_NO_ERROR || high < 0) {
    return -1;
  }
  return std::max<int64_t>(0, high - offset - 1);
}

void PrintMessage(rd_kafka_t* rk, const rd_kafka_message_t& m, std::ostream& out) {
  const char* topic = rd_kafka_topic_name(m.rkt);
  const std::string_view key(static_cast<const char*>(m.key), m.key == nullptr ? 0 : m.key_len);
  const std::string_view payload(static_cast<const char*>(m.payload), m.payload == nullptr ? 0 : m.len);
  out << topic << "/" << m.partition << " offset=" << m.offset << " lag=" << LagAfter(rk, topic, m.partition, m.offset)
      << " key=" << (m.key == nullptr ? "(null)" : Preview(key, 64));
  if (m.payload == nullptr) {  // deletes the key's older messages in a compacted topic
    out << " NULL-PAYLOAD (a tombstone: not an event)\n";
    return;
  }
  Result<InvalidationEvent> e = ParseEvent(payload);
  if (!e.ok()) {
    out << " MALFORMED: " << e.status().message() << " payload=" << Preview(payload) << "\n";
    return;
  }
  const auto age = std::chrono::duration_cast<milliseconds>(system_clock::now() - e->occurred_at);
  out << " version=" << e->version << " type=" << e->type << " entity=" << Preview(e->entity_id, 64)
      << " event_id=" << Preview(e->event_id, 64) << " occurred_at=" << FormatEventTime(e->occurred_at)
      << " age_ms=" << age.count();
  if (m.key == nullptr || key != e->partition_key) {
    out << " WARNING: the message key is not the event's partition key '" << Preview(e->partition_key, 64)
        << "' (order per key does not hold)";
  }
  out << "\n";
}

std::string NewEventId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  uint64_t hi = gen(), lo = gen();
  hi = (hi & ~0xF000ULL) | 0x4000ULL;                // version 4
  lo = (lo & ~(3ULL << 62)) | (2ULL << 62);          // variant 10
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

// A consumer for the tail and for looking topics up. It joins no group and
// commits nothing; librdkafka wants a group.id for assign() only.
Result<rd_kafka_t*> MakeConsumer(const std::string& brokers, milliseconds timeout) {
  kafka::Properties props = {
      {"bootstrap.servers", brokers},
      {"client.id", "tiercache-cli"},
      {"group.id", "tiercache-cli-tail-" + NewEventId()},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "true"},
      // Asking for a topic's metadata must not create it (the broker's
      // auto.create.topics.enable): a consumer's requests say so.
      {"allow.auto.create.topics", "false"},
      // An offset below the log start (--last N beyond what retention kept,
      // a tail fallen behind retention) goes on from the log start, not the
      // end. The tail's default start, the end, is asked for explicitly.
      {"auto.offset.reset", "earliest"},
      {"socket.connection.setup.timeout.ms", kafka::Ms(std::max(timeout, milliseconds(1000)))},
  };
  return kafka::NewConsumer(std::move(props), {}, [](rd_kafka_conf_t* conf) { rd_kafka_conf_set_log_cb(conf, NoLog); });
}

Status CheckTailOptions(const TailOptions& o) {
  if (o.topics.empty()) return Status::InvalidArgument("no --topic given");
  for (const std::string& t : o.topics) {
    if (!ValidTopic(t)) return Status::InvalidArgument("'" + t + "' is not a Kafka topic name");
  }
  if (o.last < 0 || o.max_events < 0) return Status::InvalidArgument("negative --last or --max");
  if (o.last > 0 && o.from_beginning) {
    return Status::InvalidArgument("--last and --from-beginning exclude each other");
  }
  return Status::Ok();
}

// How often the tail looks for partitions added to its topics, and how long
// one look may take at most (the tail prints nothing meanwhile).
constexpr milliseconds kRefreshInterval{5000};
constexpr milliseconds kRefreshBudget{1000};

// One `events tail`: every partition of every topic assigned (no group),
// polled and printed until the options say stop.
class Tail {
 public:
  Tail(const TailOptions& o, std::ostream& out, std::ostream& err) : o_(o), out_(out), err_(err) {}
  int Run();

 private:
  static constexpr const char* kWhat = "events tail";
  bool Stopped() const { return o_.stop != nullptr && o_.stop->load(); }
  // Assigns partitions [from, to) of `topic` from `offset`; none is at its end yet.
  Status Add(const std::string& topic, int32_t from, int32_t to, int64_t offset);
  // Partitions added to the topics since the last look, from their beginning.
  void AddNewPartitions();
  // A partition reached its end (or moved on from it).
  void MarkEnd(const rd_kafka_message_t& m, bool end);
  // One polled message: an exit code to end with, or nothing to go on.
  std::optional<int> Handle(const rd_kafka_message_t& m);
  // Nothing came: an exit code when --exit-at-end waited too long.
  std::optional<int> Idle();

  const TailOptions& o_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<rd_kafka_t, KafkaDeleter> rk_;
  std::map<std::string, int32_t> partitions_;  // of each topic, all assigned
  std::map<std::pair<std::string, int32_t>, bool> at_end_;
  size_t ends_ = 0;  // partitions at their end
  int64_t printed_ = 0;
  size_t next_topic_ = 0;  // the first topic of the next look for new partitions
  steady_clock::time_point progress_, next_refresh_;
};

Status Tail::Add(const std::string& topic, int32_t from, int32_t to, int64_t offset) {
  kafka::PartitionListPtr list(rd_kafka_topic_partition_list_new(to - from));
  for (int32_t p = from; p < to; ++p) rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p)->offset = offset;
  // Manual assignment: incremental_assign adds to what is assigned.
  if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk_.get(), list.get()); e != nullptr) {
    const Status s = StatusOfKafka(rd_kafka_error_code(e), "assign " + topic);
    rd_kafka_error_destroy(e);
    return s;
  }
  for (int32_t p = from; p < to; ++p) at_end_[{topic, p}] = false;
  partitions_[topic] = to;
  return Status::Ok();
}

void Tail::AddNewPartitions() {
  const steady_clock::time_point deadline = steady_clock::now() + kRefreshBudget;
  // Round-robin, so a slow answer for one topic does not starve the others.
  for (size_t i = 0; i < o_.topics.size(); ++i) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left <= milliseconds(0) || Stopped()) return;
    const std::string& topic = o_.topics[next_topic_];
    next_topic_ = (next_topic_ + 1) % o_.topics.size();
    Result<int> n = PartitionCount(rk_.get(), topic, left, o_.stop);
    if (!n.ok() || *n <= partitions_[topic]) continue;  // errors show up in the fetches
    // New since the last look: all they hold came while the tail ran.
    if (Status s = Add(topic, partitions_[topic], *n, RD_KAFKA_OFFSET_BEGINNING); !s.ok()) {
      Fail(err_, std::string(kWhat) + " (partitions added)", s);
    }
  }
}

void Tail::MarkEnd(const rd_kafka_message_t& m, bool end) {
  if (m.rkt == nullptr) return;
  bool& at = at_end_[{rd_kafka_topic_name(m.rkt), m.partition}];
  if (at == end) return;
  at = end;
  if (end) {
    ++ends_;
  } else {
    --ends_;
  }
}

std::optional<int> Tail::Handle(const rd_kafka_message_t& m) {
  if (m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    progress_ = steady_clock::now();
    MarkEnd(m, true);
    if (o_.exit_at_end && ends_ == at_end_.size()) return kExitOk;
    return std::nullopt;
  }
  if (m.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    const Status s = StatusOfKafka(m.err, rd_kafka_message_errstr(&m));
    char reason[256];
    if (rd_kafka_fatal_error(rk_.get(), reason, sizeof(reason)) != RD_KAFKA_RESP_ERR_NO_ERROR || s.IsNotFound()) {
      Fail(err_, kWhat, s);
      return ExitOf(s);
    }
    Fail(err_, kWhat + std::string(" (retrying)"), s);  // a broker down: librdkafka reconnects
    return std::nullopt;
  }
  progress_ = steady_clock::now();
  MarkEnd(m, false);
  PrintMessage(rk_.get(), m, out_);
  out_.flush();
  if (o_.max_events > 0 && ++printed_ >= o_.max_events) return kExitOk;
  return std::nullopt;
}

std::optional<int> Tail::Idle() {
  // --exit-at-end must end: a partition whose end never comes (its leader
  // unreachable) fails the tail after the timeout.
  const milliseconds limit = std::max(o_.timeout, milliseconds(5000));
  if (!o_.exit_at_end || steady_clock::now() - progress_ <= limit) return std::nullopt;
  return Fail(err_, kWhat,
              Status::Unavailable("no partition's end reached within " + std::to_string(limit.count()) + " ms (" +
                                  std::to_string(at_end_.size() - ends_) + " of " + std::to_string(at_end_.size()) +
                                  " partitions not at their end)"));
}

int Tail::Run() {
  if (Status s = CheckTailOptions(o_); !s.ok()) return Fail(err_, kWhat, s);
  Result<rd_kafka_t*> made = MakeConsumer(o_.brokers, o_.timeout);
  if (!made.ok()) return Fail(err_, kWhat, made.status());
  rk_.reset(*made);
  // Every partition of every topic, from where the options say.
  const int64_t start = o_.from_beginning ? RD_KAFKA_OFFSET_BEGINNING
                        : o_.last > 0     ? RD_KAFKA_OFFSET_TAIL(o_.last)
                                          : RD_KAFKA_OFFSET_END;
  for (const std::string& t : o_.topics) {
    if (partitions_.contains(t)) continue;  // named twice
    Result<int> n = PartitionCount(rk_.get(), t, o_.timeout, o_.stop);
    if (n.status().IsCancelled()) return kExitOk;  // Ctrl-C while the metadata did not come
    if (!n.ok()) {
      Fail(err_, kWhat, n.status());
      return ExitOf(n.status());
    }
    if (Status s = Add(t, 0, *n, start); !s.ok()) return Fail(err_, kWhat, s);
  }
  progress_ = steady_clock::now();
  next_refresh_ = progress_ + kRefreshInterval;
  while (!Stopped()) {
    if (steady_clock::now() >= next_refresh_) {
      AddNewPartitions();
      next_refresh_ = steady_clock::now() + kRefreshInterval;
    }
    std::unique_ptr<rd_kafka_message_t, MessageDeleter> m(rd_kafka_consumer_poll(rk_.get(), 100));
    if (std::optional<int> code = m ? Handle(*m) : Idle()) return *code;
  }
  return kExitOk;
}

// kNotFound when `topic` does not exist (asking does not create it).
Status CheckTopicExists(const std::string& brokers, const std::string& topic, milliseconds timeout) {
  Result<rd_kafka_t*> made = MakeConsumer(brokers, timeout);
  if (!made.ok()) return made.status();
  std::unique_ptr<rd_kafka_t, KafkaDeleter> rk(*made);
  return PartitionCount(rk.get(), topic, timeout, nullptr).status();
}

}  // namespace

int EventsTail(const TailOptions& o, std::ostream& out, std::ostream& err) { return Tail(o, out, err).Run(); }

int EventsPublish(const PublishOptions& o, std::ostream& out, std::ostream& err) {
  const char* what = "events publish";
  if (!ValidTopic(o.topic)) {
    return Fail(err, what, Status::InvalidArgument("'" + o.topic + "' is not a Kafka topic name"));
  }
  InvalidationEvent e;
  if (!o.json.empty()) {
    Result<InvalidationEvent> parsed = ParseEvent(o.json);
    if (!parsed.ok()) return Fail(err, what, parsed.status());
    e = std::move(*parsed);
  } else {
    e = o.event;
    if (e.event_id.empty()) e.event_id = NewEventId();
    if (e.occurred_at == system_clock::time_point{}) e.occurred_at = system_clock::now();
  }
  Result<std::string> payload = EncodeEvent(e);  // validates
  if (!payload.ok()) return Fail(err, what, payload.status());
  // The producer would have the broker create a topic it does not know (a
  // typo): look it up first.
  if (Status s = CheckTopicExists(o.brokers, o.topic, o.timeout); !s.ok()) {
    Fail(err, what, s);
    return ExitOf(s);
  }

  kafka::PublisherOptions po;
  po.brokers = o.brokers;
  po.client_id = "tiercache-cli";
  po.delivery_timeout = o.timeout;
  po.linger = milliseconds(0);  // one message: nothing to batch (and below any timeout)
  po.close_timeout = o.timeout;
  po.extra = {{"log_level", "0"}};  // errors come back as one line below, not as librdkafka's log
  Result<std::unique_ptr<kafka::Publisher>> publisher = kafka::Publisher::Create(po);
  if (!publisher.ok()) return Fail(err, what, publisher.status());
  // The report comes within delivery_timeout plus librdkafka's once-a-second
  // scan for expired messages; the 2 s margin covers both, so a timeout is
  // the broker's silence, not this wait's.
  Result<kafka::Delivery> d =
      (*publisher)->PublishAndWait(o.topic, e.partition_key, *payload, o.timeout + milliseconds(2000));
  if (!d.ok()) return Fail(err, what, d.status());
  out << "published " << o.topic << "/" << d->partition << " offset=" << d->offset << " key=" << Preview(e.partition_key, 64)
      << " " << *payload << "\n";
  return kExitOk;
}

}  // namespace tiercache::cli
