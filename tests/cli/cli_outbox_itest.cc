// `tiercache outbox status` against the local PostgreSQL, in schemas of its
// own (search_path), so its rows never meet the outbox tests' relays; and
// against fake servers in this process that answer the startup and then
// never a query, or never even the startup, or with an error too large to
// read: the promise that --timeout-ms bounds the whole command (and
// connect_timeout each of several hosts), the user's own options (conninfo,
// URI, PGOPTIONS), the exit codes, no password in any output (a URI with an
// unescaped '@' or '/' in its password refused), and a query that reads the
// partial index of unsent rows instead of the whole table.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli/cli_runner.h"
#include "common/test_env.h"
#include "tiercache/outbox.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::CliRun;
using testing::Contains;
using testing::Quote;
using testing::Show;

// A run of the program and how long it took (from this side: the process's
// start included).
struct Timed {
  CliRun r;
  milliseconds took{0};
};

// `[env ENV] tiercache --timeout-ms T ARGS...`, to its end.
Timed RunCli(const std::vector<std::string>& args, int timeout_ms, const std::string& env = "") {
  namespace fs = std::filesystem;
  static std::atomic<int> n{0};
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(++n);
  const fs::path out = fs::temp_directory_path() / ("cli-outbox-out-" + tag);
  const fs::path err = fs::temp_directory_path() / ("cli-outbox-err-" + tag);
  std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(TIERCACHE_CLI_BIN) + " --timeout-ms " +
                    std::to_string(timeout_ms);
  for (const std::string& a : args) cmd += " " + Quote(a);
  const auto start = steady_clock::now();
  const int status = std::system((cmd + " >" + out.string() + " 2>" + err.string()).c_str());
  Timed t;
  t.took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
  t.r.code = testing::ExitCodeOfWait(status);
  t.r.out = testing::Slurp(out);
  t.r.err = testing::Slurp(err);
  fs::remove(out);
  fs::remove(err);
  return t;
}

Timed RunStatus(const std::string& pg, int timeout_ms = 2000, const std::string& env = "") {
  return RunCli({"outbox", "status", "--pg", pg}, timeout_ms, env);
}

std::string ShowTimed(const Timed& t) { return Show(t.r) + "took " + std::to_string(t.took.count()) + " ms\n"; }

int StderrLines(const CliRun& r) { return static_cast<int>(std::count(r.err.begin(), r.err.end(), '\n')); }

bool Exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) ADD_FAILURE() << sql << ": " << PQerrorMessage(c);
  PQclear(r);
  return ok;
}

// ---------------------------------------------------------------------------
// A fake PostgreSQL server on 127.0.0.1 (an ephemeral port): each connection
// is held open until the server is destroyed (or for kHold at most, so a
// client that never gives up still ends), and answered by `Mode`.
class FakePg {
 public:
  enum class Mode {
    kSilent,        // accepts the TCP connection and never sends a byte
    kNoQueryReply,  // completes the startup (AuthenticationOk ... ReadyForQuery), never answers a query
    kAuthFails,     // answers the startup with FATAL 28P01
    kHugeError,     // answers the startup with an ErrorResponse whose message ('M') is 2 MB
    kLongError,     // answers the startup with FATAL 28000 whose message is 20,000 bytes
  };
  static constexpr milliseconds kHold = 5000ms;

