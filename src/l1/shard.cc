#include "l1/shard.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <thread>
#include <utility>

#include "common/cpu_slot.h"
#include "l1/hash.h"

namespace tiercache::l1 {

// No reader or writer is left: every node is freed; the table and records
// go with the shard. Allocates nothing (Clear's empty tables might throw).
Shard::~Shard() {
  for (NodeList& l : lists_) {
    while (Node* n = l.back()) {
      l.remove(n);
      Retire(n);
    }
  }
  FreeChain(TakeRetired());
}

void Shard::Configure(const ShardLimits& limits) {
  max_entries_ = limits.max_entries;
  NodeTable(max_entries_).Swap(table_);
  PolicyTable(MaxNodes()).Swap(records_);
  max_bytes_ = limits.max_bytes;
  policy_ = limits.policy;
  max_stale_ = limits.max_stale;
  stripe_mask_ = limits.value_stripes - 1;
  max_striped_ = std::max(kMinStripedEntries, max_entries_ / kEntriesPerStriped);
  if (policy_ == L1Policy::kTinyLfu) {
    const auto window = static_cast<std::size_t>(
        std::llround(static_cast<double>(max_entries_) * limits.window_fraction));
    window_cap_ = std::clamp<std::size_t>(window, 1, max_entries_);
    protected_cap_ = (max_entries_ - window_cap_) * 8 / 10;
    // The same shares of the byte bound: when it binds long before the
    // entry bound (large values), segments sized in entries alone would let
    // the window hold everything (no contest: LRU) and the protected
    // segment never overflow, as Caffeine's weighted segments avoid.
    const auto window_bytes = static_cast<std::size_t>(
        std::llround(static_cast<double>(max_bytes_) * limits.window_fraction));
    window_bytes_cap_ = std::clamp<std::size_t>(window_bytes, 1, max_bytes_);
    protected_bytes_cap_ = (max_bytes_ - window_bytes_cap_) / 10 * 8;
    // sketch_ stays the default 64-byte one, unused, until the shard is
    // half full (SketchDue).
  }
}

// The slot of the CPU running the caller: threads running at the same time
// are on different CPUs, so they use different slots and stripes, however
// many threads there are. A thread may migrate or share a slot with a
// preempted one; the protocol only needs each read section to leave the slot
// it entered. So the CPU is asked only every kCpuSlotReuses calls of a
// thread (sched_getcpu() took 3.4 ns a call here, a thread-local read well
// under one; see common/cpu_slot.h); a thread that migrated shares its old
// CPU's slot for its next lookups, at most that many (however long they
// take), which costs contention, never correctness.
std::size_t Shard::ThreadSlot() { return CpuSlot() & (kReaderSlots - 1); }

Shard::ExclusiveSection::ExclusiveSection(Shard& shard) : shard_(shard), lock_(shard.mu_) {
  shard_.BeginExclusive();
}

Shard::ExclusiveSection::~ExclusiveSection() { shard_.EndExclusive(); }

void Shard::BeginExclusive() {
  writer_active_.store(true, std::memory_order_seq_cst);
  WaitForReaders();
  exclusive_ = true;  // the drains below stripe at once, within the budget
  stripes_in_section_ = 0;
  DrainReadBuffers();
}

void Shard::EndExclusive() {
  exclusive_ = false;
  writer_active_.store(false, std::memory_order_release);
}

void Shard::WaitForReaders() {
  for (ReaderSlot& slot : slots_) {
    // A read section is a few hundred instructions without blocking calls;
    // yield only in case its thread was descheduled inside.
    for (int spins = 0; (slot.state.load(std::memory_order_seq_cst) & kReaderMask) != 0; ++spins) {
      if (spins >= 64) std::this_thread::yield();
    }
  }
}

void Shard::DrainReadBuffers() {
  for (ReaderSlot& slot : slots_) DrainSlot(slot);
}

// Folds the slot's hits and applies its recorded reads. Needs only mu_: the
// policy lists and the sketch it writes are not read by readers (striping,
// which replaces nodes, waits for an exclusive section: NoteReader). Every
// recorded index names a live node's record: it was recorded (in a read
// section, from a node in the table) after the last exclusive section drained
// this buffer, and nodes leave the table and free their records only in
// exclusive sections, after their drain, while mu_ excludes a new one.
// Readers may be inside meanwhile, even on this slot (a thread sharing the
// CPU's slot): the hits are folded with an exact RMW, and a record racing
// with the reset is at worst applied twice or lost.
void Shard::DrainSlot(ReaderSlot& slot) {
  const std::uint64_t hits = slot.state.load(std::memory_order_relaxed) >> 32;
  if (hits != 0) {
    slot.state.fetch_sub(hits << 32, std::memory_order_relaxed);
    counters_.hits += hits;
  }
  const std::uint32_t n = std::min(slot.recorded.load(std::memory_order_acquire), kReadBuffer);
  std::uint32_t records[kReadBuffer];
  for (std::uint32_t i = 0; i < n; ++i) records[i] = slot.buffer[i].load(std::memory_order_relaxed);
  // Start loading the sketch blocks that will be read (keys not known to be
  // saturated), then update, so their cache misses overlap instead of
  // queueing. A drain reads the dense policy records (which hold the sketch
  // keys), not the nodes; only a promotion that overflows the protected
  // segment reads the demoted node (its record index).
  if (sketch_on_) {
    for (std::uint32_t i = 0; i < n; ++i) {
      if (!KnownSaturated(records_[records[i]])) {
        sketch_.Prefetch(records_[records[i]].sketch_key);
      }
    }
  }
  // Value stripes: mostly the same stripe as last time, one test on the
  // record just touched. The slot's stripe is the one its readers use
  // (Node::ValueFor(slot index)).
  const std::uint8_t from =
      stripe_mask_ != 0 ? static_cast<std::uint8_t>(((&slot - slots_) & stripe_mask_) + 1) : 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    Touch(records[i]);
    if (from != 0 && (records_[records[i]].seen & ~PolicyRecord::kStriped) != from) NoteReader(records[i], from);
  }
  slot.recorded.store(0, std::memory_order_relaxed);
}

