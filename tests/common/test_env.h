// Where the local test servers are, and how an integration test insists on them.
//
// The servers are started by `make services-up` (scripts/services.sh). Their
// ports come from the same environment variables the script reads:
//   TIERCACHE_REDIS_PORT_BASE (7000; nodes on base..base+5)
//   TIERCACHE_KAFKA_PORT      (9092)
//   TIERCACHE_PG_PORT         (55432)
//
// With CI=true a missing server FAILS the test; elsewhere the test is skipped
// with a message naming the command that starts the servers.
#ifndef TIERCACHE_TESTS_COMMON_TEST_ENV_H_
#define TIERCACHE_TESTS_COMMON_TEST_ENV_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tiercache::testing {

bool IsCi();
int RedisPortBase();
std::vector<int> RedisClusterPorts();  // the 6 cluster nodes
int KafkaPort();
std::string KafkaBootstrap();           // "127.0.0.1:9092"
int PgPort();
std::string PgConnString();             // libpq keyword/value string

// True when a TCP connection to 127.0.0.1:port succeeds within 1 s.
bool PortAcceptsConnections(int port);

// Returns an empty string when `port` answers, else the reason to skip/fail.
std::string MissingServerMessage(const std::string& what, int port);

}  // namespace tiercache::testing

// In a TEST body: fail (CI) or skip (elsewhere) when the server is not up.
#define TIERCACHE_REQUIRE_SERVER(what, port)                                   \
  do {                                                                         \
    const std::string tc_missing_ =                                            \
        ::tiercache::testing::MissingServerMessage((what), (port));           \
    if (!tc_missing_.empty()) {                                                \
      if (::tiercache::testing::IsCi()) FAIL() << tc_missing_;                 \
      GTEST_SKIP() << tc_missing_;                                             \
    }                                                                          \
  } while (0)

#endif  // TIERCACHE_TESTS_COMMON_TEST_ENV_H_
