// demo-load: the load generator, consistency checker and stampede tool of
// `make demo` (docs/demo.md).
//
//   demo-load run       open-loop Zipf reads + writes for a while, with
//                       timed phase marks and fault commands; per-second CSV
//                       and a JSON summary
//   demo-load stampede  N readers of one cold page at the same instant
//   demo-load warm      read the first pages of the first communities once
//
// Open loop: request i is due at start + i/rate whatever happened to the
// ones before; its latency counts from that due time, so a stall shows as
// latency (no coordinated omission). Requests wait for a free connection in
// a bounded queue; one that waited past the timeout counts as a timeout.
//
// Database queries come from PostgreSQL's own statistics (pg_stat_statements
// of the role `feeds`, on the replica and the primary), not from the services.
//
// Consistency: after each acknowledged write the checker polls every feeds
// instance for the post and its community's first page until the new version
// (or the deletion) shows, and records the visibility lag; a write not
// visible everywhere within --lost-after-ms is a lost invalidation. Every
// read (the load's and the checker's) is checked: a version older than one
// acknowledged more than --window-ms before the read began is a stale read.
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/flags.h"

namespace demo {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Url {
  std::string host;
  int port = 0;
  std::string text;
};

std::vector<Url> ParseUrls(const std::string& list) {
  std::vector<Url> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    std::string rest = item.rfind("http://", 0) == 0 ? item.substr(7) : item;
    auto colon = rest.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "demo-load: '%s' is not http://host:port\n", item.c_str());
      std::exit(2);
    }
    out.push_back({rest.substr(0, colon), std::atoi(rest.c_str() + colon + 1), item});
  }
  if (out.empty()) {
    std::fprintf(stderr, "demo-load: no target URL\n");
    std::exit(2);
  }
  return out;
}

std::unique_ptr<httplib::Client> MakeClient(const Url& u, milliseconds timeout) {
  auto c = std::make_unique<httplib::Client>(u.host, u.port);
  c->set_keep_alive(true);
  c->set_tcp_nodelay(true);
  c->set_connection_timeout(timeout);
  c->set_read_timeout(timeout);
  c->set_write_timeout(timeout);
  return c;
}

// Zipf over 1..n with exponent s (a precomputed CDF).
class Zipf {
 public:
  Zipf(int n, double s) : cdf_(static_cast<size_t>(n)) {
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += 1.0 / std::pow(i + 1, s);
    double acc = 0;
    for (int i = 0; i < n; ++i) cdf_[static_cast<size_t>(i)] = (acc += 1.0 / std::pow(i + 1, s) / sum);
  }
  int Sample(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return static_cast<int>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin()) + 1;
  }

 private:
  std::vector<double> cdf_;
};

// Finds `"name":<digits>` in a JSON text, from `from`; -1 if absent.
int64_t JsonInt(const std::string& body, const char* name, size_t from = 0, size_t* end = nullptr) {
  std::string pat = std::string("\"") + name + "\":";
  size_t p = body.find(pat, from);
  if (p == std::string::npos) return -1;
  p += pat.size();
  int64_t v = 0;
  size_t q = p;
  while (q < body.size() && body[q] >= '0' && body[q] <= '9') v = v * 10 + (body[q++] - '0');
  if (q == p) return -1;
  if (end) *end = q;
  return v;
}

// The posts a page response shows, in order: (id, version) of each.
std::vector<std::pair<int64_t, int64_t>> PagePosts(const std::string& body) {
  std::vector<std::pair<int64_t, int64_t>> out;
  size_t pos = body.find("\"posts\":[");
  for (size_t end = 0; pos != std::string::npos; pos = end) {
    int64_t id = JsonInt(body, "id", pos, &end);
    if (id < 0) break;
    int64_t v = JsonInt(body, "version", end, &end);
    if (v < 0) break;
    out.emplace_back(id, v);
  }
  return out;
}

// ---- PostgreSQL statistics --------------------------------------------------

class PgStats {
 public:
  PgStats(std::string replica, std::string primary) : dsn_{std::move(replica), std::move(primary)} {}
  ~PgStats() {
    for (PGconn* c : conns_) {
      if (c) PQfinish(c);
    }
  }
  // Sum of calls by the `feeds` role over both servers; `like` filters the
  // query text (e.g. the page query). -1 when a server cannot be read.
  int64_t FeedsCalls(const char* like = "%") {
    int64_t total = 0;
    for (int i = 0; i < 2; ++i) {
      if (dsn_[i].empty()) continue;
      if (!conns_[i] || PQstatus(conns_[i]) != CONNECTION_OK) {
        if (conns_[i]) PQfinish(conns_[i]);
        conns_[i] = PQconnectdb((dsn_[i] + " connect_timeout=2").c_str());
        if (PQstatus(conns_[i]) != CONNECTION_OK) return -1;
      }
      const char* params[] = {like};
      PGresult* r = PQexecParams(conns_[i],
                                 "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
                                 "WHERE userid = 'feeds'::regrole AND query LIKE $1 "
                                 "AND query NOT LIKE '%pg_stat_statements%'",
                                 1, nullptr, params, nullptr, nullptr, 0);
      if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return -1;
      }
      total += std::atoll(PQgetvalue(r, 0, 0));
      PQclear(r);
    }
    return total;
  }

 private:
  std::string dsn_[2];
  PGconn* conns_[2] = {nullptr, nullptr};
};

