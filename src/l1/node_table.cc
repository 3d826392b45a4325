#include "l1/node_table.h"

#include <utility>

namespace tiercache::l1 {

void NodeTable::Place(std::uint64_t hash, Node* n) {
  std::size_t i = Home(hash, slots_.size());
  while (slots_[i].node != nullptr) i = Next(i);
  slots_[i] = Slot{hash, n};
}

void NodeTable::Insert(std::uint64_t hash, Node* n) {
  const std::size_t slots = slots_.size();
  // Load at most 1/2 below the final size, 3/4 at (or past) it.
  const bool full = slots >= final_slots_ ? 4 * (size_ + 1) > 3 * slots : 2 * (size_ + 1) > slots;
  if (full) Grow();
  Place(hash, n);
  ++size_;
}

// Backward-shift deletion: each entry after the hole, up to the next empty
// slot, moves into the hole if its home slot is not cyclically after the
// hole (then the hole moves to where it was), so every probe sequence stays
// unbroken without tombstones.
void NodeTable::Remove(std::uint64_t hash, Node* n) {
  std::size_t hole = SlotOf(hash, n);
  for (std::size_t j = Next(hole); slots_[j].node != nullptr; j = Next(j)) {
    const std::size_t home = Home(slots_[j].hash, slots_.size());
    // Its probe distance against the hole's distance back from j.
    if (Distance(home, j) >= Distance(hole, j)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
  --size_;
}

// Doubles, but stops at the final size (past it, doubles again: only if
// the shard's bound was exceeded, which it never is by more than one).
void NodeTable::Grow() {
  const std::size_t slots = slots_.size();
  const std::size_t want = slots < final_slots_ ? std::min(2 * slots, final_slots_) : 2 * slots;
  std::vector<Slot> old(want);
  old.swap(slots_);
  for (const Slot& s : old) {
    if (s.node != nullptr) Place(s.hash, s.node);
  }
}

}  // namespace tiercache::l1
