// Publisher over librdkafka's C API.
//
// Every accepted message owns a heap `Pending` (its callback) that travels as
// the librdkafka message opaque and sits, until reported, in an intrusive
// list ordered by acceptance (oldest first): the list gives outstanding() and
// lets Flush wait for "everything accepted so far" exactly. The delivery
// report callback runs on the poller thread, calls the user's callback with no
// lock held, then unlinks and frees the Pending: one report per message.
#include "tiercache/kafka/publisher.h"

#include <atomic>
#include <cassert>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>

#include "kafka/rdkafka_util.h"

namespace tiercache::kafka {
namespace {

// How long the poller thread blocks in one rd_kafka_poll (so how long a stop
// may take to be noticed).
constexpr int kPollIntervalMs = 100;
// After the purge, how long destruction waits for librdkafka to hand back the
// purged messages' reports (normally immediate).
constexpr milliseconds kPurgeReportWait{2000};
// librdkafka's own upper bound for linger.ms.
constexpr milliseconds kMaxLinger{900000};

// Properties PublisherOptions sets itself; `extra` may not override them.
constexpr std::string_view kManagedProperties[] = {  // constant-initialized: no static-order dependence
    "bootstrap.servers", "metadata.broker.list", "enable.idempotence",           "socket.nagle.disable",
    "linger.ms",         "queue.buffering.max.ms", "message.timeout.ms",         "delivery.timeout.ms",
    "queue.buffering.max.messages", "message.max.bytes", "client.id",
};

// One accepted, not yet reported message.
struct Pending {
  DeliveryCallback done;
  uint64_t seq = 0;  // acceptance order, from 1
  Pending* prev = nullptr;
  Pending* next = nullptr;
};

Status ValidateOptions(const PublisherOptions& o) {
  if (o.brokers.empty()) return Status::InvalidArgument("PublisherOptions::brokers is empty");
  if (o.delivery_timeout <= milliseconds(0) || o.delivery_timeout > milliseconds(INT32_MAX)) {
    return Status::InvalidArgument("PublisherOptions::delivery_timeout must be in (0, INT32_MAX] ms");
  }
  if (o.linger < milliseconds(0) || o.linger > kMaxLinger) {
    return Status::InvalidArgument("PublisherOptions::linger must be in [0, 900000] ms");
  }
  if (o.linger >= o.delivery_timeout) {
    return Status::InvalidArgument("PublisherOptions::linger must be below delivery_timeout");
  }
  if (o.max_queued_messages == 0 || o.max_queued_messages > static_cast<size_t>(INT32_MAX)) {
    return Status::InvalidArgument("PublisherOptions::max_queued_messages must be in [1, INT32_MAX]");
  }
  if (o.max_message_bytes == 0 || o.max_message_bytes > static_cast<size_t>(INT32_MAX)) {
    return Status::InvalidArgument("PublisherOptions::max_message_bytes must be in [1, INT32_MAX]");
  }
  if (o.close_timeout < milliseconds(0)) return Status::InvalidArgument("PublisherOptions::close_timeout is negative");
  TIERCACHE_RETURN_IF_ERROR(CheckExtra(o.extra, kManagedProperties, "PublisherOptions"));
  return Status::Ok();
}

// Builds the librdkafka configuration: the managed properties, then `extra`.
Result<ConfPtr> MakeConf(const PublisherOptions& o) {
  std::vector<std::pair<std::string, std::string>> props = {
      {"bootstrap.servers", o.brokers},
      {"enable.idempotence", "true"},
      {"socket.nagle.disable", "true"},
      {"linger.ms", Ms(o.linger)},
      {"message.timeout.ms", Ms(o.delivery_timeout)},
      {"queue.buffering.max.messages", std::to_string(o.max_queued_messages)},
      {"message.max.bytes", std::to_string(o.max_message_bytes)},
      {"client.id", o.client_id},
  };
  props.insert(props.end(), o.extra.begin(), o.extra.end());
  return BuildConf(props);
}

// A reason with the topic name, e.g. "topic t: Local: Message timed out".
std::string Reason(const rd_kafka_message_t& m) {
  std::string topic = m.rkt != nullptr ? rd_kafka_topic_name(m.rkt) : "?";
  return "topic " + topic + ": " + rd_kafka_err2str(m.err);
}

// Maps one delivery report to what the caller's callback receives.
Result<Delivery> ToResult(rd_kafka_t* rk, const rd_kafka_message_t& m) {
  switch (m.err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return Delivery{m.partition, m.offset};
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__DESTROY:
      return Status::Cancelled("publisher closed before the broker acknowledged the message (" + Reason(m) + ")");
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
      if (rd_kafka_message_status(&m) == RD_KAFKA_MSG_STATUS_NOT_PERSISTED) {
        return Status::Unavailable("no broker took the message within delivery_timeout (" + Reason(m) + ")");
      }
      return Status::DeadlineExceeded("sent but not acknowledged within delivery_timeout; it may be in the log (" +
                                      Reason(m) + ")");
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
      return Status::Unavailable(Reason(m));
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
      return Status::InvalidArgument(Reason(m));
    case RD_KAFKA_RESP_ERR__FATAL: {
      char errstr[512];
      rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk, errstr, sizeof(errstr));
      return Status::Internal("producer failed fatally (" + std::string(rd_kafka_err2name(fatal)) + ": " + errstr +
                              ")");
    }
    default:
      return Status::Internal(Reason(m));
  }
}

// Maps a refused produce call (the callback will not run).
Status ProduceError(rd_kafka_t* rk, rd_kafka_resp_err_t err, const char* detail) {
  std::string why = std::string(rd_kafka_err2name(err)) + ": " + detail;
  switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      return Status::ResourceExhausted("publish queue full (max_queued_messages): " + why);
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return Status::InvalidArgument(why);
    case RD_KAFKA_RESP_ERR__FATAL: {
      char errstr[512];
      rd_kafka_fatal_error(rk, errstr, sizeof(errstr));
      return Status::Internal("producer failed fatally: " + std::string(errstr));
    }
    default:
      return Status::Internal("produce failed: " + why);
  }
}

