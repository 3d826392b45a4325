#include "common/test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string_view>

namespace tiercache::testing {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && n > 0 && n < 65536) ? static_cast<int>(n) : fallback;
}

}  // namespace

bool IsCi() {
  const char* v = std::getenv("CI");
  return v != nullptr && (std::string_view(v) == "true" || std::string_view(v) == "1");
}

int RedisPortBase() { return EnvInt("TIERCACHE_REDIS_PORT_BASE", 7000); }

std::vector<int> RedisClusterPorts() {
  std::vector<int> ports;
  for (int i = 0; i < 6; ++i) ports.push_back(RedisPortBase() + i);
  return ports;
}

int KafkaPort() { return EnvInt("TIERCACHE_KAFKA_PORT", 9092); }
std::string KafkaBootstrap() { return "127.0.0.1:" + std::to_string(KafkaPort()); }
int PgPort() { return EnvInt("TIERCACHE_PG_PORT", 55432); }

std::string PgConnString() {
  return "host=127.0.0.1 port=" + std::to_string(PgPort()) +
         " dbname=tiercache user=postgres connect_timeout=5";
}

bool PortAcceptsConnections(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 1000) == 1) {
      int err = 0;
      socklen_t len = sizeof(err);
      ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  ::close(fd);
  return ok;
}

std::string MissingServerMessage(const std::string& what, int port) {
  if (PortAcceptsConnections(port)) return "";
  return what + " is not reachable on 127.0.0.1:" + std::to_string(port) +
         "; start the local servers with `make services-up`";
}

}  // namespace tiercache::testing
