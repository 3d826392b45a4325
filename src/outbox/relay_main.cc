// tiercache-outbox-relay: the outbox relay as a program of its own.
//
//   tiercache-outbox-relay --conninfo "host=... dbname=..." --brokers host:port
//                          [--batch N] [--max-shards N] [--migrate [--shards N]]
//                          [--metrics-listen HOST:PORT]
//
// Runs until SIGINT or SIGTERM, then stops after the batch in flight (its
// shards go to another relay). Prints its counters every 10 s to stderr.
// With --metrics-listen (only in a build with the Prometheus exporter,
// TIERCACHE_WITH_PROMETHEUS) it serves its metrics (the outbox series of
// docs/metrics.md) at http://HOST:PORT/metrics; the endpoint is bound before
// the relay connects, so a port already taken ends the program at once.
// HOST is an IPv4 address or a host name (the exporter has no IPv6), PORT a
// number in [0, 65535] (0: any free port, printed).
// Exit codes: 0 stopped by a signal, 2 bad arguments (a malformed
// --metrics-listen included), 1 could not start (a --metrics-listen address
// that cannot be bound included).
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "tiercache/metrics.h"
#include "tiercache/outbox.h"
#ifdef TIERCACHE_RELAY_WITH_PROMETHEUS
#include "tiercache/prometheus.h"
#endif

namespace {

int Usage(const char* why) {
  std::fprintf(stderr,
               "tiercache-outbox-relay: %s\n"
               "usage: tiercache-outbox-relay --conninfo CONNINFO --brokers HOST:PORT[,...]\n"
               "                              [--batch N] [--max-shards N] [--migrate [--shards N]]\n"
               "                              [--metrics-listen HOST:PORT]\n",
               why);
  return 2;
}

bool ParseInt(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// Why `v` is not a --metrics-listen address (HOST:PORT, HOST an IPv4
// address or a host name, PORT in [0, 65535]); empty when it is one. The
// exporter (prometheus-cpp's civetweb) is built without IPv6: an IPv6
// address is refused here rather than failing to bind.
std::string MetricsListenProblem(const std::string& v) {
  const size_t colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return "--metrics-listen needs HOST:PORT (HOST an IPv4 address or a host name)";
  }
  const std::string host = v.substr(0, colon), port = v.substr(colon + 1);
  if (host[0] == '[' || host.find(':') != std::string::npos) {
    return "--metrics-listen: an IPv6 address is not supported (the exporter listens on IPv4 only): give an IPv4 "
           "address or a host name";
  }
  long n = 0;
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      !ParseInt(port.c_str(), 0, 65535, &n)) {
    return "--metrics-listen: the port must be a number in [0, 65535]";
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  tiercache::outbox::OutboxRelayOptions o;
  bool migrate = false;
  long shards = 64;
  std::string metrics_listen;  // empty: no metrics endpoint
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    long n = 0;
    if (arg == "--conninfo") {
      const char* v = value();
      if (!v) return Usage("--conninfo needs a value");
      o.conninfo = v;
    } else if (arg == "--brokers") {
      const char* v = value();
      if (!v) return Usage("--brokers needs a value");
      o.publisher.brokers = v;
    } else if (arg == "--batch") {
      const char* v = value();
      if (!v || !ParseInt(v, 1, 100000, &n)) return Usage("--batch needs a number in [1, 100000]");
      o.batch = static_cast<size_t>(n);
    } else if (arg == "--max-shards") {
      const char* v = value();
      if (!v || !ParseInt(v, 0, 4096, &n)) return Usage("--max-shards needs a number in [0, 4096]");
      o.max_shards = static_cast<int>(n);
    } else if (arg == "--shards") {
      const char* v = value();
      if (!v || !ParseInt(v, 1, 4096, &shards)) return Usage("--shards needs a number in [1, 4096]");
    } else if (arg == "--metrics-listen") {
      const char* v = value();
      if (!v || *v == '\0') return Usage("--metrics-listen needs HOST:PORT");
      if (const std::string why = MetricsListenProblem(v); !why.empty()) return Usage(why.c_str());
#ifdef TIERCACHE_RELAY_WITH_PROMETHEUS
      metrics_listen = v;
#else
      return Usage("--metrics-listen: this build has no Prometheus exporter (TIERCACHE_WITH_PROMETHEUS=OFF)");
#endif
    } else if (arg == "--migrate") {
      migrate = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage("the transactional outbox's relay");
      return 0;
    } else {
      return Usage(("unknown argument " + arg).c_str());
    }
  }
  if (o.conninfo.empty() || o.publisher.brokers.empty()) return Usage("--conninfo and --brokers are required");
  o.publisher.client_id = "tiercache-outbox-relay";
  tiercache::CounterMetrics metrics;  // outlives the relay and the exporter
  o.metrics = &metrics;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts: they inherit it

#ifdef TIERCACHE_RELAY_WITH_PROMETHEUS
  // Bound before anything else starts: a taken port is reported at once,
  // before the relay claims shards.
  std::unique_ptr<tiercache::prometheus::Exporter> exporter;
  if (!metrics_listen.empty()) {
    tiercache::prometheus::ExporterOptions eo;
    eo.listen_address = metrics_listen;
    auto e = tiercache::prometheus::Exporter::Start(&metrics, eo);
    if (!e.ok()) {
      std::fprintf(stderr, "tiercache-outbox-relay: --metrics-listen %s: %s\n", metrics_listen.c_str(),
                   e.status().ToString().c_str());
      return e.status().IsInvalidArgument() ? 2 : 1;
    }
    exporter = std::move(*e);
    std::fprintf(stderr, "tiercache-outbox-relay: serving metrics on %s (port %u) at %s\n", metrics_listen.c_str(),
                 static_cast<unsigned>(exporter->port()), eo.path.c_str());
  }
#endif

  if (migrate) {
    tiercache::Status s = tiercache::outbox::MigrateOutbox(o.conninfo, static_cast<int>(shards));
    if (!s.ok()) {
      std::fprintf(stderr, "tiercache-outbox-relay: migration failed: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  auto relay = tiercache::outbox::OutboxRelay::Create(o);
  if (!relay.ok()) {
    std::fprintf(stderr, "tiercache-outbox-relay: %s\n", relay.status().ToString().c_str());
    return 1;
  }
  if (tiercache::Status s = (*relay)->Start(); !s.ok()) {
    std::fprintf(stderr, "tiercache-outbox-relay: %s\n", s.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "tiercache-outbox-relay: running\n");
  for (;;) {
    timespec ten{10, 0};
    const int sig = sigtimedwait(&signals, nullptr, &ten);
    const auto st = (*relay)->stats();
    std::fprintf(stderr, "tiercache-outbox-relay: shards %d, published %llu, batches %llu, publish errors %llu, "
                         "db errors %llu, deleted %llu\n",
                 st.shards_owned, static_cast<unsigned long long>(st.published),
                 static_cast<unsigned long long>(st.batches), static_cast<unsigned long long>(st.publish_errors),
                 static_cast<unsigned long long>(st.db_errors), static_cast<unsigned long long>(st.deleted));
    if (sig == SIGINT || sig == SIGTERM) break;
  }
  (*relay)->Stop();
  return 0;
}
