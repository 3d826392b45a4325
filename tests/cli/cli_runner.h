// Running the built `tiercache` program from a test: to completion (Cli) or
// in the background (CliProcess, for `events tail`).
#ifndef TIERCACHE_TESTS_CLI_CLI_RUNNER_H_
#define TIERCACHE_TESTS_CLI_CLI_RUNNER_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/test_env.h"

#ifndef TIERCACHE_CLI_BIN
#error "TIERCACHE_CLI_BIN (the built program) must be defined by the build"
#endif

namespace tiercache::testing {

struct CliRun {
  int code = -1;
  std::string out, err;
};

inline std::string Slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The command line: the program, --timeout-ms `timeout_ms` (1000 unless
// given), --redis (the local cluster unless `redis` is given), then `args`.
inline std::string CliCommand(const std::vector<std::string>& args, const std::string& redis = "",
                              int timeout_ms = 1000) {
  const std::string seed = redis.empty() ? "127.0.0.1:" + std::to_string(RedisPortBase()) : redis;
  std::string cmd = std::string(TIERCACHE_CLI_BIN) + " --timeout-ms " + std::to_string(timeout_ms) + " --redis " +
                    Quote(seed);
  for (const std::string& a : args) cmd += " " + Quote(a);
  return cmd;
}

inline int ExitCodeOfWait(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

// Runs the program with `args` to its end.
inline CliRun Cli(const std::vector<std::string>& args, const std::string& redis = "", int timeout_ms = 1000) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path();
  const fs::path out = dir / ("cli-out-" + std::to_string(::getpid()));
  const fs::path err = dir / ("cli-err-" + std::to_string(::getpid()));
  const std::string cmd = CliCommand(args, redis, timeout_ms) + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.code = ExitCodeOfWait(status);
  r.out = Slurp(out);
  r.err = Slurp(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// The program running in the background; killed (SIGKILL) if still running
// when destroyed.
class CliProcess {
 public:
  explicit CliProcess(const std::vector<std::string>& args, int timeout_ms = 1000) {
    static int n = 0;
    const auto dir = std::filesystem::temp_directory_path();
    const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(++n);
    out_ = dir / ("cli-bg-out-" + tag);
    err_ = dir / ("cli-bg-err-" + tag);
    const std::string cmd = "exec " + CliCommand(args, "", timeout_ms) + " >" + out_.string() + " 2>" + err_.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~CliProcess() {
    if (pid_ > 0 && code_ < 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::filesystem::remove(out_);
    std::filesystem::remove(err_);
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  bool started() const { return pid_ > 0; }
  void Signal(int sig) const { ::kill(pid_, sig); }
  // True once it exited (its code in code()), false if still running after `timeout`.
  bool Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (code_ < 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        code_ = ExitCodeOfWait(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  int code() const { return code_; }
  std::string out() const { return Slurp(out_); }
  std::string err() const { return Slurp(err_); }

 private:
  pid_t pid_ = -1;
  int code_ = -1;
  std::filesystem::path out_, err_;
};

inline std::string Show(const CliRun& r) {
  return "exit " + std::to_string(r.code) + "\nstdout:\n" + r.out + "stderr:\n" + r.err;
}

inline bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_CLI_CLI_RUNNER_H_
