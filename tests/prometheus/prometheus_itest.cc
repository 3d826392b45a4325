// A real Prometheus server (Debian's `prometheus`) scrapes a process that
// runs the exporter, and its query API then returns tiercache_ series with
// the values the process counted; `promtool check metrics` accepts the
// exposition. The server is started here (its own data directory and port)
// and stopped at the end; in CI a missing binary fails the test.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/http_get.h"
#include "common/test_env.h"
#include "tiercache/prometheus.h"

extern char** environ;

namespace tiercache::prometheus {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Fails in CI, skips elsewhere, when `path` is not an executable.
#define REQUIRE_BINARY(path)                                                              \
  do {                                                                                    \
    if (::access((path), X_OK) != 0) {                                                    \
      const std::string why = std::string(path) + " is missing: run make setup";          \
      if (::tiercache::testing::IsCi()) FAIL() << why;                                    \
      GTEST_SKIP() << why;                                                                \
    }                                                                                     \
  } while (0)

// A Prometheus server in a temporary directory, killed when destroyed.
class PrometheusServer {
 public:
  PrometheusServer(int scrape_port, int web_port) : web_port_(web_port) {
    dir_ = fs::temp_directory_path() / ("tiercache-prometheus-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    std::ofstream(dir_ / "prometheus.yml") << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                                           << "scrape_configs:\n  - job_name: tiercache\n    static_configs:\n"
                                           << "      - targets: ['127.0.0.1:" << scrape_port << "']\n";
    const std::vector<std::string> args = {"prometheus",
                                           "--config.file=" + (dir_ / "prometheus.yml").string(),
                                           "--storage.tsdb.path=" + (dir_ / "data").string(),
                                           "--web.listen-address=127.0.0.1:" + std::to_string(web_port),
                                           "--log.level=warn"};
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = (dir_ / "prometheus.log").string();
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, "/usr/bin/prometheus", &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~PrometheusServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 100 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
    }
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  bool started() const { return pid_ > 0; }
  // True once its API answers; false if it exited first (e.g. its port was
  // taken between FreePort and its bind) or `timeout` passed.
  bool WaitReady(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      Result<testing::HttpReply> r = testing::HttpGet(web_port_, "/-/ready", 1s);
      if (r.ok() && r->status == 200) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  std::string Log() const {
    std::ifstream in(dir_ / "prometheus.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // The result vector of an instant query (empty on any error).
  nlohmann::json Query(const std::string& promql) const {
    Result<testing::HttpReply> r = testing::HttpGet(web_port_, "/api/v1/query?query=" + testing::UrlEncode(promql));
    if (!r.ok() || r->status != 200) return nlohmann::json::array();
    nlohmann::json j = nlohmann::json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
    return j["data"]["result"];
  }

 private:
  fs::path dir_;
  int web_port_;
  pid_t pid_ = -1;
};

// A port no one listens on now (bound, read, closed).
int FreePort() {
  CounterMetrics unused;
  ExporterOptions o;
  o.listen_address = "127.0.0.1:0";
  auto e = Exporter::Start(&unused, o);
  return e.ok() ? (*e)->port() : 0;
}

double FirstValue(const nlohmann::json& result) {
  if (!result.is_array() || result.empty()) return -1;
  return std::stod(result[0]["value"][1].get<std::string>());
}

TEST(PrometheusItest, APrometheusServerScrapesTheExporterAndSeesTheCounts) {
  REQUIRE_BINARY("/usr/bin/prometheus");
  CounterMetrics metrics;
  metrics.Add(Counter::kHit, Tier::kL1, 41);
  metrics.Add(Counter::kLoad, Tier::kLoader, 3);
  metrics.ObserveLoad(2ms);
  ExporterOptions o;
  o.listen_address = "127.0.0.1:0";
  o.const_labels = {{"service", "itest"}};
  Result<std::unique_ptr<Exporter>> exporter = Exporter::Start(&metrics, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  // FreePort's port can be taken before the server binds it: then the
  // server exits, and another port is tried.
  std::unique_ptr<PrometheusServer> started;
  std::string failed_logs;
  for (int attempt = 0; attempt < 3 && !started; ++attempt) {
    const int web_port = FreePort();
    ASSERT_NE(web_port, 0);
    auto s = std::make_unique<PrometheusServer>((*exporter)->port(), web_port);
    ASSERT_TRUE(s->started());
    if (s->WaitReady(60s)) {
      started = std::move(s);
    } else {
      failed_logs += s->Log();
    }
  }
  ASSERT_TRUE(started) << "the Prometheus server never got ready:\n" << failed_logs;
  PrometheusServer& server = *started;
  metrics.Add(Counter::kHit, Tier::kL1, 1);  // 42 from the first scrape on

  double hits = -1, up = -1, loads = -1, load_p = -1;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < until) {
    up = FirstValue(server.Query("up{job=\"tiercache\"}"));
    hits = FirstValue(server.Query("tiercache_lookups_total{tier=\"l1\",result=\"hit\",service=\"itest\"}"));
    loads = FirstValue(server.Query("tiercache_loads_total{service=\"itest\"}"));
    load_p = FirstValue(server.Query("tiercache_load_duration_seconds_count{service=\"itest\"}"));
    if (up == 1 && hits > 0 && loads > 0 && load_p > 0) break;
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_EQ(up, 1) << "the server did not scrape the exporter; its log:\n" << server.Log();
  EXPECT_EQ(hits, 42);
  EXPECT_EQ(loads, 3);
  EXPECT_EQ(load_p, 1);
  // The server stored the exporter's whole set of tiercache_ series.
  const nlohmann::json all = server.Query("{job=\"tiercache\",__name__=~\"tiercache_.+\"}");
  EXPECT_GT(all.size(), 40u) << all.dump();
}

TEST(PrometheusItest, PromtoolAcceptsTheExposition) {
  REQUIRE_BINARY("/usr/bin/promtool");
  CounterMetrics metrics;
  metrics.Add(Counter::kMiss, Tier::kL2, 5);
  metrics.ObserveLoad(150us);
  metrics.SetConsumerLag("invalidations", 0, 12);
  metrics.ObserveOutboxPublishLag(30ms);
  Result<std::string> text = RenderText(metrics.snapshot(), {{"pod", "p-1"}});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const std::string out_file = (fs::temp_directory_path() / ("promtool-" + std::to_string(::getpid()))).string();
  FILE* p = ::popen(("/usr/bin/promtool check metrics > " + out_file + " 2>&1").c_str(), "w");
  ASSERT_NE(p, nullptr);
  std::fwrite(text->data(), 1, text->size(), p);
  const int status = ::pclose(p);
  std::ifstream in(out_file);
  const std::string said((std::istreambuf_iterator<char>(in)), {});
  std::remove(out_file.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << said << "\n" << *text;
  EXPECT_EQ(said, "") << "promtool's lint found problems";
}

}  // namespace
}  // namespace tiercache::prometheus
