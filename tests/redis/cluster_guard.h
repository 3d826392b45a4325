// ClusterGuard: puts the local 6-node Redis Cluster back the way a test found
// it, whatever the test did and wherever it stopped (a failed ASSERT returns
// from the test body; the guard's destructor, or the fixture's TearDown,
// still runs). Every test that changes the cluster (kills, stops or hangs a
// node, moves slots, adds a node, fails over) uses it:
//
//   class MyTest : public testing::ClusterRepairTest {};   // the fixture, or
//   testing::ClusterGuard cluster_guard;                   // in the body
//
// On construction it notes the cluster's layout (node ids, which port is a
// master, which master each replica follows, who serves each slot) and the
// nodes' processes (config file, executable). If the cluster is already
// broken (a test killed before it could repair), it repairs first. When it
// ends, unless the cluster is healthy with the same masters and replicas, it:
//   1. resumes (SIGCONT) any stopped node process;
//   2. starts every dev node that is down, the way scripts/services/redis.sh
//      does (`redis-server <run dir>/redis/<port>/redis.conf`; the node
//      rejoins from its nodes.conf);
//   3. removes nodes that are not among the 6 ports (a 7th node a test
//      added): the slots they serve go back to their owner at construction
//      (keys migrated when the node is alive; assigned again with ADDSLOTS
//      when it is dead), every dev node forgets them, a live one is reset;
//   4. closes open slots (MIGRATING/IMPORTING) at the master serving them:
//      keys other masters hold go back to it, the slot is STABLE everywhere
//      (CloseSlot; a half-migrated slot keeps some node's cluster_state at
//      fail, so this does not wait for cluster_state:ok);
//   5. restores the masters and replicas noted at construction (CLUSTER
//      FAILOVER on a former master now a replica, FORCE/TAKEOVER if it
//      must; CLUSTER REPLICATE for a replica following another master);
//   6. if the cluster is still not healthy, runs
//      `redis-cli --cluster fix --cluster-yes`;
// then waits for a healthy cluster (6 nodes, 3 masters with a replica each,
// all slots covered and agreed, none open) and fails the test if it is not.
// What it did is printed on stderr ("ClusterGuard: ...").
//
// Not restored: the split of slots among the 6 masters (a half-done reshard
// between them leaves a healthy cluster; no test depends on who serves which
// slot) and data of a node that was down (the dev nodes keep no RDB/AOF).
// A test program killed outright (SIGKILL, ctest timeout) runs no
// destructor: the next guard constructed repairs the cluster before its test,
// with the masters and replicas the last guard noted (saved in
// <run dir>/redis/cluster-guard-layout), but only if some node still answers
// (all 6 down looks like "no servers": `make services-up`).
//
// Header-only: each test file is its own program.
#ifndef TIERCACHE_TESTS_REDIS_CLUSTER_GUARD_H_
#define TIERCACHE_TESTS_REDIS_CLUSTER_GUARD_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "redis/redis_test_util.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis::testing {

// ---- CLUSTER NODES ----------------------------------------------------------

struct ClusterNodeLine {
  std::string id;
  int port = -1;  // -1: no address (noaddr)
  std::string flags;
  std::string master_id;  // "-" for a master
  bool myself = false;
  bool master = false;
  bool failing = false;  // fail or fail? (pfail)
  std::vector<std::pair<int, int>> slots;  // ranges served
  std::vector<int> open_slots;             // [s->-id] / [s-<-id]: only on the myself line
};

inline std::vector<ClusterNodeLine> ParseClusterNodes(const std::string& text) {
  std::vector<ClusterNodeLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    ClusterNodeLine n;
    std::string addr, ping, pong, epoch, link, slot;
    if (!(f >> n.id >> addr >> n.flags >> n.master_id >> ping >> pong >> epoch >> link)) continue;
    if (n.id.size() != 40) continue;  // "(no reply)", an error...
    size_t colon = addr.find(':'), at = addr.find_first_of("@,", colon == std::string::npos ? 0 : colon);
    if (colon != std::string::npos) n.port = std::atoi(addr.substr(colon + 1, at - colon - 1).c_str());
    if (n.port <= 0) n.port = -1;
    std::string flags = "," + n.flags + ",";
    n.myself = flags.find(",myself,") != std::string::npos;
    n.master = flags.find(",master,") != std::string::npos;
    n.failing = flags.find(",fail,") != std::string::npos || flags.find(",fail?,") != std::string::npos;
    while (f >> slot) {
      if (slot.front() == '[') {
        n.open_slots.push_back(std::atoi(slot.c_str() + 1));
        continue;
      }
      size_t dash = slot.find('-');
      int lo = std::atoi(slot.c_str());
      int hi = dash == std::string::npos ? lo : std::atoi(slot.c_str() + dash + 1);
      n.slots.emplace_back(lo, hi);
    }
    out.push_back(std::move(n));
  }
  return out;
}