  explicit FakePg(Mode mode) : mode_(mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        ::pipe(stop_) != 0) {
      ADD_FAILURE() << "fake server: cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakePg() {
    if (thread_.joinable()) {
      ::close(stop_[1]);  // readable (EOF) for every poll below
      thread_.join();
      ::close(stop_[0]);
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  FakePg(const FakePg&) = delete;
  FakePg& operator=(const FakePg&) = delete;

  int port() const { return port_; }
  std::string Conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=x user=x password=Hunter2";
  }

 private:
  void Serve() {
    std::vector<std::thread> handlers;
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) break;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) handlers.emplace_back([this, fd] { Handle(fd); });
    }
    for (std::thread& h : handlers) h.join();
  }

  // Waits for `fd` to be readable before `deadline`; false when stopped or late.
  bool Readable(int fd, steady_clock::time_point deadline) const {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    return ::poll(fds, 2, static_cast<int>(left)) > 0 && fds[1].revents == 0;
  }

  bool ReadN(int fd, char* buf, size_t n, steady_clock::time_point deadline) const {
    for (size_t got = 0; got < n;) {
      if (!Readable(fd, deadline)) return false;
      const ssize_t r = ::read(fd, buf + got, n - got);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }

  static uint32_t Be32(const char* p) {
    return (uint32_t{static_cast<unsigned char>(p[0])} << 24) | (uint32_t{static_cast<unsigned char>(p[1])} << 16) |
           (uint32_t{static_cast<unsigned char>(p[2])} << 8) | uint32_t{static_cast<unsigned char>(p[3])};
  }
  static std::string Int32(uint32_t v) {
    return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  }
  static std::string Message(char type, const std::string& body) {
    return std::string(1, type) + Int32(static_cast<uint32_t>(body.size() + 4)) + body;
  }
  static std::string Cstr(const std::string& s) { return s + std::string(1, '\0'); }

  // Writes all of `data` (a client that hung up: false, no SIGPIPE).
  bool SendAll(int fd, const std::string& data, steady_clock::time_point deadline) const {
    for (size_t sent = 0; sent < data.size();) {
      const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()).count();
      pollfd fds[2] = {{fd, POLLOUT, 0}, {stop_[0], POLLIN, 0}};
      if (left <= 0 || ::poll(fds, 2, static_cast<int>(left)) <= 0 || fds[1].revents != 0) return false;
    }
    return true;
  }

  // Reads the startup packet, answering SSLRequest / GSSENCRequest with 'N'.
  // False for a cancel request or when the client went away.
  bool ReadStartup(int fd, steady_clock::time_point deadline) const {
    for (;;) {
      char head[8];
      if (!ReadN(fd, head, sizeof head, deadline)) return false;
      const uint32_t len = Be32(head), code = Be32(head + 4);
      if (code == 80877103 || code == 80877104) {  // SSLRequest, GSSENCRequest: not supported
        if (::send(fd, "N", 1, MSG_NOSIGNAL) != 1) return false;
        continue;
      }
      if (code == 80877102 || len < 8 || len > 10000) return false;  // CancelRequest (or garbage)
      std::string rest(len - 8, '\0');
      return ReadN(fd, rest.data(), rest.size(), deadline);
    }
  }

  std::string Answer() const {
    if (mode_ == Mode::kHugeError || mode_ == Mode::kLongError) {
      const size_t n = mode_ == Mode::kHugeError ? 2u << 20 : 20000u;
      return Message('E', Cstr("SFATAL") + Cstr("VFATAL") + Cstr("C28000") + Cstr("M" + std::string(n, 'x')) +
                              std::string(1, '\0'));
    }
    if (mode_ == Mode::kAuthFails) {
      return Message('E', Cstr("SFATAL") + Cstr("VFATAL") + Cstr("C28P01") +
                              Cstr("Mpassword authentication failed for user \"x\"") + std::string(1, '\0'));
    }
    std::string a = Message('R', Int32(0));  // AuthenticationOk
    for (const auto& [name, value] : {std::pair<std::string, std::string>{"server_version", "15.0"},
                                      {"client_encoding", "UTF8"},
                                      {"standard_conforming_strings", "on"},
                                      {"integer_datetimes", "on"}}) {
      a += Message('S', Cstr(name) + Cstr(value));
    }
    a += Message('K', Int32(4242) + Int32(77));  // BackendKeyData
    return a + Message('Z', "I");                // ReadyForQuery, idle
  }

  void Handle(int fd) const {
    const auto deadline = steady_clock::now() + kHold;
    if (mode_ != Mode::kSilent && ReadStartup(fd, deadline)) {
      const std::string a = Answer();
      if (SendAll(fd, a, deadline) && mode_ == Mode::kNoQueryReply) {
        char sink[4096];  // queries: read and never answered
        while (Readable(fd, deadline) && ::read(fd, sink, sizeof sink) > 0) {
        }
      }
    } else if (mode_ == Mode::kSilent) {
      while (Readable(fd, deadline)) {
        char sink[4096];
        if (::read(fd, sink, sizeof sink) <= 0) break;
      }
    }
    ::close(fd);
  }

  Mode mode_;
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

