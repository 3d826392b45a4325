// Helpers shared by the Redis client's integration tests: direct commands to
// one node (plain hiredis, no redirection), cluster health checks, process
// and fd counts, and throwaway redis-server processes on free ports.
// Header-only: each test file is its own program.
#ifndef TIERCACHE_TESTS_REDIS_REDIS_TEST_UTIL_H_
#define TIERCACHE_TESTS_REDIS_REDIS_TEST_UTIL_H_

#include <arpa/inet.h>
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/raw_cluster.h"
#include "common/test_env.h"
#include "tiercache/redis/options.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis::testing {

using ::tiercache::testing::RawReply;

inline RawReply NodeCommand(int port, const std::vector<std::string>& args, const std::string& password = "") {
  redisContext* c = ::tiercache::testing::ConnectLoopback(port, timeval{10, 0});
  if (c == nullptr) return nullptr;
  if (!password.empty()) {
    RawReply a(static_cast<redisReply*>(redisCommand(c, "AUTH %s", password.c_str())));
  }
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  RawReply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
  redisFree(c);
  return r;
}

inline std::string NodeCommandText(int port, const std::vector<std::string>& args, const std::string& password = "") {
  RawReply r = NodeCommand(port, args, password);
  return ::tiercache::testing::DescribeReply(r.get());
}

inline RedisClientOptions ClusterOptions() {
  RedisClientOptions o;
  for (int p : ::tiercache::testing::RedisClusterPorts()) o.seeds.push_back(Endpoint{"127.0.0.1", p});
  return o;
}

inline std::string InfoField(const std::string& info, const std::string& field) {
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind(field + ":", 0) == 0) return line.substr(field.size() + 1);
  }
  return "";
}

inline std::vector<int> MasterPorts(const std::vector<int>& ports) {
  std::vector<int> masters;
  for (int p : ports) {
    std::string info = NodeCommandText(p, {"INFO", "replication"});
    if (InfoField(info, "role") == "master") masters.push_back(p);
  }
  return masters;
}

inline std::string NodeId(int port) { return NodeCommandText(port, {"CLUSTER", "MYID"}); }

inline int SlotOwnerPort(int ask_port, int slot) {
  RawReply r = NodeCommand(ask_port, {"CLUSTER", "SLOTS"});
  if (!r || r->type != REDIS_REPLY_ARRAY) return -1;
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->element[0]->integer <= slot && slot <= e->element[1]->integer) {
      return static_cast<int>(e->element[2]->element[1]->integer);
    }
  }
  return -1;
}

// A key "<prefix>:<n>}" (the caller's prefix opens a hash tag) whose slot
// holds no other key, so a test can move the slot without moving data.
struct EmptySlotKey {
  std::string key;
  int slot = -1;
  int owner = -1;  // the master serving the slot
};
inline EmptySlotKey FindEmptySlotKey(const std::string& prefix, int ask_port) {
  EmptySlotKey out;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    out.key = prefix + ":" + std::to_string(attempt) + "}";
    out.slot = KeySlot(out.key);
    out.owner = SlotOwnerPort(ask_port, out.slot);
    if (NodeCommandText(out.owner, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(out.slot)}) == "0") break;
  }
  return out;
}

inline bool ClusterHealthyOnce(const std::vector<int>& ports, bool expect_replicas, const std::string& password) {
  int masters = 0, replicas = 0;
  for (int p : ports) {
    std::string info = NodeCommandText(p, {"CLUSTER", "INFO"}, password);
    if (InfoField(info, "cluster_state") != "ok" || InfoField(info, "cluster_slots_ok") != "16384" ||
        InfoField(info, "cluster_known_nodes") != std::to_string(ports.size())) {
      return false;
    }
    std::string nodes = NodeCommandText(p, {"CLUSTER", "NODES"}, password);
    if (nodes.find("fail") != std::string::npos || nodes.find("handshake") != std::string::npos) return false;
    std::string role = InfoField(NodeCommandText(p, {"INFO", "replication"}, password), "role");
    if (role == "master") ++masters;
    if (role == "slave") {
      ++replicas;
      if (InfoField(NodeCommandText(p, {"INFO", "replication"}, password), "master_link_status") != "up") return false;
    }
  }
  bool roles = expect_replicas ? masters == static_cast<int>(ports.size()) / 2 && replicas == masters
                               : masters == static_cast<int>(ports.size());
  if (!roles) return false;
  // All nodes agree on the slot map and no slot is left open (migrating/importing).
  std::string cmd = "timeout 10 redis-cli --no-auth-warning " + (password.empty() ? "" : "-a " + password + " ") +
                    "--cluster check 127.0.0.1:" + std::to_string(ports[0]) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  pclose(p);
  return out.find("All nodes agree about slots configuration") != std::string::npos &&
         out.find("All 16384 slots covered") != std::string::npos && out.find("[WARNING]") == std::string::npos &&
         out.find("[ERR]") == std::string::npos;
}

