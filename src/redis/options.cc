#include "tiercache/redis/options.h"

namespace tiercache::redis {
namespace {

Status Bad(const std::string& what) { return Status::InvalidArgument("RedisClientOptions: " + what); }

}  // namespace

Status RedisClientOptions::Validate() const {
  if (seeds.empty()) return Bad("seeds must name at least one node");
  for (const Endpoint& e : seeds) {
    if (e.host.empty()) return Bad("a seed has an empty host");
    if (e.port <= 0 || e.port > 65535) return Bad("seed " + e.ToString() + " has a port outside 1..65535");
  }
  if (!username.empty() && password.empty()) return Bad("username given without a password");
  if (connect_timeout.count() <= 0) return Bad("connect_timeout must be > 0");
  if (command_timeout.count() <= 0) return Bad("command_timeout must be > 0");
  if (topology_probe_timeout.count() <= 0) return Bad("topology_probe_timeout must be > 0");
  if (connections_per_node < 1 || connections_per_node > 64) return Bad("connections_per_node must be in 1..64");
  if (max_redirects < 1 || max_redirects > 100) return Bad("max_redirects must be in 1..100");
  if (retry_backoff_min.count() <= 0) return Bad("retry_backoff_min must be > 0");
  if (retry_backoff_max < retry_backoff_min) return Bad("retry_backoff_max must be >= retry_backoff_min");
  if (topology_refresh_interval.count() <= 0) return Bad("topology_refresh_interval must be > 0");
  if (min_refresh_interval.count() < 0) return Bad("min_refresh_interval must be >= 0");
  if (min_refresh_interval > topology_refresh_interval) {
    return Bad("min_refresh_interval must be <= topology_refresh_interval");
  }
  if (reconnect_backoff.count() < 0) return Bad("reconnect_backoff must be >= 0");
  if (max_outstanding_requests == 0) return Bad("max_outstanding_requests must be > 0");
  if (caller_spin.count() < 0 || io_busy_poll.count() < 0) return Bad("spin durations must be >= 0");
  if (mode == Mode::kStandalone && read_from_replicas) return Bad("read_from_replicas needs cluster mode");
  return Status::Ok();
}

}  // namespace tiercache::redis