// Value stripes cost a copy of the node and an allocation per stripe (about
// 48 bytes), and only pay off for an entry that threads on several CPUs read
// at the same time, so a node is striped once drains have applied hits on it
// from readers on two CPUs whose slots use different stripes (and for whom
// they make a difference). An entry read from one CPU only (every entry of
// a cache that is mostly cold, or that one thread reads) never is, and its
// node has no room for stripes. The node's line is read only then; the test
// is on the record the drain just touched. At most max_striped_ entries of
// a shard are striped at once (the first to be read from two CPUs; once
// the TinyLFU sketch runs, only among those it estimates saturated, the
// hottest), so however many entries several
// CPUs read, striping costs a large shard about 2 bytes per entry (one in
// 64 entries with its stripes, a larger copy of its node, and the smaller
// one's block left in the arena). Striping replaces the node, so the
// replacement waits for an exclusive section: a drain outside one
// leaves the record in pending_stripes_ for its caller (DrainAndStripe),
// which makes the copies before its section. A section's own drains
// stripe at most kMaxStripesPerSection nodes (the others are noted again by
// later drains), allocating inside it; they may stripe a node the section
// then drops: a wasted allocation, no harm.
void Shard::NoteReader(std::uint32_t i, std::uint8_t from) {
  PolicyRecord& record = records_[i];
  const std::uint8_t last = record.seen & ~PolicyRecord::kStriped;
  // Once the TinyLFU sketch runs, only entries it knows to be hot (their
  // estimate saturated, see CountInSketch, which the drain just ran) are
  // striped: the bound then goes to the hottest entries, not the first.
  const bool hot_enough = !sketch_on_ || KnownSaturated(record);
  if (last != 0 && (record.seen & PolicyRecord::kStriped) == 0 && hot_enough &&
      striped_ + pending_stripe_count_ < max_striped_) {
    // Once per record: the flag is set now, and cleared only if the stripes
    // cannot be made now (no memory, or the section's budget spent).
    record.seen |= PolicyRecord::kStriped;
    if (!exclusive_) {
      // One slot's drain notes at most kReadBuffer records, and its caller
      // stripes them before it releases mu_ (DrainAndStripe).
      TIERCACHE_DCHECK(pending_stripe_count_ < kReadBuffer);
      if (pending_stripe_count_ < kReadBuffer) pending_stripes_[pending_stripe_count_++] = i;
    } else if (stripes_in_section_ < kMaxStripesPerSection) {
      ++stripes_in_section_;
      InstallStriped(i, MakeStripedCopy(i));
    } else {
      record.seen &= static_cast<std::uint8_t>(~PolicyRecord::kStriped);
    }
  }
  record.seen = static_cast<std::uint8_t>((record.seen & PolicyRecord::kStriped) | from);
}

