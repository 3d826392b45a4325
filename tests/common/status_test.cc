#include "tiercache/status.h"

#include <gtest/gtest.h>

#include <string>

namespace tiercache {
namespace {

TEST(StatusTest, OkIsDefaultAndCarriesNoMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_TRUE(s.message().empty());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, NamedConstructorsSetCodeAndMessage) {
  Status s = Status::DeadlineExceeded("GET on 127.0.0.1:7001 after 50ms");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsDeadlineExceeded());
  EXPECT_EQ(s.message(), "GET on 127.0.0.1:7001 after 50ms");
  EXPECT_EQ(s.ToString(), "DEADLINE_EXCEEDED: GET on 127.0.0.1:7001 after 50ms");
}

TEST(StatusTest, CopiesAreIndependentAndEqual) {
  Status a = Status::Unavailable("breaker open");
  Status b = a;
  EXPECT_EQ(a, b);
  a = Status::Ok();
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.IsUnavailable());
}

TEST(ResultTest, HoldsValueOrError) {
  Result<std::string> good = std::string("v");
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, "v");
  EXPECT_TRUE(good.status().ok());

  Result<std::string> bad = Status::NotFound("no such key");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsNotFound());
  EXPECT_EQ(bad.value_or("fallback"), "fallback");
}

TEST(ResultTest, OkStatusWithoutValueBecomesInternal) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInternal());
}

Status FailsThenStops(int* calls) {
  ++*calls;
  TIERCACHE_RETURN_IF_ERROR(Status::Aborted("first"));
  ++*calls;
  return Status::Ok();
}

TEST(StatusTest, ReturnIfErrorPropagates) {
  int calls = 0;
  EXPECT_TRUE(FailsThenStops(&calls).IsAborted());
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace tiercache
