// Small pieces shared by the Kafka clients of this component (librdkafka's
// C API stays inside src/kafka).
#ifndef TIERCACHE_KAFKA_RDKAFKA_UTIL_H_
#define TIERCACHE_KAFKA_RDKAFKA_UTIL_H_

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "tiercache/status.h"

namespace tiercache::kafka {

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const { rd_kafka_conf_destroy(conf); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct HeadersDeleter {
  void operator()(rd_kafka_headers_t* h) const { rd_kafka_headers_destroy(h); }
};
using HeadersPtr = std::unique_ptr<rd_kafka_headers_t, HeadersDeleter>;

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

using Properties = std::vector<std::pair<std::string, std::string>>;

inline std::string Ms(std::chrono::milliseconds d) { return std::to_string(d.count()); }

// A configuration with `props` set in order. Errors: kInvalidArgument naming
// the property librdkafka refused.
Result<ConfPtr> BuildConf(const Properties& props);

// A consumer from `props`, then `extra` (the caller's own properties);
// `configure` sets callbacks and the opaque on the configuration first. Its
// main queue is redirected to the consumer queue, so polling the consumer
// serves every callback. Errors: kInvalidArgument (a property or the
// configuration refused).
Result<rd_kafka_t*> NewConsumer(Properties props, const Properties& extra,
                                const std::function<void(rd_kafka_conf_t*)>& configure);

// kInvalidArgument when `extra` names an empty property or one of `managed`
// (which `owner`, an options struct, sets through a typed field).
Status CheckExtra(const Properties& extra, std::span<const std::string_view> managed, std::string_view owner);

}  // namespace tiercache::kafka

#endif  // TIERCACHE_KAFKA_RDKAFKA_UTIL_H_
