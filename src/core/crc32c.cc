// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78). Uses the SSE4.2
// crc32 instruction when the CPU has it (over three interleaved streams when
// it also has PCLMULQDQ), a byte table otherwise.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/crc32c_internal.h"
#include "tiercache/envelope.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#include <wmmintrin.h>
#endif

namespace tiercache {
namespace crc32c_internal {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

#if defined(__x86_64__)
// Three streams of up to kMaxWords 8-byte words each per round; an input
// shorter than kMinBytes takes one stream (the combination would cost more
// than it saves).
constexpr size_t kMaxWords = 128;
constexpr size_t kMinBytes = 96;

// A CRC register is a polynomial of degree < 32, bit i the coefficient of
// x^(31-i). Times x: shift right, reducing by P when x^32 appears.
constexpr uint32_t TimesX(uint32_t v) { return (v & 1) ? (v >> 1) ^ kPoly : v >> 1; }

// kShift[w] = x^(64w - 33) mod P. The register of a stream followed by w
// words is its own register times x^(64w) (mod P, the words then XORed in):
// Shift() multiplies by kShift[w] (carry-less, a 63-bit product whose bit k
// is the coefficient of x^(62-k)), and crc32 of that product as a 64-bit
// word multiplies by x^33 more and reduces.
constexpr std::array<uint32_t, 2 * kMaxWords + 1> MakeShifts() {
  std::array<uint32_t, 2 * kMaxWords + 1> k{};
  uint32_t v = 0x80000000u;  // x^0
  for (int i = 0; i < 31; ++i) v = TimesX(v);
  k[1] = v;  // x^31
  for (size_t w = 2; w <= 2 * kMaxWords; ++w) {
    for (int i = 0; i < 64; ++i) v = TimesX(v);
    k[w] = v;
  }
  return k;
}
constexpr std::array<uint32_t, 2 * kMaxWords + 1> kShift = MakeShifts();

__attribute__((target("sse4.2,pclmul"))) inline uint64_t Shift(uint64_t crc, uint32_t k) {
  const __m128i product = _mm_clmulepi64_si128(_mm_cvtsi64_si128(static_cast<int64_t>(crc)),
                                               _mm_cvtsi32_si128(static_cast<int>(k)), 0);
  return _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(product)));
}

inline uint64_t Load64(const unsigned char* p) {
  uint64_t word;
  std::memcpy(&word, p, 8);
  return word;
}
#endif

}  // namespace

uint32_t Portable(const unsigned char* p, size_t n, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Hardware(const unsigned char* p, size_t n, uint32_t crc) {
  uint64_t c = ~crc & 0xFFFFFFFFu;
  while (n >= 8) {
    c = _mm_crc32_u64(c, Load64(p));
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

__attribute__((target("sse4.2,pclmul"))) uint32_t Hardware3Way(const unsigned char* p, size_t n, uint32_t crc) {
  uint64_t c = ~crc & 0xFFFFFFFFu;
  while (n >= kMinBytes) {
    const size_t w = std::min(n / 24, kMaxWords);
    const unsigned char* a = p;
    const unsigned char* b = p + 8 * w;
    const unsigned char* d = p + 16 * w;
    uint64_t cb = 0;
    uint64_t cd = 0;
    for (size_t i = 0; i < w; ++i) {
      c = _mm_crc32_u64(c, Load64(a + 8 * i));
      cb = _mm_crc32_u64(cb, Load64(b + 8 * i));
      cd = _mm_crc32_u64(cd, Load64(d + 8 * i));
    }
    c = Shift(c, kShift[2 * w]) ^ Shift(cb, kShift[w]) ^ cd;
    p += 24 * w;
    n -= 24 * w;
  }
  return Hardware(p, n, ~static_cast<uint32_t>(c));
}

// Asked on first use, not in a static initializer: a CRC computed during
// another translation unit's static initialization still gets the answer.
bool HasSse42() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}
bool HasSse42AndClmul() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0 && __builtin_cpu_supports("pclmul") != 0;
  }();
  return has;
}
#else
bool HasSse42() { return false; }
bool HasSse42AndClmul() { return false; }
uint32_t Hardware(const unsigned char* p, size_t n, uint32_t crc) { return Portable(p, n, crc); }
uint32_t Hardware3Way(const unsigned char* p, size_t n, uint32_t crc) { return Portable(p, n, crc); }
#endif

}  // namespace crc32c_internal

uint32_t Crc32c(std::string_view data, uint32_t crc) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (crc32c_internal::HasSse42AndClmul()) return crc32c_internal::Hardware3Way(p, data.size(), crc);
  if (crc32c_internal::HasSse42()) return crc32c_internal::Hardware(p, data.size(), crc);
  return crc32c_internal::Portable(p, data.size(), crc);
}

}  // namespace tiercache
