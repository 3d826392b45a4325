#include "tiercache/events.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

int64_t Ms(system_clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
}

struct Golden {
  bool valid = false;
  std::string json;
  std::map<std::string, std::string> fields;  // from the "fields:" line after a valid block
};

// The ```json golden-valid / golden-malformed blocks of docs/events.md.
std::vector<Golden> ReadGoldens() {
  const std::filesystem::path doc =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "docs" / "events.md";
  std::ifstream in(doc);
  EXPECT_TRUE(in.good()) << "cannot read " << doc;
  std::vector<Golden> out;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside && (line == "```json golden-valid" || line == "```json golden-malformed")) {
      out.emplace_back().valid = line == "```json golden-valid";
      inside = true;
    } else if (inside && line == "```") {
      inside = false;
    } else if (inside) {
      out.back().json += (out.back().json.empty() ? "" : "\n") + line;
    } else if (!out.empty() && out.back().valid && line.rfind("fields: `", 0) == 0) {
      std::istringstream fields(line.substr(9, line.size() - 10));
      std::string kv;
      while (fields >> kv) {
        const size_t eq = kv.find('=');
        out.back().fields[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
    }
  }
  return out;
}

TEST(EventTest, GoldenExamplesOfTheDocParseAsDocumented) {
  const std::vector<Golden> goldens = ReadGoldens();
  int valid = 0, malformed = 0;
  for (const Golden& g : goldens) {
    SCOPED_TRACE(g.json);
    Result<InvalidationEvent> e = ParseEvent(g.json);
    if (!g.valid) {
      ++malformed;
      ASSERT_FALSE(e.ok());
      EXPECT_TRUE(e.status().IsInvalidArgument());
      EXPECT_EQ(e.status().message().rfind("malformed event: ", 0), 0u) << e.status().ToString();
      continue;
    }
    ++valid;
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    ASSERT_FALSE(g.fields.empty()) << "a golden-valid block needs a fields: line after it";
    EXPECT_EQ(e->event_id, g.fields.at("event_id"));
    EXPECT_EQ(e->type, g.fields.at("type"));
    EXPECT_EQ(e->entity(), g.fields.at("entity"));
    EXPECT_EQ(e->action(), g.fields.at("action"));
    EXPECT_EQ(e->entity_id, g.fields.at("entity_id"));
    EXPECT_EQ(e->partition_key, g.fields.at("partition_key"));
    EXPECT_EQ(std::to_string(e->version), g.fields.at("version"));
    EXPECT_EQ(std::to_string(Ms(e->occurred_at)), g.fields.at("occurred_at_ms"));
  }
  EXPECT_GE(valid, 2);
  EXPECT_GE(malformed, 10);
}

TEST(EventTest, EncodeThenParseGivesTheSameEvent) {
  InvalidationEvent e;
  e.event_id = "id-1";
  e.type = "post.created";
  e.entity_id = "7";
  e.partition_key = "42";
  for (uint64_t v : {uint64_t{1}, uint64_t{1} << 53, (uint64_t{1} << 53) + 1, UINT64_MAX}) {
    e.version = v;
    e.occurred_at = system_clock::time_point(milliseconds(1796552040123));
    Result<std::string> json = EncodeEvent(e);
    ASSERT_TRUE(json.ok()) << json.status().ToString();
    Result<InvalidationEvent> back = ParseEvent(*json);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << " in " << *json;
    EXPECT_EQ(back->version, v);
    EXPECT_EQ(back->event_id, e.event_id);
    EXPECT_EQ(back->type, e.type);
    EXPECT_EQ(back->entity_id, e.entity_id);
    EXPECT_EQ(back->partition_key, e.partition_key);
    EXPECT_EQ(Ms(back->occurred_at), 1796552040123);
  }
  EXPECT_EQ(*EncodeEvent(e),
            "{\"event_id\":\"id-1\",\"type\":\"post.created\",\"entity_id\":\"7\",\"partition_key\":\"42\","
            "\"version\":18446744073709551615,\"occurred_at\":\"2026-12-06T10:14:00.123Z\"}");
}

TEST(EventTest, TimesRoundTripAcrossTheRange) {
  for (int64_t ms : {int64_t{0}, int64_t{1}, int64_t{951782400000} /* 2000-02-29 */, int64_t{4102444799999},
                     int64_t{-1} /* 1969-12-31T23:59:59.999Z */}) {
    SCOPED_TRACE(ms);
    const std::string s = FormatEventTime(system_clock::time_point(milliseconds(ms)));
    InvalidationEvent e;
    const std::string json = "{\"event_id\":\"x\",\"type\":\"a.b\",\"entity_id\":\"1\",\"partition_key\":\"1\","
                             "\"version\":1,\"occurred_at\":\"" + s + "\"}";
    Result<InvalidationEvent> back = ParseEvent(json);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(Ms(back->occurred_at), ms) << s;
  }
  EXPECT_EQ(FormatEventTime(system_clock::time_point(milliseconds(951782400000))), "2000-02-29T00:00:00.000Z");
}

TEST(EventTest, OversizedEventsAndFieldsAreMalformed) {
  const std::string big(1 << 20, 'x');
  const std::string json = "{\"event_id\":\"x\",\"type\":\"a.b\",\"entity_id\":\"1\",\"partition_key\":\"1\","
                           "\"version\":1,\"occurred_at\":\"2026-12-06T10:14:00Z\",\"pad\":\"" + big + "\"}";
  Result<InvalidationEvent> e = ParseEvent(json);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("bytes (at most"), std::string::npos) << e.status().ToString();

  InvalidationEvent ev;
  ev.event_id = "x";
  ev.type = "post.updated";
  ev.entity_id = std::string(kMaxEventFieldBytes + 1, '7');
  ev.partition_key = "42";
  ev.version = 1;
  EXPECT_TRUE(EncodeEvent(ev).status().IsInvalidArgument());
  ev.entity_id = "7";
  ev.version = 0;
  EXPECT_TRUE(EncodeEvent(ev).status().IsInvalidArgument());
}

TEST(EventTest, InvalidUtf8IsAnErrorNotAnException) {
  InvalidationEvent ev;
  ev.event_id = std::string("\xff\xfe", 2);
  ev.type = "post.updated";
  ev.entity_id = "7";
  ev.partition_key = "42";
  ev.version = 1;
  Result<std::string> json = EncodeEvent(ev);
  EXPECT_TRUE(json.status().IsInvalidArgument()) << json.status().ToString();
  EXPECT_TRUE(ParseEvent(std::string("{\"event_id\":\"\xff\"}")).status().IsInvalidArgument());
}

}  // namespace
}  // namespace tiercache