// An open transaction holding ACCESS EXCLUSIVE on `table` until destroyed,
// or for `hold` at most (so a client that waits for it ends anyway).
class TableLock {
 public:
  TableLock(const std::string& table, milliseconds hold) {
    conn_ = PQconnectdb(testing::PgConnString().c_str());
    if (PQstatus(conn_) != CONNECTION_OK || !Exec(conn_, "BEGIN") ||
        !Exec(conn_, "LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE")) {
      ADD_FAILURE() << "cannot lock " << table;
    }
    releaser_ = std::thread([this, hold] {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, hold, [this] { return done_; });
      Exec(conn_, "ROLLBACK");
    });
  }
  ~TableLock() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    releaser_.join();
    PQfinish(conn_);
  }
  TableLock(const TableLock&) = delete;
  TableLock& operator=(const TableLock&) = delete;

 private:
  PGconn* conn_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread releaser_;
};

// Cancels (pg_cancel_backend: SQLSTATE 57014 for the client) the first other
// backend found waiting for a lock on a query that reads tiercache_outbox,
// polling for up to 5 s.
void CancelTheLockWaiter() {
  PGconn* c = PQconnectdb(testing::PgConnString().c_str());
  const auto deadline = steady_clock::now() + 5s;
  while (PQstatus(c) == CONNECTION_OK && steady_clock::now() < deadline) {
    PGresult* r = PQexec(c,
                         "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                         "AND wait_event_type = 'Lock' AND query LIKE '%FROM tiercache_outbox%'");
    const bool cancelled = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    if (cancelled) break;
    std::this_thread::sleep_for(20ms);
  }
  PQfinish(c);
}

class CliOutboxItest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("postgresql", testing::PgPort());
    admin_ = PQconnectdb(testing::PgConnString().c_str());
    ASSERT_EQ(PQstatus(admin_), CONNECTION_OK) << PQerrorMessage(admin_);
    Exec(admin_, "SET client_min_messages = warning");  // no "drop cascades to ..."
  }
  void TearDown() override {
    if (admin_ == nullptr) return;
    for (const std::string& s : schemas_) Exec(admin_, "DROP SCHEMA IF EXISTS " + s + " CASCADE");
    PQfinish(admin_);
  }

  // A new, empty schema (dropped at the end), with the outbox's tables when
  // `migrate`; its name.
  std::string Schema(const std::string& suffix, bool migrate) {
    const std::string s = "cli_outbox_" + std::to_string(::getpid()) + "_" + suffix;
    schemas_.push_back(s);
    Exec(admin_, "DROP SCHEMA IF EXISTS " + s + " CASCADE");
    EXPECT_TRUE(Exec(admin_, "CREATE SCHEMA " + s));
    if (migrate) {
      const Status m = outbox::MigrateOutbox(InSchema(s), 4);
      EXPECT_TRUE(m.ok()) << m.ToString();
    }
    return s;
  }
  static std::string InSchema(const std::string& schema) {
    return testing::PgConnString() + " options='-c search_path=" + schema + "'";
  }
  // `unsent` rows as the writer leaves them, and `sent` ones as the relay does.
  void Rows(const std::string& schema, int unsent, int sent) {
    const std::string insert = "INSERT INTO " + schema +
                               ".tiercache_outbox (shard, seq, topic, key, payload, sent_at) "
                               "SELECT g % 4, g, 'cli.test.v1', 'community:' || g, '\\x7b7d', ";
    EXPECT_TRUE(Exec(admin_, insert + "NULL FROM generate_series(1, " + std::to_string(unsent) + ") g"));
    EXPECT_TRUE(Exec(admin_, insert + "now() FROM generate_series(1, " + std::to_string(sent) + ") g"));
  }

  PGconn* admin_ = nullptr;
  std::vector<std::string> schemas_;
};