// Sums `tiercache_hits_total{tier="l1"}` etc. over the feeds instances' /metrics.
struct HitCounts {
  double l1_hits = 0, l1_misses = 0, l2_hits = 0, l2_misses = 0;
  bool ok = false;
};
HitCounts ScrapeHits(const std::vector<Url>& targets) {
  HitCounts h;
  for (const Url& u : targets) {
    auto c = MakeClient(u, milliseconds(500));
    auto res = c->Get("/metrics");
    if (!res || res->status != 200) continue;
    std::stringstream ss(res->body);
    for (std::string line; std::getline(ss, line);) {
      auto val = [&] { return std::atof(line.c_str() + line.rfind(' ') + 1); };
      if (line.rfind("tiercache_hits_total{tier=\"l1\"}", 0) == 0) h.l1_hits += val(), h.ok = true;
      if (line.rfind("tiercache_misses_total{tier=\"l1\"}", 0) == 0) h.l1_misses += val();
      if (line.rfind("tiercache_hits_total{tier=\"l2\"}", 0) == 0) h.l2_hits += val();
      if (line.rfind("tiercache_misses_total{tier=\"l2\"}", 0) == 0) h.l2_misses += val();
    }
  }
  return h;
}

// ---- Per-second statistics -------------------------------------------------

struct Second {
  std::mutex mu;
  std::vector<float> lat_ms;
  uint64_t errors = 0, timeouts = 0;
  std::vector<float> vis_lag_ms;
  double db_queries = -1;
  double l1_ratio = -1, l2_ratio = -1;
};

