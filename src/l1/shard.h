// Shard: one lock's worth of the L1 cache: a hash table, the policy lists,
// the frequency sketch (TinyLFU) and counters.
//
// Read-mostly locking. Reads do not take the mutex: a reader announces
// itself in its own cache line (a ReaderSlot, picked by the CPU it ran on
// at most 64 lookups ago), checks that no writer is active, and then only
// reads the table and the node. What a hit would change (recency,
// frequency) is recorded in the slot's small read buffer and applied later
// under mu_, as Caffeine does:
// when the buffer is full the reader drains it itself if the mutex is free.
// A drain writes only the policy lists and the sketch, which readers never
// read, so it holds mu_ alone and other readers go on. (When it finds
// entries read from several CPUs it then replaces their nodes with striped
// copies in an exclusive section: see NoteReader.) So a hit writes only
// its own slot's lines (and the value's reference count), and readers on
// different CPUs do not bounce lines.
// Writers (fills, invalidations, evictions) hold mu_, raise
// writer_active_ and wait for the announced readers to leave: an "exclusive
// section". A reader that finds a writer active falls back to the mutex. The
// reader's announce-then-check and the writer's raise-then-scan are seq_cst,
// so at least one of them sees the other (Dekker). Read buffers hold the hit
// nodes' policy record indices; every exclusive section drains them before
// touching the table, so no buffered index outlives its node's record.
// Buffers are lossy by design: a dropped record only makes the policy
// slightly less exact.
//
// The cache picks the shard from the key's hash, computes `now` and builds
// new nodes (key copy, weigher) before calling in, so exclusive sections
// hold only table and list updates (and, in a writer's section, the striped
// copies of at most kMaxStripesPerSection entries its drains find read from
// several CPUs). Nodes that leave the shard are chained on
// retired_ and freed after the section ends, so no value destructor
// (possibly the last owner of a large string) runs inside it.
//
// Thread-safety: all public methods may be called concurrently.
#ifndef TIERCACHE_L1_SHARD_H_
#define TIERCACHE_L1_SHARD_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "l1/frequency_sketch.h"
#include "l1/node.h"
#include "l1/node_arena.h"
#include "l1/node_table.h"
#include "tiercache/clock.h"
#include "tiercache/l1_cache.h"

namespace tiercache::l1 {

struct ShardLimits {
  std::size_t max_entries = 1;  // > 0
  std::size_t max_bytes = 1;    // > 0; also the largest charge of one node
  L1Policy policy = L1Policy::kLru;
  double window_fraction = 0.01;
  Clock::Duration max_stale{0};  // retention of expired values / negatives
  // The striped copies' stripe count (L1Options::value_stripes, resolved): above 1,
  // drains make stripes for entries read with two different stripes.
  std::size_t value_stripes = 1;
};

enum class LookupOutcome { kFresh, kStale, kMiss };
// kCount: a caller's read (counters, recency, frequency). kQuiet: an internal
// re-check that must not look like a second read.
enum class Accounting { kCount, kQuiet };

class alignas(64) Shard {
 public:
  Shard() = default;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard();

  // REQUIRES: called once, before any other method.
  void Configure(const ShardLimits& limits);

  // Fresh entry of `key` into *out (kFresh); with a stale_bound, also an
  // expired one whose expiry is at most that far behind clock.Now() (kStale).
  // Tombstones and dead entries are misses (dead ones are dropped); *out is
  // left untouched on a miss. The value *out held before is released after
  // the read section, never inside it (its deleter is the caller's code: it
  // may take time, or touch this shard, whose writers wait for the section).
  LookupOutcome Lookup(std::uint64_t hash, std::string_view key, const Clock& clock,
                       std::optional<Clock::Duration> stale_bound, Accounting accounting, L1Entry* out) {
    // Nothing to release (no control block: a fresh entry, as Get's): inline.
    // Not `value == nullptr`: an aliasing pointer to null may own a value.
    if (out->value.use_count() == 0) {
      return LookupInto(hash, key, clock, stale_bound, accounting, out);
    }
    return LookupReleasing(hash, key, clock, stale_bound, accounting, out);
  }

