// invalidation_event BROKERS — builds one versioned invalidation event,
// checks it, and publishes it to Kafka (topic tiercache.examples.v1, keyed by
// its partition key) with the idempotent publisher of the component `kafka`.
// Exit status 0 once the broker acknowledged it.
#include <chrono>
#include <cstdio>
#include <string>

#include "tiercache/events.h"
#include "tiercache/kafka/publisher.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: invalidation_event HOST:PORT[,HOST:PORT...]\n");
    return 2;
  }
  tiercache::InvalidationEvent e;
  e.event_id = "example-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  e.type = "post.updated";
  e.partition_key = "42";
  e.entity_id = "7";
  e.version = 13;
  e.occurred_at = std::chrono::system_clock::now();
  auto bytes = tiercache::EncodeEvent(e);
  if (!bytes.ok()) {
    std::fprintf(stderr, "invalidation_event: %s\n", bytes.status().ToString().c_str());
    return 1;
  }

  tiercache::kafka::PublisherOptions po;
  po.brokers = argv[1];
  auto publisher = tiercache::kafka::Publisher::Create(po);
  if (!publisher.ok()) {
    std::fprintf(stderr, "invalidation_event: %s\n", publisher.status().ToString().c_str());
    return 1;
  }
  auto d = (*publisher)->PublishAndWait("tiercache.examples.v1", e.partition_key, *bytes, std::chrono::seconds(20));
  if (!d.ok()) {
    std::fprintf(stderr, "invalidation_event: %s\n", d.status().ToString().c_str());
    return 1;
  }
  std::printf("published %s at partition %d offset %lld\n", bytes->c_str(), d->partition,
              static_cast<long long>(d->offset));
  return 0;
}