double Percentile(std::vector<float> v, double q) {
  if (v.empty()) return -1;
  size_t k = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  k = std::min(k, v.size() - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

std::string Num(double v, int prec = 2) {
  if (v < 0) return "";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// ---- The acknowledged writes ------------------------------------------------

struct Acked {
  int64_t version = 0;
  Clock::time_point at;
  bool deleted = false;
};

class Acks {
 public:
  // `feed_change`: a post appeared or disappeared, so the community's pages
  // must show feed_version >= version (an edit changes no page).
  void Record(int64_t post, int64_t community, int64_t version, bool deleted, bool feed_change, Clock::time_point at) {
    std::lock_guard<std::mutex> l(mu_);
    Acked& p = posts_[post];
    if (version > p.version) p = Acked{version, at, deleted};
    if (!feed_change) return;
    Acked& c = communities_[community];
    if (version > c.version) c = Acked{version, at, false};
  }
  // A DELETE of `post` is about to be sent: from now on "not found" is not
  // stale (the deletion may commit before its acknowledgement is recorded).
  void Deleting(int64_t post) {
    std::lock_guard<std::mutex> l(mu_);
    deleting_.insert(post);
  }
  bool IsDeleting(int64_t post) {
    std::lock_guard<std::mutex> l(mu_);
    return deleting_.count(post) != 0;
  }
  // A post read that began at `start` returned `version` (-1: not found).
  bool StalePost(int64_t post, int64_t version, Clock::time_point start, milliseconds window) {
    std::lock_guard<std::mutex> l(mu_);
    if (version < 0 && deleting_.count(post)) return false;
    auto it = posts_.find(post);
    if (it == posts_.end() || it->second.at + window > start) return false;
    if (it->second.deleted) return version >= 0;
    return version < it->second.version;  // -1 (not found) for a live post is stale too
  }
  bool StalePage(int64_t community, int64_t feed_version, Clock::time_point start, milliseconds window) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = communities_.find(community);
    if (it == communities_.end() || it->second.at + window > start) return false;
    return feed_version < it->second.version;
  }

 private:
  std::mutex mu_;
  std::unordered_map<int64_t, Acked> posts_, communities_;
  std::unordered_set<int64_t> deleting_;
};

// Post ids seen in page responses, per community (what a reader can click).
class KnownPosts {
 public:
  void Learn(int64_t community, const std::string& page_body) {
    std::vector<int64_t> ids;
    for (const auto& [id, version] : PagePosts(page_body)) ids.push_back(id);
    if (ids.empty()) return;
    std::lock_guard<std::mutex> l(mu_);
    auto& v = known_[community];
    for (int64_t id : ids) {
      auto at = std::lower_bound(v.begin(), v.end(), id);
      if (at == v.end() || *at != id) v.insert(at, id);
    }
    if (v.size() > 200) v.erase(v.begin(), v.begin() + static_cast<long>(v.size() - 200));  // keep the newest
  }
  // A post of `community`, the newest the likeliest (Zipf over recency, as
  // readers open what is on top of the feed); -1 if none is known.
  int64_t Pick(int64_t community, std::mt19937_64& rng) {
    static const Zipf recency(20, 1.1);  // what page 1 shows
    std::lock_guard<std::mutex> l(mu_);
    auto it = known_.find(community);
    if (it == known_.end() || it->second.empty()) return -1;
    std::vector<int64_t>& v = it->second;
    size_t rank = static_cast<size_t>(recency.Sample(rng) - 1) % v.size();  // (fewer known: wraps)
    return v[v.size() - 1 - rank];  // ids are kept in ascending order
  }
  void Forget(int64_t community, int64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    auto& v = known_[community];
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  }

 private:
  std::mutex mu_;
  std::unordered_map<int64_t, std::vector<int64_t>> known_;
};

// ---- run --------------------------------------------------------------------

struct Phase {
  double at_s = 0;
  std::string label;
  std::string command;
};

struct Request {
  Clock::time_point due;
  bool page = true;
  int64_t community = 0;
  int page_no = 1;
  int64_t post = 0;
};

class Runner {
 public:
  explicit Runner(const Flags& f) : f_(f) {}

  int Run() {
    targets_ = ParseUrls(f_.Str("feeds", "http://127.0.0.1:8081,http://127.0.0.1:8082"));
    posts_url_ = f_.Str("posts", "");
    rate_ = f_.Double("rate", 1000);
    write_rate_ = f_.Double("writes", 0);
    duration_s_ = static_cast<int>(f_.Int("duration", 30));
    timeout_ = milliseconds(f_.Int("timeout-ms", 5000));
    window_ = milliseconds(f_.Int("window-ms", 1000));
    lost_after_ = milliseconds(f_.Int("lost-after-ms", 30000));
    post_fraction_ = f_.Double("post-reads", 0.3);
    communities_ = std::make_unique<Zipf>(static_cast<int>(f_.Int("communities", 1000)), f_.Double("zipf", 1.1));
    pages_ = std::make_unique<Zipf>(static_cast<int>(f_.Int("pages", 5)), f_.Double("zipf", 1.1));
    label_ = f_.Str("label", "run");
    for (const std::string& a : f_.All("at")) {
      Phase p;
      auto c1 = a.find(':');
      p.at_s = std::atof(a.substr(0, c1).c_str());
      if (c1 != std::string::npos) {
        auto c2 = a.find(':', c1 + 1);
        p.label = a.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
        if (c2 != std::string::npos) p.command = a.substr(c2 + 1);
      }
      phases_.push_back(p);
    }
    if (phases_.empty() || phases_[0].at_s > 0) phases_.insert(phases_.begin(), Phase{0, "load", ""});
    seconds_ = std::vector<Second>(static_cast<size_t>(duration_s_ + 2));
    pg_ = std::make_unique<PgStats>(f_.Str("pg-replica-admin", ""), f_.Str("pg-primary-admin", ""));

    int conns = static_cast<int>(f_.Int("connections", 32));
    queues_.resize(targets_.size());
    for (size_t t = 0; t < targets_.size(); ++t) {
      for (int i = 0; i < conns; ++i) threads_.emplace_back([this, t] { Worker(t); });
    }
    int writers = write_rate_ > 0 && !posts_url_.empty() ? 4 : 0;
    for (int i = 0; i < writers; ++i) threads_.emplace_back([this] { Writer(); });
    int checkers = writers > 0 ? 64 : 0;
    for (int i = 0; i < checkers; ++i) threads_.emplace_back([this] { Checker(); });

    start_ = Clock::now() + milliseconds(200);
    std::thread sampler([this] { Sampler(); });
    std::thread hooks([this] { Hooks(); });
    std::thread wsched;
    if (writers > 0) wsched = std::thread([this] { WriteScheduler(); });
    Schedule();
    if (wsched.joinable()) wsched.join();
    hooks.join();
    for (auto& t : hook_threads_) t.join();
    // Let what is queued finish (each is bounded by the timeout), then stop.
    {
      std::unique_lock<std::mutex> l(mu_);
      idle_.wait_for(l, timeout_ + milliseconds(500), [&] { return in_flight_ == 0; });
      stopping_ = true;
    }
    for (auto& q : queues_) q.cv.notify_all();
    write_cv_.notify_all();
    check_cv_.notify_all();
    for (auto& t : threads_) t.join();
    sampler_stop_ = true;
    sampler.join();
    if (isatty(2)) std::fprintf(stderr, "\n");
    return Report();
  }

 private:
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Request> q;
  };
  struct Check {
    int64_t post = 0, community = 0, version = 0;
    bool deleted = false, feed_change = false;
    Clock::time_point acked;
  };

  Second& SecondOf(Clock::time_point t) {
    auto s = std::chrono::duration_cast<std::chrono::seconds>(t - start_).count();
    s = std::clamp<int64_t>(s, 0, static_cast<int64_t>(seconds_.size()) - 1);
    return seconds_[static_cast<size_t>(s)];
  }

  void Schedule() {
    std::mt19937_64 rng(std::random_device{}());
    const double total = rate_ * duration_s_;
    const size_t max_queue = static_cast<size_t>(std::max(100.0, rate_ * timeout_.count() / 1000.0));
    for (uint64_t i = 0; i < static_cast<uint64_t>(total); ++i) {
      Request r;
      r.due = start_ + std::chrono::nanoseconds(static_cast<int64_t>(1e9 * static_cast<double>(i) / rate_));
      r.community = communities_->Sample(rng);
      r.page_no = pages_->Sample(rng);
      if (std::uniform_real_distribution<double>(0, 1)(rng) < post_fraction_) {
        r.post = known_.Pick(r.community, rng);
        r.page = r.post < 0;
      }
      std::this_thread::sleep_until(r.due);
      Queue& q = queues_[rng() % queues_.size()];
      {
        std::lock_guard<std::mutex> l(q.mu);
        if (q.q.size() >= max_queue) {  // bounded: a request that cannot even queue is a timeout
          Second& s = SecondOf(r.due);
          std::lock_guard<std::mutex> sl(s.mu);
          ++s.timeouts;
          s.lat_ms.push_back(static_cast<float>(timeout_.count()));
          continue;
        }
        {
          std::lock_guard<std::mutex> l(mu_);
          ++in_flight_;
        }
        q.q.push_back(r);
      }
      q.cv.notify_one();
    }
  }

  void Worker(size_t t) {
    // This worker's connection to its pod, and one to each other pod for a
    // request whose pod refuses connections (a dead pod: what a load
    // balancer's health check would route around).
    std::vector<std::unique_ptr<httplib::Client>> clients;
    for (size_t i = 0; i < targets_.size(); ++i) clients.push_back(MakeClient(targets_[(t + i) % targets_.size()], timeout_));
    Queue& q = queues_[t];
    for (;;) {
      Request r;
      {
        std::unique_lock<std::mutex> l(q.mu);
        q.cv.wait(l, [&] { return !q.q.empty() || stopping_; });
        if (q.q.empty()) return;
        r = q.q.front();
        q.q.pop_front();
      }
      Execute(clients, t, r);
      std::lock_guard<std::mutex> l(mu_);
      if (--in_flight_ == 0) idle_.notify_all();
    }
  }

  void Execute(std::vector<std::unique_ptr<httplib::Client>>& clients, size_t t, const Request& r) {
    Second& s = SecondOf(r.due);
    auto started = Clock::now();
    if (started - r.due >= timeout_) {
      std::lock_guard<std::mutex> l(s.mu);
      ++s.timeouts;
      s.lat_ms.push_back(static_cast<float>(Ms(started - r.due)));  // a timeout's latency: at least the timeout
      return;
    }
    auto left = std::chrono::duration_cast<milliseconds>(timeout_ - (started - r.due));
    std::string path = r.page ? "/communities/" + std::to_string(r.community) + "/posts?page=" + std::to_string(r.page_no)
                              : "/posts/" + std::to_string(r.post);
    clients[0]->set_read_timeout(left);
    auto res = clients[0]->Get(path.c_str());
    size_t served_by = t;
    if (!res && res.error() == httplib::Error::Connection && clients.size() > 1) {
      retried_.fetch_add(1, std::memory_order_relaxed);
      clients[1]->set_read_timeout(left);
      res = clients[1]->Get(path.c_str());
      served_by = (t + 1) % targets_.size();
    }
    auto done = Clock::now();
    bool timeout = !res && done - r.due >= timeout_ - milliseconds(5);
    bool ok = res && (res->status == 200 || (res->status == 404 && !r.page));
    if (ok) {
      if (r.page) {
        known_.Learn(r.community, res->body);
        CheckPage(r.community, res->body, started);
      } else {
        CheckPost(r.post, res->status == 404 ? -1 : JsonInt(res->body, "version"), started);
        if (res->status == 404) known_.Forget(r.community, r.post);
      }
    }
    std::lock_guard<std::mutex> l(s.mu);
    if (ok) {
      s.lat_ms.push_back(static_cast<float>(Ms(done - r.due)));
    } else if (timeout) {
      ++s.timeouts;
      s.lat_ms.push_back(static_cast<float>(Ms(done - r.due)));
    } else {
      ++s.errors;
      if (errors_logged_.fetch_add(1) < 5) {
        std::fprintf(stderr, "\ndemo-load: %s %s: %s\n", targets_[served_by].text.c_str(), path.c_str(),
                     res ? (std::to_string(res->status) + " " + res->body.substr(0, 200)).c_str()
                         : httplib::to_string(res.error()).c_str());
      }
    }
  }

  // The page's feed_version, and each post it shows (id, version).
  void CheckPage(int64_t community, const std::string& body, Clock::time_point started) {
    reads_checked_.fetch_add(1, std::memory_order_relaxed);
    int64_t fv = JsonInt(body, "feed_version");
    if (fv >= 0 && acks_.StalePage(community, fv, started, window_)) NoteStale("page", community, fv);
    for (const auto& [id, v] : PagePosts(body)) {
      if (acks_.StalePost(id, v, started, window_)) NoteStale("post in page", id, v);
    }
  }
  void CheckPost(int64_t post, int64_t version, Clock::time_point started) {
    reads_checked_.fetch_add(1, std::memory_order_relaxed);
    if (acks_.StalePost(post, version, started, window_)) NoteStale("post", post, version);
  }
  void NoteStale(const char* what, int64_t id, int64_t version) {
    if (stale_.fetch_add(1) < 10) {
      std::fprintf(stderr, "\ndemo-load: STALE %s %lld served version %lld after a newer one was acknowledged\n", what,
                   static_cast<long long>(id), static_cast<long long>(version));
    }
  }

  // ---- writes and the checker ----

  void WriteScheduler() {
    std::mt19937_64 rng(std::random_device{}());
    const int64_t n = static_cast<int64_t>(write_rate_ * duration_s_);
    for (int64_t i = 0; i < n; ++i) {
      std::this_thread::sleep_until(start_ + std::chrono::nanoseconds(static_cast<int64_t>(1e9 * static_cast<double>(i) / write_rate_)));
      std::lock_guard<std::mutex> l(write_mu_);
      if (write_q_.size() < 1000) write_q_.push_back(communities_->Sample(rng));
      write_cv_.notify_one();
    }
  }

  void Writer() {
    Url u = ParseUrls(posts_url_)[0];
    auto client = MakeClient(u, timeout_);
    std::mt19937_64 rng(std::random_device{}());
    for (;;) {
      int64_t community;
      {
        std::unique_lock<std::mutex> l(write_mu_);
        write_cv_.wait(l, [&] { return !write_q_.empty() || stopping_; });
        if (write_q_.empty()) return;
        community = write_q_.front();
        write_q_.pop_front();
      }
      double dice = std::uniform_real_distribution<double>(0, 1)(rng);
      int64_t post = dice < 0.4 ? -1 : known_.Pick(community, rng);
      bool deleted = post >= 0 && dice >= 0.9;
      if (deleted) known_.Forget(community, post), acks_.Deleting(post);
      httplib::Result res = [&] {
        if (post < 0) {
          return client->Post(("/communities/" + std::to_string(community) + "/posts").c_str(),
                              "{\"author\":\"loadgen\",\"title\":\"a new post\",\"body\":\"written by demo-load\"}",
                              "application/json");
        }
        if (!deleted) {
          return client->Put(("/posts/" + std::to_string(post)).c_str(), "{\"title\":\"edited by demo-load\"}",
                             "application/json");
        }
        return client->Delete(("/posts/" + std::to_string(post)).c_str());
      }();
      auto acked = Clock::now();
      if (!res || (res->status != 200 && res->status != 201)) {
        if (res && res->status == 404) continue;  // deleted by another write meanwhile
        writes_failed_.fetch_add(1);
        continue;
      }
      Check c{JsonInt(res->body, "id"), JsonInt(res->body, "community_id"), JsonInt(res->body, "version"), deleted,
              post < 0 || deleted, acked};
      acks_.Record(c.post, c.community, c.version, deleted, c.feed_change, acked);
      writes_acked_.fetch_add(1);
      std::lock_guard<std::mutex> l(check_mu_);
      check_q_.push_back(c);
      check_cv_.notify_one();
    }
  }

  void Checker() {
    for (;;) {
      Check c;
      {
        std::unique_lock<std::mutex> l(check_mu_);
        check_cv_.wait(l, [&] { return !check_q_.empty() || stopping_; });
        if (check_q_.empty()) return;
        c = check_q_.front();
        check_q_.pop_front();
      }
      // Every instance must show the post's new state and the page's new
      // feed_version. Each (instance, resource) is polled on its own thread,
      // so one slow answer does not delay the others; the lag is until the
      // last of them answered with the new state (an upper bound: the state
      // was visible at the latest when that answer came).
      if (Clock::now() - c.acked >= lost_after_) {  // the checker had no capacity: cannot judge
        unchecked_.fetch_add(1);
        continue;
      }
      std::vector<Clock::time_point> seen_at(2 * targets_.size());
      std::vector<char> seen(2 * targets_.size(), 0);
      std::vector<std::thread> pollers;
      for (size_t i = 0; i < 2 * targets_.size(); ++i) {
        if (i % 2 == 1 && !c.feed_change) {  // an edit: the pages do not change
          seen[i] = 1, seen_at[i] = c.acked;
          continue;
        }
        pollers.emplace_back([&, i] {
          auto client = MakeClient(targets_[i / 2], milliseconds(1000));
          const bool post = i % 2 == 0;
          const std::string path = post ? "/posts/" + std::to_string(c.post)
                                        : "/communities/" + std::to_string(c.community) + "/posts?page=1";
          while (Clock::now() - c.acked < lost_after_ && !stopping_hard_) {
            auto start = Clock::now();
            auto r = client->Get(path.c_str());
            if (r && post && (r->status == 200 || r->status == 404)) {
              int64_t v = r->status == 404 ? -1 : JsonInt(r->body, "version");
              CheckPost(c.post, v, start);
              // (a deletion sent later supersedes this write: its 404 is newer)
              if (c.deleted ? v < 0 : (v >= c.version || (v < 0 && acks_.IsDeleting(c.post)))) break;
            } else if (r && !post && r->status == 200) {
              CheckPage(c.community, r->body, start);
              if (JsonInt(r->body, "feed_version") >= c.version) break;
            }
            std::this_thread::sleep_for(milliseconds(2));
          }
          if (Clock::now() - c.acked < lost_after_ && !stopping_hard_) seen_at[i] = Clock::now(), seen[i] = 1;
        });
      }
      for (auto& t : pollers) t.join();
      bool all = std::all_of(seen.begin(), seen.end(), [](char x) { return x != 0; });
      if (all) {
        Clock::time_point visible = *std::max_element(seen_at.begin(), seen_at.end());
        Second& s = SecondOf(c.acked);
        std::lock_guard<std::mutex> l(s.mu);
        s.vis_lag_ms.push_back(static_cast<float>(Ms(visible - c.acked)));
      } else if (!stopping_hard_) {
        lost_.fetch_add(1);
        std::fprintf(stderr, "\ndemo-load: LOST invalidation: post %lld v%lld not visible everywhere after %lld ms\n",
                     static_cast<long long>(c.post), static_cast<long long>(c.version),
                     static_cast<long long>(lost_after_.count()));
      } else {
        unchecked_.fetch_add(1);
      }
    }
  }

  // ---- sampling, hooks, progress ----

  void Sampler() {
    int64_t prev_q = pg_->FeedsCalls();
    HitCounts prev_h = ScrapeHits(targets_);
    auto next = start_;
    size_t sec = 0;
    while (!sampler_stop_ && sec < seconds_.size()) {
      next += std::chrono::seconds(1);
      while (Clock::now() < next && !sampler_stop_) std::this_thread::sleep_for(milliseconds(20));
      if (sampler_stop_) break;
      int64_t q = pg_->FeedsCalls();
      HitCounts h = ScrapeHits(targets_);
      Second& s = seconds_[sec];
      {
        std::lock_guard<std::mutex> l(s.mu);
        if (q >= 0 && prev_q >= 0) s.db_queries = static_cast<double>(q - prev_q);
        if (h.ok && prev_h.ok) {
          double l1 = (h.l1_hits - prev_h.l1_hits) + (h.l1_misses - prev_h.l1_misses);
          double l2 = (h.l2_hits - prev_h.l2_hits) + (h.l2_misses - prev_h.l2_misses);
          if (l1 > 0) s.l1_ratio = (h.l1_hits - prev_h.l1_hits) / l1;
          if (l2 > 0) s.l2_ratio = (h.l2_hits - prev_h.l2_hits) / l2;
        }
      }
      prev_q = q;
      prev_h = h;
      Progress(sec);
      ++sec;
    }
  }

  void Progress(size_t sec) {
    Second& s = seconds_[sec];
    std::lock_guard<std::mutex> l(s.mu);
    // Requests due in that second and answered by now (a slow pod answers
    // later: its seconds fill in the CSV, not on this line).
    char line[256];
    const std::string p99 = s.lat_ms.empty() ? "    n/a" : Num(Percentile(s.lat_ms, 0.99), 1);
    std::snprintf(line, sizeof line, "[%s] t=%2zus  %5zu answered  p99 %7s ms  errors %llu  timeouts %llu  db %5.0f q/s%s",
                  label_.c_str(), sec + 1, s.lat_ms.size(), p99.c_str(),
                  static_cast<unsigned long long>(s.errors), static_cast<unsigned long long>(s.timeouts),
                  std::max(0.0, s.db_queries),
                  s.l1_ratio >= 0 ? (("  L1 " + Num(100 * s.l1_ratio, 0) + "%").c_str()) : "");
    if (isatty(2)) {
      std::fprintf(stderr, "\r%-110s", line);
    } else if ((sec + 1) % 10 == 0) {
      std::fprintf(stderr, "%s\n", line);
    }
  }

  void Hooks() {
    for (const Phase& p : phases_) {
      std::this_thread::sleep_until(start_ + std::chrono::milliseconds(static_cast<int64_t>(p.at_s * 1000)));
      if (p.command.empty()) continue;
      std::string cmd = p.command;
      hook_threads_.emplace_back([cmd, this] {  // joined at the end of the run
        int rc = std::system(cmd.c_str());
        if (rc != 0) {
          hook_failures_.fetch_add(1);
          std::fprintf(stderr, "\ndemo-load: hook '%s' exited %d\n", cmd.c_str(), rc);
        }
      });
    }
    std::this_thread::sleep_until(start_ + std::chrono::seconds(duration_s_));
  }

  // ---- the report ----

  int Report() {
    stopping_hard_ = true;
    std::string csv_path = f_.Str("csv", "");
    if (!csv_path.empty()) {
      std::ofstream csv(csv_path);
      csv << "t_s,requests,errors,timeouts,p50_ms,p99_ms,p999_ms,max_ms,db_queries_per_s,l1_hit_ratio,l2_hit_ratio,"
             "vis_lag_p99_ms\n";
      for (int i = 0; i < duration_s_; ++i) {
        Second& s = seconds_[static_cast<size_t>(i)];
        std::lock_guard<std::mutex> l(s.mu);
        csv << i << ',' << s.lat_ms.size() + s.errors << ',' << s.errors << ',' << s.timeouts << ','
            << Num(Percentile(s.lat_ms, 0.5)) << ',' << Num(Percentile(s.lat_ms, 0.99)) << ','
            << Num(Percentile(s.lat_ms, 0.999)) << ',' << Num(Percentile(s.lat_ms, 1.0)) << ','
            << Num(s.db_queries, 0) << ',' << Num(s.l1_ratio, 4) << ',' << Num(s.l2_ratio, 4) << ','
            << Num(Percentile(s.vis_lag_ms, 0.99)) << '\n';
      }
    }
    std::string json = "{\n  \"label\": \"" + label_ + "\", \"rate\": " + Num(rate_, 0) + ", \"writes_per_s\": " +
                       Num(write_rate_, 1) + ", \"duration_s\": " + std::to_string(duration_s_) + ",\n  \"phases\": [";
    for (size_t p = 0; p < phases_.size(); ++p) {
      int from = static_cast<int>(phases_[p].at_s);
      int to = p + 1 < phases_.size() ? static_cast<int>(phases_[p + 1].at_s) : duration_s_;
      json += (p ? ",\n    " : "\n    ") + Summary(phases_[p].label, from, to);
    }
    std::vector<float> lags;
    for (auto& s : seconds_) lags.insert(lags.end(), s.vis_lag_ms.begin(), s.vis_lag_ms.end());
    json += "\n  ],\n  \"writes\": {\"acked\": " + std::to_string(writes_acked_.load()) +
            ", \"failed\": " + std::to_string(writes_failed_.load()) + ", \"checked\": " +
            std::to_string(lags.size()) + ", \"vis_lag_p50_ms\": " + JsonNum(Percentile(lags, 0.5)) +
            ", \"vis_lag_p99_ms\": " + JsonNum(Percentile(lags, 0.99)) + ", \"vis_lag_max_ms\": " +
            JsonNum(Percentile(lags, 1.0)) + ", \"lost\": " + std::to_string(lost_.load()) +
            ", \"unchecked\": " + std::to_string(unchecked_.load()) + "},\n  \"stale_reads\": " +
            std::to_string(stale_.load()) + ", \"reads_checked\": " + std::to_string(reads_checked_.load()) +
            ", \"window_ms\": " + std::to_string(window_.count()) + ", \"retried_on_other_pod\": " +
            std::to_string(retried_.load()) + ", \"hook_failures\": " + std::to_string(hook_failures_.load()) + "\n}\n";
    std::string json_path = f_.Str("json", "");
    if (!json_path.empty()) {
      std::ofstream(json_path) << json;
    } else {
      std::printf("%s", json.c_str());
    }
    return 0;
  }

  static std::string JsonNum(double v) { return v < 0 ? "null" : Num(v); }

  std::string Summary(const std::string& label, int from, int to) {
    std::vector<float> lat;
    uint64_t errors = 0, timeouts = 0;
    double db = 0, l1n = 0, l1 = 0, l2n = 0, l2 = 0;
    bool have_db = false;
    for (int i = std::max(0, from); i < std::min(to, duration_s_); ++i) {
      Second& s = seconds_[static_cast<size_t>(i)];
      std::lock_guard<std::mutex> g(s.mu);
      lat.insert(lat.end(), s.lat_ms.begin(), s.lat_ms.end());
      errors += s.errors;
      timeouts += s.timeouts;
      if (s.db_queries >= 0) db += s.db_queries, have_db = true;
      if (s.l1_ratio >= 0) l1 += s.l1_ratio, ++l1n;
      if (s.l2_ratio >= 0) l2 += s.l2_ratio, ++l2n;
    }
    // lat holds the answered requests and the timeouts (at their wait).
    double requests = static_cast<double>(lat.size() + errors);
    return "{\"label\": \"" + label + "\", \"from_s\": " + std::to_string(from) + ", \"to_s\": " + std::to_string(to) +
           ", \"requests\": " + Num(requests, 0) + ", \"ok\": " + std::to_string(lat.size() - timeouts) + ", \"errors\": " +
           std::to_string(errors) + ", \"timeouts\": " + std::to_string(timeouts) +
           ", \"p50_ms\": " + JsonNum(Percentile(lat, 0.5)) + ", \"p99_ms\": " + JsonNum(Percentile(lat, 0.99)) +
           ", \"p999_ms\": " + JsonNum(Percentile(lat, 0.999)) + ", \"max_ms\": " + JsonNum(Percentile(lat, 1.0)) +
           ", \"db_queries\": " + (have_db ? Num(db, 0) : "null") + ", \"db_per_1k\": " +
           (have_db && requests > 0 ? Num(1000 * db / requests) : "null") + ", \"l1_hit_ratio\": " +
           (l1n > 0 ? Num(l1 / l1n, 4) : "null") + ", \"l2_hit_ratio\": " + (l2n > 0 ? Num(l2 / l2n, 4) : "null") +
           "}";
  }

  const Flags& f_;
  std::vector<Url> targets_;
  std::string posts_url_, label_;
  double rate_ = 0, write_rate_ = 0, post_fraction_ = 0;
  int duration_s_ = 0;
  milliseconds timeout_{5000}, window_{1000}, lost_after_{30000};
  std::unique_ptr<Zipf> communities_, pages_;
  std::vector<Phase> phases_;
  std::vector<Second> seconds_;
  std::unique_ptr<PgStats> pg_;
  Clock::time_point start_;

  std::deque<Queue> queues_;
  std::vector<std::thread> threads_, hook_threads_;
  std::mutex mu_;
  std::condition_variable idle_;
  uint64_t in_flight_ = 0;
  std::atomic<bool> stopping_{false}, stopping_hard_{false}, sampler_stop_{false};
  std::atomic<uint64_t> errors_logged_{0};

  std::mutex write_mu_;
  std::condition_variable write_cv_;
  std::deque<int64_t> write_q_;
  std::mutex check_mu_;
  std::condition_variable check_cv_;
  std::deque<Check> check_q_;

  Acks acks_;
  KnownPosts known_;
  std::atomic<uint64_t> writes_acked_{0}, writes_failed_{0}, lost_{0}, unchecked_{0}, stale_{0}, reads_checked_{0};
  std::atomic<uint64_t> retried_{0}, hook_failures_{0};
};

// ---- stampede ---------------------------------------------------------------

int Stampede(const Flags& f) {
  auto targets = ParseUrls(f.Str("feeds", "http://127.0.0.1:8081,http://127.0.0.1:8082"));
  int readers = static_cast<int>(f.Int("readers", 1000));
  std::string path = "/communities/" + std::to_string(f.Int("community", 1)) +
                     "/posts?page=" + std::to_string(f.Int("page", 1));
  milliseconds timeout(f.Int("timeout-ms", 10000));
  PgStats pg(f.Str("pg-replica-admin", ""), f.Str("pg-primary-admin", ""));
  const char* kPageQuery = "%string_agg%";
  int64_t page_before = pg.FeedsCalls(kPageQuery), all_before = pg.FeedsCalls();

  std::vector<float> lat(static_cast<size_t>(readers), -1);
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  int ready = 0;
  bool go = false;
  Clock::time_point t0;
  for (int i = 0; i < readers; ++i) {
    threads.emplace_back([&, i] {
      auto c = MakeClient(targets[static_cast<size_t>(i) % targets.size()], timeout);
      {
        std::unique_lock<std::mutex> l(mu);
        ++ready;
        cv.notify_all();
        cv.wait(l, [&] { return go; });
      }
      auto res = c->Get(path.c_str());
      if (res && res->status == 200) lat[static_cast<size_t>(i)] = static_cast<float>(Ms(Clock::now() - t0));
    });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return ready == readers; });
    t0 = Clock::now();
    go = true;
    cv.notify_all();
  }
  for (auto& t : threads) t.join();
  std::this_thread::sleep_for(milliseconds(300));  // statistics are updated at statement end
  int64_t page_after = pg.FeedsCalls(kPageQuery), all_after = pg.FeedsCalls();
  std::vector<float> ok;
  for (float v : lat) {
    if (v >= 0) ok.push_back(v);
  }
  std::string json = "{\"readers\": " + std::to_string(readers) + ", \"ok\": " + std::to_string(ok.size()) +
                     ", \"errors\": " + std::to_string(readers - static_cast<int>(ok.size())) +
                     ", \"p50_ms\": " + Num(Percentile(ok, 0.5)) + ", \"p99_ms\": " + Num(Percentile(ok, 0.99)) +
                     ", \"max_ms\": " + Num(Percentile(ok, 1.0)) + ", \"page_queries\": " +
                     std::to_string(page_after - page_before) + ", \"all_feeds_queries\": " +
                     std::to_string(all_after - all_before) + "}\n";
  std::string out = f.Str("json", "");
  if (out.empty()) {
    std::printf("%s", json.c_str());
  } else {
    std::ofstream(out) << json;
  }
  return page_before < 0 || page_after < 0 ? 1 : 0;
}

