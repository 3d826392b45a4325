// Flags: `--name=value` or `--name value` on the command line, else the
// environment variable DEMO_<NAME> (upper case, '-' → '_'), else the default.
// So the same binaries run against any Redis, Kafka and PostgreSQL.
#ifndef TIERCACHE_DEMO_COMMON_FLAGS_H_
#define TIERCACHE_DEMO_COMMON_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tiercache/status.h"

namespace demo {

class Flags {
 public:
  // Errors: kInvalidArgument for an argument that is not a flag.
  static tiercache::Result<Flags> Parse(int argc, char** argv);

  std::string Str(const std::string& name, const std::string& def) const;
  // Errors are reported on stderr and the process exits 2 (bad configuration).
  int64_t Int(const std::string& name, int64_t def) const;
  double Double(const std::string& name, double def) const;
  bool Bool(const std::string& name, bool def) const;
  // Every value given for a repeated flag (command line only), in order.
  std::vector<std::string> All(const std::string& name) const;

 private:
  std::multimap<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> ordered_;
};

// "host:port,host:port" → pairs. Errors: kInvalidArgument.
tiercache::Result<std::vector<std::pair<std::string, int>>> ParseHostPorts(const std::string& list);

}  // namespace demo

#endif  // TIERCACHE_DEMO_COMMON_FLAGS_H_