TEST_F(CliOutboxItest, CountsWhatIsNotSentAndHowOldItIs) {
  const std::string schema = Schema("counts", true);
  const std::string conninfo = InSchema(schema);
  Timed t = RunStatus(conninfo);
  ASSERT_EQ(t.r.code, 0) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "unsent       0 rows\n")) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "oldest       none\n")) << ShowTimed(t);

  PGconn* c = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  Result<outbox::OutboxWriter> writer = outbox::OutboxWriter::Create(c);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE(Exec(c, "BEGIN"));
  std::vector<outbox::OutboxEvent> events;
  for (int i = 0; i < 3; ++i) events.push_back({"cli.test.v1", "community:" + std::to_string(i), "{}", {}});
  ASSERT_TRUE(writer->Append(c, events).ok());
  ASSERT_TRUE(Exec(c, "COMMIT"));
  PQfinish(c);
  Rows(schema, 0, 40);
  ASSERT_TRUE(Exec(admin_, "ANALYZE " + schema + ".tiercache_outbox"));
  std::this_thread::sleep_for(100ms);
  t = RunStatus(conninfo);
  ASSERT_EQ(t.r.code, 0) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "unsent       3 rows\n")) << ShowTimed(t);
  int age = -1;
  const size_t at = t.r.out.find("oldest       ");
  if (at != std::string::npos) age = std::atoi(t.r.out.c_str() + at + 13);
  EXPECT_GE(age, 100) << ShowTimed(t);
  EXPECT_LT(age, 60000) << ShowTimed(t);
  // Sent rows: the statistics' estimate (43 rows analyzed, 3 of them unsent).
  EXPECT_TRUE(Contains(t.r.out, "sent, kept   ~40 rows (estimate")) << ShowTimed(t);
  EXPECT_EQ(t.r.err, "") << ShowTimed(t);
}

// (1a) The client's own deadline: a server that completes the startup and
// then never answers (statement_timeout, server-side, cannot help), and one
// that accepts the TCP connection and never answers the startup (libpq's
// connect_timeout is 2 s at least).
TEST_F(CliOutboxItest, GivesUpAtTheTimeoutOnAServerThatNeverAnswers) {
  for (const FakePg::Mode mode : {FakePg::Mode::kNoQueryReply, FakePg::Mode::kSilent}) {
    const char* what = mode == FakePg::Mode::kSilent ? "no answer to the startup" : "no answer to the query";
    FakePg server(mode);
    const Timed t = RunStatus(server.Conninfo(), 500);
    EXPECT_EQ(t.r.code, 4) << what << "\n" << ShowTimed(t);
    EXPECT_LT(t.took, 1500ms) << what << "\n" << ShowTimed(t);
    EXPECT_EQ(StderrLines(t.r), 1) << what << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, "DEADLINE_EXCEEDED")) << what << "\n" << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.err + t.r.out, "Hunter2")) << what << "\n" << ShowTimed(t);
  }
}

// (1b) A lock wait, with the user's own `options` in the conninfo (which used
// to drop the statement_timeout the tool added).
TEST_F(CliOutboxItest, GivesUpAtTheTimeoutOnALockWaitWithTheUsersOwnOptions) {
  const std::string schema = Schema("lock", true);
  TableLock lock(schema + ".tiercache_outbox", 5000ms);
  const Timed t = RunStatus(InSchema(schema), 500);
  EXPECT_EQ(t.r.code, 4) << ShowTimed(t);
  EXPECT_LT(t.took, 2000ms) << ShowTimed(t);
  EXPECT_EQ(StderrLines(t.r), 1) << ShowTimed(t);
}