inline std::vector<ClusterNodeLine> ClusterNodesOf(int port) {
  return ParseClusterNodes(NodeCommandText(port, {"CLUSTER", "NODES"}));
}

// Who is master, who follows whom, who serves each slot: as one node sees it.
struct ClusterLayout {
  bool valid = false;
  std::map<int, std::string> id;  // port -> node id (the dev nodes that answered)
  std::set<int> masters;          // dev ports
  std::map<int, int> master_of;   // dev replica port -> its master's port
  std::vector<int> slot_owner = std::vector<int>(kSlotCount, -1);  // port of the master serving it
  std::string Describe() const {
    std::string s = "masters";
    for (int m : masters) s += " " + std::to_string(m);
    s += "; replicas";
    for (auto [r, m] : master_of) s += " " + std::to_string(r) + "->" + std::to_string(m);
    return s;
  }
};

// The layout as `ports[0]` (or the first that answers) sees it; ids from the
// nodes themselves.
inline ClusterLayout ReadLayout(const std::vector<int>& ports) {
  ClusterLayout l;
  std::vector<ClusterNodeLine> lines;
  for (int p : ports) {
    lines = ClusterNodesOf(p);
    if (!lines.empty()) break;
  }
  if (lines.empty()) return l;
  std::map<std::string, int> port_of_id;
  for (const auto& n : lines) port_of_id[n.id] = n.port;
  for (const auto& n : lines) {
    bool dev = std::find(ports.begin(), ports.end(), n.port) != ports.end();
    if (dev) l.id[n.port] = n.id;
    if (n.master) {
      if (dev) l.masters.insert(n.port);
      for (auto [lo, hi] : n.slots) {
        for (int s = lo; s <= hi && s < kSlotCount; ++s) l.slot_owner[s] = n.port;
      }
    } else if (dev && port_of_id.count(n.master_id) > 0) {
      l.master_of[n.port] = port_of_id[n.master_id];
    }
  }
  l.valid = true;
  return l;
}

// ---- the dev nodes' processes -------------------------------------------------

// What each dev node runs (config file, executable, pid), noted while it
// answered; kept for the life of the test program.
inline std::map<int, NodeProcessInfo>& DevNodeRegistry() {
  static std::map<int, NodeProcessInfo> registry;
  return registry;
}

inline void RememberDevNode(int port) {
  if (!::tiercache::testing::PortAcceptsConnections(port)) return;
  NodeProcessInfo info = ProcessInfoOf(port);
  if (info.pid > 0 && !info.config_file.empty()) DevNodeRegistry()[port] = info;
}

inline bool Readable(const std::string& path) { return !path.empty() && ::access(path.c_str(), R_OK) == 0; }

// The config file of the dev node on `port`: the one it ran from, else the
// path of another node's with the port changed (<run dir>/redis/<port>/...),
// else $TIERCACHE_RUN_DIR/redis/<port>/redis.conf, else <repo>/.run/... .
inline std::string DevNodeConfigFile(int port) {
  auto& reg = DevNodeRegistry();
  if (auto it = reg.find(port); it != reg.end() && Readable(it->second.config_file)) return it->second.config_file;
  const std::string to = "/" + std::to_string(port) + "/";
  for (const auto& [other, info] : reg) {
    std::string path = info.config_file;
    const std::string from = "/" + std::to_string(other) + "/";
    size_t at = path.rfind(from);
    if (at == std::string::npos) continue;
    path.replace(at, from.size(), to);
    if (Readable(path)) return path;
  }
  std::vector<std::string> run_dirs;
  if (const char* d = std::getenv("TIERCACHE_RUN_DIR"); d != nullptr && *d != '\0') run_dirs.emplace_back(d);
  std::string here = __FILE__;  // <repo>/tests/redis/cluster_guard.h
  for (int up = 0; up < 3 && here.rfind('/') != std::string::npos; ++up) here.erase(here.rfind('/'));
  if (!here.empty() && here.front() == '/') run_dirs.push_back(here + "/.run");
  for (const auto& d : run_dirs) {
    std::string path = d + "/redis/" + std::to_string(port) + "/redis.conf";
    if (Readable(path)) return path;
  }
  return "";
}

// `key`'s value in a redis.conf ("key value" lines), or "".
inline std::string ConfigValue(const std::string& config_file, const std::string& key) {
  std::ifstream in(config_file);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string k, v;
    if (f >> k >> v && k == key) return v;
  }
  return "";
}