// Copies `headers` into a librdkafka list; null when there are none.
HeadersPtr MakeHeaders(const Headers& headers) {
  if (headers.empty()) return nullptr;
  HeadersPtr list(rd_kafka_headers_new(headers.size()));
  for (const auto& [name, value] : headers) {
    rd_kafka_header_add(list.get(), name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  }
  return list;
}

}  // namespace

struct Publisher::Impl {
  explicit Impl(PublisherOptions o) : options(std::move(o)) {}
  ~Impl() { Close(); }

  Status Publish(std::string_view topic, std::string_view key, std::string_view payload, DeliveryCallback done,
                 const Headers& headers);
  // Waits until every message accepted up to `last_seq` was reported, at most
  // `timeout`. Returns whether that happened.
  bool WaitReported(uint64_t last_seq, milliseconds timeout);
  uint64_t LastAccepted() const;
  size_t Outstanding() const;
  bool OnPollerThread() const { return std::this_thread::get_id() == poller_id; }

  // Delivery report: the user's callback (unless `result` is null), then
  // forget the message.
  void Finish(Pending* p, const Result<Delivery>* result) noexcept;
  void PollLoop();
  // Destruction: flush, purge, report what is left (kCancelled), stop.
  void Close() noexcept;

  const PublisherOptions options;
  rd_kafka_t* rk = nullptr;  // set once by Create; destroyed by Close
  std::thread poller;
  std::thread::id poller_id;  // set once by Create, before any Publish
  std::atomic<bool> stop{false};
  // Set by Close before it cancels what librdkafka never reported: a report
  // arriving later (it should not) is ignored rather than touch a freed Pending.
  std::atomic<bool> reports_closed{false};

  // Shared by a Publish from its `closing` check to its enqueue; exclusive to
  // set `closing`. So once Close holds it, no further message reaches
  // librdkafka and the purge covers everything.
  std::shared_mutex gate;
  bool closing = false;  // GUARDED_BY(gate)

  mutable std::mutex mu;
  std::condition_variable reported;  // signalled when the oldest Pending goes
  Pending* head = nullptr;           // GUARDED_BY(mu): oldest unreported
  Pending* tail = nullptr;           // GUARDED_BY(mu)
  uint64_t next_seq = 1;             // GUARDED_BY(mu)
  size_t outstanding = 0;            // GUARDED_BY(mu)

 private:
  void Track(Pending* p);
  void Untrack(Pending* p) noexcept;
};