// (1c) A postgresql:// URI, with options in its query string.
TEST_F(CliOutboxItest, AcceptsAUri) {
  const std::string schema = Schema("uri", true);
  Rows(schema, 2, 0);
  const std::string uri = "postgresql://postgres@127.0.0.1:" + std::to_string(testing::PgPort()) +
                          "/tiercache?options=-c%20search_path%3D" + schema;
  const Timed t = RunStatus(uri);
  EXPECT_EQ(t.r.code, 0) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "unsent       2 rows\n")) << ShowTimed(t);
}

// (1d) PGOPTIONS (libpq's default for `options`) is respected.
TEST_F(CliOutboxItest, RespectsPgoptions) {
  const std::string schema = Schema("pgoptions", true);
  Rows(schema, 7, 0);
  const Timed t = RunStatus(testing::PgConnString(), 2000, "PGOPTIONS=" + Quote("-c search_path=" + schema));
  EXPECT_EQ(t.r.code, 0) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "unsent       7 rows\n")) << ShowTimed(t);
}

// (2) The password, in TIERCACHE_PG or --pg, is never printed: not as --help's
// default, not in libpq's parse errors (which quote the input).
TEST_F(CliOutboxItest, NeverPrintsThePassword) {
  const std::string secret = testing::PgConnString() + " password=Hunter2";
  const Timed help = RunCli({"outbox", "status", "--help"}, 1000, "TIERCACHE_PG=" + Quote(secret));
  EXPECT_EQ(help.r.code, 0) << ShowTimed(help);
  EXPECT_TRUE(Contains(help.r.out, "TIERCACHE_PG")) << ShowTimed(help);
  EXPECT_FALSE(Contains(help.r.out + help.r.err, "Hunter2")) << ShowTimed(help);
  for (const std::string& bad : {std::string("host=127.0.0.1 password=Hunter2 secret"),
                                 std::string("postgresql://postgres:Hunter2%zzsecret@127.0.0.1/tiercache"),
                                 std::string("host=127.0.0.1 password='Hunter2")}) {
    const Timed t = RunStatus(bad);
    EXPECT_EQ(t.r.code, 2) << bad << "\n" << ShowTimed(t);
    EXPECT_EQ(t.r.err, "tiercache: outbox status: INVALID_ARGUMENT: --pg is not a valid libpq connection string\n")
        << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "Hunter2")) << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "secret")) << ShowTimed(t);
  }
}

// (3) Exit codes: 2 a malformed conninfo, 5 the server's error, 4 no answer
// (unreachable, timed out, the query cancelled). One line on stderr each,
// and never the password given.
TEST_F(CliOutboxItest, ExitCodesTellMalformedFromServerErrorsFromNoAnswer) {
  const std::string pg = testing::PgConnString() + " password=Hunter2";
  const std::string no_table = Schema("notable", false);
  const std::string with_table = Schema("table", true);
  FakePg silent(FakePg::Mode::kSilent);
  FakePg refuses(FakePg::Mode::kAuthFails);
  struct Case {
    std::string what, pg;
    int code;
    std::string says;
    std::function<void()> during;  // on a thread while the program runs
  };
  const Case cases[] = {
      {"malformed key=value", "host=127.0.0.1 port", 2, "not a valid libpq connection string", nullptr},
      {"malformed URI", "postgresql://postgres:Hunter2%zz@127.0.0.1/x", 2, "not a valid libpq connection", nullptr},
      {"no such database", pg + " dbname=tiercache_no_such_db", 5, "does not exist", nullptr},
      {"no such role", pg + " user=tiercache_no_such_role", 5, "tiercache_no_such_role", nullptr},
      {"authentication failed", refuses.Conninfo(), 5, "password authentication failed", nullptr},
      {"no outbox table", InSchema(no_table) + " password=Hunter2", 5, "tiercache_outbox", nullptr},
      {"nothing listens", "host=127.0.0.1 port=1 dbname=x user=x password=Hunter2", 4, "UNAVAILABLE", nullptr},
      {"no answer to the startup", silent.Conninfo(), 4, "DEADLINE_EXCEEDED", nullptr},
      {"query cancelled (57014)", InSchema(with_table) + " password=Hunter2", 4, "57014", CancelTheLockWaiter},
  };
  for (const Case& c : cases) {
    std::optional<TableLock> lock;
    std::thread during;
    if (c.during) {
      lock.emplace(with_table + ".tiercache_outbox", 5000ms);
      during = std::thread(c.during);
    }
    const Timed t = RunStatus(c.pg, c.during ? 4000 : 1000);
    if (during.joinable()) during.join();
    lock.reset();
    EXPECT_EQ(t.r.code, c.code) << c.what << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, c.says)) << c.what << "\n" << ShowTimed(t);
    EXPECT_EQ(StderrLines(t.r), 1) << c.what << "\n" << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "Hunter2")) << c.what << "\n" << ShowTimed(t);
  }
}

