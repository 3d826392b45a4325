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

Status CheckExtra(const Properties& extra, const std::vector<std::string_view>& managed, std::string_view owner) {
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