// No such process, or a zombie (a daemon's parent is gone and whoever
// inherited it may never reap it) whose threads have all exited: redis-server
// has several, and its main thread turns zombie before the others are done,
// while they still hold the process's sockets (its listening port included).
inline bool ProcessGone(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z') return false;
  return CountDir(("/proc/" + std::to_string(pid) + "/task").c_str()) <= 1;
}

// The pid of the live redis-server of `port` ("redis-server 127.0.0.1:<port>"
// in its command line), from what was noted or its pidfile; -1 when none.
inline int DevNodePid(int port) {
  std::vector<int> candidates;
  if (auto it = DevNodeRegistry().find(port); it != DevNodeRegistry().end()) candidates.push_back(it->second.pid);
  if (std::string conf = DevNodeConfigFile(port); !conf.empty()) {
    std::ifstream pidfile(ConfigValue(conf, "pidfile"));
    int pid = 0;
    if (pidfile >> pid) candidates.push_back(pid);
  }
  for (int pid : candidates) {
    if (ProcessGone(pid)) continue;
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (cmd.find("redis-server") != std::string::npos && cmd.find(":" + std::to_string(port)) != std::string::npos) {
      return pid;
    }
  }
  return -1;
}

// Starts the dev node of `port` as scripts/services/redis.sh does
// (`redis-server <config>`, which daemonizes) and waits up to 15 s for it to
// answer PING. The child gets none of this process's descriptors (the
// client's sockets, gtest's files). "" on success, else what went wrong.
inline std::string StartDevNode(int port) {
  const std::string conf = DevNodeConfigFile(port);
  if (conf.empty()) return "no config file known for the node on port " + std::to_string(port);
  std::string exe = "redis-server";
  if (auto it = DevNodeRegistry().find(port);
      it != DevNodeRegistry().end() && !it->second.executable.empty() && ::access(it->second.executable.c_str(), X_OK) == 0) {
    exe = it->second.executable;
  }
  std::string dir = conf.substr(0, conf.rfind('/'));
  if (dir.empty()) dir = "/";
  const long max_fd = std::min(::sysconf(_SC_OPEN_MAX) > 0 ? ::sysconf(_SC_OPEN_MAX) : 1024L, 65536L);
  const char* argv[] = {exe.c_str(), conf.c_str(), nullptr};
  const pid_t child = ::fork();
  if (child < 0) return "fork failed";
  if (child == 0) {  // only async-signal-safe calls from here
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, 0);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
    }
    for (long fd = 3; fd < max_fd; ++fd) ::close(static_cast<int>(fd));
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execvp(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "`" + exe + " " + conf + "` exited with status " + std::to_string(status);
  }
  bool up = WaitUntil(std::chrono::seconds(15), [&] { return NodeCommandText(port, {"PING"}) == "PONG"; },
                      std::chrono::milliseconds(50));
  if (!up) return "the node on port " + std::to_string(port) + " started from " + conf + " does not answer PING";
  RememberDevNode(port);
  return "";
}

// Stops the redis-servers of `ports` together (SIGCONT, then `sig` to each),
// and waits up to `limit` for them all to exit; stragglers get SIGKILL.
// "" when every one of them is gone, else what was left.
inline std::string StopDevNodes(const std::vector<int>& ports, int sig = SIGTERM,
                                std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  std::map<int, int> pids;
  for (int p : ports) {
    RememberDevNode(p);
    int pid = DevNodePid(p);
    if (pid > 0) pids[p] = pid;
  }
  for (auto [p, pid] : pids) {
    ::kill(pid, SIGCONT);
    ::kill(pid, sig);
  }
  auto all_gone = [&] {
    return std::all_of(pids.begin(), pids.end(), [](const auto& e) { return ProcessGone(e.second); });
  };
  if (WaitUntil(limit, all_gone, std::chrono::milliseconds(20))) return "";
  std::string left;
  for (auto [p, pid] : pids) {
    if (!ProcessGone(pid)) {
      ::kill(pid, SIGKILL);
      left += " " + std::to_string(p);
    }
  }
  WaitUntil(std::chrono::seconds(5), all_gone);
  return "nodes that had to be killed (SIGKILL):" + left;
}

// True when the node on `port` answers PING within `ms` (a stopped or hung
// node accepts connections but never answers; a LOADING one answers an error).
inline bool Answers(int port, int ms = 1000) {
  redisContext* c = ::tiercache::testing::ConnectLoopback(port, timeval{ms / 1000, (ms % 1000) * 1000});
  if (c == nullptr) return false;
  RawReply r(static_cast<redisReply*>(redisCommand(c, "PING")));
  redisFree(c);
  return r && r->type == REDIS_REPLY_STATUS && std::string(r->str, r->len) == "PONG";
}