namespace {

void OnDeliveryReport(rd_kafka_t* rk, const rd_kafka_message_t* m, void* opaque) {
  auto* impl = static_cast<Publisher::Impl*>(opaque);
  auto* p = static_cast<Pending*>(m->_private);
  // Not one of ours, or Close already cancelled it (and freed `p`).
  if (impl == nullptr || p == nullptr || impl->reports_closed.load(std::memory_order_acquire)) return;
  // Nothing may escape this C callback. Building the Result allocates; if that
  // fails (bad_alloc) the message is forgotten without its callback.
  std::optional<Result<Delivery>> result;
  try {
    result.emplace(ToResult(rk, *m));
  } catch (...) {
  }
  impl->Finish(p, result ? &*result : nullptr);
}

}  // namespace

void Publisher::Impl::Track(Pending* p) {
  std::lock_guard<std::mutex> lock(mu);
  p->seq = next_seq++;
  p->prev = tail;
  (tail != nullptr ? tail->next : head) = p;
  tail = p;
  ++outstanding;
}

void Publisher::Impl::Untrack(Pending* p) noexcept {
  bool was_head = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    was_head = head == p;
    (p->prev != nullptr ? p->prev->next : head) = p->next;
    (p->next != nullptr ? p->next->prev : tail) = p->prev;
    --outstanding;
  }
  if (was_head) reported.notify_all();
}

void Publisher::Impl::Finish(Pending* p, const Result<Delivery>* result) noexcept {
  if (p->done && result != nullptr) {
    try {
      p->done(*result);
    } catch (...) {
      // A callback's exception is dropped: it may not cross librdkafka.
    }
  }
  Untrack(p);
  delete p;
}

Status Publisher::Impl::Publish(std::string_view topic, std::string_view key, std::string_view payload,
                                DeliveryCallback done, const Headers& headers) {
  if (topic.empty()) return Status::InvalidArgument("empty topic");
  if (payload.size() > options.max_message_bytes) {
    return Status::InvalidArgument("payload of " + std::to_string(payload.size()) +
                                   " bytes is above max_message_bytes " + std::to_string(options.max_message_bytes));
  }
  const std::string topic_name(topic);  // librdkafka wants a C string
  HeadersPtr hdrs = MakeHeaders(headers);
  auto* p = new Pending{std::move(done)};

  rd_kafka_vu_t vu[6] = {};
  size_t n = 0;
  vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
  vu[n++].u.cstr = topic_name.c_str();
  vu[n].vtype = RD_KAFKA_VTYPE_KEY;  // an empty key is no key
  vu[n].u.mem.ptr = key.empty() ? nullptr : const_cast<char*>(key.data());
  vu[n++].u.mem.size = key.size();
  vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
  vu[n].u.mem.ptr = const_cast<char*>(payload.data());
  vu[n++].u.mem.size = payload.size();
  vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
  vu[n++].u.i = RD_KAFKA_MSG_F_COPY;
  vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
  vu[n++].u.ptr = p;
  if (hdrs != nullptr) {
    vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
    vu[n++].u.headers = hdrs.get();
  }

  std::shared_lock<std::shared_mutex> open(gate);
  if (closing) {
    delete p;
    return Status::Cancelled("publisher is shutting down");
  }
  Track(p);  // before the enqueue: the report may come at once
  rd_kafka_error_t* error = rd_kafka_produceva(rk, vu, n);
  if (error == nullptr) {
    (void)hdrs.release();  // librdkafka owns them now
    return Status::Ok();
  }
  Status status = ProduceError(rk, rd_kafka_error_code(error), rd_kafka_error_string(error));
  rd_kafka_error_destroy(error);
  Untrack(p);
  delete p;
  return status;
}

uint64_t Publisher::Impl::LastAccepted() const {
  std::lock_guard<std::mutex> lock(mu);
  return next_seq - 1;
}

size_t Publisher::Impl::Outstanding() const {
  std::lock_guard<std::mutex> lock(mu);
  return outstanding;
}

bool Publisher::Impl::WaitReported(uint64_t last_seq, milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu);
  return reported.wait_for(lock, std::max(timeout, milliseconds(0)),
                           [&] { return head == nullptr || head->seq > last_seq; });
}

void Publisher::Impl::PollLoop() {
  while (!stop.load(std::memory_order_acquire)) rd_kafka_poll(rk, kPollIntervalMs);
}

