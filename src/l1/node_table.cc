#include "l1/node_table.h"

#include <utility>

#include "common/dcheck.h"

namespace tiercache::l1 {

void NodeTable::Place(Node* n) {
  const auto address = reinterpret_cast<std::uintptr_t>(n);
  TIERCACHE_DCHECK(address != 0 && (address & kTagMask) == 0);
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = n->hash & mask;
  while (slots_[i] != 0) i = (i + 1) & mask;
  slots_[i] = address | TagOf(n->hash);
}

void NodeTable::Insert(Node* n) {
  if (2 * (size_ + 1) > slots_.size()) Grow();
  Place(n);
  ++size_;
}

// Backward-shift deletion: each entry after the hole, up to the next empty
// slot, moves into the hole if its home slot is not cyclically after the
// hole (then the hole moves to where it was), so every probe sequence stays
// unbroken without tombstones. The homes come from the nodes' hashes: a
// removal reads the nodes of the run after it (short at load factor 1/2).
void NodeTable::Remove(Node* n) {
  const std::size_t mask = slots_.size() - 1;
  std::size_t hole = n->hash & mask;
  while (NodeOf(slots_[hole]) != n) hole = (hole + 1) & mask;
  for (std::size_t j = (hole + 1) & mask; slots_[j] != 0; j = (j + 1) & mask) {
    const std::size_t home = NodeOf(slots_[j])->hash & mask;
    // Its probe distance against the hole's distance back from j.
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = 0;
  --size_;
}

void NodeTable::Reset() {
  std::vector<std::uintptr_t>(kInitialSlots, 0).swap(slots_);
  size_ = 0;
}

void NodeTable::Grow() {
  std::vector<std::uintptr_t> old(slots_.size() * 2, 0);
  old.swap(slots_);
  for (const std::uintptr_t s : old) {
    if (s != 0) Place(NodeOf(s));
  }
}

}  // namespace tiercache::l1