NodePtr Shard::MakeStripedCopy(std::uint32_t i) {
  const Node* n = records_.node(i);
  // Nothing to stripe in a negative entry or a tombstone; the record's flag
  // spares the node's read until an overwrite clears it.
  if (n == nullptr || n->kind() != L1EntryKind::kValue || n->stripes() != 1) return nullptr;
  try {
    return NewStripedCopy(*n, stripe_mask_ + 1, &arena_);
  } catch (const std::bad_alloc&) {
    // No stripes: the readers share the value's one count, as with
    // value_stripes = 1; a later drained hit tries again.
    records_[i].seen &= static_cast<std::uint8_t>(~PolicyRecord::kStriped);
    return nullptr;
  }
}

void Shard::InstallStriped(std::uint32_t i, NodePtr copy) {
  TIERCACHE_DCHECK(exclusive_);
  if (copy == nullptr) return;
  Node* old = records_.node(i);
  table_.Replace(HashKey(old->key()), old, copy.get());
  records_.Rebind(i, copy.release());
  Retire(old);
  ++striped_;
}

Node* Shard::DrainAndStripe(ReaderSlot& slot) {
  DrainSlot(slot);
  // The pending records stay counted (against max_striped_) until they are
  // installed: the section's own drains below must not stripe past the bound.
  const std::uint32_t count = pending_stripe_count_;
  if (count == 0) return nullptr;
  // The copies are made before the section, while readers go on: a copy
  // only reads its node, as they do, and no node changes while mu_ is held
  // outside a section.
  NodePtr copies[kReadBuffer];
  const Node* originals[kReadBuffer];
  bool any = false;
  for (std::uint32_t k = 0; k < count; ++k) {
    originals[k] = records_.node(pending_stripes_[k]);
    copies[k] = MakeStripedCopy(pending_stripes_[k]);
    any = any || copies[k] != nullptr;
  }
  if (!any) {  // nothing to install (no memory, or nothing to stripe): no section
    pending_stripe_count_ = 0;
    return nullptr;
  }
  BeginExclusive();  // its drains may stripe more (within their budget and the bound)
  for (std::uint32_t k = 0; k < count; ++k) {
    if (copies[k] == nullptr) continue;
    // Each record still has its node, or a striped copy the section's own
    // drains made (then this copy is not needed): records and nodes change
    // only in exclusive sections, and mu_ has been held since the drain.
    if (records_.node(pending_stripes_[k]) == originals[k]) {
      InstallStriped(pending_stripes_[k], std::move(copies[k]));
    } else {
      Retire(copies[k].release());  // freed with the others, after mu_
    }
  }
  pending_stripe_count_ = 0;
  EndExclusive();
  return TakeRetired();
}

