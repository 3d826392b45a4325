#include "l1/node_arena.h"

#include <algorithm>
#include <cstdint>
#include <new>
#include <utility>

#include "common/dcheck.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TIERCACHE_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define TIERCACHE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define TIERCACHE_POISON(p, n) ((void)(p), (void)(n))
#define TIERCACHE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace tiercache::l1 {

NodeArena::~NodeArena() {
  for (const auto& [slab, bytes] : slabs_) {
    TIERCACHE_UNPOISON(slab, bytes + kMaxAlign - 1);
    ::operator delete(slab);
  }
}

// In blocks as large as fit, each placed as Allocate would place it
// (Fits), so that a block of any size from a free list Fits too.
void NodeArena::FreeCarved(std::size_t bytes) {
  while (bytes != 0) {
    std::size_t size = std::min(bytes, kMaxPooledBytes);
    while (!Fits(reinterpret_cast<std::uintptr_t>(carve_), size)) size -= kGrain;  // 8 always fits
    auto* rest = reinterpret_cast<FreeBlock*>(carve_);
    TIERCACHE_UNPOISON(rest, sizeof(FreeBlock));
    rest->next = free_[size / kGrain - 1];
    free_[size / kGrain - 1] = rest;
    carve_ += size;
    bytes -= size;
  }
}

void* NodeArena::Allocate(std::size_t bytes) {
  TIERCACHE_DCHECK(bytes != 0 && bytes % kGrain == 0);
  if (bytes > kMaxPooledBytes) return ::operator new(bytes);
  const std::size_t cls = bytes / kGrain - 1;
  std::lock_guard<std::mutex> lock(mu_);
  if (FreeBlock* b = free_[cls]; b != nullptr) {
    free_[cls] = b->next;
    TIERCACHE_UNPOISON(b, bytes);
    return b;
  }
  // To the next line when the block would not fit where the carve is (at
  // a line's start it does).
  const auto padding = [this, bytes] {
    const auto at = reinterpret_cast<std::uintptr_t>(carve_);
    return Fits(at, bytes) ? 0 : kMaxAlign - at % kMaxAlign;
  };
  if (static_cast<std::size_t>(carve_end_ - carve_) < padding() + bytes) {
    // A new slab. The rest of the old one goes to the free lists.
    slabs_.reserve(slabs_.size() + 1);  // may throw: nothing changed yet
    // Aligned by hand: the general allocator's aligned path may pad more.
    void* slab = ::operator new(next_slab_bytes_ + kMaxAlign - 1);
    FreeCarved(static_cast<std::size_t>(carve_end_ - carve_));
    slabs_.emplace_back(slab, next_slab_bytes_);
    slab_bytes_ += next_slab_bytes_;
    const auto address = reinterpret_cast<std::uintptr_t>(slab);
    carve_ = static_cast<char*>(slab) + ((kMaxAlign - address % kMaxAlign) % kMaxAlign);
    carve_end_ = carve_ + next_slab_bytes_;
    TIERCACHE_POISON(carve_, next_slab_bytes_);
    next_slab_bytes_ = std::min(2 * next_slab_bytes_, kMaxSlabBytes);
  }
  FreeCarved(padding());
  void* block = carve_;
  carve_ += bytes;
  TIERCACHE_UNPOISON(block, bytes);
  return block;
}

void NodeArena::Free(void* block, std::size_t bytes) noexcept {
  TIERCACHE_DCHECK(bytes != 0 && bytes % kGrain == 0);
  if (bytes > kMaxPooledBytes) {
    ::operator delete(block);
    return;
  }
  const std::size_t cls = bytes / kGrain - 1;
  auto* b = static_cast<FreeBlock*>(block);
  std::lock_guard<std::mutex> lock(mu_);
  b->next = free_[cls];
  free_[cls] = b;
  TIERCACHE_POISON(reinterpret_cast<char*>(b) + sizeof(FreeBlock), bytes - sizeof(FreeBlock));
}

std::size_t NodeArena::slab_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slab_bytes_;
}

}  // namespace tiercache::l1
