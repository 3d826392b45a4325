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
#include <vector>

#include "common/raw_cluster.h"
#include "common/test_env.h"
#include "tiercache/redis/options.h"

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
      for (int i = 0; i < 100 && ::kill(pid_, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
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

}  // namespace tiercache::redis::testing

#endif  // TIERCACHE_TESTS_REDIS_REDIS_TEST_UTIL_H_
