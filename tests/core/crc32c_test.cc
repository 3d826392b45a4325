// The CRC-32C implementations agree with each other (crc32c_internal.h):
// the three-stream one and the one-stream one against the byte table, on
// every length up to several KB and every alignment.
#include "core/crc32c_internal.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tiercache/envelope.h"

namespace tiercache {
namespace {

using crc32c_internal::Portable;

std::vector<unsigned char> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> out(n);
  for (unsigned char& c : out) c = static_cast<unsigned char>(rng());
  return out;
}

// Every length 0..kLongest at every alignment 0..15, with a random initial
// CRC (a continuation) and with 0: `crc` equals the byte table's answer.
template <typename Crc>
void ExpectEqualsPortableEverywhere(Crc crc) {
  constexpr size_t kLongest = 5000;
  const std::vector<unsigned char> bytes = RandomBytes(kLongest + 16, 42);
  std::mt19937 rng(7);
  for (size_t n = 0; n <= kLongest; ++n) {
    for (size_t align = 0; align < 16; ++align) {
      const unsigned char* p = bytes.data() + align;
      const uint32_t init = (align % 2 == 0) ? 0 : static_cast<uint32_t>(rng());
      const uint32_t want = Portable(p, n, init);
      ASSERT_EQ(crc(p, n, init), want) << "length " << n << ", alignment " << align << ", initial " << init;
    }
  }
}

TEST(Crc32cTest, ThreeStreamsEqualTheByteTableOnEveryLengthAndAlignment) {
  if (!crc32c_internal::HasSse42AndClmul()) GTEST_SKIP() << "no SSE4.2 + PCLMULQDQ on this CPU";
  ExpectEqualsPortableEverywhere(crc32c_internal::Hardware3Way);
}

TEST(Crc32cTest, OneStreamEqualsTheByteTableOnEveryLengthAndAlignment) {
  if (!crc32c_internal::HasSse42()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  ExpectEqualsPortableEverywhere(crc32c_internal::Hardware);
}

// Long inputs: several full rounds of three streams, then a partial one.
TEST(Crc32cTest, ThreeStreamsEqualTheByteTableOnLongInputs) {
  if (!crc32c_internal::HasSse42AndClmul()) GTEST_SKIP() << "no SSE4.2 + PCLMULQDQ on this CPU";
  const std::vector<unsigned char> bytes = RandomBytes(1 << 20, 99);
  for (size_t n : {size_t{3071}, size_t{3072}, size_t{3073}, size_t{6144 + 100}, size_t{65536 + 7}, size_t{1} << 20}) {
    EXPECT_EQ(crc32c_internal::Hardware3Way(bytes.data(), n, 0), Portable(bytes.data(), n, 0)) << "length " << n;
  }
}

// A single flipped bit anywhere changes the three-stream CRC (each stream's
// bytes count, in their place).
TEST(Crc32cTest, ThreeStreamsSeeEveryFlippedBit) {
  std::vector<unsigned char> bytes = RandomBytes(300, 5);
  const std::string_view view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const uint32_t clean = Crc32c(view);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] ^= 0x10;
    EXPECT_NE(Crc32c(view), clean) << "byte " << i;
    bytes[i] ^= 0x10;
  }
}

}  // namespace
}  // namespace tiercache