  // Stores `node`, whose key hashes to `hash` (REQUIRES: node->charge() <=
  // limits.max_bytes), unless a live entry of a higher version is present;
  // an overwrite replaces the entry's node. Returns false when refused; a
  // refusal is counted in refused_fills when `count_refusal`. May throw
  // std::bad_alloc (the table or records could not grow): `node` is then
  // not stored, but a dead entry of its key may have been dropped (and
  // counted as expired), and the sketch started.
  bool Upsert(std::uint64_t hash, NodePtr node, Clock::TimePoint now, bool count_refusal);

  // Drops the entry of `key` if any; true when one was present.
  bool Erase(std::uint64_t hash, std::string_view key);
  void Clear();
  // Drops the entries dead at `now`; returns how many.
  std::size_t PurgeDead(Clock::TimePoint now);
  // Adds this shard's counters to *stats.
  void AddStats(L1Stats* stats) const;
  // Where this shard's nodes are allocated (NewNode's `arena`); lives as
  // long as the shard. Every node Upsert() is given must come from it.
  NodeArena* arena() { return &arena_; }

 private:
  static constexpr std::size_t kReaderSlots = 16;  // power of two
  static_assert(kReaderSlots < PolicyRecord::kStriped, "a record's `seen` holds 1 + a slot below its flag");
  // Records per slot before its reader drains it. Each drain costs the
  // shard's mutex (a line the other CPUs' drains also take) besides the
  // records' own upkeep: at 32, two threads reading the same keys lost 11 %
  // of their per-thread rate against 64 (A/B, 1,000 keys); 128 did no
  // better. An exclusive section drains every slot: at most
  // kReaderSlots x kReadBuffer records, about 1,000 policy updates.
  static constexpr std::uint32_t kReadBuffer = 64;
  // Stripings one exclusive section's drains may do (allocating inside it).
  static constexpr std::uint32_t kMaxStripesPerSection = 16;
  // Striped entries a shard may hold at once: max_entries / 64, at least
  // 128 (see NoteReader).
  static constexpr std::size_t kMinStripedEntries = 128;
  static constexpr std::size_t kEntriesPerStriped = 64;

  // One per CPU (modulo kReaderSlots): written by the readers running there,
  // read by writers. Threads sharing a slot (a preempted reader, more CPUs
  // than slots) stay correct: the counters are exact RMWs and the read
  // buffer may only drop records.
  struct alignas(64) ReaderSlot {
    // Low 32 bits: readers inside a read section. High 32 bits: fresh hits
    // not yet folded into Counters::hits. A hit leaves with one RMW that adds
    // a hit and removes the reader; every exclusive section folds the hits,
    // and a reader forces one past kForceFoldHits, so the high half cannot
    // overflow.
    std::atomic<std::uint64_t> state{0};
    std::atomic<std::uint32_t> recorded{0};  // filled prefix of `buffer`
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> stale_hits{0};
    // The hit nodes' policy records (Node::policy_index): a drain then
    // reads the dense records, not the nodes.
    std::atomic<std::uint32_t> buffer[kReadBuffer] = {};
  };

  // mu_ held, no reader inside, read buffers drained, for its lifetime.
  class ExclusiveSection {
   public:
    explicit ExclusiveSection(Shard& shard);
    ~ExclusiveSection();
    ExclusiveSection(const ExclusiveSection&) = delete;
    ExclusiveSection& operator=(const ExclusiveSection&) = delete;

   private:
    Shard& shard_;
    std::lock_guard<std::mutex> lock_;
  };

  // With mu_ held: raise writer_active_, wait for the readers, drain every
  // slot (the ExclusiveSection's constructor); and the reverse.
  void BeginExclusive();
  void EndExclusive();

  static constexpr std::uint64_t kReaderMask = 0xFFFFFFFFULL;
  static constexpr std::uint64_t kLeaveWithHit = (std::uint64_t{1} << 32) - 1;
  static constexpr std::uint64_t kLeave = ~std::uint64_t{0};  // i.e. minus one
  // Unfolded hits at which a reader drains even if it has to wait.
  static constexpr std::uint64_t kForceFoldHits = std::uint64_t{1} << 30;