// Moves every key of `slot` from `from` to `to` with ASKING + MIGRATE on one
// connection: `from` must have the slot IMPORTING (it serves no slot it does
// not own otherwise). "" on success.
inline std::string AskingMigrateKeys(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  redisContext* c = ::tiercache::testing::ConnectLoopback(from, timeval{10, 0});
  if (c == nullptr) return "cannot connect to " + std::to_string(from);
  std::string error;
  for (int round = 0; round < 10000 && error.empty(); ++round) {
    RawReply keys(static_cast<redisReply*>(redisCommand(c, "CLUSTER GETKEYSINSLOT %s 100", s.c_str())));
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
      error = "GETKEYSINSLOT " + s + " on " + std::to_string(from) + ": " + ::tiercache::testing::DescribeReply(keys.get());
      break;
    }
    if (keys->elements == 0) break;
    std::vector<std::string> args{"MIGRATE", "127.0.0.1", std::to_string(to), "", "0", "5000", "REPLACE", "KEYS"};
    for (size_t i = 0; i < keys->elements; ++i) args.emplace_back(keys->element[i]->str, keys->element[i]->len);
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    RawReply asking(static_cast<redisReply*>(redisCommand(c, "ASKING")));
    RawReply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      error = "ASKING + MIGRATE on " + std::to_string(from) + ": " + ::tiercache::testing::DescribeReply(r.get());
    }
  }
  redisFree(c);
  return error;
}

// Closes `slot` at `owner`, whatever state an interrupted migration, a
// failover or a restart left it in: `owner` serves it, every key of it that
// another of `masters` holds moves to `owner` (overwriting), no node keeps it
// MIGRATING/IMPORTING, and every master assigns it to `owner` (if `owner` did
// not think it served the slot, it takes it with a new config epoch, so that
// its claim wins in gossip). A node that holds keys of a slot it does not
// serve (its view may even have the slot unassigned: a master that turns
// replica loses its slots in the others' views) cannot MIGRATE them as is:
// it is told who owns the slot, opens it IMPORTING, and migrates with ASKING.
// Best effort; "" when every step succeeded, else the first error.
inline std::string CloseSlot(int slot, int owner, const std::vector<int>& masters) {
  const std::string s = std::to_string(slot), owner_id = NodeId(owner);
  std::string first_error;
  auto note = [&](std::string e) {
    if (first_error.empty()) first_error = std::move(e);
  };
  const bool owns = SlotOwnerPort(owner, slot) == owner;
  if (owns) {
    note(CommandError(owner, {"CLUSTER", "SETSLOT", s, "STABLE"}));
  } else {
    int other = -1;
    for (int m : masters) {
      if (m != owner) other = m;
    }
    note(CommandError(owner, {"CLUSTER", "SETSLOT", s, "IMPORTING", NodeId(other)}));
  }
  for (int m : masters) {
    if (m == owner || NodeCommandText(m, {"CLUSTER", "COUNTKEYSINSLOT", s}) == "0") continue;
    if (SlotOwnerPort(m, slot) == m) {
      note(CommandError(m, {"CLUSTER", "SETSLOT", s, "STABLE"}));
      note(MigrateKeys(slot, m, owner, /*replace=*/true));
    } else {
      note(CommandError(m, {"CLUSTER", "SETSLOT", s, "NODE", owner_id}));
      note(CommandError(m, {"CLUSTER", "SETSLOT", s, "IMPORTING", owner_id}));
      note(AskingMigrateKeys(slot, m, owner));
    }
  }
  for (int m : masters) {
    if (m != owner) note(CommandError(m, {"CLUSTER", "SETSLOT", s, "STABLE"}));
  }
  if (!owns) note(CommandError(owner, {"CLUSTER", "SETSLOT", s, "NODE", owner_id}));
  for (int m : masters) {
    if (m != owner) note(CommandError(m, {"CLUSTER", "SETSLOT", s, "NODE", owner_id}));
  }
  for (int m : masters) {
    if (m != owner && NodeCommandText(m, {"CLUSTER", "COUNTKEYSINSLOT", s}) != "0") {
      note("127.0.0.1:" + std::to_string(m) + " still holds keys of slot " + s);
    }
  }
  return first_error;
}

// ---- the guard ------------------------------------------------------------------

