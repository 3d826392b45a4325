#include "l1/node_table.h"

#include <utility>

namespace tiercache::l1 {

void NodeTable::Place(std::uint64_t hash, Node* n) {
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = hash & mask;
  while (slots_[i].node != nullptr) i = (i + 1) & mask;
  slots_[i] = Slot{hash, n};
}

void NodeTable::Insert(std::uint64_t hash, Node* n) {
  if (2 * (size_ + 1) > slots_.size()) Grow();
  Place(hash, n);
  ++size_;
}

// Backward-shift deletion: each entry after the hole, up to the next empty
// slot, moves into the hole if its home slot is not cyclically after the
// hole (then the hole moves to where it was), so every probe sequence stays
// unbroken without tombstones.
void NodeTable::Remove(std::uint64_t hash, Node* n) {
  const std::size_t mask = slots_.size() - 1;
  std::size_t hole = SlotOf(hash, n);
  for (std::size_t j = (hole + 1) & mask; slots_[j].node != nullptr; j = (j + 1) & mask) {
    const std::size_t home = slots_[j].hash & mask;
    // Its probe distance against the hole's distance back from j.
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
  --size_;
}

void NodeTable::Grow() {
  std::vector<Slot> old(slots_.size() * 2);
  old.swap(slots_);
  for (const Slot& s : old) {
    if (s.node != nullptr) Place(s.hash, s.node);
  }
}

}  // namespace tiercache::l1
