// The Prometheus exposition of CounterMetrics: names, labels and histogram
// buckets in the text format, label checks, and the HTTP exporter (its own
// port, a port taken, a bad address). Prometheus itself scraping it, and
// promtool's check, are in prometheus_itest.cc.
#include "tiercache/prometheus.h"

#include "common/http_get.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace tiercache::prometheus {
namespace {

using namespace std::chrono_literals;

bool Has(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(PrometheusExporterTest, RendersEveryFigureUnderItsNameAndLabels) {
  CounterMetrics m;
  m.Add(Counter::kHit, Tier::kL1, 5);
  m.Add(Counter::kMiss, Tier::kL2, 2);
  m.Add(Counter::kStaleServe, Tier::kL2, 1);
  m.Add(Counter::kRefusedFill, Tier::kL2, 6);
  m.Add(Counter::kDecodeError, Tier::kL1, 8);
  m.Add(Counter::kLoad, Tier::kLoader, 3);
  m.Add(Counter::kLoad, Tier::kL2, 1);  // not per tier: summed over tiers
  m.ObserveLoad(3us);    // bucket 2: [2, 4) µs
  m.ObserveLoad(700us);  // bucket 10: [512, 1024) µs
  m.AddEvents(EventOutcome::kDeadLettered, 4);
  m.ObserveInvalidationLag(InvalidationStage::kL1, 20ms);
  m.AddL1Fence(L1FenceCause::kLagging);
  m.SetL1Fenced(true);
  m.SetConsumerLag("invalidations", 3, 17);
  m.SetOutboxDepth(9, 1500ms);
  m.AddRelayError(/*kafka=*/false);
  m.ObserveOutboxPublishLag(5ms);  // bucket 13: [4,096, 8,192) µs
  Result<std::string> text = RenderText(m.snapshot(), {{"service", "feeds"}});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const std::string& t = *text;
  EXPECT_TRUE(Has(t, "tiercache_lookups_total{service=\"feeds\",tier=\"l1\",result=\"hit\"} 5")) << t;
  EXPECT_TRUE(Has(t, "tiercache_lookups_total{service=\"feeds\",tier=\"l2\",result=\"miss\"} 2")) << t;
  EXPECT_TRUE(Has(t, "tiercache_stale_serves_total{service=\"feeds\",tier=\"l2\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_refused_fills_total{service=\"feeds\",tier=\"l2\"} 6")) << t;
  EXPECT_TRUE(Has(t, "tiercache_decode_errors_total{service=\"feeds\",tier=\"l1\"} 8")) << t;
  EXPECT_TRUE(Has(t, "tiercache_loads_total{service=\"feeds\"} 4")) << t;
  EXPECT_TRUE(Has(t, "# TYPE tiercache_load_duration_seconds histogram")) << t;
  // Cumulative: 3 µs is at or below 4 µs; 700 µs only from 1,024 µs on.
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_bucket{service=\"feeds\",le=\"1e-06\"} 0")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_bucket{service=\"feeds\",le=\"4e-06\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_bucket{service=\"feeds\",le=\"0.000256\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_bucket{service=\"feeds\",le=\"0.001024\"} 2")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_bucket{service=\"feeds\",le=\"+Inf\"} 2")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_count{service=\"feeds\"} 2")) << t;
  EXPECT_TRUE(Has(t, "tiercache_load_duration_seconds_sum{service=\"feeds\"} 0.000703")) << t;
  EXPECT_TRUE(Has(t, "tiercache_invalidation_events_total{service=\"feeds\",outcome=\"dead_lettered\"} 4")) << t;
  EXPECT_TRUE(Has(t, "tiercache_invalidation_lag_seconds_count{service=\"feeds\",stage=\"l1\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_invalidation_lag_seconds_sum{service=\"feeds\",stage=\"l1\"} 0.02")) << t;
  EXPECT_TRUE(Has(t, "tiercache_l1_fences_total{service=\"feeds\",cause=\"lagging\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_l1_fenced{service=\"feeds\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_consumer_lag_messages{service=\"feeds\",topic=\"invalidations\",partition=\"3\"} 17"))
      << t;
  EXPECT_TRUE(Has(t, "tiercache_outbox_unsent_rows{service=\"feeds\"} 9")) << t;
  EXPECT_TRUE(Has(t, "tiercache_outbox_oldest_unsent_age_seconds{service=\"feeds\"} 1.5")) << t;
  EXPECT_TRUE(Has(t, "tiercache_outbox_relay_errors_total{service=\"feeds\",cause=\"database\"} 1")) << t;
  EXPECT_TRUE(Has(t, "tiercache_outbox_publish_lag_seconds_bucket{service=\"feeds\",le=\"0.004096\"} 0")) << t;
  EXPECT_TRUE(Has(t, "tiercache_outbox_publish_lag_seconds_bucket{service=\"feeds\",le=\"0.016384\"} 1")) << t;
}

TEST(PrometheusExporterTest, RefusesBadAndReservedLabelNames) {
  CounterMetrics m;
  for (const char* bad : {"", "1st", "has-dash", "__reserved", "tier", "le"}) {
    Result<std::string> text = RenderText(m.snapshot(), {{bad, "x"}});
    EXPECT_TRUE(text.status().IsInvalidArgument()) << "'" << bad << "': " << text.status().ToString();
  }
  EXPECT_TRUE(RenderText(m.snapshot(), {{"pod", "a"}, {"pod", "b"}}).status().IsInvalidArgument()) << "twice";
  EXPECT_TRUE(RenderText(m.snapshot(), {{"pod", "\xff\xfe"}}).status().IsInvalidArgument()) << "not UTF-8";
  EXPECT_TRUE(RenderText(m.snapshot(), {{"pod", "caf\xc3\xa9"}}).ok()) << "UTF-8";
  EXPECT_TRUE(MakeCollectable(nullptr).status().IsInvalidArgument());
}

TEST(PrometheusExporterTest, ServesTheCurrentFiguresOverHttp) {
  CounterMetrics m;
  ExporterOptions o;
  o.listen_address = "127.0.0.1:0";
  o.const_labels = {{"pod", "p1"}};
  Result<std::unique_ptr<Exporter>> exporter = Exporter::Start(&m, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  ASSERT_NE((*exporter)->port(), 0);
  m.Add(Counter::kHit, Tier::kL2, 7);  // after the start: each scrape reads the figures of its time
  Result<testing::HttpReply> got = testing::HttpGet((*exporter)->port(), "/metrics");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_TRUE(Has(got->body, "tiercache_lookups_total{pod=\"p1\",tier=\"l2\",result=\"hit\"} 7")) << got->body;
  m.Add(Counter::kHit, Tier::kL2, 1);
  got = testing::HttpGet((*exporter)->port(), "/metrics");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(Has(got->body, "tiercache_lookups_total{pod=\"p1\",tier=\"l2\",result=\"hit\"} 8")) << got->body;
}

TEST(PrometheusExporterTest, APortAlreadyTakenIsUnavailableNotAThrow) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int port = ntohs(a.sin_port);
  CounterMetrics m;
  ExporterOptions o;
  o.listen_address = "127.0.0.1:" + std::to_string(port);
  Result<std::unique_ptr<Exporter>> exporter = Exporter::Start(&m, o);
  ::close(fd);
  EXPECT_TRUE(exporter.status().IsUnavailable()) << exporter.status().ToString();
}

TEST(PrometheusExporterTest, BadOptionsAreInvalidArguments) {
  CounterMetrics m;
  ExporterOptions o;
  o.listen_address = "127.0.0.1";  // no port
  EXPECT_TRUE(Exporter::Start(&m, o).status().IsInvalidArgument());
  o.listen_address = "127.0.0.1:http";
  EXPECT_TRUE(Exporter::Start(&m, o).status().IsInvalidArgument());
  o.listen_address = "127.0.0.1:0";
  o.path = "metrics";
  EXPECT_TRUE(Exporter::Start(&m, o).status().IsInvalidArgument());
  o.path = "/metrics";
  o.threads = 0;
  EXPECT_TRUE(Exporter::Start(&m, o).status().IsInvalidArgument());
  o.threads = 2;
  EXPECT_TRUE(Exporter::Start(nullptr, o).status().IsInvalidArgument());
  o.listen_address = "no-such-host.invalid:0";
  EXPECT_TRUE(Exporter::Start(&m, o).status().IsUnavailable());
}

}  // namespace
}  // namespace tiercache::prometheus