class ClusterGuard {
 public:
  ClusterGuard() : ports_(::tiercache::testing::RedisClusterPorts()) {
    // No node answers: no cluster to guard (the test's REQUIRE_HEALTHY_CLUSTER
    // fails or skips it).
    if (std::none_of(ports_.begin(), ports_.end(),
                     [](int p) { return ::tiercache::testing::PortAcceptsConnections(p); })) {
      return;
    }
    active_ = true;
    for (int p : ports_) RememberDevNode(p);
    ResumeStopped();
    if (!ClusterHealthyOnce(ports_, true, "")) {
      // Left broken by an earlier test program that could not clean up
      // (killed), or still settling: repair, with the masters and replicas
      // the last guard noted (saved next to the nodes' directories).
      layout_ = LoadSavedLayout();
      Log("the cluster is unhealthy before the test; repairing it" +
          (layout_.valid ? " (roles as last noted: " + layout_.Describe() + ")" : std::string()));
      Repair(/*restore_layout=*/layout_.valid);
      if (!WaitClusterHealthy(ports_, 30)) Log("the cluster is STILL UNHEALTHY before the test");
    }
    layout_ = ReadLayout(ports_);
    if (ClusterHealthyOnce(ports_, true, "")) SaveLayout(layout_);
  }

  ~ClusterGuard() {
    if (!active_) return;
    std::string problem = Restore();
    if (!problem.empty()) ADD_FAILURE() << "ClusterGuard could not restore the cluster: " << problem;
  }
  ClusterGuard(const ClusterGuard&) = delete;
  ClusterGuard& operator=(const ClusterGuard&) = delete;

  // The layout noted at construction.
  const ClusterLayout& layout() const { return layout_; }
  // What the guard did so far (empty: nothing needed).
  const std::vector<std::string>& actions() const { return actions_; }

