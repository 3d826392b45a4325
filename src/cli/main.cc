// tiercache: the command-line tool for the people on call (see commands.h
// for the commands' output and exit codes).
#include <CLI/CLI.hpp>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

// Seeds from the environment, so a shell on call sets them once.
std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// Set by SIGINT / SIGTERM: `events tail` stops and exits 0.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "a signal handler may only store a lock-free atomic");
void OnStopSignal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  using tiercache::cli::Connection;
  Connection conn;
  conn.redis = EnvOr("TIERCACHE_REDIS", conn.redis);
  conn.redis_password = EnvOr("TIERCACHE_REDIS_PASSWORD", "");  // kept out of argv (ps)
  int timeout_ms = 2000;

  CLI::App app{"tiercache: look at and act on tiercache's keys in Redis, its events on Kafka and its outbox.\n"
               "Exit codes: 0 done; 2 bad arguments or input; 3 nothing (current) stored; "
               "4 a server did not answer; 5 a server error or bytes that are not an envelope."};
  app.require_subcommand(1);
  app.fallthrough();  // the options above also after the command's name
  app.add_option("--redis", conn.redis, "a Redis Cluster node, host:port (env TIERCACHE_REDIS)")
      ->capture_default_str();
  app.add_option("--redis-user", conn.redis_user, "ACL user for AUTH");
  app.add_option("--redis-password", conn.redis_password,
                 "password for AUTH (better: env TIERCACHE_REDIS_PASSWORD, not visible in ps)");
  app.add_option("--timeout-ms", timeout_ms, "timeout of each server call")->check(CLI::Range(1, 600000))
      ->capture_default_str();

  std::vector<std::string> slot_keys;
  CLI::App* keyslot = app.add_subcommand("keyslot", "the hash slot of each KEY and the master serving it");
  keyslot->add_option("KEY", slot_keys, "keys")->required();

  CLI::App* cluster = app.add_subcommand("cluster", "the slot map: ranges, masters and replicas");

  std::string key, group;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "what L2 holds for KEY: the envelope's kind, version, logical and physical expiry, delta, "
                 "codec and payload; the lease and fence; with --group, the group's generation");
  inspect->add_option("KEY", key, "the key")->required();
  inspect->add_option("--group", group, "the group the key is a member of");

  CLI::App* get = app.add_subcommand("get", "print KEY's current value from L2 (exit 3 when there is none)");
  get->add_option("KEY", key, "the key")->required();
  get->add_option("--group", group, "read it as a member of this group (current only at its generation)");

  std::optional<uint64_t> version;
  CLI::App* invalidate = app.add_subcommand(
      "invalidate", "invalidate KEY, or every member of --group, in L2 (no event is published: other pods' L1 "
                    "copies live until their L1 TTL; publish an event to reach them)");
  invalidate->add_option("KEY", key, "the key (or give --group)");
  invalidate->add_option("--group", group, "invalidate this group instead of a key");
  invalidate->add_option("--version", version, "the version invalidated: older fills stay refused (default: unversioned)");

  std::string pg = EnvOr("TIERCACHE_PG", "host=127.0.0.1 port=55432 dbname=tiercache user=postgres");
  CLI::App* outbox = app.add_subcommand("outbox", "the transactional outbox in PostgreSQL");
  outbox->require_subcommand(1);
  CLI::App* outbox_status =
      outbox->add_subcommand("status", "rows not yet published, the age of the oldest, sent rows kept");
  // No capture_default_str(): TIERCACHE_PG may hold a password.
  outbox_status->add_option("--pg", pg,
                            "libpq connection string, key=value or postgresql:// URI (default: env TIERCACHE_PG, "
                            "else host=127.0.0.1 port=55432 dbname=tiercache user=postgres)");

  std::string brokers = EnvOr("TIERCACHE_KAFKA", "127.0.0.1:9092");
  CLI::App* events = app.add_subcommand("events", "invalidation events on Kafka");
  events->require_subcommand(1);
  tiercache::cli::TailOptions tail_options;
  CLI::App* tail = events->add_subcommand(
      "tail", "print the events of --topic as they come, decoded, with partition, offset, lag (messages behind "
              "the partition's end) and age; malformed ones as MALFORMED with the reason, tombstones (null "
              "payloads) as NULL-PAYLOAD, null keys as key=(null). Partitions added meanwhile are found within "
              "about 5 s and read from their beginning. Joins no consumer group and commits nothing. Ctrl-C stops "
              "it (exit 0)");
  tail->add_option("--brokers", brokers, "Kafka bootstrap servers (env TIERCACHE_KAFKA)")->capture_default_str();
  tail->add_option("--topic", tail_options.topics, "topic to read (repeatable)")->required();
  auto* from_beginning = tail->add_flag("--from-beginning", tail_options.from_beginning,
                                        "read every partition from its first event (default: only new events)");
  tail->add_option("--last", tail_options.last,
                   "first the last N events of each partition (fewer when retention kept fewer)")
      ->check(CLI::PositiveNumber)
      ->excludes(from_beginning);
  tail->add_option("--max", tail_options.max_events, "stop after N events")->check(CLI::PositiveNumber);
  tail->add_flag("--exit-at-end", tail_options.exit_at_end, "stop once every partition's end is reached");

  tiercache::cli::PublishOptions publish_options;
  CLI::App* publish = events->add_subcommand(
      "publish", "publish one hand-made event (validated first; nothing is sent when it is malformed), keyed by "
                 "its partition key, and wait for the broker's acknowledgement. The topic must exist: exit 3 "
                 "\"topic 'X' does not exist\" otherwise (it is not created)");
  publish->add_option("--brokers", brokers, "Kafka bootstrap servers (env TIERCACHE_KAFKA)")->capture_default_str();
  publish->add_option("--topic", publish_options.topic, "the topic")->required();
  auto* json = publish->add_option("--json", publish_options.json, "the whole event as JSON (docs/events.md)");
  auto& ev = publish_options.event;
  auto* type = publish->add_option("--type", ev.type, "<entity>.<action>, e.g. post.updated")->excludes(json);
  auto* entity = publish->add_option("--entity-id", ev.entity_id, "the changed entity's id")->excludes(json);
  auto* pkey = publish->add_option("--partition-key", ev.partition_key, "the message key, e.g. the community id")
                   ->excludes(json);
  auto* ver = publish->add_option("--version", ev.version, "the entity's version after the change (>= 1)")
                  ->excludes(json);
  publish->add_option("--event-id", ev.event_id, "the event's id (default: a new UUID; reuse one to redeliver)")
      ->excludes(json);
  for (CLI::Option* field : {type, entity, pkey, ver}) json->excludes(field);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tiercache: " << e.what() << " (see --help)\n";
    return tiercache::cli::kExitUsage;
  }
  conn.timeout = std::chrono::milliseconds(timeout_ms);
  if (*keyslot) return tiercache::cli::Keyslot(conn, slot_keys, std::cout, std::cerr);
  if (*cluster) return tiercache::cli::Cluster(conn, std::cout, std::cerr);
  if (*inspect) return tiercache::cli::Inspect(conn, key, group, std::cout, std::cerr);
  if (*get) return tiercache::cli::Get(conn, key, group, std::cout, std::cerr);
  if (*invalidate) return tiercache::cli::Invalidate(conn, key, group, version, std::cout, std::cerr);
  if (*tail) {
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    tail_options.brokers = brokers;
    tail_options.timeout = conn.timeout;
    tail_options.stop = &g_stop;
    return tiercache::cli::EventsTail(tail_options, std::cout, std::cerr);
  }
  if (*publish) {
    publish_options.brokers = brokers;
    publish_options.timeout = conn.timeout;
    return tiercache::cli::EventsPublish(publish_options, std::cout, std::cerr);
  }
  if (*outbox_status) return tiercache::cli::OutboxStatus(pg, conn.timeout, std::cout, std::cerr);
  return tiercache::cli::kExitUsage;
}
