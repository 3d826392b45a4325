// Publisher: librdkafka's idempotent producer, with the broker's
// acknowledgement surfaced to the caller.
//
// Settings it always applies: enable.idempotence=true (so acks=all, retries
// without duplicates or reordering per partition), socket.nagle.disable=true,
// the default partitioner on the message key (events of one key go to one
// partition, in order). A publish is done only when its delivery report
// says the broker acknowledged it; the report reaches the caller's callback,
// or PublishAndWait's return.
//
// Thread-safety: every method may be called from any thread at once.
// Callbacks run on the publisher's own thread (one), never on the caller's;
// they must not block for long and must not destroy the publisher. No lock
// is held while a callback runs; a callback may call Publish (and
// outstanding()), but Flush and PublishAndWait from a callback return
// kFailedPrecondition (the report they wait for could never arrive). An
// exception thrown by a callback is caught and dropped.
// Blocking: Publish never blocks (a full queue is kResourceExhausted);
// PublishAndWait and Flush block up to their timeout; the destructor flushes
// for at most close_timeout, then fails what is left (kCancelled) and joins
// its thread: normally within close_timeout + 0.1 s, at most about
// close_timeout + 2 s (plus the time callbacks take). Every callback still
// runs exactly once; only for a message whose report librdkafka has not
// handed back 2 s after the purge does the destructor run the callback
// itself, on its own thread once the publisher's thread has ended.
// REQUIRES: no method is called once the destructor has started, except from
// callbacks (where Publish then returns kCancelled).
#ifndef TIERCACHE_KAFKA_PUBLISHER_H_
#define TIERCACHE_KAFKA_PUBLISHER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tiercache/status.h"

namespace tiercache::kafka {

using std::chrono::milliseconds;

// Message headers, in order (Kafka allows repeats).
using Headers = std::vector<std::pair<std::string, std::string>>;

struct PublisherOptions {
  // Bootstrap brokers, "host:port[,host:port...]". Required.
  std::string brokers;
  // A publish not acknowledged by then fails (message.timeout.ms). > 0.
  milliseconds delivery_timeout{30000};
  // How long the producer waits to batch messages (linger.ms). >= 0.
  milliseconds linger{1};
  // Messages queued or in flight at most (queue.buffering.max.messages);
  // Publish beyond it is kResourceExhausted. > 0.
  size_t max_queued_messages = 100000;
  // Largest message accepted (message.max.bytes on the client). > 0.
  size_t max_message_bytes = 1000000;
  // How long destruction waits for outstanding deliveries. >= 0.
  milliseconds close_timeout{10000};
  // client.id as the broker sees it.
  std::string client_id = "tiercache-publisher";
  // Further librdkafka properties (applied last). Create fails with
  // kInvalidArgument for one librdkafka refuses, and for one that a field above
  // or the settings listed at the top already set (bootstrap.servers,
  // enable.idempotence, socket.nagle.disable, linger.ms, message.timeout.ms,
  // queue.buffering.max.messages, message.max.bytes, client.id, and their
  // aliases), so those stay validated and always apply.
  std::vector<std::pair<std::string, std::string>> extra;
};

// Where an acknowledged message landed.
struct Delivery {
  int32_t partition = -1;
  int64_t offset = -1;
};

// Called exactly once per accepted Publish, on the publisher's thread: OK
// with the Delivery once the broker acknowledged the message; otherwise
//   kUnavailable       no broker took the message before delivery_timeout
//                      (brokers unreachable, no leader): it is not in the log,
//                      so publishing it again cannot duplicate it;
//   kDeadlineExceeded  it was sent but not acknowledged before
//                      delivery_timeout: it may be in the log;
//   kInvalidArgument   the broker refused it: unknown or invalid topic or
//                      partition, message too large for the broker/topic;
//   kCancelled         the publisher was destroyed before delivery;
//   kInternal          anything else (e.g. a fatal idempotence error), with
//                      librdkafka's reason.
// Timed-out reports come within delivery_timeout plus about one second
// (librdkafka looks for expired messages once a second).
using DeliveryCallback = std::function<void(const Result<Delivery>&)>;

class Publisher {
 public:
  // Errors: kInvalidArgument (empty brokers, an option out of range, linger
  // not below delivery_timeout, a property or combination of properties
  // librdkafka refuses, an `extra` property the options already set),
  // kInternal (the publisher's thread could not start).
  static Result<std::unique_ptr<Publisher>> Create(PublisherOptions options);

  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Queues one message for `topic` with `key` (partitioning) and `payload`;
  // `done` (may be empty) gets its delivery report later. An empty key means
  // no key (the partitioner then picks any partition). Topic, key, payload
  // and headers are copied: they need not outlive the call.
  // Errors (and then `done` is never called): kInvalidArgument (empty topic,
  // payload above max_message_bytes, key + payload + headers too large for
  // librdkafka), kResourceExhausted (queue full: max_queued_messages in
  // flight), kCancelled (shutting down), kInternal (the producer failed
  // fatally, or another librdkafka refusal, with its reason).
  Status Publish(std::string_view topic, std::string_view key, std::string_view payload, DeliveryCallback done,
                 const Headers& headers = {});

  // Publish, then waits for the delivery report at most `timeout`.
  // Errors: Publish's, the report's, kDeadlineExceeded when no report
  // came in time (the message may still be delivered later), or
  // kFailedPrecondition when called from a delivery callback.
  Result<Delivery> PublishAndWait(std::string_view topic, std::string_view key, std::string_view payload,
                                  milliseconds timeout, const Headers& headers = {});

  // Waits until every message accepted so far got its report (and its
  // callback returned), at most `timeout`; messages accepted meanwhile are
  // not waited for. Errors: kDeadlineExceeded (some still outstanding),
  // kFailedPrecondition (called from a delivery callback).
  Status Flush(milliseconds timeout);

  // Messages accepted and not yet reported; a message counts until its
  // callback has returned (PublishAndWait's included, so the count may still
  // include it just after PublishAndWait returned).
  size_t outstanding() const;

  struct Impl;

 private:
  explicit Publisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache::kafka

#endif  // TIERCACHE_KAFKA_PUBLISHER_H_
