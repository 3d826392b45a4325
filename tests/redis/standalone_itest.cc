// Standalone (non-cluster) Redis through the same API, on servers the test
// starts itself: the basic commands, and what happens to commands in flight
// when the connection breaks (idempotent ones resent, others failed because
// they may have run).
#include <gtest/gtest.h>
#include <signal.h>

#include <future>
#include <thread>

#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using testing::ServerProcess;

bool HaveRedisServer() { return std::system("command -v redis-server >/dev/null 2>&1") == 0; }

RedisClientOptions Standalone(int port) {
  RedisClientOptions o;
  o.mode = Mode::kStandalone;
  o.seeds = {Endpoint{"127.0.0.1", port}};
  return o;
}

TEST(StandaloneTest, SameApiAsTheCluster) {
  if (!HaveRedisServer()) GTEST_SKIP() << "redis-server is not installed";
  ServerProcess server(testing::FreePort(), {});
  ASSERT_TRUE(server.ok());
  auto client = RedisClient::Create(Standalone(server.port()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto& c = **client;
  ASSERT_TRUE(c.Set("a", "1").ok());
  ASSERT_TRUE(c.Set("b", "2").ok());
  auto values = c.MGet({"a", "missing", "b"});
  ASSERT_TRUE(values.ok());
  EXPECT_EQ((*values)[0].value_or(""), "1");
  EXPECT_FALSE((*values)[1].has_value());
  EXPECT_EQ((*values)[2].value_or(""), "2");
  auto results = c.Pipeline({{"INCR", "n"}, {"INCR", "n"}, {"GET", "n"}});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[1]->integer, 2);
  EXPECT_EQ(results[2]->str, "2");
  Script script("return redis.call('GET', KEYS[1])");
  auto r = c.Eval(script, {"a"}, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->str, "1");
  EXPECT_EQ(*c.Del({"a", "b", "n"}), 3);
}

TEST(StandaloneTest, OnlyIdempotentCommandsAreResentAfterTheConnectionBreaks) {
  if (!HaveRedisServer()) GTEST_SKIP() << "redis-server is not installed";
  int port = testing::FreePort();
  auto first = std::make_unique<ServerProcess>(port, std::vector<std::string>{});
  ASSERT_TRUE(first->ok());
  RedisClientOptions o = Standalone(port);
  o.command_timeout = 4000ms;
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Set("k", "v").ok());  // connection established

  // Both commands reach the socket of a stopped server, which then dies.
  ASSERT_EQ(::kill(first->pid(), SIGSTOP), 0);
  CommandOptions incr_opts;  // INCR: not idempotent
  auto incr = (*client)->CommandFuture({"INCR", "counter"}, incr_opts);
  CommandOptions get_opts;
  get_opts.idempotent = true;
  auto get = (*client)->CommandFuture({"GET", "k"}, get_opts);
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(::kill(first->pid(), SIGKILL), 0);
  first.reset();

  auto incr_result = incr.get();
  ASSERT_FALSE(incr_result.ok());
  EXPECT_TRUE(incr_result.status().IsUnavailable()) << incr_result.status().ToString();
  EXPECT_NE(incr_result.status().message().find("may have run"), std::string_view::npos);

  // A new server on the same port: the GET is resent there and answers.
  ServerProcess second(port, {});
  ASSERT_TRUE(second.ok());
  auto get_result = get.get();
  ASSERT_TRUE(get_result.ok()) << get_result.status().ToString();
  EXPECT_TRUE(get_result->IsNil());  // the new server is empty
}

// A lone sync caller borrows the idle connection (direct I/O) and gives up
// on a reply the server still owes (BLPOP). Handing the connection back to
// the I/O thread is the engine's own work: it must not be refused because
// callers' requests fill max_outstanding_requests, or the connection stays
// unusable for good and every later call fails with RESOURCE_EXHAUSTED.
TEST(StandaloneTest, AConnectionHandedBackUnderAFullRequestLimitServesAgain) {
  ServerProcess server(testing::FreePort(), {});
  ASSERT_TRUE(server.ok());
  RedisClientOptions o = Standalone(server.port());
  o.max_outstanding_requests = 1;
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto& c = **client;
  ASSERT_TRUE(c.Set("give-back", "v").ok());  // connected and idle: lendable

  // The borrower: BLPOP holds the reply for 500 ms, the call gives up at 300.
  auto blocked = std::async(std::launch::async, [&] {
    CommandOptions call;
    call.call.timeout = 300ms;
    return c.Command({"BLPOP", "give-back:list", "0.5"}, call);
  });
  // Meanwhile an async request takes the only slot of the limit; it waits
  // for the borrowed connection.
  std::this_thread::sleep_for(100ms);
  std::promise<Result<Reply>> queued;
  CommandOptions get;
  get.call.timeout = 2s;
  c.CommandAsync({"GET", "give-back"}, get, [&](Result<Reply> r) { queued.set_value(std::move(r)); });

  Result<Reply> b = blocked.get();
  EXPECT_EQ(b.status().code(), StatusCode::kDeadlineExceeded) << b.status().ToString();
  Result<Reply> q = queued.get_future().get();
  ASSERT_TRUE(q.ok()) << "the request queued behind the borrower: " << q.status().ToString();
  EXPECT_EQ(q->str, "v");
  // And the client serves as before.
  for (int i = 0; i < 5; ++i) {
    auto got = c.Get("give-back");
    ASSERT_TRUE(got.ok()) << "call " << i << ": " << got.status().ToString();
    EXPECT_EQ(got->value_or("<nil>"), "v");
  }
}

}  // namespace
}  // namespace tiercache::redis