  // Repairs if needed; "" when the cluster ends healthy with the noted
  // masters and replicas. Idempotent.
  std::string Restore() {
    if (!active_) return "";
    ResumeStopped();  // else every command to a stopped node waits out its 10 s timeout
    if (ClusterHealthyOnce(ports_, true, "") && RolesAsNoted()) return "";
    const auto start = std::chrono::steady_clock::now();
    Log("at the end of the test the cluster is not (yet) healthy, or not as at the start (" + layout_.Describe() +
        "): repairing what is broken, waiting for the rest");
    Repair(/*restore_layout=*/true);
    bool healthy = WaitClusterHealthy(ports_, 30) && RolesAsNoted();
    if (!healthy) {
      Log("still unhealthy: redis-cli --cluster fix --cluster-yes");
      RunFix();
      healthy = WaitClusterHealthy(ports_, 30);
      if (healthy && !RolesAsNoted()) {
        RestoreRoles();
        healthy = WaitClusterHealthy(ports_, 30);
      }
    }
    Log(std::string(healthy ? "cluster healthy again" : "cluster STILL UNHEALTHY") + " after " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)
                           .count()) +
        " ms; now " + ReadLayout(ports_).Describe());
    if (!healthy) return "unhealthy after repair; see the ClusterGuard lines above";
    return RolesAsNoted() ? "" : "roles differ from the start: " + ReadLayout(ports_).Describe() +
                                     " (noted " + layout_.Describe() + ")";
  }

 private:
  // <run dir>/redis/cluster-guard-layout: the masters and replicas of the
  // last healthy cluster a guard saw, for the next test program if this one
  // is killed before it restores them. Removed with the cluster by
  // scripts/services.sh when it recreates it; ignored when the node ids differ.
  std::string LayoutFile() const {
    std::string conf = DevNodeConfigFile(ports_[0]);  // <run dir>/redis/<port>/redis.conf
    for (int up = 0; up < 2 && conf.rfind('/') != std::string::npos; ++up) conf.erase(conf.rfind('/'));
    return conf.empty() ? "" : conf + "/cluster-guard-layout";
  }

  void SaveLayout(const ClusterLayout& l) const {
    const std::string path = LayoutFile();
    if (path.empty() || !l.valid) return;
    const std::string tmp = path + "." + std::to_string(::getpid());
    {
      std::ofstream out(tmp);
      for (const auto& [port, id] : l.id) out << "node " << port << " " << id << "\n";
      for (int m : l.masters) out << "master " << m << "\n";
      for (auto [r, m] : l.master_of) out << "replica " << r << " " << m << "\n";
      if (!out) return;
    }
    std::rename(tmp.c_str(), path.c_str());
  }

  ClusterLayout LoadSavedLayout() const {
    ClusterLayout l;
    std::ifstream in(LayoutFile());
    std::string kind;
    int port = 0;
    while (in >> kind >> port) {
      if (kind == "node") {
        in >> l.id[port];
      } else if (kind == "master") {
        l.masters.insert(port);
      } else if (kind == "replica") {
        in >> l.master_of[port];
      }
    }
    l.valid = l.masters.size() == ports_.size() / 2 && l.master_of.size() == ports_.size() - l.masters.size();
    for (const auto& [p, id] : l.id) {
      std::string now = NodeId(p);
      if (now.size() == 40 && now != id) l.valid = false;  // another cluster since
    }
    return l;
  }

  void Log(const std::string& what) {
    actions_.push_back(what);
    std::fprintf(stderr, "ClusterGuard: %s\n", what.c_str());
  }

  bool IsDev(int port) const { return std::find(ports_.begin(), ports_.end(), port) != ports_.end(); }

  bool RolesAsNoted() const {
    if (!layout_.valid) return true;
    ClusterLayout now = ReadLayout(ports_);
    return now.masters == layout_.masters && now.master_of == layout_.master_of;
  }

  void Repair(bool restore_layout) {
    ResumeStopped();
    StartDownNodes();
    RemoveExtraNodes();
    // Not a precondition of what follows: an open slot or a slot that a
    // former master still holds in some node's view keeps that node's
    // cluster_state at fail until it is closed.
    if (!WaitUntil(std::chrono::seconds(5), [&] { return AllStateOk(); }, std::chrono::milliseconds(100))) {
      Log("cluster_state not ok after 5 s on:" + StateNotOk() + "; going on");
    }
    CloseOpenSlots();
    if (restore_layout && layout_.valid && !RolesAsNoted()) {
      RestoreRoles();
      CloseOpenSlots();
    }
    if (!WaitUntil(std::chrono::seconds(20), [&] { return AllStateOk(); }, std::chrono::milliseconds(100))) {
      Log("cluster_state not ok after 20 s more on:" + StateNotOk());
    }
  }

  std::string StateNotOk() const {
    std::string out;
    for (int p : ports_) {
      std::string info = NodeCommandText(p, {"CLUSTER", "INFO"});
      if (InfoField(info, "cluster_state") != "ok") {
        out += " 127.0.0.1:" + std::to_string(p) + " (state " + InfoField(info, "cluster_state") + ", slots ok " +
               InfoField(info, "cluster_slots_ok") + ", known nodes " + InfoField(info, "cluster_known_nodes") + ")";
      }
    }
    return out;
  }

  bool AllStateOk() const {
    for (int p : ports_) {
      if (InfoField(NodeCommandText(p, {"CLUSTER", "INFO"}), "cluster_state") != "ok") return false;
    }
    return true;
  }

  // 1. A node left SIGSTOPped (a hung-master test that failed before
  // SIGCONT). SIGCONT goes to every node: a stop signal sent just before may
  // not show in its state yet, and a running process ignores it.
  void ResumeStopped() {
    for (int p : ports_) {
      int pid = DevNodePid(p);
      if (pid <= 0) continue;
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      std::getline(stat, line);
      size_t paren = line.rfind(')');
      const bool stopped = paren != std::string::npos && paren + 2 < line.size() &&
                           (line[paren + 2] == 'T' || line[paren + 2] == 't');
      ::kill(pid, SIGCONT);
      if (stopped) Log("resumed the stopped node 127.0.0.1:" + std::to_string(p) + " (SIGCONT)");
    }
  }

  // 2. Nodes down (or hung: they accept connections and never answer) are
  // started from their config files.
  void StartDownNodes() {
    std::vector<int> down;
    for (int p : ports_) {
      if (Answers(p)) continue;
      int pid = DevNodePid(p);
      // Alive but not answering: starting up or loading? give it a moment.
      if (pid > 0 && WaitUntil(std::chrono::seconds(5), [&] { return Answers(p, 200) || ProcessGone(pid); },
                               std::chrono::milliseconds(50)) &&
          !ProcessGone(pid)) {
        continue;
      }
      if (pid > 0 && !ProcessGone(pid)) {
        ::kill(pid, SIGKILL);
        WaitUntil(std::chrono::seconds(5), [&] { return ProcessGone(pid); });
        Log("127.0.0.1:" + std::to_string(p) + " (pid " + std::to_string(pid) + ") did not answer PING: killed");
      }
      down.push_back(p);
    }
    for (int p : down) {
      std::string e = StartDevNode(p);
      Log(e.empty() ? "restarted 127.0.0.1:" + std::to_string(p) + " from " + DevNodeConfigFile(p)
                    : "could not restart 127.0.0.1:" + std::to_string(p) + ": " + e);
    }
    WaitUntil(std::chrono::seconds(15), [&] {
      return std::all_of(ports_.begin(), ports_.end(), [](int p) { return Answers(p); });
    }, std::chrono::milliseconds(50));
  }

  // Where a slot of a removed node goes: its owner at construction (or that
  // shard's master now, if the owner is a replica after a failover); without
  // a noted layout, the master serving the slot before it.
  int HomeOf(int slot, const ClusterLayout& now) const {
    int owner = layout_.valid ? layout_.slot_owner[slot] : -1;
    if (owner > 0 && IsDev(owner)) {
      if (now.masters.count(owner) > 0) return owner;
      if (auto it = now.master_of.find(owner); it != now.master_of.end() && now.masters.count(it->second) > 0) {
        return it->second;
      }
    }
    for (int d = 1; d < kSlotCount; ++d) {
      for (int s : {slot - d, slot + d}) {
        if (s >= 0 && s < kSlotCount && now.masters.count(now.slot_owner[s]) > 0) return now.slot_owner[s];
      }
    }
    return now.masters.empty() ? -1 : *now.masters.begin();
  }

  // 3. Nodes other than the 6: their slots go home, then they are forgotten.
  void RemoveExtraNodes() {
    std::set<std::string> dev_ids;  // a dev node that does not answer is still not an extra node
    for (const auto& [port, id] : layout_.id) dev_ids.insert(id);
    for (int p : ports_) {
      std::string id = NodeId(p);
      if (id.size() == 40) dev_ids.insert(id);
    }
    std::map<std::string, ClusterNodeLine> extras;  // as the dev nodes see them
    for (int p : ports_) {
      for (auto& n : ClusterNodesOf(p)) {
        if (dev_ids.count(n.id) > 0 || IsDev(n.port) || n.flags.find("handshake") != std::string::npos) continue;
        auto& e = extras[n.id];
        if (e.id.empty() || (!n.slots.empty() && n.master)) e = n;
      }
    }
    if (extras.empty()) return;
    for (const auto& [id, node] : extras) {
      const bool alive = node.port > 0 && NodeId(node.port) == id;
      const std::string name = "extra node " + id.substr(0, 8) + " (127.0.0.1:" + std::to_string(node.port) + ", " +
                               (alive ? "alive" : "dead") + ")";
      ClusterLayout now = ReadLayout(ports_);
      std::vector<int> slots;
      for (auto [lo, hi] : node.slots) {
        for (int s = lo; s <= hi && s < kSlotCount; ++s) slots.push_back(s);
      }
      // A dev replica that follows it follows its noted master again.
      for (int p : ports_) {
        std::string repl = NodeCommandText(p, {"INFO", "replication"});
        if (InfoField(repl, "role") == "slave" && InfoField(repl, "master_port") == std::to_string(node.port)) {
          int home = layout_.valid && layout_.master_of.count(p) ? layout_.master_of.at(p) : -1;
          if (home > 0) Log("127.0.0.1:" + std::to_string(p) + " replicates 127.0.0.1:" + std::to_string(home) +
                            " again: " + NodeCommandText(p, {"CLUSTER", "REPLICATE", NodeId(home)}));
        }
      }
      std::vector<int> masters(now.masters.begin(), now.masters.end());
      if (alive && !slots.empty()) {
        std::vector<int> with_it = masters;
        with_it.push_back(node.port);
        std::string first_error;
        for (int s : slots) {
          std::string e = CloseSlot(s, HomeOf(s, now), with_it);
          if (!e.empty() && first_error.empty()) first_error = e;
        }
        Log(name + ": " + std::to_string(slots.size()) + " slot(s) and their keys moved back" +
            (first_error.empty() ? "" : " (first error: " + first_error + ")"));
      }
      std::string forget_errors;
      for (int p : ports_) {
        std::string r = NodeCommandText(p, {"CLUSTER", "FORGET", id});
        if (r != "OK" && r.find("Unknown node") == std::string::npos) forget_errors += " " + std::to_string(p) + ": " + r;
      }
      if (alive) {
        NodeCommandText(node.port, {"FLUSHALL"});
        NodeCommandText(node.port, {"CLUSTER", "RESET", "HARD"});
      }
      Log(name + " forgotten by the dev nodes" + (alive ? " and reset" : "") +
          (forget_errors.empty() ? "" : "; FORGET errors:" + forget_errors));
      if (!alive && !slots.empty()) {
        // Forgotten, its slots are unassigned everywhere: their homes take
        // them (ADDSLOTS), and gossip spreads it.
        std::map<int, std::vector<std::string>> by_home;
        for (int s : slots) by_home[HomeOf(s, now)].push_back(std::to_string(s));
        for (auto& [home, ss] : by_home) {
          std::vector<std::string> cmd{"CLUSTER", "ADDSLOTS"};
          cmd.insert(cmd.end(), ss.begin(), ss.end());
          Log(std::to_string(ss.size()) + " slot(s) of the dead " + name + " assigned to 127.0.0.1:" +
              std::to_string(home) + ": " + NodeCommandText(home, cmd));
        }
      }
    }
    WaitUntil(std::chrono::seconds(10), [&] {
      for (int p : ports_) {
        if (InfoField(NodeCommandText(p, {"CLUSTER", "INFO"}), "cluster_known_nodes") != std::to_string(ports_.size())) {
          return false;
        }
      }
      return true;
    }, std::chrono::milliseconds(50));
  }

  // 5. The masters and replicas noted at construction.
  void RestoreRoles() {
    for (int m : layout_.masters) {
      std::string repl = NodeCommandText(m, {"INFO", "replication"});
      if (InfoField(repl, "role") != "slave") continue;
      // A graceful failover needs the replica in sync with its master.
      bool linked = WaitUntil(std::chrono::seconds(20), [&] {
        return InfoField(NodeCommandText(m, {"INFO", "replication"}), "master_link_status") == "up";
      }, std::chrono::milliseconds(100));
      auto is_master = [&] {
        return InfoField(NodeCommandText(m, {"INFO", "replication"}), "role") == "master";
      };
      std::string how = linked ? "CLUSTER FAILOVER" : "CLUSTER FAILOVER FORCE";
      std::string r = NodeCommandText(m, linked ? std::vector<std::string>{"CLUSTER", "FAILOVER"}
                                                : std::vector<std::string>{"CLUSTER", "FAILOVER", "FORCE"});
      bool done = WaitUntil(std::chrono::seconds(10), is_master, std::chrono::milliseconds(100));
      if (!done) {
        how += ", then CLUSTER FAILOVER TAKEOVER";
        r += " / " + NodeCommandText(m, {"CLUSTER", "FAILOVER", "TAKEOVER"});
        done = WaitUntil(std::chrono::seconds(10), is_master, std::chrono::milliseconds(100));
      }
      Log("127.0.0.1:" + std::to_string(m) + " was a replica; " + how + ": " + r + (done ? ", master again" : ", FAILED"));
    }
    for (auto [r, m] : layout_.master_of) {
      std::string repl = NodeCommandText(r, {"INFO", "replication"});
      if (InfoField(repl, "role") == "slave" && InfoField(repl, "master_port") == std::to_string(m)) continue;
      std::string id = layout_.id.count(m) ? layout_.id.at(m) : NodeId(m);
      Log("127.0.0.1:" + std::to_string(r) + " follows 127.0.0.1:" + std::to_string(m) +
          " again (CLUSTER REPLICATE): " + NodeCommandText(r, {"CLUSTER", "REPLICATE", id}));
    }
    WaitUntil(std::chrono::seconds(15), [&] { return RolesAsNoted(); }, std::chrono::milliseconds(100));
  }

  // 4. Open slots: back to the master serving them, keys included.
  void CloseOpenSlots() {
    std::set<int> open;
    for (int p : ports_) {
      for (const auto& n : ClusterNodesOf(p)) {
        if (n.myself) open.insert(n.open_slots.begin(), n.open_slots.end());
      }
    }
    if (open.empty()) return;
    ClusterLayout now = ReadLayout(ports_);
    std::vector<int> masters(now.masters.begin(), now.masters.end());
    for (int s : open) {
      int owner = now.slot_owner[s];
      if (now.masters.count(owner) == 0) owner = HomeOf(s, now);
      std::string e;
      for (int attempt = 0; attempt < 3; ++attempt) {
        e = CloseSlot(s, owner, masters);
        if (e.empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      Log("open slot " + std::to_string(s) + " closed at 127.0.0.1:" + std::to_string(owner) +
          (e.empty() ? "" : " (error: " + e + ")"));
    }
  }

  // 6. The last resort.
  void RunFix() {
    std::string cmd = "timeout 120 redis-cli --cluster fix 127.0.0.1:" + std::to_string(ports_[0]) +
                      " --cluster-yes >/dev/null 2>&1";
    int rc = std::system(cmd.c_str());
    Log("redis-cli --cluster fix exited " + std::to_string(rc));
  }

  std::vector<int> ports_;
  bool active_ = false;
  ClusterLayout layout_;
  std::vector<std::string> actions_;
};

// The fixture form: SetUp notes the cluster, TearDown (which runs after a
// failed assertion too) restores it.
class ClusterRepairTest : public ::testing::Test {
 protected:
  void SetUp() override { guard_.emplace(); }
  void TearDown() override { guard_.reset(); }
  ClusterGuard& cluster_guard() { return *guard_; }

 private:
  std::optional<ClusterGuard> guard_;
};

}  // namespace tiercache::redis::testing

#endif  // TIERCACHE_TESTS_REDIS_CLUSTER_GUARD_H_
