// tiercache: the command-line tool for the people on call (see commands.h
// for the commands' output and exit codes).
#include <CLI/CLI.hpp>

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

}  // namespace

int main(int argc, char** argv) {
  using tiercache::cli::Connection;
  Connection conn;
  conn.redis = EnvOr("TIERCACHE_REDIS", conn.redis);
  conn.redis_password = EnvOr("TIERCACHE_REDIS_PASSWORD", "");  // kept out of argv (ps)
  int timeout_ms = 2000;

  CLI::App app{"tiercache: look at and act on tiercache's keys in Redis, and its outbox.\n"
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
  outbox_status->add_option("--pg", pg, "libpq connection string (env TIERCACHE_PG)")->capture_default_str();

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
  if (*outbox_status) return tiercache::cli::OutboxStatus(pg, conn.timeout, std::cout, std::cerr);
  return tiercache::cli::kExitUsage;
}
