// The implementations behind Crc32c (envelope.h), for tests that compare
// them with each other. Internal.
#ifndef TIERCACHE_CORE_CRC32C_INTERNAL_H_
#define TIERCACHE_CORE_CRC32C_INTERNAL_H_

#include <cstddef>
#include <cstdint>

namespace tiercache::crc32c_internal {

// A byte at a time through a table: the reference, on any CPU.
uint32_t Portable(const unsigned char* p, size_t n, uint32_t crc);

// What this CPU can run (each false elsewhere than on x86-64).
bool HasSse42();
bool HasSse42AndClmul();

// The crc32 instruction over one stream, 8 bytes at a time.
// REQUIRES: HasSse42().
uint32_t Hardware(const unsigned char* p, size_t n, uint32_t crc);

// The crc32 instruction over three streams at once (its latency is 3
// cycles, its throughput 1 per cycle), the three CRCs combined with a
// carry-less multiply. Equal to Portable() for every input.
// REQUIRES: HasSse42AndClmul().
uint32_t Hardware3Way(const unsigned char* p, size_t n, uint32_t crc);

}  // namespace tiercache::crc32c_internal

#endif  // TIERCACHE_CORE_CRC32C_INTERNAL_H_
