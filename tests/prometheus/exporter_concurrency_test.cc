// Scrapes while other threads update the metrics: under ASan+UBSan and TSan
// (this file's name puts it in those builds) any race or bad access in the
// rendering shows, and the figures a scrape returns never go backwards.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common/http_get.h"
#include "tiercache/prometheus.h"

namespace tiercache::prometheus {
namespace {

using namespace std::chrono_literals;

// The value of the series whose line starts with `prefix`, or -1.
double ValueOf(const std::string& text, const std::string& prefix) {
  const size_t at = text.find("\n" + prefix + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + prefix.size() + 2));
}

TEST(PrometheusExporterConcurrencyTest, ScrapesWhileTheFiguresChangeSeeThemOnlyGrow) {
  CounterMetrics m;
  ExporterOptions o;
  o.listen_address = "127.0.0.1:0";
  Result<std::unique_ptr<Exporter>> exporter = Exporter::Start(&m, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&m, &stop, w] {
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        m.Add(Counter::kHit, Tier::kL1);
        m.ObserveLoad(std::chrono::microseconds(i % 5000));
        m.SetConsumerLag("invalidations", w, i % 100);
        m.ObserveInvalidationLag(InvalidationStage::kL1, 3ms);
        m.SetOutboxDepth(i % 7, std::chrono::milliseconds(i % 1000));
      }
    });
  }
  const std::string hits = "tiercache_lookups_total{tier=\"l1\",result=\"hit\"}";
  double last_http = 0, last_text = 0;
  for (int scrape = 0; scrape < 30; ++scrape) {
    Result<testing::HttpReply> got = testing::HttpGet((*exporter)->port(), "/metrics");
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    if (got.ok()) {
      const double v = ValueOf(got->body, hits);
      EXPECT_GE(v, last_http);
      last_http = v;
    }
    Result<std::string> text = RenderText(m.snapshot());
    EXPECT_TRUE(text.ok());
    if (text.ok()) {
      const double v = ValueOf(*text, hits);
      EXPECT_GE(v, last_text);
      last_text = v;
    }
  }
  stop = true;
  for (auto& t : writers) t.join();
  EXPECT_GT(last_text, 0);
}

}  // namespace
}  // namespace tiercache::prometheus
