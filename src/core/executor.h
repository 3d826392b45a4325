// BoundedExecutor: a fixed set of threads running tasks from a bounded queue.
//
// The tiered cache runs loaders here, so a caller can stop waiting (soft or
// hard timeout) while the load finishes and fills the cache in the
// background, and so early refreshes never run on a reader's thread.
//
// Every task runs exactly once: with cancelled == false on a worker thread, or
// with cancelled == true on the thread calling Shutdown() (or the destructor)
// if it was still queued then. Submit() never blocks: a full queue is an error.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread,
// including from inside a task (Submit only).
#ifndef TIERCACHE_CORE_EXECUTOR_H_
#define TIERCACHE_CORE_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tiercache/status.h"

namespace tiercache {

class BoundedExecutor {
 public:
  using Task = std::function<void(bool cancelled)>;

  // REQUIRES: threads >= 1, queue_capacity >= 1.
  BoundedExecutor(int threads, std::size_t queue_capacity);
  ~BoundedExecutor();  // Shutdown()
  BoundedExecutor(const BoundedExecutor&) = delete;
  BoundedExecutor& operator=(const BoundedExecutor&) = delete;

  // Queues `task`. Errors: kResourceExhausted (queue full; the task is not
  // run), kCancelled (shut down; the task is not run).
  Status Submit(Task task);

  // Stops accepting tasks, cancels the queued ones, waits for running ones.
  // Idempotent. Must not be called from inside a task.
  void Shutdown();

  std::size_t queued() const;

 private:
  void Work();

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;   // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_EXECUTOR_H_
