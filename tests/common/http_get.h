// A minimal blocking HTTP/1.0 GET for tests (no dependency beyond sockets):
// what a test needs to read a metrics endpoint or a server's JSON API.
#ifndef TIERCACHE_TESTS_COMMON_HTTP_GET_H_
#define TIERCACHE_TESTS_COMMON_HTTP_GET_H_

#include <chrono>
#include <string>

#include "tiercache/status.h"

namespace tiercache::testing {

struct HttpReply {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:<port><target>. Errors: kUnavailable (connection
// refused, a malformed reply), kDeadlineExceeded (no connection and whole
// reply within `timeout`, the connect included).
Result<HttpReply> HttpGet(int port, const std::string& target,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

// Percent-encodes a query parameter's value.
std::string UrlEncode(const std::string& s);

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_COMMON_HTTP_GET_H_
