#include "l1/node_table.h"

#include <utility>

namespace tiercache::l1 {

void NodeTable::Insert(Node* n) {
  if (size_ >= buckets_.size()) Grow();
  Node*& head = buckets_[n->hash & (buckets_.size() - 1)];
  n->chain = head;
  head = n;
  ++size_;
}

void NodeTable::Remove(Node* n) {
  Node** link = &buckets_[n->hash & (buckets_.size() - 1)];
  while (*link != n) link = &(*link)->chain;
  *link = n->chain;
  n->chain = nullptr;
  --size_;
}

void NodeTable::Reset() {
  std::vector<Node*>(kInitialBuckets, nullptr).swap(buckets_);
  size_ = 0;
}

void NodeTable::Grow() {
  std::vector<Node*> bigger(buckets_.size() * 2, nullptr);
  const std::size_t mask = bigger.size() - 1;
  for (Node* head : buckets_) {
    while (head != nullptr) {
      Node* next = head->chain;
      head->chain = bigger[head->hash & mask];
      bigger[head->hash & mask] = head;
      head = next;
    }
  }
  buckets_.swap(bigger);
}

}  // namespace tiercache::l1