  struct Counters {
    std::uint64_t hits = 0, evictions = 0, expirations = 0, refused = 0;
  };

  NodeList& list(Segment s) { return lists_[static_cast<int>(s)]; }
  // The most nodes the shard holds at once: max_entries_ + 1 (an insertion
  // precedes its eviction), saturating.
  std::size_t MaxNodes() const { return max_entries_ + (max_entries_ < ~std::size_t{0} ? 1 : 0); }
  bool OverBounds() const { return table_.size() > max_entries_ || bytes_ > max_bytes_; }

  static std::size_t ThreadSlot();
  Clock::TimePoint DeadAt(const Node* n) const {
    return n->kind() == L1EntryKind::kTombstone ? n->expiry : n->expiry + max_stale_;
  }
  // Lookup() when *out holds a value: takes it out, releases it after.
  LookupOutcome LookupReleasing(std::uint64_t hash, std::string_view key, const Clock& clock,
                                std::optional<Clock::Duration> stale_bound, Accounting accounting,
                                L1Entry* out);
  // Lookup() with *out's value already taken out (null).
  LookupOutcome LookupInto(std::uint64_t hash, std::string_view key, const Clock& clock,
                           std::optional<Clock::Duration> stale_bound, Accounting accounting, L1Entry* out);
  LookupOutcome Classify(const Node* n, Clock::TimePoint now,
                         std::optional<Clock::Duration> stale_bound) const;
  LookupOutcome LookupExclusive(std::uint64_t hash, std::string_view key, Clock::TimePoint now,
                                std::optional<Clock::Duration> stale_bound, Accounting accounting,
                                L1Entry* out);
  // The entry of `key` unless it is dead, which it then drops (and counts).
  // REQUIRES: inside an ExclusiveSection.
  Node* FindLiveLocked(std::uint64_t hash, std::string_view key, Clock::TimePoint now);
  void DropIfDead(std::uint64_t hash, std::string_view key, Clock::TimePoint now);
  void CountRead(ReaderSlot& slot, LookupOutcome outcome);
  // Records a hit on `n` for the next drain; true when the buffer is full.
  static bool Record(ReaderSlot& slot, const Node* n);
  void TryDrain(ReaderSlot& slot);
  void WaitForReaders();
  void DrainReadBuffers();  // every slot; REQUIRES: inside an ExclusiveSection
  void DrainSlot(ReaderSlot& slot);  // REQUIRES: mu_ held
  // DrainSlot, then the striping it left pending, in an exclusive section
  // of its own (REQUIRES: mu_ held, by the caller's lock, and the caller in
  // no read section). Returns the nodes to free once mu_ is released.
  [[nodiscard]] Node* DrainAndStripe(ReaderSlot& slot);
  // A drained hit on record `i` from a reader using stripe `from` - 1, whose
  // last one came from a reader using another stripe (or none): stripes its
  // node when there was one (now inside an exclusive section, within its
  // budget; else left in pending_stripes_). REQUIRES: mu_ held.
  void NoteReader(std::uint32_t i, std::uint8_t from);
  // A striped copy of record `i`'s node (NewStripedCopy), or null when it
  // has nothing to stripe or no memory (then the record may be noted
  // again). REQUIRES: mu_ held; readers may be inside.
  NodePtr MakeStripedCopy(std::uint32_t i);
  // Puts `copy` (of record i's node, or null: nothing) in its node's place
  // in the table and the record; the old node is retired. REQUIRES: inside
  // an exclusive section.
  void InstallStriped(std::uint32_t i, NodePtr copy);