// Called by a reader whose buffer filled up: drains that buffer unless the
// mutex is busy (a later attempt or the next writer drains it instead). It
// neither raises writer_active_ nor waits for readers, so the other CPUs'
// readers go on without noticing, unless the drain found entries to stripe.
void Shard::TryDrain(ReaderSlot& slot) {
  if (!mu_.try_lock()) return;
  Node* retired;
  {
    std::lock_guard<std::mutex> adopt(mu_, std::adopt_lock);
    retired = DrainAndStripe(slot);
  }
  FreeChain(retired);
}

LookupOutcome Shard::Classify(const Node* n, Clock::TimePoint now,
                              std::optional<Clock::Duration> stale_bound) const {
  if (n == nullptr || now >= DeadAt(n) || n->kind() == L1EntryKind::kTombstone) {
    return LookupOutcome::kMiss;
  }
  if (now < n->expiry) return LookupOutcome::kFresh;
  if (stale_bound.has_value() && now - n->expiry <= *stale_bound) return LookupOutcome::kStale;
  return LookupOutcome::kMiss;
}

LookupOutcome Shard::LookupReleasing(std::uint64_t hash, std::string_view key, const Clock& clock,
                                     std::optional<Clock::Duration> stale_bound, Accounting accounting,
                                     L1Entry* out) {
  L1Value previous = std::move(out->value);  // dies after the read section, below
  const LookupOutcome outcome = LookupInto(hash, key, clock, stale_bound, accounting, out);
  if (outcome == LookupOutcome::kMiss) out->value = std::move(previous);  // untouched on a miss
  return outcome;
}

// The hit path: no mutex, writes only to this thread's slot. An entry that
// expires more than Clock::kCoarseLag after the coarse reading is fresh
// (and not dead) whatever the precise time; only the others pay for Now().
LookupOutcome Shard::LookupInto(std::uint64_t hash, std::string_view key, const Clock& clock,
                                std::optional<Clock::Duration> stale_bound, Accounting accounting,
                                L1Entry* out) {
  const std::size_t reader = ThreadSlot();
  ReaderSlot& slot = slots_[reader];
  slot.state.fetch_add(1, std::memory_order_seq_cst);
  if (writer_active_.load(std::memory_order_seq_cst)) {
    slot.state.fetch_add(kLeave, std::memory_order_release);
    return LookupExclusive(hash, key, clock.Now(), stale_bound, accounting, out);
  }
  Node* n = table_.Find(hash, key);
  Clock::TimePoint now{};
  Clock::TimePoint read_at{};
  LookupOutcome outcome = LookupOutcome::kFresh;
  bool dead = false;
  // expiry <= coarse + lag, not expiry - coarse <= lag: an expiry capped far
  // in the past (not_after) would overflow the difference and wrap to "far".
  bool precise = n == nullptr || n->kind() == L1EntryKind::kTombstone;
  if (!precise) {
    read_at = clock.CoarseNow();
    precise = n->expiry <= read_at + Clock::kCoarseLag;
  }
  if (precise) {
    now = clock.Now();
    read_at = now;
    outcome = Classify(n, now, stale_bound);
    dead = n != nullptr && now >= DeadAt(n);
  }
  if (outcome != LookupOutcome::kMiss) {
    n->CopyTo(out, reader);
    out->stale = outcome == LookupOutcome::kStale;
    out->read_at = read_at;
  }
  bool full = false;
  bool hit = false;
  if (accounting == Accounting::kCount) {
    hit = outcome == LookupOutcome::kFresh;
    if (!hit) CountRead(slot, outcome);
    if (outcome != LookupOutcome::kMiss) full = Record(slot, n);
  }
  const std::uint64_t before =
      slot.state.fetch_add(hit ? kLeaveWithHit : kLeave, std::memory_order_release);
  if (dead) {
    DropIfDead(hash, key, now);  // readers cannot unlink; once per dead entry
  } else if (full && (before >> 32) >= kForceFoldHits) {
    Node* retired;
    {
      std::lock_guard<std::mutex> lock(mu_);  // bound the unfolded hits: never overflow
      retired = DrainAndStripe(slot);
    }
    FreeChain(retired);
  } else if (full) {
    TryDrain(slot);
  }
  return outcome;
}

