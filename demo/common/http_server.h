// HttpServer: the reference services' HTTP front, on Debian's cpp-httplib.
//
// One acceptor thread and a bounded pool of worker threads: a connection is
// served by one worker for as long as it is kept alive (HTTP/1.1 keep-alive,
// up to keep_alive_requests requests or keep_alive_idle of silence). When
// every worker is busy and `queue` connections wait, the acceptor stops
// accepting (the kernel's backlog holds the rest): nothing grows without
// bound. Every request gets a deadline (request_deadline from its arrival)
// that handlers pass down to the cache and the database.
//
// Every server answers GET /healthz ("ok") and GET /metrics (Prometheus text:
// requests and latency by route and status class, plus what the service
// appends through `extra_metrics`).
//
// Thread-safety: routes are registered before Start; handlers run on the
// worker threads, many at once. Stop may be called from any thread (a
// signal handler must not call it: use a self-pipe or a flag).
#ifndef TIERCACHE_DEMO_COMMON_HTTP_SERVER_H_
#define TIERCACHE_DEMO_COMMON_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/status.h"

namespace httplib {
class Server;
}

namespace demo {

using Clock = std::chrono::steady_clock;

struct HttpRequest {
  std::string method;
  std::string path;
  std::vector<std::string> matches;  // the route's capture groups
  std::string body;
  std::function<std::string(const std::string&)> param;  // query parameter, "" when absent
  Clock::time_point deadline;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

using Handler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                        // required
  int workers = 64;                    // > 0
  size_t queue = 256;                  // connections waiting for a worker
  std::chrono::milliseconds request_deadline{2000};
  int keep_alive_requests = 100000;
  std::chrono::seconds keep_alive_idle{5};
  std::chrono::seconds read_timeout{5};
  size_t max_body_bytes = 64 * 1024;
  std::string service;                 // label in /metrics
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Stop()

  // Route registration (before Start). `pattern` is a regular expression
  // matched against the whole path.
  void Get(const std::string& pattern, Handler h);
  void Post(const std::string& pattern, Handler h);
  void Put(const std::string& pattern, Handler h);
  void Delete(const std::string& pattern, Handler h);
  // Appended to /metrics (Prometheus text, each line ending in '\n').
  void SetExtraMetrics(std::function<std::string()> f);

  // Binds the port (kUnavailable "port N is already in use" when taken) and
  // starts serving on a thread of its own.
  tiercache::Status Start();
  // Stops accepting, lets workers finish their request, joins. Idempotent.
  void Stop();

  struct Impl;

 private:
  void Route(const std::string& method, const std::string& pattern, Handler h);
  std::unique_ptr<Impl> impl_;
};

// Minimal JSON helpers for the services' small documents.
std::string JsonEscape(std::string_view s);
HttpResponse JsonError(int status, std::string_view message);

}  // namespace demo

#endif  // TIERCACHE_DEMO_COMMON_HTTP_SERVER_H_