// ---- warm -------------------------------------------------------------------

int Warm(const Flags& f) {
  auto targets = ParseUrls(f.Str("feeds", "http://127.0.0.1:8081,http://127.0.0.1:8082"));
  int communities = static_cast<int>(f.Int("communities", 200));
  int pages = static_cast<int>(f.Int("pages", 3));
  std::atomic<int> next{0}, errors{0};
  std::vector<std::thread> threads;
  int post_communities = static_cast<int>(f.Int("post-communities", 300));
  std::atomic<int> posts_read{0};
  for (int w = 0; w < static_cast<int>(f.Int("concurrency", 16)); ++w) {
    threads.emplace_back([&, w] {
      auto c = MakeClient(targets[static_cast<size_t>(w) % targets.size()], milliseconds(10000));
      for (int i; (i = next.fetch_add(1)) < communities * pages;) {
        int community = i / pages + 1, page = i % pages + 1;
        auto res = c->Get(("/communities/" + std::to_string(community) + "/posts?page=" + std::to_string(page)).c_str());
        if (!res || res->status != 200) {
          errors.fetch_add(1);
          continue;
        }
        if (page != 1 || community > post_communities) continue;
        // The posts a reader opens from page 1 (GET /posts/:id).
        for (const auto& [id, version] : PagePosts(res->body)) {
          auto p = c->Get(("/posts/" + std::to_string(id)).c_str());
          if (!p || p->status != 200) errors.fetch_add(1);
          posts_read.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::fprintf(stderr, "demo-load warm: %d pages and %d posts read, %d errors\n", communities * pages,
               posts_read.load(), errors.load());
  return 0;
}

// ---- recreate-topic ---------------------------------------------------------

// Deletes the topic (if it exists) and creates it again, empty: every `make
// demo` starts from a fresh database, so events of an earlier run (with
// versions from the old database) must not be replayed into this one.
int RecreateTopic(const Flags& f) {
  std::string brokers = f.Str("brokers", "127.0.0.1:9092"), topic = f.Str("topic", "community.posts.v1");
  int partitions = static_cast<int>(f.Int("partitions", 3));
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "demo-load: %s\n", err);
    rd_kafka_conf_destroy(conf);
    return 2;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::fprintf(stderr, "demo-load: %s\n", err);
    return 1;
  }
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  auto wait_result = [&](rd_kafka_event_type_t type) -> rd_kafka_event_t* {
    for (int i = 0; i < 30; ++i) {
      rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 1000);
      if (ev != nullptr && rd_kafka_event_type(ev) == type) return ev;
      if (ev != nullptr) rd_kafka_event_destroy(ev);
    }
    return nullptr;
  };
  int rc = 0;
  for (const std::string& name : {topic, topic + ".dead-letters"}) {
    rd_kafka_DeleteTopic_t* del = rd_kafka_DeleteTopic_new(name.c_str());
    rd_kafka_DeleteTopics(rk, &del, 1, nullptr, q);
    rd_kafka_DeleteTopic_destroy(del);
    if (rd_kafka_event_t* ev = wait_result(RD_KAFKA_EVENT_DELETETOPICS_RESULT)) {
      rd_kafka_event_destroy(ev);  // "unknown topic" is fine: nothing to delete
    }
  }
  // Deletion is asynchronous on the broker: retry the creation while the
  // old topic is still being removed.
  for (int attempt = 0; attempt < 40; ++attempt) {
    char e2[256];
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, e2, sizeof e2);
    rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_event_t* ev = wait_result(RD_KAFKA_EVENT_CREATETOPICS_RESULT);
    if (ev == nullptr) {
      std::fprintf(stderr, "demo-load: no answer from %s to CreateTopics\n", brokers.c_str());
      rc = 1;
      break;
    }
    size_t n = 0;
    const rd_kafka_topic_result_t** res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    rd_kafka_resp_err_t e = n == 1 ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR_UNKNOWN;
    std::string msg = n == 1 && rd_kafka_topic_result_error_string(res[0]) ? rd_kafka_topic_result_error_string(res[0]) : "";
    rd_kafka_event_destroy(ev);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS || attempt == 39) {
      std::fprintf(stderr, "demo-load: cannot create %s: %s\n", topic.c_str(), msg.c_str());
      rc = 1;
      break;
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  if (rc == 0) std::fprintf(stderr, "demo-load: topic %s recreated (%d partitions)\n", topic.c_str(), partitions);
  return rc;
}

}  // namespace
}  // namespace demo

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    std::fprintf(stderr, "usage: demo-load run|stampede|warm|recreate-topic --flag=value ... (see demo/load/demo_load.cc)\n");
    return 2;
  }
  std::string cmd = argv[1];
  auto flags = demo::Flags::Parse(argc - 1, argv + 1);
  if (!flags.ok()) {
    std::fprintf(stderr, "demo-load: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  if (cmd == "run") return demo::Runner(*flags).Run();
  if (cmd == "stampede") return demo::Stampede(*flags);
  if (cmd == "warm") return demo::Warm(*flags);
  if (cmd == "recreate-topic") return demo::RecreateTopic(*flags);
  std::fprintf(stderr, "demo-load: unknown command '%s' (run, stampede, warm)\n", cmd.c_str());
  return 2;
}