  bool UpsertLocked(std::uint64_t hash, NodePtr& node, Clock::TimePoint now, bool count_refusal);
  void Touch(std::uint32_t record);  // a read or an overwrite of its node: recency and frequency
  void Place(Node* n, std::uint64_t hash);  // a new node enters the policy
  void MoveTo(Node* n, Segment to);  // from its segment to the front of `to`, with its charge
  void CountInSketch(std::uint32_t record);  // TinyLFU: one occurrence of its node's key
  // TinyLFU: the sketch is not started yet and a store of `incoming_charge`
  // makes the shard half full (see shard.cc).
  bool SketchDue(std::size_t incoming_charge) const;
  // The sketch keys of every entry, to seed a new sketch with.
  std::vector<std::uint32_t> SketchKeysOfEntries() const;
  // A sketch for this shard, seeded with one increment per key. No lock
  // needed (reads only settings fixed by Configure); does not throw on
  // allocation failure (see shard.cc).
  FrequencySketch NewSketch(const std::vector<std::uint32_t>& seeds) const;
  static constexpr std::size_t kMaxSketchEntries = std::size_t{1} << 24;  // a 128 MiB sketch
  // The low 16 bits of the sketch's halvings(), what a PolicyRecord keeps
  // (0 once every 2^16 halvings: then no key is taken as saturated).
  std::uint16_t SaturationMark() const { return static_cast<std::uint16_t>(sketch_.halvings()); }
  // The record's key is saturated until the next halving (see CountInSketch).
  bool KnownSaturated(const PolicyRecord& r) const {
    const std::uint16_t mark = SaturationMark();
    return mark != 0 && r.saturated_at == mark;
  }
  void EnforceBounds();
  void EnforceTinyLfu();
  void AdmitOrReject(Node* candidate);
  void Evict(Node* n);           // for room: counted in evictions
  // Unlinks `n` (its key hashing to `hash`) and retires it, no counter.
  void Drop(Node* n, std::uint64_t hash);
  void Retire(Node* n) {  // REQUIRES: `n` left the table and the policy
    n->book.chain = retired_;
    retired_ = n;
  }
  Node* TakeRetired();
  void FreeChain(Node* n);  // no lock needed (the arena has its own)

  mutable std::mutex mu_;
  // Raised for the whole of every exclusive section; on its own line since
  // every reader loads it.
  alignas(64) std::atomic<bool> writer_active_{false};
  ReaderSlot slots_[kReaderSlots];
  // Written only in exclusive sections; read in read sections too.
  alignas(64) NodeTable table_;
  // Below: written by drains too, so on other lines than table_, which
  // every reader reads.
  alignas(64) PolicyTable records_;          // GUARDED_BY(mu_): the nodes' policy records
  NodeList lists_[PolicyTable::kLists] = {   // GUARDED_BY(mu_), indexed by Segment
      {&records_, 0}, {&records_, 1}, {&records_, 2}, {&records_, 3}};
  FrequencySketch sketch_;                   // GUARDED_BY(mu_), TinyLFU only
  bool sketch_on_ = false;                   // GUARDED_BY(mu_): see SketchDue
  std::size_t bytes_ = 0;                    // GUARDED_BY(mu_)
  std::size_t segment_bytes_[PolicyTable::kLists] = {};  // GUARDED_BY(mu_): charges per Segment
  Counters counters_;                        // GUARDED_BY(mu_): writers' counts
  Node* retired_ = nullptr;                  // GUARDED_BY(mu_), freed outside it
  bool exclusive_ = false;                   // GUARDED_BY(mu_): inside an ExclusiveSection
  std::uint32_t stripes_in_section_ = 0;     // GUARDED_BY(mu_): NoteReader's budget
  std::size_t striped_ = 0;                  // GUARDED_BY(mu_): entries whose node is striped
  // Records a drain outside an exclusive section found to stripe (NoteReader).
  std::uint32_t pending_stripes_[kReadBuffer] = {};  // GUARDED_BY(mu_)
  std::uint32_t pending_stripe_count_ = 0;           // GUARDED_BY(mu_)
  NodeArena arena_;                          // thread-safe: the nodes' memory
  // Set by Configure(), then read-only.
  std::size_t max_entries_ = 1;
  std::size_t max_bytes_ = 1;
  std::size_t window_cap_ = 1;
  std::size_t protected_cap_ = 0;
  std::size_t window_bytes_cap_ = 1;
  std::size_t protected_bytes_cap_ = 0;
  L1Policy policy_ = L1Policy::kLru;
  Clock::Duration max_stale_{0};
  std::size_t stripe_mask_ = 0;  // value_stripes - 1: 0 means no stripes
  std::size_t max_striped_ = 0;  // see kMinStripedEntries
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_SHARD_H_