Node* Shard::FindLiveLocked(std::uint64_t hash, std::string_view key, Clock::TimePoint now) {
  Node* n = table_.Find(hash, key);
  if (n == nullptr || now < DeadAt(n)) return n;
  Drop(n, hash);
  ++counters_.expirations;
  return nullptr;
}

void Shard::DropIfDead(std::uint64_t hash, std::string_view key, Clock::TimePoint now) {
  Node* retired;
  {
    ExclusiveSection section(*this);
    FindLiveLocked(hash, key, now);
    retired = TakeRetired();
  }
  FreeChain(retired);
}

// The same lookup inside an exclusive section (a writer was active): it can
// also drop a dead entry and apply recency directly.
LookupOutcome Shard::LookupExclusive(std::uint64_t hash, std::string_view key,
                                     Clock::TimePoint now,
                                     std::optional<Clock::Duration> stale_bound,
                                     Accounting accounting, L1Entry* out) {
  LookupOutcome outcome;
  Node* retired;
  {
    ExclusiveSection section(*this);
    Node* n = FindLiveLocked(hash, key, now);
    outcome = Classify(n, now, stale_bound);
    if (outcome != LookupOutcome::kMiss) {
      n->CopyTo(out);
      out->stale = outcome == LookupOutcome::kStale;
      out->read_at = now;
    }
    if (accounting == Accounting::kCount) {
      if (outcome == LookupOutcome::kFresh) {
        ++counters_.hits;
      } else {
        CountRead(slots_[ThreadSlot()], outcome);
      }
      if (outcome != LookupOutcome::kMiss) Touch(n->policy_index());
    }
    retired = TakeRetired();
  }
  FreeChain(retired);
  return outcome;
}

void Shard::CountRead(ReaderSlot& slot, LookupOutcome outcome) {
  switch (outcome) {
    case LookupOutcome::kFresh: break;  // counted in `state` or counters_
    case LookupOutcome::kStale: slot.stale_hits.fetch_add(1, std::memory_order_relaxed); break;
    case LookupOutcome::kMiss: slot.misses.fetch_add(1, std::memory_order_relaxed); break;
  }
}

bool Shard::Record(ReaderSlot& slot, const Node* n) {
  // Acquire: what earlier recorders (threads sharing the slot) published
  // stays visible to the drain that syncs with this record's release.
  const std::uint32_t i = slot.recorded.load(std::memory_order_acquire);
  if (i >= kReadBuffer) return true;  // full: this record is dropped
  slot.buffer[i].store(n->policy_index(), std::memory_order_relaxed);
  slot.recorded.store(i + 1, std::memory_order_release);  // publishes buffer[i] to a drain
  return i + 1 == kReadBuffer;
}

bool Shard::Upsert(std::uint64_t hash, NodePtr node, Clock::TimePoint now, bool count_refusal) {
  TIERCACHE_DCHECK(node.get_deleter().arena == &arena_);  // FreeChain gives it back there
  bool stored = false;
  Node* retired = nullptr;
  bool start_sketch = false;
  std::vector<std::uint32_t> seeds;
  {
    ExclusiveSection section(*this);
    // Every store checks (an overwrite can grow the bytes too): only stores
    // contest, so every contest finds the sketch started.
    start_sketch = SketchDue(node->charge());
    if (start_sketch) {
      seeds = SketchKeysOfEntries();
    } else {
      stored = UpsertLocked(hash, node, now, count_refusal);
      retired = TakeRetired();
    }
  }
  if (start_sketch) {
    // Built and seeded with no lock held (it may be megabytes to zero), then
    // swapped in. Dropped, after the section, if another store got there first.
    FrequencySketch fresh = NewSketch(seeds);
    ExclusiveSection section(*this);
    if (!sketch_on_) {
      std::swap(sketch_, fresh);
      sketch_on_ = true;
    }
    stored = UpsertLocked(hash, node, now, count_refusal);
    retired = TakeRetired();
  }
  FreeChain(retired);  // with the replaced node, if any
  return stored;       // `node`, if refused, dies unlocked
}

