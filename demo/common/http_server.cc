#include "common/http_server.h"

#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <sys/socket.h>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>

namespace demo {
namespace {

constexpr std::array<double, 14> kBucketsMs = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};

// Connections handed to a fixed set of workers; enqueue blocks while the
// queue is full (backpressure on the acceptor).
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int workers, size_t queue) : max_queue_(queue) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~BoundedPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return jobs_.size() < max_queue_ || shutdown_; });
    if (shutdown_) return;  // httplib closes the socket when the job is dropped at shutdown
    jobs_.push_back(std::move(fn));
    ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        space_.notify_one();
      }
      fn();
    }
  }

  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

struct RouteStats {
  std::string method, pattern;
  // [status class 2..5][bucket], plus count and sum per class.
  std::array<std::array<std::atomic<uint64_t>, kBucketsMs.size() + 1>, 4> buckets{};
  std::array<std::atomic<uint64_t>, 4> count{};
  std::array<std::atomic<uint64_t>, 4> sum_us{};

  void Observe(int status, Clock::duration d) {
    int cls = std::clamp(status / 100, 2, 5) - 2;
    double ms = std::chrono::duration<double, std::milli>(d).count();
    size_t b = 0;
    while (b < kBucketsMs.size() && ms > kBucketsMs[b]) ++b;
    buckets[cls][b].fetch_add(1, std::memory_order_relaxed);
    count[cls].fetch_add(1, std::memory_order_relaxed);
    sum_us[cls].fetch_add(static_cast<uint64_t>(ms * 1000), std::memory_order_relaxed);
  }
};

// Debian's cpp-httplib is a compiled library whose listen backlog is 5: a
// burst of new connections (a stampede, a pod's clients reconnecting) would
// wait for SYN retransmits. Linux lets listen() be called again on a
// listening socket to change its backlog; httplib does not expose the
// socket, so find it: the listening TCP socket bound to `port`.
void RaiseListenBacklog(int port, int backlog) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int bound = addr.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port)
                : addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                             : -1;
    if (bound == port) listen(fd, backlog);
  }
}

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  httplib::Server server;
  std::vector<std::unique_ptr<RouteStats>> routes;
  std::function<std::string()> extra_metrics;
  std::thread thread;
  std::mutex stop_mu;
  bool started = false;

  std::string Metrics() const {
    std::string out;
    out += "# HELP demo_http_request_duration_seconds Request latency by route and status class.\n";
    out += "# TYPE demo_http_request_duration_seconds histogram\n";
    char line[512];
    for (const auto& r : routes) {
      for (int cls = 0; cls < 4; ++cls) {
        uint64_t n = r->count[cls].load(std::memory_order_relaxed);
        if (n == 0) continue;
        std::string labels = "service=\"" + options.service + "\",method=\"" + r->method + "\",route=\"" +
                             JsonEscape(r->pattern) + "\",code=\"" + std::to_string(cls + 2) + "xx\"";
        uint64_t cum = 0;
        for (size_t b = 0; b <= kBucketsMs.size(); ++b) {
          cum += r->buckets[cls][b].load(std::memory_order_relaxed);
          if (b < kBucketsMs.size()) {
            std::snprintf(line, sizeof line, "demo_http_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n",
                          labels.c_str(), kBucketsMs[b] / 1000.0, static_cast<unsigned long long>(cum));
          } else {
            std::snprintf(line, sizeof line, "demo_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n",
                          labels.c_str(), static_cast<unsigned long long>(cum));
          }
          out += line;
        }
        std::snprintf(line, sizeof line, "demo_http_request_duration_seconds_sum{%s} %.6f\n", labels.c_str(),
                      r->sum_us[cls].load(std::memory_order_relaxed) / 1e6);
        out += line;
        std::snprintf(line, sizeof line, "demo_http_request_duration_seconds_count{%s} %llu\n", labels.c_str(),
                      static_cast<unsigned long long>(n));
        out += line;
      }
    }
    if (extra_metrics) out += extra_metrics();
    return out;
  }
};

