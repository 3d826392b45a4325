#include "common/kafka_test_util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/test_env.h"

namespace tiercache::testing {

std::string UniqueKafkaName(const std::string& prefix) {
  static std::mt19937_64 rng(std::random_device{}());
  return prefix + "." + std::to_string(rng() % 1000000000);
}

KafkaPtr MakeKafkaClient(rd_kafka_type_t type, const std::map<std::string, std::string>& props, std::string* error) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
      *error = k + ": " + errstr;
      rd_kafka_conf_destroy(conf);
      return nullptr;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
  if (rk == nullptr) {
    *error = errstr;
    rd_kafka_conf_destroy(conf);
  }
  return KafkaPtr(rk);
}

std::string CreateTopic(const std::string& topic, int partitions, const std::map<std::string, std::string>& config,
                        const std::string& brokers) {
  std::string error;
  KafkaPtr admin = MakeKafkaClient(
      RD_KAFKA_PRODUCER, {{"bootstrap.servers", brokers.empty() ? KafkaBootstrap() : brokers}}, &error);
  if (!admin) return error;
  char errstr[512];
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  if (nt == nullptr) return errstr;
  for (const auto& [k, v] : config) rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str());
  rd_kafka_queue_t* q = rd_kafka_queue_new(admin.get());
  rd_kafka_CreateTopics(admin.get(), &nt, 1, nullptr, q);
  error = "no CreateTopics result within 30 s";
  if (rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000); ev != nullptr) {
    size_t n = 0;
    const rd_kafka_topic_result_t** res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = rd_kafka_event_error_string(ev);
    } else if (n != 1) {
      error = "no topic result";
    } else {
      error = rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR
                  ? ""
                  : rd_kafka_err2str(rd_kafka_topic_result_error(res[0]));
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  return error;
}

std::vector<ConsumedMessage> ConsumeFrom(const std::string& topic, int partitions, int64_t start, size_t count,
                                         std::chrono::milliseconds timeout, const std::string& brokers) {
  std::string error;
  KafkaPtr consumer = MakeKafkaClient(RD_KAFKA_CONSUMER,
                                      {{"bootstrap.servers", brokers.empty() ? KafkaBootstrap() : brokers},
                                       {"group.id", UniqueKafkaName("tiercache.test.reader")},
                                       {"enable.auto.commit", "false"},
                                       {"fetch.wait.max.ms", "10"}},
                                      &error);
  if (!consumer) return {};
  rd_kafka_poll_set_consumer(consumer.get());
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = start;
  rd_kafka_assign(consumer.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);

  std::vector<ConsumedMessage> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer.get(), 200);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ConsumedMessage c;
      if (m->key != nullptr) c.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload != nullptr) c.value.assign(static_cast<const char*>(m->payload), m->len);
      c.partition = m->partition;
      c.offset = m->offset;
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
          c.headers.emplace_back(name, std::string(static_cast<const char*>(value), size));
        }
      }
      out.push_back(std::move(c));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(consumer.get());
  return out;
}

int KafkaBrokerPid() {
  // The broker of this checkout's servers (scripts/services.sh: its
  // server.properties lives in the run folder), not another checkout's
  // broker on the same machine.
  const std::filesystem::path root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  const char* run_dir = std::getenv("TIERCACHE_RUN_DIR");
  const std::string properties =
      ((run_dir != nullptr && *run_dir != '\0') ? std::filesystem::path(run_dir) : root / ".run") / "kafka" /
      "server.properties";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("kafka.Kafka") != std::string::npos && cmdline.find(properties) != std::string::npos) {
      return std::stoi(name);
    }
  }
  return -1;
}

bool ServicesUp() {
  // tests/common/ -> the repository's root.
  const std::filesystem::path root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  const std::string cmd = "'" + (root / "scripts" / "services.sh").string() + "' up >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

KafkaMockCluster::KafkaMockCluster(int brokers) {
  char errstr[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (rk_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    return;
  }
  mcluster_ = rd_kafka_mock_cluster_new(rk_, brokers);
}

KafkaMockCluster::~KafkaMockCluster() {
  if (mcluster_ != nullptr) rd_kafka_mock_cluster_destroy(mcluster_);
  if (rk_ != nullptr) rd_kafka_destroy(rk_);
}

}  // namespace tiercache::testing
