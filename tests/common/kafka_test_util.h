// Kafka helpers for tests: plain librdkafka clients, topic creation, reading
// a topic back, unique names, and librdkafka's in-process mock cluster.
#ifndef TIERCACHE_TESTS_COMMON_KAFKA_TEST_UTIL_H_
#define TIERCACHE_TESTS_COMMON_KAFKA_TEST_UTIL_H_

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tiercache::testing {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using KafkaPtr = std::unique_ptr<rd_kafka_t, KafkaDeleter>;

// A random-suffixed name: "<prefix>.<digits>".
std::string UniqueKafkaName(const std::string& prefix);

// A plain librdkafka client; null (and *error set) on failure.
KafkaPtr MakeKafkaClient(rd_kafka_type_t type, const std::map<std::string, std::string>& props, std::string* error);

// Creates `topic` on `brokers` (default: the local broker) with the admin
// API; returns "" or the reason it failed.
std::string CreateTopic(const std::string& topic, int partitions, const std::map<std::string, std::string>& config = {},
                        const std::string& brokers = "");

struct ConsumedMessage {
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
  int32_t partition = -1;
  int64_t offset = -1;
};

// Reads up to `count` messages of `topic` partitions [0, partitions) from
// `start` (RD_KAFKA_OFFSET_BEGINNING, or an offset for every partition),
// waiting at most `timeout`.
std::vector<ConsumedMessage> ConsumeFrom(const std::string& topic, int partitions, int64_t start, size_t count,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                                         const std::string& brokers = "");

// The pid of the local Kafka broker (a java process running kafka.Kafka), or
// -1. For fault injection (SIGSTOP, SIGKILL).
int KafkaBrokerPid();
// Starts the local servers that are not running (scripts/services.sh up);
// true when the script succeeded.
bool ServicesUp();

// A librdkafka mock cluster (no server), owned through a plain handle.
class KafkaMockCluster {
 public:
  explicit KafkaMockCluster(int brokers = 1);
  ~KafkaMockCluster();
  KafkaMockCluster(const KafkaMockCluster&) = delete;
  KafkaMockCluster& operator=(const KafkaMockCluster&) = delete;

  bool ok() const { return mcluster_ != nullptr; }
  std::string bootstraps() const { return rd_kafka_mock_cluster_bootstraps(mcluster_); }
  rd_kafka_mock_cluster_t* get() const { return mcluster_; }
  // Every broker down (-1) or one.
  rd_kafka_resp_err_t SetDown(int32_t broker_id = -1) { return rd_kafka_mock_broker_set_down(mcluster_, broker_id); }
  rd_kafka_resp_err_t SetUp(int32_t broker_id = -1) { return rd_kafka_mock_broker_set_up(mcluster_, broker_id); }

 private:
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_mock_cluster_t* mcluster_ = nullptr;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_COMMON_KAFKA_TEST_UTIL_H_
