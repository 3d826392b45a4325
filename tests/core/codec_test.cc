#include "tiercache/codec.h"

#include <gtest/gtest.h>

#include <string>

#include "tiercache/json_codec.h"

namespace tiercache {
namespace {

struct Post {
  int64_t id = 0;
  std::string title;
  int64_t version = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Post, id, title, version)

static_assert(Codec<BytesCodec>);
static_assert(Codec<StringCodec>);
static_assert(Codec<JsonCodec<Post>>);

TEST(CodecTest, BytesRoundTripAnyBytes) {
  const std::string raw("\0\xff\x80 binary", 10);
  EXPECT_EQ(*BytesCodec::Decode(*BytesCodec::Encode(raw)), raw);
}

TEST(CodecTest, StringRejectsMalformedUtf8BothWays) {
  EXPECT_EQ(*StringCodec::Decode(*StringCodec::Encode("héllo, 世界 🙂")), "héllo, 世界 🙂");
  EXPECT_TRUE(StringCodec::Encode("\xc3").status().IsInvalidArgument());      // truncated
  EXPECT_TRUE(StringCodec::Decode("\xc0\xaf").status().IsDataLoss());         // overlong '/'
  EXPECT_TRUE(StringCodec::Decode("\xed\xa0\x80").status().IsDataLoss());     // surrogate
  EXPECT_TRUE(StringCodec::Decode("\xf4\x90\x80\x80").status().IsDataLoss()); // > U+10FFFF
}

TEST(CodecTest, JsonRoundTripsAStruct) {
  Post p{7, "hello", 3};
  Result<std::string> bytes = JsonCodec<Post>::Encode(p);
  ASSERT_TRUE(bytes.ok());
  Result<Post> back = JsonCodec<Post>::Decode(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, 7);
  EXPECT_EQ(back->title, "hello");
  EXPECT_EQ(back->version, 3);
}

TEST(CodecTest, JsonErrorsAreValuesNotExceptions) {
  EXPECT_TRUE(JsonCodec<Post>::Decode("{not json").status().IsDataLoss());
  EXPECT_TRUE(JsonCodec<Post>::Decode("[1,2,3]").status().IsDataLoss());           // wrong shape
  EXPECT_TRUE(JsonCodec<Post>::Decode(R"({"id":"seven"})").status().IsDataLoss()); // wrong types
  Post bad{1, "\xff\xfe", 1};
  EXPECT_TRUE(JsonCodec<Post>::Encode(bad).status().IsInvalidArgument());
}

TEST(CodecTest, ForeignCodecIdIsDataLoss) {
  EnvelopeView e;
  e.codec_id = kCodecJson;
  e.payload = "plain";
  EXPECT_TRUE(DecodePayload<StringCodec>(e).status().IsDataLoss());
  e.codec_id = kCodecString;
  EXPECT_EQ(*DecodePayload<StringCodec>(e), "plain");
}

}  // namespace
}  // namespace tiercache