bool Shard::UpsertLocked(std::uint64_t hash, NodePtr& node, Clock::TimePoint now, bool count_refusal) {
  Node* old = table_.Find(hash, node->key());
  if (old != nullptr && now >= DeadAt(old)) {
    Drop(old, hash);
    ++counters_.expirations;
    old = nullptr;
  }
  if (old != nullptr && node->version < old->version) {
    if (count_refusal) ++counters_.refused;
    return false;
  }
  if (old == nullptr) {
    records_.Reserve();               // may allocate (and throw) while `node` still owns it
    table_.Insert(hash, node.get());  // likewise
    Node* n = node.release();
    bytes_ += n->charge();
    Place(n, hash);
  } else {
    // The new node takes the old one's place in the table and its record
    // (its place in the policy); the old one, with the value it holds and
    // any stripes referencing that value, is freed after the section.
    const std::uint32_t i = old->policy_index();
    bytes_ = bytes_ - old->charge() + node->charge();
    std::size_t& segment_bytes = segment_bytes_[static_cast<int>(records_[i].segment)];
    segment_bytes = segment_bytes - old->charge() + node->charge();
    table_.Replace(hash, old, node.get());
    records_.Rebind(i, node.release());
    records_[i].seen = 0;  // striped again only once read with two stripes
    if (old->stripes() > 1) --striped_;
    Retire(old);
    Touch(i);
  }
  EnforceBounds();
  return true;
}

bool Shard::Erase(std::uint64_t hash, std::string_view key) {
  Node* retired;
  bool found;
  {
    ExclusiveSection section(*this);
    Node* n = table_.Find(hash, key);
    found = n != nullptr;
    if (found) Drop(n, hash);
    retired = TakeRetired();
  }
  FreeChain(retired);
  return found;
}

void Shard::Clear() {
  // The empty table and records are made first: making them may throw, and a
  // throw inside the section, after the nodes were chained for freeing, would
  // leave the table pointing at them.
  NodeTable empty_table(max_entries_);
  PolicyTable empty_records(MaxNodes());
  Node* retired;
  {
    ExclusiveSection section(*this);
    for (NodeList& l : lists_) {
      while (Node* n = l.back()) {
        l.remove(n);
        Retire(n);
      }
    }
    records_.Swap(empty_records);  // the old arrays are freed after the section
    table_.Swap(empty_table);
    bytes_ = 0;
    striped_ = 0;
    for (std::size_t& b : segment_bytes_) b = 0;
    retired = TakeRetired();
  }
  FreeChain(retired);
}

std::size_t Shard::PurgeDead(Clock::TimePoint now) {
  std::size_t purged = 0;
  Node* retired;
  {
    ExclusiveSection section(*this);
    for (NodeList& l : lists_) {
      for (Node* n = l.front(); n != nullptr;) {
        Node* next = l.next(n);
        if (now >= DeadAt(n)) {
          Drop(n, HashKey(n->key()));
          ++purged;
        }
        n = next;
      }
    }
    counters_.expirations += purged;
    retired = TakeRetired();
  }
  FreeChain(retired);
  return purged;
}

void Shard::AddStats(L1Stats* stats) const {
  std::lock_guard<std::mutex> lock(mu_);  // excludes folding
  for (const ReaderSlot& slot : slots_) {
    stats->hits += slot.state.load(std::memory_order_relaxed) >> 32;
    stats->misses += slot.misses.load(std::memory_order_relaxed);
    stats->stale_hits += slot.stale_hits.load(std::memory_order_relaxed);
  }
  stats->hits += counters_.hits;
  stats->evictions += counters_.evictions;
  stats->expirations += counters_.expirations;
  stats->refused_fills += counters_.refused;
  stats->entries += table_.size();
  stats->bytes += bytes_;
}