// (4) Unsent rows are counted through the partial index tiercache_outbox_unsent,
// not by reading the whole table. The plan is that of the query the program
// runs, logged by auto_explain (loaded by the conninfo's options) as a NOTICE
// the program forwards to stderr. 20,000 sent rows and 5 unsent ones, analyzed:
// the planner would scan the table if the WHERE clause did not match the
// index's predicate.
TEST_F(CliOutboxItest, CountsUnsentRowsThroughThePartialIndex) {
  const std::string schema = Schema("plan", true);
  Rows(schema, 5, 20000);
  ASSERT_TRUE(Exec(admin_, "ANALYZE " + schema + ".tiercache_outbox"));
  const std::string conninfo = testing::PgConnString() + " options='-c search_path=" + schema +
                               " -c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0"
                               " -c auto_explain.log_level=notice'";
  const Timed t = RunStatus(conninfo);
  ASSERT_EQ(t.r.code, 0) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "unsent       5 rows\n")) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.out, "sent, kept   ~20000 rows (estimate")) << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.err, "plan:")) << "auto_explain's plan expected on stderr\n" << ShowTimed(t);
  EXPECT_TRUE(Contains(t.r.err, "tiercache_outbox_unsent")) << ShowTimed(t);
  EXPECT_FALSE(Contains(t.r.err, "Seq Scan on tiercache_outbox")) << ShowTimed(t);
}