HttpServer::HttpServer(HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  Impl* impl = impl_.get();
  const HttpServerOptions& o = impl->options;
  impl->server.new_task_queue = [impl] {
    return new BoundedPool(std::max(1, impl->options.workers), std::max<size_t>(1, impl->options.queue));
  };
  // Responses are written as headers, then body: without TCP_NODELAY, Nagle's
  // algorithm holds the body until the client's delayed ACK (~40 ms).
  impl->server.set_tcp_nodelay(true);
  impl->server.set_keep_alive_max_count(static_cast<size_t>(std::max(1, o.keep_alive_requests)));
  impl->server.set_keep_alive_timeout(o.keep_alive_idle.count());
  impl->server.set_read_timeout(o.read_timeout.count(), 0);
  impl->server.set_write_timeout(o.read_timeout.count(), 0);
  impl->server.set_payload_max_length(o.max_body_bytes);
  // A handler never throws (errors are values), but a library might: answer
  // 500 instead of letting the exception reach httplib's thread.
  impl->server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content("{\"error\":\"internal error\"}", "application/json");
  });
  Get("/healthz", [](const HttpRequest&) { return HttpResponse{200, "ok\n", "text/plain"}; });
  Get("/metrics", [impl](const HttpRequest&) {
    return HttpResponse{200, impl->Metrics(), "text/plain; version=0.0.4"};
  });
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::SetExtraMetrics(std::function<std::string()> f) { impl_->extra_metrics = std::move(f); }

void HttpServer::Get(const std::string& p, Handler h) { Route("GET", p, std::move(h)); }
void HttpServer::Post(const std::string& p, Handler h) { Route("POST", p, std::move(h)); }
void HttpServer::Put(const std::string& p, Handler h) { Route("PUT", p, std::move(h)); }
void HttpServer::Delete(const std::string& p, Handler h) { Route("DELETE", p, std::move(h)); }

void HttpServer::Route(const std::string& method, const std::string& pattern, Handler h) {
  auto stats = std::make_unique<RouteStats>();
  stats->method = method;
  stats->pattern = pattern;
  RouteStats* s = stats.get();
  impl_->routes.push_back(std::move(stats));
  auto deadline = impl_->options.request_deadline;
  auto wrapped = [s, h = std::move(h), method, deadline](const httplib::Request& req, httplib::Response& res) {
    auto start = Clock::now();
    HttpRequest r;
    r.method = method;
    r.path = req.path;
    for (size_t i = 1; i < req.matches.size(); ++i) r.matches.push_back(req.matches[i].str());
    r.body = req.body;
    r.param = [&req](const std::string& k) { return req.has_param(k.c_str()) ? req.get_param_value(k.c_str()) : ""; };
    r.deadline = start + deadline;
    HttpResponse out = h(r);
    res.status = out.status;
    res.set_content(out.body, out.content_type.c_str());
    s->Observe(out.status, Clock::now() - start);
  };
  if (method == "GET") {
    impl_->server.Get(pattern, wrapped);
  } else if (method == "POST") {
    impl_->server.Post(pattern, wrapped);
  } else if (method == "PUT") {
    impl_->server.Put(pattern, wrapped);
  } else {
    impl_->server.Delete(pattern, wrapped);
  }
}

tiercache::Status HttpServer::Start() {
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  if (impl_->started) return tiercache::Status::FailedPrecondition("server already started");
  if (impl_->options.port <= 0 || impl_->options.port > 65535) {
    return tiercache::Status::InvalidArgument("port must be in [1, 65535]");
  }
  // Debian's httplib binds with SO_REUSEPORT, so a second server on a taken
  // port would bind too and share its traffic: refuse a port something
  // already answers on.
  {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(impl_->options.port));
    bool taken = false;
    if (fd >= 0 && inet_pton(AF_INET, impl_->options.host.c_str(), &addr.sin_addr) == 1) {
      taken = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    }
    if (fd >= 0) ::close(fd);
    if (taken) {
      return tiercache::Status::Unavailable("port " + std::to_string(impl_->options.port) + " on " +
                                            impl_->options.host + " is already in use (something answers on it)");
    }
  }
  if (!impl_->server.bind_to_port(impl_->options.host.c_str(), impl_->options.port)) {
    return tiercache::Status::Unavailable("cannot listen on " + impl_->options.host + ":" +
                                          std::to_string(impl_->options.port) +
                                          " (port already in use, or the address is not local)");
  }
  RaiseListenBacklog(impl_->options.port, 4096);
  impl_->started = true;
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  return tiercache::Status::Ok();
}

void HttpServer::Stop() {
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  if (!impl_->started) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->started = false;
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

HttpResponse JsonError(int status, std::string_view message) {
  return HttpResponse{status, "{\"error\":\"" + JsonEscape(message) + "\"}\n", "application/json"};
}

}  // namespace demo