// Admission contests start when the shard is full, and frequencies matter
// only there: until the shard is half full (by entries or by bytes) no
// sketch is kept, so a cache that never fills pays neither its memory (8 to
// 16 bytes per entry of max_entries) nor an update per hit, as in Caffeine.
// Hits before the start are not counted, but each entry present then counts
// once (its fill, as every later fill does), so at the start a newcomer
// ties with an old entry and the incumbent keeps its place, as before the
// sketch was lazy. Once started the sketch stays (a Clear() keeps what it
// learnt).
bool Shard::SketchDue(std::size_t incoming_charge) const {
  if (policy_ != L1Policy::kTinyLfu || sketch_on_) return false;
  // Half of max, rounded up: max - max / 2 (no overflow at SIZE_MAX).
  const bool entries_due = table_.size() + 1 >= max_entries_ - max_entries_ / 2;
  const std::size_t half_bytes = max_bytes_ - max_bytes_ / 2;
  return entries_due || incoming_charge >= half_bytes || bytes_ >= half_bytes - incoming_charge;
}

std::vector<std::uint32_t> Shard::SketchKeysOfEntries() const {
  std::vector<std::uint32_t> keys;
  keys.reserve(table_.size());
  for (const Segment segment : {Segment::kWindow, Segment::kProbation, Segment::kProtected}) {
    const auto head = static_cast<std::uint32_t>(segment);
    for (std::uint32_t i = records_[head].next; i != head; i = records_[i].next) {
      keys.push_back(records_[i].sketch_key);
    }
  }
  return keys;
}

// Sized for max_entries, at most kMaxSketchEntries (beyond that, more
// collisions instead of a sketch that cannot be allocated). If even that
// cannot be allocated, a one-block sketch: admission still works, with
// estimates blurred by collisions, and no store fails for it.
FrequencySketch Shard::NewSketch(const std::vector<std::uint32_t>& seeds) const {
  FrequencySketch sketch;
  try {
    sketch = FrequencySketch(std::min(max_entries_, kMaxSketchEntries));
  } catch (const std::bad_alloc&) {
  }
  for (std::uint32_t key : seeds) sketch.Increment(key);
  return sketch;
}

void Shard::Touch(std::uint32_t i) {
  if (policy_ == L1Policy::kLru) {
    list(Segment::kLru).move_to_front(i);
    return;
  }
  if (sketch_on_) {
    CountInSketch(i);
    sketch_.RecordRequest(/*hit=*/true);
  }
  PolicyRecord& record = records_[i];
  switch (record.segment) {
    case Segment::kWindow:
    case Segment::kProtected:
    case Segment::kLru:
      list(record.segment).move_to_front(i);
      break;
    case Segment::kProbation: {
      // A second use in the main space: promote; the protected overflow goes
      // back to probation, where it competes for admission again.
      MoveTo(records_.node(i), Segment::kProtected);
      while (list(Segment::kProtected).size() > protected_cap_ ||
             segment_bytes_[static_cast<int>(Segment::kProtected)] > protected_bytes_cap_) {
        MoveTo(list(Segment::kProtected).back(), Segment::kProbation);
      }
      break;
    }
  }
}

// A hot key's estimate is saturated nearly all the time, and incrementing a
// saturated estimate changes no counter: skip reading the sketch's block (a
// cache miss per drained hit on a large key set) while the node's mark says
// it is saturated, which holds until the next halving.
void Shard::CountInSketch(std::uint32_t i) {
  PolicyRecord& record = records_[i];
  if (KnownSaturated(record)) {
    sketch_.IncrementSaturated();
    return;
  }
  record.saturated_at = sketch_.Increment(record.sketch_key) ? SaturationMark() : 0;
}

