// Proves the local PostgreSQL is real: libpq connects over TCP without a
// password, creates a table, inserts and reads back inside a transaction.
#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/test_env.h"

namespace tiercache::testing {
namespace {

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

PgResult Exec(PGconn* c, const std::string& sql) { return PgResult(PQexec(c, sql.c_str())); }

TEST(PostgresSmoke, TransactionInsertsAndReadsBack) {
  TIERCACHE_REQUIRE_SERVER("postgresql", PgPort());
  Conn c(PQconnectdb(PgConnString().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());

  PgResult r = Exec(c.get(), "SHOW server_version_num");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
  EXPECT_GE(std::stoi(PQgetvalue(r.get(), 0, 0)), 150000);

  r = Exec(c.get(),
           "DROP TABLE IF EXISTS smoke_posts;"
           "CREATE TABLE smoke_posts (id bigint PRIMARY KEY, body text NOT NULL, version bigint NOT NULL)");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());

  ASSERT_EQ(PQresultStatus(Exec(c.get(), "BEGIN").get()), PGRES_COMMAND_OK);
  const char* params[3] = {"7", "hello, community 42", "1"};
  r = PgResult(PQexecParams(c.get(), "INSERT INTO smoke_posts (id, body, version) VALUES ($1, $2, $3)", 3,
                            nullptr, params, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  // Visible inside the transaction ...
  r = Exec(c.get(), "SELECT body, version FROM smoke_posts WHERE id = 7");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
  ASSERT_EQ(PQntuples(r.get()), 1);
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "hello, community 42");
  ASSERT_EQ(PQresultStatus(Exec(c.get(), "COMMIT").get()), PGRES_COMMAND_OK);

  // ... and from a second connection after commit.
  Conn other(PQconnectdb(PgConnString().c_str()));
  ASSERT_EQ(PQstatus(other.get()), CONNECTION_OK) << PQerrorMessage(other.get());
  r = Exec(other.get(), "SELECT version FROM smoke_posts WHERE id = 7");
  ASSERT_EQ(PQntuples(r.get()), 1);
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "1");
  Exec(c.get(), "DROP TABLE smoke_posts");
}

}  // namespace
}  // namespace tiercache::testing
