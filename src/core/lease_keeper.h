// LeaseKeeper: keeps the distributed leases of running loads alive.
//
// A load may outlast its lease's TTL (a slow source, a long soft timeout).
// While it runs, its lease is registered here and a background thread
// extends every registered lease each `period` (a third of the lease TTL), by
// token: a lease that was freed or taken over is not touched. Without this,
// another pod would take the expired lease and load the same key again.
// A lease has a maximum lifetime: past its `give_up_at` it is no longer
// extended, so a hung load cannot hold a key's lease forever (it expires one
// lease TTL later and another pod may load).
//
// Releases go through here too: Release() queues the lease's release for the
// keeper's thread, so no caller waits on the network to give a lease back
// (a caller's deadline is never spent on it). The queue is bounded; a release
// that does not fit is dropped and the lease expires by its TTL.
//
// Thread-safety: Add/Remove/Release from any thread. The callbacks run on the
// keeper's thread with no keeper lock held (they do network I/O), extends and
// releases of one lease in the order they were asked for. At most one lease
// per running load is registered, so the set is bounded by the loader
// threads.
#ifndef TIERCACHE_CORE_LEASE_KEEPER_H_
#define TIERCACHE_CORE_LEASE_KEEPER_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace tiercache {

class LeaseKeeper {
 public:
  using Extend = std::function<void(const std::string& key, const std::string& token)>;
  using Free = std::function<void(const std::string& key, const std::string& token)>;

  // Releases queued at most; more are dropped (those leases expire).
  static constexpr size_t kMaxQueuedReleases = 4096;

  // REQUIRES: period > 0.
  LeaseKeeper(std::chrono::milliseconds period, Extend extend, Free release);
  ~LeaseKeeper();  // Stop()
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Keeps `key`'s lease held by `token` alive until Remove or `give_up_at`
  // (steady clock).
  void Add(const std::string& token, const std::string& key, std::chrono::steady_clock::time_point give_up_at);
  void Remove(const std::string& token);
  // Remove(token), then gives the lease back on the keeper's thread, soon.
  // Never blocks on I/O. False when dropped (queue full or stopped).
  bool Release(const std::string& token, const std::string& key);
  // Releases queued and not yet done (for tests).
  size_t queued_releases() const;
  // Runs the releases still queued, then stops and joins the thread.
  // Idempotent.
  void Stop();

 private:
  void Run();

  const std::chrono::milliseconds period_;
  const Extend extend_;
  const Free release_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Held {
    std::string key;
    std::chrono::steady_clock::time_point give_up_at;
  };
  std::map<std::string, Held> leases_;  // GUARDED_BY(mu_): token -> lease
  std::deque<std::pair<std::string, std::string>> releases_;  // GUARDED_BY(mu_): token, key
  bool stop_ = false;                                          // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_LEASE_KEEPER_H_