void Shard::Place(Node* n, std::uint64_t hash) {
  records_.Attach(n, hash);
  PolicyRecord& record = records_.of(n);
  if (policy_ == L1Policy::kLru) {
    record.segment = Segment::kLru;
  } else {
    if (sketch_on_) {
      CountInSketch(n->policy_index());
      sketch_.RecordRequest(/*hit=*/false);
    }
    record.segment = Segment::kWindow;
  }
  list(record.segment).push_front(n);
  segment_bytes_[static_cast<int>(record.segment)] += n->charge();
}

void Shard::MoveTo(Node* n, Segment to) {
  PolicyRecord& record = records_.of(n);
  list(record.segment).remove(n);
  segment_bytes_[static_cast<int>(record.segment)] -= n->charge();
  record.segment = to;
  list(to).push_front(n);
  segment_bytes_[static_cast<int>(to)] += n->charge();
}

void Shard::EnforceBounds() {
  TIERCACHE_DCHECK(segment_bytes_[0] + segment_bytes_[1] + segment_bytes_[2] + segment_bytes_[3] == bytes_);
  if (policy_ == L1Policy::kTinyLfu) {
    EnforceTinyLfu();
    return;
  }
  while (OverBounds()) {
    Node* victim = list(Segment::kLru).back();
    if (victim == nullptr) break;
    Evict(victim);
  }
}

void Shard::EnforceTinyLfu() {
  NodeList& window = list(Segment::kWindow);
  while (window.size() > window_cap_ ||
         (!window.empty() && segment_bytes_[static_cast<int>(Segment::kWindow)] > window_bytes_cap_)) {
    Node* candidate = window.back();
    MoveTo(candidate, Segment::kProbation);
    if (OverBounds()) AdmitOrReject(candidate);
  }
  // Still over (by bytes): evict from the cold end of the main space first.
  while (OverBounds()) {
    Node* victim = list(Segment::kProbation).back();
    if (victim == nullptr) victim = list(Segment::kProtected).back();
    if (victim == nullptr) victim = window.back();
    if (victim == nullptr) break;
    Evict(victim);
  }
}

// The main space is full: the window's victim (`candidate`, just moved to the
// probation front) stays only if it is used more often than the main space's
// victim. Ties go to the incumbent, so one-off keys never displace it. A
// probation victim that wins goes to the probation front: the next contest is
// against the next entry, so one entry whose estimate is too high (old
// popularity not yet aged, or hash collisions) and that is not used again
// cannot turn every candidate away until the sketch ages.
void Shard::AdmitOrReject(Node* candidate) {
  TIERCACHE_DCHECK(sketch_on_);
  Node* victim = list(Segment::kProbation).back();
  if (victim == candidate) victim = list(Segment::kProtected).back();
  if (victim == nullptr) {
    Evict(candidate);
    return;
  }
  const int victim_frequency = sketch_.Frequency(records_.of(victim).sketch_key);
  sketch_.RecordContest(victim_frequency);
  if (sketch_.Frequency(records_.of(candidate).sketch_key) > victim_frequency) {
    Evict(victim);
    return;
  }
  Evict(candidate);
  if (records_.of(victim).segment == Segment::kProbation) list(Segment::kProbation).move_to_front(victim);
}

void Shard::Evict(Node* n) {
  Drop(n, HashKey(n->key()));
  ++counters_.evictions;
}

void Shard::Drop(Node* n, std::uint64_t hash) {
  const Segment segment = records_.of(n).segment;
  list(segment).remove(n);
  segment_bytes_[static_cast<int>(segment)] -= n->charge();
  bytes_ -= n->charge();
  records_.Detach(n);
  table_.Remove(hash, n);
  if (n->stripes() > 1) --striped_;
  Retire(n);  // overwrites the policy index and the charge
}

Node* Shard::TakeRetired() {
  return std::exchange(retired_, nullptr);
}

void Shard::FreeChain(Node* n) {
  while (n != nullptr) {
    Node* next = n->book.chain;
    NodeDeleter{&arena_}(n);
    n = next;
  }
}

}  // namespace tiercache::l1
