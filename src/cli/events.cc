// `tiercache events tail` and `tiercache events publish` (commands.h).
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
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

// The partitions of `topic`, from the brokers' metadata.
Result<int> PartitionCount(rd_kafka_t* rk, const std::string& topic, milliseconds timeout) {
  std::unique_ptr<rd_kafka_topic_t, TopicDeleter> rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  if (!rkt) return Status::InvalidArgument("topic '" + topic + "' refused by librdkafka");
  const rd_kafka_metadata_t* raw = nullptr;
  const rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt.get(), &raw, static_cast<int>(timeout.count()));
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("no broker answered within " + std::to_string(timeout.count()) +
                               " ms (" + rd_kafka_err2str(e) + ")");
  }
  std::unique_ptr<const rd_kafka_metadata_t, MetadataDeleter> md(raw);
  if (md->topic_cnt != 1) return Status::Internal("metadata for '" + topic + "' names no topic");
  const rd_kafka_metadata_topic_t& t = md->topics[0];
  if (t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return Status::NotFound("topic '" + topic + "' does not exist");
  if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR) return StatusOfKafka(t.err, "topic '" + topic + "'");
  if (t.partition_cnt <= 0) return Status::NotFound("topic '" + topic + "' has no partitions");
  return t.partition_cnt;
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
      << " key=" << Preview(key, 64);
  Result<InvalidationEvent> e = ParseEvent(payload);
  if (!e.ok()) {
    out << " MALFORMED: " << e.status().message() << " payload=" << Preview(payload) << "\n";
    return;
  }
  const auto age = std::chrono::duration_cast<milliseconds>(system_clock::now() - e->occurred_at);
  out << " version=" << e->version << " type=" << e->type << " entity=" << Preview(e->entity_id, 64)
      << " event_id=" << Preview(e->event_id, 64) << " occurred_at=" << FormatEventTime(e->occurred_at)
      << " age_ms=" << age.count();
  if (key != e->partition_key) {
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

}  // namespace

int EventsTail(const TailOptions& o, std::ostream& out, std::ostream& err) {
  const char* what = "events tail";
  if (o.topics.empty()) return Fail(err, what, Status::InvalidArgument("no --topic given"));
  for (const std::string& t : o.topics) {
    if (!ValidTopic(t)) return Fail(err, what, Status::InvalidArgument("'" + t + "' is not a Kafka topic name"));
  }
  if (o.last < 0 || o.max_events < 0) return Fail(err, what, Status::InvalidArgument("negative --last or --max"));
  if (o.last > 0 && o.from_beginning) {
    return Fail(err, what, Status::InvalidArgument("--last and --from-beginning exclude each other"));
  }
  kafka::Properties props = {
      {"bootstrap.servers", o.brokers},
      {"client.id", "tiercache-cli"},
      // librdkafka wants a group for assign(); none is joined (no subscribe)
      // and nothing is committed under it.
      {"group.id", "tiercache-cli-tail-" + NewEventId()},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "true"},
      {"socket.connection.setup.timeout.ms", kafka::Ms(std::max(o.timeout, milliseconds(1000)))},
  };
  Result<rd_kafka_t*> made = kafka::NewConsumer(std::move(props), {}, [](rd_kafka_conf_t* conf) {
    rd_kafka_conf_set_log_cb(conf, NoLog);
  });
  if (!made.ok()) return Fail(err, what, made.status());
  std::unique_ptr<rd_kafka_t, KafkaDeleter> rk(*made);

  // Every partition of every topic, from where the options say.
  kafka::PartitionListPtr list(rd_kafka_topic_partition_list_new(8));
  std::map<std::pair<std::string, int32_t>, bool> at_end;
  for (const std::string& t : o.topics) {
    Result<int> n = PartitionCount(rk.get(), t, o.timeout);
    if (!n.ok()) {
      Fail(err, what, n.status());
      return ExitOf(n.status());
    }
    for (int32_t p = 0; p < *n; ++p) {
      rd_kafka_topic_partition_t* tp = rd_kafka_topic_partition_list_add(list.get(), t.c_str(), p);
      tp->offset = o.from_beginning ? RD_KAFKA_OFFSET_BEGINNING
                   : o.last > 0     ? RD_KAFKA_OFFSET_TAIL(o.last)
                                    : RD_KAFKA_OFFSET_END;
      at_end[{t, p}] = false;
    }
  }
  if (rd_kafka_resp_err_t e = rd_kafka_assign(rk.get(), list.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Fail(err, what, StatusOfKafka(e, "assign"));
  }

  int64_t printed = 0;
  size_t ends = 0;
  steady_clock::time_point progress = steady_clock::now();
  while (o.stop == nullptr || !o.stop->load()) {
    std::unique_ptr<rd_kafka_message_t, MessageDeleter> m(rd_kafka_consumer_poll(rk.get(), 100));
    if (!m) {
      // --exit-at-end must end: a partition whose end never comes (its
      // leader unreachable) fails the tail after the timeout.
      if (o.exit_at_end && steady_clock::now() - progress > std::max(o.timeout, milliseconds(5000))) {
        return Fail(err, what,
                    Status::Unavailable("no partition's end reached within " +
                                        std::to_string(std::max(o.timeout, milliseconds(5000)).count()) +
                                        " ms (" + std::to_string(at_end.size() - ends) + " of " +
                                        std::to_string(at_end.size()) + " partitions not at their end)"));
      }
      continue;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      progress = steady_clock::now();
      bool& end = at_end[{rd_kafka_topic_name(m->rkt), m->partition}];
      if (!end) {
        end = true;
        ++ends;
      }
      if (o.exit_at_end && ends == at_end.size()) break;
      continue;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      const Status s = StatusOfKafka(m->err, rd_kafka_message_errstr(m.get()));
      char reason[256];
      if (rd_kafka_fatal_error(rk.get(), reason, sizeof(reason)) != RD_KAFKA_RESP_ERR_NO_ERROR || s.IsNotFound()) {
        Fail(err, what, s);
        return ExitOf(s);
      }
      Fail(err, what + std::string(" (retrying)"), s);  // a broker down: librdkafka reconnects
      continue;
    }
    progress = steady_clock::now();
    if (m->rkt != nullptr) {
      bool& end = at_end[{rd_kafka_topic_name(m->rkt), m->partition}];
      if (end) {
        end = false;
        --ends;
      }
    }
    PrintMessage(rk.get(), *m, out);
    out.flush();
    if (o.max_events > 0 && ++printed >= o.max_events) break;
  }
  return kExitOk;
}

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

  kafka::PublisherOptions po;
  po.brokers = o.brokers;
  po.client_id = "tiercache-cli";
  po.delivery_timeout = o.timeout;
  po.close_timeout = o.timeout;
  po.extra = {{"log_level", "0"}};  // errors come back as one line below, not as librdkafka's log
  Result<std::unique_ptr<kafka::Publisher>> publisher = kafka::Publisher::Create(po);
  if (!publisher.ok()) return Fail(err, what, publisher.status());
  // The report comes within delivery_timeout; the extra second is for it to
  // arrive, so a timeout is the broker's silence, not this wait's.
  Result<kafka::Delivery> d =
      (*publisher)->PublishAndWait(o.topic, e.partition_key, *payload, o.timeout + milliseconds(1000));
  if (!d.ok()) return Fail(err, what, d.status());
  out << "published " << o.topic << "/" << d->partition << " offset=" << d->offset << " key=" << Preview(e.partition_key, 64)
      << " " << *payload << "\n";
  return kExitOk;
}

}  // namespace tiercache::cli
