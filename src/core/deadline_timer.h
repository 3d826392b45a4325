// DeadlineTimer: runs a callback when a deadline passes unless it was
// cancelled first. GetAsync uses it so a call's future completes at its
// hard timeout even while the call still waits in the async queue behind
// slower calls.
//
// Thread-safety: Schedule/Cancel from any thread. Callbacks run on the
// timer's one thread, no timer lock held, and must not block for long. At
// most `capacity` timers are pending; Schedule refuses more (returns 0).
// Stop() (also the destructor) drops pending timers without running them.
#ifndef TIERCACHE_CORE_DEADLINE_TIMER_H_
#define TIERCACHE_CORE_DEADLINE_TIMER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace tiercache {

class DeadlineTimer {
 public:
  using Fire = std::function<void()>;

  explicit DeadlineTimer(size_t capacity) : capacity_(capacity), thread_([this] { Run(); }) {}
  ~DeadlineTimer() { Stop(); }
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  // Runs `fire` at `at` (steady clock) unless Cancel(id) comes first. The id,
  // or 0 when refused (at capacity, or stopped).
  uint64_t Schedule(std::chrono::steady_clock::time_point at, Fire fire) {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || by_id_.size() >= capacity_) return 0;
      id = ++next_id_;
      auto it = queue_.emplace(at, std::make_pair(id, std::move(fire)));
      by_id_.emplace(id, it);
    }
    cv_.notify_all();
    return id;
  }

  // Forgets timer `id` if it has not fired (0 is ignored).
  void Cancel(uint64_t id) {
    if (id == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    queue_.erase(it->second);
    by_id_.erase(it);
  }

  size_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return by_id_.size();
  }

  // Joins the thread; pending timers never fire. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      queue_.clear();
      by_id_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  using Queue = std::multimap<std::chrono::steady_clock::time_point, std::pair<uint64_t, Fire>>;

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const auto at = queue_.begin()->first;
      if (std::chrono::steady_clock::now() < at) {
        cv_.wait_until(lock, at);
        continue;
      }
      Fire fire = std::move(queue_.begin()->second.second);
      by_id_.erase(queue_.begin()->second.first);
      queue_.erase(queue_.begin());
      lock.unlock();
      fire();
      lock.lock();
    }
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Queue queue_;                                    // GUARDED_BY(mu_)
  std::map<uint64_t, Queue::iterator> by_id_;      // GUARDED_BY(mu_)
  uint64_t next_id_ = 0;                           // GUARDED_BY(mu_)
  bool stop_ = false;                              // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_DEADLINE_TIMER_H_
