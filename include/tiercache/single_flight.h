// SingleFlight<T>: concurrent calls for one key share one execution.
//
// The first caller for a key (the leader) runs its function; callers arriving
// while it runs (waiters) do not run theirs, they wait for the leader's result
// until their own deadline. When the leader finishes, the key is forgotten: a
// failure is handed to that flight's waiters only and never poisons later
// calls, which start a new flight.
//
// Used by L1Cache::get_or_load() and meant for the tiered core (one load per
// key per process, under the distributed lease).
//
// Thread-safety: all methods may be called concurrently. The function runs on
// the leader's thread with no SingleFlight lock held, so it may block, do I/O
// or call back into SingleFlight for other keys. (Calling Do() for the SAME key
// from inside its own function waits for itself until the deadline.)
// Deadlines are read from the injected Clock; waiters re-check it at least
// every kPollInterval of real time, so a FakeClock advanced by a test is seen.
#ifndef TIERCACHE_SINGLE_FLIGHT_H_
#define TIERCACHE_SINGLE_FLIGHT_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "tiercache/clock.h"
#include "tiercache/status.h"

namespace tiercache {

template <typename T>
class SingleFlight {
 public:
  static constexpr std::chrono::milliseconds kPollInterval{5};

  // `clock` is not owned and must outlive this object; null means Clock::Real().
  explicit SingleFlight(Clock* clock = nullptr) : clock_(clock ? clock : Clock::Real()) {}
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // Runs `fn` (callable as `Result<T>()`) unless a call for `key` is in flight,
  // in which case waits for that call's result until `deadline`.
  // Returns fn's result (leader), a copy of the leader's result (waiters), or:
  //   kDeadlineExceeded  a waiter's deadline passed first (the flight goes on).
  //   kInternal          fn threw; every caller of the flight gets this.
  // The leader runs fn to completion whatever `deadline` says.
  template <typename Fn>
  Result<T> Do(std::string_view key, Clock::TimePoint deadline, Fn&& fn) {
    std::shared_ptr<Call> call;
    bool leader = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = calls_.find(key);
      if (it == calls_.end()) {
        call = std::make_shared<Call>();
        calls_.emplace(std::string(key), call);
        leader = true;
      } else {
        call = it->second;
      }
    }
    if (!leader) return Wait(*call, deadline);
    Result<T> result = RunGuarded(fn);
    Finish(key, call, result);
    return result;
  }

  // Keys with a call in flight (for tests and metrics).
  std::size_t in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }
  // Callers currently waiting for another caller's result.
  std::size_t waiting() const { return waiting_.load(std::memory_order_acquire); }

 private:
  struct Call {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<T>> result;  // GUARDED_BY(mu); set once
  };

  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  template <typename Fn>
  static Result<T> RunGuarded(Fn& fn) noexcept {
    try {
      return fn();
    } catch (const std::exception& e) {
      return Status::Internal(std::string("single-flight function threw: ") + e.what());
    } catch (...) {
      return Status::Internal("single-flight function threw a non-std exception");
    }
  }

  // Forgets the key first, so a caller arriving now starts a new flight rather
  // than joining a finished one; then publishes the result to the waiters.
  void Finish(std::string_view key, const std::shared_ptr<Call>& call, const Result<T>& result) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = calls_.find(key);
      if (it != calls_.end() && it->second == call) calls_.erase(it);
    }
    {
      std::lock_guard<std::mutex> lock(call->mu);
      call->result.emplace(result);
    }
    call->cv.notify_all();
  }

  Result<T> Wait(Call& call, Clock::TimePoint deadline) {
    waiting_.fetch_add(1, std::memory_order_acq_rel);
    std::unique_lock<std::mutex> lock(call.mu);
    while (!call.result.has_value()) {
      const Clock::TimePoint now = clock_->Now();
      if (now >= deadline) {
        waiting_.fetch_sub(1, std::memory_order_acq_rel);
        return Status::DeadlineExceeded("waiting for an in-flight load of the same key");
      }
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
      call.cv.wait_for(lock, std::min<std::chrono::nanoseconds>(left, kPollInterval));
    }
    waiting_.fetch_sub(1, std::memory_order_acq_rel);
    return *call.result;
  }

  Clock* const clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Call>, KeyHash, std::equal_to<>> calls_;  // GUARDED_BY(mu_)
  std::atomic<std::size_t> waiting_{0};
};

}  // namespace tiercache

#endif  // TIERCACHE_SINGLE_FLIGHT_H_
