// NodeArena: the memory of one shard's nodes.
//
// A node is a multiple of 8 bytes (see node.h). From the general allocator
// a block costs its size plus a header (8 bytes with glibc, and rounding to
// 16). The arena carves blocks of up to kMaxPooledBytes out of slabs of its
// own (4 KiB growing to 256 KiB, aligned to 64 by hand), with no header,
// each across no more cache lines than its size needs (Fits): a 64-byte
// node lies on one line, an 80-byte one on two, never three. The padding
// this skips goes to the free lists. Freed blocks go on a free list per size
// for the next node of that size; blocks of one size are never split or
// merged for another, so memory freed by nodes of one size (say, entries
// replaced by their striped copies, or keys whose length changed) waits
// for nodes of that size: a cache's node memory is the sum of each node
// size's peak population. Larger blocks come from the general allocator.
// The slabs are kept until the arena is destroyed (with its shard): freed
// blocks are reused, not returned.
//
// Under AddressSanitizer a free block is poisoned but for the word that
// links it, and the uncarved part of a slab is poisoned until carved, so a
// use of a freed node before its block is handed out again, or an overflow
// into a free or uncarved block, is reported. Live blocks have no redzone
// between them and freed ones are reused at once (last in, first out), so
// ASan sees less here than with the general allocator.
//
// Thread-safety: Allocate and Free may be called concurrently (a mutex, held
// for the list and carve updates, and while a new slab is allocated).
// Nodes are allocated by fills before they enter the shard, and freed after
// exclusive sections.
#ifndef TIERCACHE_L1_NODE_ARENA_H_
#define TIERCACHE_L1_NODE_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace tiercache::l1 {

class NodeArena {
 public:
  static constexpr std::size_t kGrain = 8;      // block sizes are multiples of it
  static constexpr std::size_t kMaxAlign = 64;  // a cache line
  static constexpr std::size_t kMaxPooledBytes = 256;
  static constexpr std::size_t kFirstSlabBytes = std::size_t{4} << 10;
  static constexpr std::size_t kMaxSlabBytes = std::size_t{256} << 10;

  NodeArena() = default;
  NodeArena(const NodeArena&) = delete;
  NodeArena& operator=(const NodeArena&) = delete;
  // Frees the slabs. REQUIRES: no block is in use any more.
  ~NodeArena();

  // A block of `bytes` (a positive multiple of kGrain), 8-aligned; a pooled
  // one (up to kMaxPooledBytes) also Fits. Throws std::bad_alloc when memory
  // runs out; the arena is then unchanged.
  void* Allocate(std::size_t bytes);
  // Returns a block Allocate(bytes) gave, with the same `bytes`.
  void Free(void* block, std::size_t bytes) noexcept;

  // A block of `bytes` at `address` spans no more cache lines than its size
  // needs: it starts early enough in its first line.
  static constexpr bool Fits(std::uintptr_t address, std::size_t bytes) {
    return address % kMaxAlign + bytes <= (bytes + kMaxAlign - 1) / kMaxAlign * kMaxAlign;
  }

  // Bytes held in slabs (used, free or not carved yet).
  std::size_t slab_bytes() const;

 private:
  struct FreeBlock {
    FreeBlock* next;
  };
  static constexpr std::size_t kClasses = kMaxPooledBytes / kGrain;
  // Puts [carve_, carve_ + bytes) on the free lists (REQUIRES: mu_ held,
  // bytes a multiple of kGrain, at most what is left of the slab).
  void FreeCarved(std::size_t bytes);

  mutable std::mutex mu_;
  FreeBlock* free_[kClasses] = {};  // GUARDED_BY(mu_): by size, kGrain apart
  char* carve_ = nullptr;           // GUARDED_BY(mu_): the current slab's uncarved part
  char* carve_end_ = nullptr;       // GUARDED_BY(mu_)
  std::size_t next_slab_bytes_ = kFirstSlabBytes;  // GUARDED_BY(mu_)
  std::size_t slab_bytes_ = 0;                     // GUARDED_BY(mu_)
  std::vector<std::pair<void*, std::size_t>> slabs_;  // GUARDED_BY(mu_): address, size
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_ARENA_H_
