#include "common/flags.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace demo {

tiercache::Result<Flags> Flags::Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a.size() < 3) {
      return tiercache::Status::InvalidArgument("unexpected argument '" + a + "' (flags are --name=value)");
    }
    a = a.substr(2);
    std::string name, value;
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      name = a;
      value = argv[++i];
    } else {
      name = a;
      value = "true";
    }
    f.values_.emplace(name, value);
    f.ordered_.emplace_back(name, value);
  }
  return f;
}

std::string Flags::Str(const std::string& name, const std::string& def) const {
  std::string found;
  bool have = false;
  for (const auto& [k, v] : ordered_) {
    if (k == name) found = v, have = true;  // the last one wins
  }
  if (have) return found;
  std::string env = "DEMO_";
  for (char c : name) env += (c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (const char* e = std::getenv(env.c_str()); e != nullptr && *e != '\0') return e;
  return def;
}

int64_t Flags::Int(const std::string& name, int64_t def) const {
  std::string s = Str(name, std::to_string(def));
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0') {
    std::fprintf(stderr, "bad value for --%s: '%s' is not an integer\n", name.c_str(), s.c_str());
    std::exit(2);
  }
  return v;
}

double Flags::Double(const std::string& name, double def) const {
  std::string s = Str(name, std::to_string(def));
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0') {
    std::fprintf(stderr, "bad value for --%s: '%s' is not a number\n", name.c_str(), s.c_str());
    std::exit(2);
  }
  return v;
}

bool Flags::Bool(const std::string& name, bool def) const {
  std::string s = Str(name, def ? "true" : "false");
  if (s == "true" || s == "on" || s == "1" || s == "yes") return true;
  if (s == "false" || s == "off" || s == "0" || s == "no") return false;
  std::fprintf(stderr, "bad value for --%s: '%s' (on/off)\n", name.c_str(), s.c_str());
  std::exit(2);
}

std::vector<std::string> Flags::All(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : ordered_) {
    if (k == name) out.push_back(v);
  }
  return out;
}

tiercache::Result<std::vector<std::pair<std::string, int>>> ParseHostPorts(const std::string& list) {
  std::vector<std::pair<std::string, int>> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) {
      size_t colon = item.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        return tiercache::Status::InvalidArgument("'" + item + "' is not host:port");
      }
      char* end = nullptr;
      long port = std::strtol(item.c_str() + colon + 1, &end, 10);
      if (*end != '\0' || port <= 0 || port > 65535) {
        return tiercache::Status::InvalidArgument("'" + item + "' has no valid port");
      }
      out.emplace_back(item.substr(0, colon), static_cast<int>(port));
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty()) return tiercache::Status::InvalidArgument("empty host:port list");
  return out;
}

}  // namespace demo