void Publisher::Impl::Close() noexcept {
  if (rk == nullptr) return;
  assert(!OnPollerThread() && "a callback must not destroy its publisher");
  {
    std::unique_lock<std::shared_mutex> lock(gate);
    closing = true;
  }
  const uint64_t all = LastAccepted();
  if (poller.joinable()) {
    // The poller keeps reporting while we wait: first real deliveries, then
    // the purged messages (kCancelled).
    WaitReported(all, options.close_timeout);
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    WaitReported(all, kPurgeReportWait);
    stop.store(true, std::memory_order_release);
    poller.join();
  } else {
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  }
  // No other thread reports now. Serve reports librdkafka still queued, then
  // cancel whatever it never reported, so each callback runs exactly once.
  while (Outstanding() > 0 && rd_kafka_poll(rk, 0) > 0) {
  }
  reports_closed.store(true, std::memory_order_release);
  const Status cancelled(StatusCode::kCancelled, "publisher closed; librdkafka did not report the message in time");
  const Result<Delivery> cancelled_result(cancelled);
  for (;;) {
    Pending* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      p = head;
    }
    if (p == nullptr) break;
    Finish(p, &cancelled_result);
  }
  rd_kafka_destroy(rk);  // messages it still holds carry no callback now
  rk = nullptr;
}

Publisher::Publisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Publisher::~Publisher() = default;

Result<std::unique_ptr<Publisher>> Publisher::Create(PublisherOptions options) {
  TIERCACHE_RETURN_IF_ERROR(ValidateOptions(options));
  Result<ConfPtr> conf = MakeConf(options);
  if (!conf.ok()) return conf.status();
  auto impl = std::make_unique<Impl>(std::move(options));
  rd_kafka_conf_set_dr_msg_cb(conf->get(), &OnDeliveryReport);
  rd_kafka_conf_set_opaque(conf->get(), impl.get());
  char errstr[512];
  impl->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf->get(), errstr, sizeof(errstr));
  if (impl->rk == nullptr) return Status::InvalidArgument(std::string("librdkafka refused the configuration: ") + errstr);
  (void)conf->release();  // rd_kafka_new took it
  try {
    impl->poller = std::thread([raw = impl.get()] { raw->PollLoop(); });
  } catch (const std::system_error& e) {
    return Status::Internal(std::string("cannot start the publisher thread: ") + e.what());
  }
  impl->poller_id = impl->poller.get_id();
  return std::unique_ptr<Publisher>(new Publisher(std::move(impl)));
}

Status Publisher::Publish(std::string_view topic, std::string_view key, std::string_view payload,
                          DeliveryCallback done, const Headers& headers) {
  return impl_->Publish(topic, key, payload, std::move(done), headers);
}

Result<Delivery> Publisher::PublishAndWait(std::string_view topic, std::string_view key, std::string_view payload,
                                           milliseconds timeout, const Headers& headers) {
  if (impl_->OnPollerThread()) {
    return Status::FailedPrecondition("PublishAndWait from a delivery callback could never see its report");
  }
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<Delivery>> result;  // GUARDED_BY(mu)
  };
  auto waiter = std::make_shared<Waiter>();
  TIERCACHE_RETURN_IF_ERROR(impl_->Publish(
      topic, key, payload,
      [waiter](const Result<Delivery>& r) {
        std::lock_guard<std::mutex> lock(waiter->mu);
        waiter->result.emplace(r);
        waiter->cv.notify_all();
      },
      headers));
  std::unique_lock<std::mutex> lock(waiter->mu);
  if (!waiter->cv.wait_for(lock, std::max(timeout, milliseconds(0)), [&] { return waiter->result.has_value(); })) {
    return Status::DeadlineExceeded("no delivery report within " + Ms(timeout) +
                                    " ms (the message may still be delivered)");
  }
  return *waiter->result;
}

Status Publisher::Flush(milliseconds timeout) {
  if (impl_->OnPollerThread()) return Status::FailedPrecondition("Flush from a delivery callback would wait for itself");
  if (impl_->WaitReported(impl_->LastAccepted(), timeout)) return Status::Ok();
  return Status::DeadlineExceeded(std::to_string(impl_->Outstanding()) + " message(s) still unreported after " +
                                  Ms(timeout) + " ms");
}

size_t Publisher::outstanding() const { return impl_->Outstanding(); }

}  // namespace tiercache::kafka