inline bool WaitClusterHealthy(const std::vector<int>& ports, int seconds, bool expect_replicas = true,
                               const std::string& password = "") {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (ClusterHealthyOnce(ports, expect_replicas, password)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// For tests that run `redis-cli --cluster reshard`: if it stopped half-way
// (open MIGRATING/IMPORTING slots, keys on the wrong node), the destructor
// runs `redis-cli --cluster fix`, so the tests after this one start healthy.
class ClusterFixGuard {
 public:
  explicit ClusterFixGuard(std::vector<int> ports) : ports_(std::move(ports)) {}
  ~ClusterFixGuard() {
    if (ports_.empty() || WaitClusterHealthy(ports_, 5)) return;
    const std::string cmd = "timeout 120 redis-cli --cluster fix 127.0.0.1:" + std::to_string(ports_[0]) +
                            " --cluster-yes >/dev/null 2>&1";
    const int rc = std::system(cmd.c_str());
    const bool healthy = WaitClusterHealthy(ports_, 30);
    std::fprintf(stderr, "ClusterFixGuard: the cluster was left unhealthy; redis-cli --cluster fix exit %d, %s\n",
                 rc, healthy ? "healthy again" : "STILL UNHEALTHY");
  }
  ClusterFixGuard(const ClusterFixGuard&) = delete;
  ClusterFixGuard& operator=(const ClusterFixGuard&) = delete;

 private:
  std::vector<int> ports_;
};

inline int CountDir(const char* path) {
  int n = 0;
  DIR* d = opendir(path);
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n;
}

inline int CountOpenFds() { return CountDir("/proc/self/fd") - 1; }  // minus the DIR's own fd
inline int CountThreads() { return CountDir("/proc/self/task"); }

inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

inline bool PortFree(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A free port P below the ephemeral range whose cluster bus port P+10000 is
// free too (redis-server refuses cluster ports above 55535).
inline int FreeClusterPort() {
  static int next = 21000 + (::getpid() % 2000) * 2;
  for (int i = 0; i < 4000; ++i) {
    int p = next++;
    if (next > 29000) next = 21000;
    if (PortFree(p) && PortFree(p + 10000)) return p;
  }
  return -1;
}

inline std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

class ServerProcess {
 public:
  ServerProcess(int port, const std::vector<std::string>& extra_args) : port_(port) {
    char tmpl[] = "/tmp/tiercache-redis-test-XXXXXX";
    char* d = mkdtemp(tmpl);
    if (d == nullptr) return;
    dir_ = d;
    std::string cmd = "redis-server --bind 127.0.0.1 --port " + std::to_string(port) +
                      " --daemonize yes --save '' --appendonly no --dir " + Quote(dir_) + " --pidfile " +
                      Quote(dir_ + "/redis.pid") + " --logfile " + Quote(dir_ + "/redis.log");
    for (const auto& a : extra_args) cmd += " " + Quote(a);
    if (std::system(cmd.c_str()) != 0) return;
    for (int i = 0; i < 100 && pid_ <= 0; ++i) {
      std::ifstream in(dir_ + "/redis.pid");
      int pid = 0;
      if (in >> pid && pid > 0 && ::tiercache::testing::PortAcceptsConnections(port)) pid_ = pid;
      if (pid_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      for (int i = 0; i < 100 && !Gone(pid_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!dir_.empty()) {
      std::string rm = "rm -rf " + Quote(dir_);
      [[maybe_unused]] int rc = std::system(rm.c_str());
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  bool ok() const { return pid_ > 0; }
  int port() const { return port_; }
  int pid() const { return pid_; }

 private:
  // Exited: no such process, or a zombie (the daemon's parent is gone and
  // whoever inherited it may never reap it; its sockets are closed already).
  static bool Gone(int pid) {
    if (::kill(pid, 0) != 0) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    size_t paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
  }

  int port_;
  int pid_ = -1;
  std::string dir_;
};

struct NodeProcessInfo {
  int pid = -1;
  std::string executable;
  std::string config_file;
  std::string cwd;
  std::vector<std::string> argv;
};

inline NodeProcessInfo ProcessInfoOf(int port) {
  NodeProcessInfo info;
  std::string server = NodeCommandText(port, {"INFO", "server"});
  info.pid = std::atoi(InfoField(server, "process_id").c_str());
  info.executable = InfoField(server, "executable");
  info.config_file = InfoField(server, "config_file");
  if (info.pid <= 0) return info;
  char buf[4096];
  ssize_t n = ::readlink(("/proc/" + std::to_string(info.pid) + "/cwd").c_str(), buf, sizeof(buf) - 1);
  if (n > 0) info.cwd.assign(buf, static_cast<size_t>(n));
  std::ifstream cmdline("/proc/" + std::to_string(info.pid) + "/cmdline", std::ios::binary);
  std::string arg;
  while (std::getline(cmdline, arg, '\0')) info.argv.push_back(arg);
  return info;
}

inline bool RestartNode(const NodeProcessInfo& info) {
  std::string cmd = "cd " + Quote(info.cwd.empty() ? "/" : info.cwd) + " && ";
  if (!info.config_file.empty()) {
    bool exe_ok = !info.executable.empty() && ::access(info.executable.c_str(), X_OK) == 0;
    cmd += Quote(exe_ok ? info.executable : std::string("redis-server")) + " " + Quote(info.config_file);
  } else {
    return false;  // started without a config file: cannot restart faithfully
  }
  cmd += " >/dev/null 2>&1 &";
  return std::system(cmd.c_str()) == 0;
}

// Polls `done` every `step` until it is true or `limit` has passed; its last answer.
template <typename Pred>
bool WaitUntil(std::chrono::milliseconds limit, Pred done,
               std::chrono::milliseconds step = std::chrono::milliseconds(20)) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

// "" when the node at `port` answers `args` with +OK, else what it said,
// naming the node and the command (for assertion messages).
inline std::string CommandError(int port, const std::vector<std::string>& args) {
  std::string reply = NodeCommandText(port, args);
  if (reply == "OK") return "";
  std::string cmd;
  for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
  return "127.0.0.1:" + std::to_string(port) + " " + cmd + ": " + reply;
}

// Moves every key of `slot` from the node at `port` to `to` (MIGRATE ... KEYS,
// 100 at a time); "" on success. `replace` overwrites keys `to` already has.
inline std::string MigrateKeys(int slot, int port, int to, bool replace = false) {
  std::string s = std::to_string(slot);
  for (int round = 0; round < 10000; ++round) {
    RawReply keys = NodeCommand(port, {"CLUSTER", "GETKEYSINSLOT", s, "100"});
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
      return "GETKEYSINSLOT " + s + " on " + std::to_string(port) + ": " +
             ::tiercache::testing::DescribeReply(keys.get());
    }
    if (keys->elements == 0) return "";
    std::vector<std::string> mig{"MIGRATE", "127.0.0.1", std::to_string(to), "", "0", "5000"};
    if (replace) mig.emplace_back("REPLACE");
    mig.emplace_back("KEYS");
    for (size_t i = 0; i < keys->elements; ++i) mig.emplace_back(keys->element[i]->str, keys->element[i]->len);
    if (std::string e = CommandError(port, mig); !e.empty()) return e;
  }
  return "slot " + s + " on " + std::to_string(port) + " never emptied";
}

// Moves `slot` and its keys from `from` to `to` the way redis-cli --cluster
// reshard does: IMPORTING on `to`, MIGRATING on `from`, the keys, then
// SETSLOT NODE on `to` first (a node that was importing bumps its config
// epoch, so its claim wins in gossip), then on `from`, then on the other
// `masters`. Replicas follow by gossip. "" on success, else what failed.
inline std::string MigrateSlot(int slot, int from, int to, const std::vector<int>& masters) {
  std::string from_id = NodeId(from), to_id = NodeId(to), s = std::to_string(slot);
  for (const auto& [port, args] : std::vector<std::pair<int, std::vector<std::string>>>{
           {to, {"CLUSTER", "SETSLOT", s, "IMPORTING", from_id}},
           {from, {"CLUSTER", "SETSLOT", s, "MIGRATING", to_id}}}) {
    if (std::string e = CommandError(port, args); !e.empty()) return e;
  }
  if (std::string e = MigrateKeys(slot, from, to); !e.empty()) return e;
  std::vector<int> order{to, from};
  for (int m : masters) {
    if (m != to && m != from) order.push_back(m);
  }
  for (int m : order) {
    if (std::string e = CommandError(m, {"CLUSTER", "SETSLOT", s, "NODE", to_id}); !e.empty()) return e;
  }
  return "";
}

// True when every node in `ports` sees `slot` served by `owner` and none has
// it open (MIGRATING/IMPORTING: "[slot->-id]" / "[slot-<-id]" in CLUSTER NODES).
inline bool SlotSettled(int slot, int owner, const std::vector<int>& ports) {
  std::string s = std::to_string(slot);
  for (int p : ports) {
    if (SlotOwnerPort(p, slot) != owner) return false;
    std::string nodes = NodeCommandText(p, {"CLUSTER", "NODES"});
    if (nodes.find("[" + s + "->-") != std::string::npos || nodes.find("[" + s + "-<-") != std::string::npos) {
      return false;
    }
  }
  return true;
}

// Gives `slot` back to `owner`, whatever state an interrupted migration left
// it in: the keys other `masters` hold move back to `owner` (overwriting), no
// node keeps it MIGRATING/IMPORTING, and every master assigns it to `owner`.
// If `owner` lost the slot, it imports it first so that its SETSLOT NODE bumps
// its config epoch (else the replicas would keep the newer owner). Best
// effort: it carries on after an error; "" when every step succeeded, else
// the first error.
inline std::string RestoreSlot(int slot, int owner, const std::vector<int>& masters) {
  std::string s = std::to_string(slot), owner_id = NodeId(owner), first_error;
  auto note = [&](std::string e) {
    if (first_error.empty()) first_error = std::move(e);
  };
  int view = SlotOwnerPort(owner, slot);
  bool owns = view == owner;
  // STABLE first: an owner left MIGRATING would answer the MIGRATEs below with ASK.
  note(owns ? CommandError(owner, {"CLUSTER", "SETSLOT", s, "STABLE"})
            : CommandError(owner, {"CLUSTER", "SETSLOT", s, "IMPORTING", NodeId(view > 0 ? view : masters[0])}));
  for (int m : masters) {
    if (m == owner || NodeCommandText(m, {"CLUSTER", "COUNTKEYSINSLOT", s}) == "0") continue;
    // MIGRATE runs only where the slot is served or open: open it if needed.
    if (SlotOwnerPort(m, slot) != m) note(CommandError(m, {"CLUSTER", "SETSLOT", s, "IMPORTING", owner_id}));
    note(MigrateKeys(slot, m, owner, /*replace=*/true));
  }
  for (int m : masters) {
    if (m != owner) note(CommandError(m, {"CLUSTER", "SETSLOT", s, "STABLE"}));
  }
  if (!owns) note(CommandError(owner, {"CLUSTER", "SETSLOT", s, "NODE", owner_id}));
  for (int m : masters) {
    if (m != owner) note(CommandError(m, {"CLUSTER", "SETSLOT", s, "NODE", owner_id}));
  }
  return first_error;
}

// Scope guard of a test that opens a slot (SETSLOT MIGRATING/IMPORTING) or
// moves it: on destruction, unless `slot` is settled at `owner` on every
// node in `ports`, restores it (RestoreSlot) and waits for the cluster to be
// healthy again, so a failed assertion mid-migration cannot leave a slot open
// for the tests that follow. Failures are reported as test failures.
class SlotGuard {
 public:
  SlotGuard(int slot, int owner, std::vector<int> masters, std::vector<int> ports)
      : slot_(slot), owner_(owner), masters_(std::move(masters)), ports_(std::move(ports)) {}
  ~SlotGuard() {
    if (slot_ < 0 || SlotSettled(slot_, owner_, ports_)) return;
    std::string e = RestoreSlot(slot_, owner_, masters_);
    EXPECT_EQ(e, "") << "restoring slot " << slot_ << " to 127.0.0.1:" << owner_;
    EXPECT_TRUE(WaitUntil(std::chrono::seconds(20), [&] { return SlotSettled(slot_, owner_, ports_); },
                          std::chrono::milliseconds(100)))
        << "slot " << slot_ << " not settled at 127.0.0.1:" << owner_ << " after restoring it";
  }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;

 private:
  int slot_;
  int owner_;
  std::vector<int> masters_;
  std::vector<int> ports_;
};

}  // namespace tiercache::redis::testing

// In a test body: the local cluster must answer (TIERCACHE_REQUIRE_SERVER)
// and be healthy (waits up to 30 s), or the test fails here.
#define REQUIRE_HEALTHY_CLUSTER()                                                                   \
  do {                                                                                              \
    TIERCACHE_REQUIRE_SERVER("redis cluster node", ::tiercache::testing::RedisClusterPorts()[0]);   \
    ASSERT_TRUE(::tiercache::redis::testing::WaitClusterHealthy(::tiercache::testing::RedisClusterPorts(), 30)) \
        << "cluster unhealthy before the test";                                                     \
  } while (0)

#endif  // TIERCACHE_TESTS_REDIS_REDIS_TEST_UTIL_H_