// (5) A URI whose password holds an unescaped '@' or '/' parses, but not as
// meant: libpq would take part of the password for the host, the port or
// the database name, and quote it in its error (after a DNS lookup of it).
// Refused before connecting, naming the option but not its value. A Unix
// socket directory (a host starting with '/') is still a host.
TEST_F(CliOutboxItest, RefusesAUriWhosePasswordHasAnUnescapedAtOrSlash) {
  const std::string port = std::to_string(testing::PgPort());
  const struct {
    std::string uri, says;
  } refused[] = {
      {"postgresql://postgres:p@SECRETPW@127.0.0.1:" + port + "/tiercache", "--pg: the host contains '@' or '/'"},
      {"postgresql://postgres:SECRET/PW@127.0.0.1:" + port + "/tiercache", "--pg: the port is not a number"},
      {"postgresql://postgres:1234/SECRET@127.0.0.1:" + port + "/tiercache", "--pg: the URI's database name"},
      {"host=127.0.0.1,SECRET@x port=" + port + " dbname=tiercache", "--pg: the host contains '@' or '/'"},
      {"host=127.0.0.1 port=" + port + ",SECRET dbname=tiercache", "--pg: the port is not a number"},
  };
  for (const auto& c : refused) {
    const Timed t = RunStatus(c.uri);
    EXPECT_EQ(t.r.code, 2) << c.uri << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, c.says)) << c.uri << "\n" << ShowTimed(t);
    EXPECT_EQ(StderrLines(t.r), 1) << c.uri << "\n" << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "SECRET")) << c.uri << "\n" << ShowTimed(t);
  }
  // Percent-encoded, the same password is fine (the dev server trusts local
  // connections: it is not checked).
  const std::string schema = Schema("socket", true);
  const Timed encoded = RunStatus("postgresql://postgres:p%40SECRET%2FPW@127.0.0.1:" + port +
                                  "/tiercache?options=-c%20search_path%3D" + schema);
  EXPECT_EQ(encoded.r.code, 0) << ShowTimed(encoded);
  EXPECT_FALSE(Contains(encoded.r.out + encoded.r.err, "SECRET")) << ShowTimed(encoded);

  // A Unix socket directory: not refused (no such directory: "no answer").
  for (const std::string& missing : {"host=/nonexistent/tiercache-test port=" + port + " dbname=tiercache",
                                     "postgresql:///tiercache?host=/nonexistent/tiercache-test&port=" + port}) {
    const Timed t = RunStatus(missing);
    EXPECT_EQ(t.r.code, 4) << missing << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, "/nonexistent/tiercache-test")) << missing << "\n" << ShowTimed(t);
  }
  // The dev server's own socket directory, when it has one: connects.
  PGresult* r = PQexec(admin_, "SHOW unix_socket_directories");
  std::string dir = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  dir = dir.substr(0, dir.find(','));
  if (dir.empty() || dir[0] != '/' || !std::filesystem::exists(dir + "/.s.PGSQL." + port)) {
    GTEST_SKIP() << "the dev server has no Unix socket to try ('" << dir << "')";
  }
  for (const std::string& socket :
       {"host=" + dir + " port=" + port + " dbname=tiercache user=postgres options='-c search_path=" + schema + "'",
        "postgresql:///tiercache?host=" + dir + "&port=" + port + "&user=postgres&options=-c%20search_path%3D" +
            schema}) {
    const Timed t = RunStatus(socket);
    EXPECT_EQ(t.r.code, 0) << socket << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.out, "unsent       0 rows\n")) << socket << "\n" << ShowTimed(t);
  }
}

// (6) Defence in depth: whatever libpq's message quotes, the password (the
// password option's value, a URI's user-info and the pieces of its
// password) is taken out of it before it is printed. Here the host name is
// the password (so libpq's "could not translate host name" quotes it).
TEST_F(CliOutboxItest, TakesThePasswordOutOfLibpqsMessages) {
  for (const std::string& pg : {std::string("host=SECRETPW.invalid dbname=x user=x password=SECRETPW"),
                                std::string("postgresql://x@SECRETPW.invalid/x?password=SECRETPW"),
                                std::string("postgresql://x:SECRETPW@SECRETPW.invalid/x"),
                                std::string("postgresql://x:ab%40SECRETPW@SECRETPW.invalid/x")}) {
    const Timed t = RunStatus(pg);
    EXPECT_EQ(t.r.code, 4) << pg << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, "could not translate host name")) << pg << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, ".invalid")) << pg << "\n" << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "SECRETPW")) << pg << "\n" << ShowTimed(t);
  }
}

