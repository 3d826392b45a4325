// SubmissionQueue: how caller threads hand requests to the I/O thread.
// Internal.
//
// Callers push under a mutex held only to append to a vector; the I/O thread
// takes everything queued at once (a swap). Before it sleeps in epoll_wait,
// the I/O thread says so (PrepareSleep); a push that finds it sleeping, or
// about to, writes the eventfd once, which the I/O thread polls with its
// sockets. The counts of pushed and taken requests close the race between
// PrepareSleep and a push: whichever comes second sees the other.
//
// Thread-safety: Push, Close and Wake from any thread; the rest from the I/O
// thread only.
#ifndef TIERCACHE_SRC_REDIS_SUBMISSION_QUEUE_H_
#define TIERCACHE_SRC_REDIS_SUBMISSION_QUEUE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "tiercache/status.h"

namespace tiercache::redis::internal {

struct Request;

class SubmissionQueue {
 public:
  SubmissionQueue() = default;
  ~SubmissionQueue();  // closes the eventfd
  SubmissionQueue(const SubmissionQueue&) = delete;
  SubmissionQueue& operator=(const SubmissionQueue&) = delete;

  // Creates the eventfd. kInternal when the system refuses.
  Status Init();
  // The fd to poll for readability (a push woke the I/O thread).
  int event_fd() const { return event_fd_; }

  // Queues `reqs`; false, queuing nothing, once Close() was called. Wakes
  // the I/O thread if it sleeps.
  bool Push(Request* const* reqs, size_t n);
  // Refuses further pushes and returns what was queued and not taken.
  std::vector<Request*> Close();
  // Wakes the I/O thread whatever it is doing (to stop it).
  void Wake();

  // I/O thread: appends everything queued to *out.
  void TakeAll(std::vector<Request*>* out);
  // I/O thread: about to sleep. False when a push came since the last
  // TakeAll (take it instead of sleeping); then the I/O thread is awake.
  bool PrepareSleep();
  // I/O thread: back from epoll_wait.
  void Awake() { sleeping_.store(false, std::memory_order_relaxed); }
  // I/O thread: the eventfd was readable: reset it.
  void ConsumeWake();

 private:
  int event_fd_ = -1;
  std::mutex mu_;
  std::vector<Request*> queued_;  // GUARDED_BY(mu_)
  bool closed_ = false;           // GUARDED_BY(mu_)
  std::atomic<uint64_t> pushed_{0};
  uint64_t taken_ = 0;  // I/O thread only
  std::atomic<bool> sleeping_{false};
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_SUBMISSION_QUEUE_H_
