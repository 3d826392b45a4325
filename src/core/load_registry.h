// LoadRegistry: the load running for each key in this process.
//
// Whoever needs a key loaded (a get that won the lease, a get whose lease
// wait ran out, an early refresh, a batch) joins the load already running for
// that key instead of starting another. So a hung loader occupies one thread
// per key however many gets arrive, and a load outlives the callers that
// gave up on it (soft or hard timeout) without being started again. A load
// that began before a local invalidation of its key is not joined: it is
// replaced by a new one (its own result still reaches its own callers). At
// most kMaxLoadsPerKey loads of one key run at once, so invalidating a key
// whose loader hangs (or a key sharing its local fence stripe) cannot pile
// up hung loads until the loader pool starves: past the cap, Join refuses,
// and a caller may wait (WaitForRoom) until one of them ends.
//
// Thread-safety: all methods may be called concurrently. Load::WaitFor and
// WaitForRoom block up to their argument; nothing else blocks.
#ifndef TIERCACHE_CORE_LOAD_REGISTRY_H_
#define TIERCACHE_CORE_LOAD_REGISTRY_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tiercache/cache.h"

namespace tiercache {

class LoadRegistry {
 public:
  // One load's outcome, shared by the loader thread and every caller waiting.
  class Load {
   public:
    explicit Load(uint64_t local_epoch) : local_epoch_(local_epoch) {}
    uint64_t local_epoch() const { return local_epoch_; }
    // Waits (real time) at most `max_wait` for the result.
    std::optional<Result<CachedValue>> WaitFor(std::chrono::nanoseconds max_wait) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, max_wait, [this] { return result_.has_value(); });
      return result_;
    }

   private:
    friend class LoadRegistry;
    const uint64_t local_epoch_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::optional<Result<CachedValue>> result_;  // GUARDED_BY(mu_); set once
  };

  // Loads of one key that may run at once: the newest, and one begun
  // before a local invalidation.
  static constexpr int kMaxLoadsPerKey = 2;

  // The load of `key` to wait for: the running one if it started at
  // `local_epoch` (no local invalidation since), else a new one, registered
  // here. `.second` is true for a new load: the caller must run it and end
  // it with Finish. A null load: kMaxLoadsPerKey loads of the key are
  // running and none can be joined; the caller must not load.
  std::pair<std::shared_ptr<Load>, bool> Join(const std::string& key, uint64_t local_epoch) {
    std::lock_guard<std::mutex> lock(mu_);
    return JoinLocked(key, local_epoch);
  }

  // Join for each of `keys` (distinct) at `local_epochs[i]`, all under one
  // lock: of two batches over the same keys, one starts every load and the
  // other joins them all (never a split of the keys between the two).
  std::vector<std::pair<std::shared_ptr<Load>, bool>> JoinMany(const std::vector<std::string>& keys,
                                                               const std::vector<uint64_t>& local_epochs) {
    std::vector<std::pair<std::shared_ptr<Load>, bool>> out;
    out.reserve(keys.size());
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) out.push_back(JoinLocked(keys[i], local_epochs[i]));
    return out;
  }

  // Waits (real time) at most `max_wait` until fewer than kMaxLoadsPerKey
  // loads of `key` run; true if so. A key at the cap keeps it until one of
  // its loads ends (Finish), so a caller refused by Join can wait here for
  // the oldest to end and then Join again, instead of failing at once.
  // Returns false at once after Stop().
  bool WaitForRoom(const std::string& key, std::chrono::nanoseconds max_wait) {
    return WaitForRoomAny(std::span<const std::string>(&key, 1), max_wait);
  }
  // WaitForRoom for several keys: true as soon as one of them has room.
  bool WaitForRoomAny(std::span<const std::string> keys, std::chrono::nanoseconds max_wait) {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiters_;
    const bool room = room_.wait_for(lock, max_wait, [&] {
      if (stopping_) return true;
      for (const std::string& key : keys) {
        if (HasRoomLocked(key)) return true;
      }
      return false;
    });
    --waiters_;
    return room && !stopping_;
  }
  // One step of a wait for room that ends at `deadline`: what is left of it,
  // at most kWaitStep, so a waiter re-checks its deadline and Stop() often.
  static constexpr std::chrono::milliseconds kWaitStep{5};
  static std::chrono::nanoseconds WaitStep(Clock::TimePoint deadline, Clock::TimePoint now) {
    return std::clamp<std::chrono::nanoseconds>(deadline - now, std::chrono::nanoseconds(0), kWaitStep);
  }
  // The errors of a key that stayed at its cap of loads: until the caller's
  // hard timeout, or until the cache was destroyed.
  static Status CapOutlastedDeadline(const std::string& key) {
    return Status::DeadlineExceeded("loads of '" + key +
                                    "' begun before its latest local invalidation still ran at the hard timeout "
                                    "(a hung loader?)");
  }
  static Status StoppedWhileWaiting(const std::string& key) {
    return Status::Cancelled("cache shut down while '" + key + "' waited to load");
  }

  // True when a load of `key` could start now (fewer than the cap running).
  bool HasRoom(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    return HasRoomLocked(key);
  }
  // Wakes every WaitForRoom and makes later ones return false at once (the
  // cache is being destroyed).
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    room_.notify_all();
  }
  bool stopping() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  }

  // True when a load of `key` is running.
  bool Running(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    return keys_.count(key) != 0;
  }

  // Publishes `load`'s result and forgets it.
  void Finish(const std::string& key, const std::shared_ptr<Load>& load, Result<CachedValue> result) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = keys_.find(key);
      if (it != keys_.end()) {
        if (it->second.newest == load) it->second.newest.reset();
        wake = it->second.running == kMaxLoadsPerKey && waiters_ > 0;  // below its cap again
        if (--it->second.running == 0) keys_.erase(it);
      }
    }
    if (wake) room_.notify_all();
    {
      std::lock_guard<std::mutex> lock(load->mu_);
      load->result_.emplace(std::move(result));
    }
    load->cv_.notify_all();
  }

  // Loads running (of every key).
  size_t running() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& [key, e] : keys_) n += static_cast<size_t>(e.running);
    return n;
  }

 private:
  struct Entry {
    std::shared_ptr<Load> newest;  // the one to join; null once it finished
    int running = 0;               // loads of the key running, superseded ones included
  };

  bool HasRoomLocked(const std::string& key) const {
    auto it = keys_.find(key);
    return it == keys_.end() || it->second.running < kMaxLoadsPerKey;
  }

  std::pair<std::shared_ptr<Load>, bool> JoinLocked(const std::string& key, uint64_t local_epoch) {
    Entry& e = keys_[key];
    if (e.newest && e.newest->local_epoch() == local_epoch) return {e.newest, false};
    if (e.running >= kMaxLoadsPerKey) return {nullptr, false};
    e.newest = std::make_shared<Load>(local_epoch);
    ++e.running;
    return {e.newest, true};
  }

  mutable std::mutex mu_;
  std::condition_variable room_;                 // a key left its cap, or Stop()
  int waiters_ = 0;                              // GUARDED_BY(mu_): in WaitForRoomAny
  bool stopping_ = false;                        // GUARDED_BY(mu_)
  std::unordered_map<std::string, Entry> keys_;  // GUARDED_BY(mu_)
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_LOAD_REGISTRY_H_