// (7) connect_timeout (or PGCONNECT_TIMEOUT) with several hosts: a first
// host that accepts the TCP connection and never answers is given up after
// connect_timeout (2 s at least, as libpq counts it), and the next host
// tried, within the one --timeout-ms.
TEST_F(CliOutboxItest, ConnectTimeoutMovesOnToTheNextHost) {
  const std::string schema = Schema("hosts", true);
  Rows(schema, 3, 0);
  FakePg silent(FakePg::Mode::kSilent);
  const std::string ports = std::to_string(silent.port()) + "," + std::to_string(testing::PgPort());
  const std::string kv = "host=127.0.0.1,127.0.0.1 port=" + ports +
                         " dbname=tiercache user=postgres options='-c search_path=" + schema + "'";
  const std::string uri = "postgresql://postgres@127.0.0.1:" + std::to_string(silent.port()) + ",127.0.0.1:" +
                          std::to_string(testing::PgPort()) + "/tiercache?options=-c%20search_path%3D" + schema;
  const struct {
    std::string what, pg, env;
  } cases[] = {
      {"connect_timeout=1", kv + " connect_timeout=1", ""},
      {"PGCONNECT_TIMEOUT=2", kv, "PGCONNECT_TIMEOUT=2"},
      {"URI, connect_timeout=2", uri + "&connect_timeout=2", ""},
  };
  for (const auto& c : cases) {
    const Timed t = RunStatus(c.pg, 5000, c.env);
    EXPECT_EQ(t.r.code, 0) << c.what << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.out, "unsent       3 rows\n")) << c.what << "\n" << ShowTimed(t);
    EXPECT_GE(t.took, 1900ms) << c.what << "\n" << ShowTimed(t);
    EXPECT_LT(t.took, 3000ms) << c.what << "\n" << ShowTimed(t);
  }
  // The overall deadline still bounds it: both hosts silent, connect_timeout
  // longer than --timeout-ms.
  FakePg silent2(FakePg::Mode::kSilent);
  const Timed t = RunStatus("host=127.0.0.1,127.0.0.1 port=" + std::to_string(silent.port()) + "," +
                                std::to_string(silent2.port()) + " dbname=x user=x connect_timeout=10",
                            800);
  EXPECT_EQ(t.r.code, 4) << ShowTimed(t);
  EXPECT_LT(t.took, 1800ms) << ShowTimed(t);
  EXPECT_EQ(StderrLines(t.r), 1) << ShowTimed(t);
}

// (8) The server answered, though not with a query's result: "server
// refused" (5), not "no answer" (4). sslmode=require against a server
// without SSL (the dev server), and a startup answered by an ErrorResponse
// too large for libpq to read (2 MB) or merely long: one line, cut to about
// 300 characters.
TEST_F(CliOutboxItest, AServerThatRefusesSslOrSendsAHugeErrorIsAServerError) {
  PGresult* r = PQexec(admin_, "SHOW ssl");
  const bool ssl = PQresultStatus(r) == PGRES_TUPLES_OK && std::string(PQgetvalue(r, 0, 0)) == "on";
  PQclear(r);
  if (!ssl) {
    const Timed t = RunStatus(testing::PgConnString() + " sslmode=require");
    EXPECT_EQ(t.r.code, 5) << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, "SSL")) << ShowTimed(t);
    EXPECT_EQ(StderrLines(t.r), 1) << ShowTimed(t);
  }
  for (const FakePg::Mode mode : {FakePg::Mode::kHugeError, FakePg::Mode::kLongError}) {
    const char* what = mode == FakePg::Mode::kHugeError ? "2 MB error" : "20,000-byte error";
    FakePg server(mode);
    const Timed t = RunStatus(server.Conninfo(), 2000);
    EXPECT_EQ(t.r.code, 5) << what << "\n" << ShowTimed(t);
    EXPECT_EQ(StderrLines(t.r), 1) << what << "\n" << ShowTimed(t);
    EXPECT_LT(t.r.err.size(), 450u) << what << "\n" << ShowTimed(t);
    EXPECT_TRUE(Contains(t.r.err, "cannot connect: ")) << what << "\n" << ShowTimed(t);
    EXPECT_FALSE(t.r.err.ends_with(": \n") || t.r.err.ends_with(":\n"))
        << "a message, not an empty one: " << what << "\n" << ShowTimed(t);
    EXPECT_FALSE(Contains(t.r.out + t.r.err, "Hunter2")) << what << "\n" << ShowTimed(t);
  }
}

}  // namespace
}  // namespace tiercache
