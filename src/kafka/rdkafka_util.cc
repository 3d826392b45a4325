#include "kafka/rdkafka_util.h"

namespace tiercache::kafka {

Result<ConfPtr> BuildConf(const Properties& props) {
  ConfPtr conf(rd_kafka_conf_new());
  char errstr[512];
  for (const auto& [name, value] : props) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
      return Status::InvalidArgument("librdkafka refused " + name + "=" + value + ": " + errstr);
    }
  }
  return conf;
}

Result<rd_kafka_t*> NewConsumer(Properties props, const Properties& extra,
                                const std::function<void(rd_kafka_conf_t*)>& configure) {
  props.insert(props.end(), extra.begin(), extra.end());
  Result<ConfPtr> conf = BuildConf(props);
  if (!conf.ok()) return conf.status();
  configure(conf->get());
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf->get(), errstr, sizeof(errstr));
  if (rk == nullptr) return Status::InvalidArgument(std::string("librdkafka consumer: ") + errstr);
  conf->release();  // rd_kafka_new took it
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

Status CheckExtra(const Properties& extra, std::span<const std::string_view> managed, std::string_view owner) {
  for (const auto& [name, value] : extra) {
    if (name.empty()) return Status::InvalidArgument(std::string(owner) + "::extra holds an empty property name");
    for (std::string_view m : managed) {
      if (name == m) {
        return Status::InvalidArgument(std::string(owner) + "::extra may not set '" + name + "': " +
                                       std::string(owner) + " sets it (use the typed option)");
      }
    }
  }
  return Status::Ok();
}

}  // namespace tiercache::kafka
