// BoundedExecutor: a set of worker threads running tasks from a bounded queue,
// with a bulkhead against hung tasks.
//
// The tiered cache runs loaders here, so a caller can stop waiting (soft or
// hard timeout) while the load finishes and fills the cache in the
// background, and so early refreshes never run on a reader's thread.
//
// Every task runs exactly once: with cancelled == false on a worker thread, or
// with cancelled == true on the thread calling Shutdown() (or the destructor)
// if it was still queued then. Submit() never blocks: a full queue is an error.
//
// Overdue tasks. A task that never returns holds its worker thread; with
// `threads` such tasks every worker is stuck and queued tasks (loads of other
// keys) never run. When ExecutorOptions::overdue_after > 0, a monitor thread
// looks every max(1ms, overdue_after / 4) for tasks that have been running for
// at least overdue_after. Such a task is "overdue": its thread no longer
// counts against `threads`, and the executor starts a replacement worker so
// queued tasks keep running. At most `max_overdue` tasks are overdue at once;
// past that, a long task holds its thread as before. When an overdue task
// returns, its thread goes back to work if fewer than `threads` non-overdue
// workers are alive, and otherwise exits (the monitor joins it), so the pool
// shrinks back to `threads`. A hung task is never interrupted.
//
// Bound: at most threads + max_overdue worker threads exist at any time
// (counting exited ones not yet joined), plus the monitor thread when
// overdue_after > 0.
//
// Thread-safety: every method may be called from any thread concurrently;
// Submit() and the accessors also from inside a task, Shutdown() not.
#ifndef TIERCACHE_CORE_EXECUTOR_H_
#define TIERCACHE_CORE_EXECUTOR_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

#include "tiercache/status.h"

namespace tiercache {

struct ExecutorOptions {
  // Worker threads that run tasks (not counting replacements for overdue
  // tasks). REQUIRES: >= 1.
  int threads = 4;
  // Tasks that may wait in the queue; Submit() fails beyond it. REQUIRES: >= 1.
  std::size_t queue_capacity = 1024;
  // A task running at least this long is overdue and gets its thread replaced
  // (see above). 0 means never: a long task holds its thread until it returns.
  // REQUIRES: >= 0.
  std::chrono::milliseconds overdue_after{0};
  // Most tasks overdue (so replacement threads) at once; 0 disables
  // replacement even when overdue_after > 0. REQUIRES: >= 0.
  int max_overdue = 0;
};

class BoundedExecutor {
 public:
  using Task = std::function<void(bool cancelled)>;

  // Starts options.threads workers, and the monitor if overdue_after > 0.
  // REQUIRES: the ExecutorOptions field requirements.
  explicit BoundedExecutor(const ExecutorOptions& options);
  // No overdue handling. REQUIRES: threads >= 1, queue_capacity >= 1.
  BoundedExecutor(int threads, std::size_t queue_capacity);
  ~BoundedExecutor();  // Shutdown()
  BoundedExecutor(const BoundedExecutor&) = delete;
  BoundedExecutor& operator=(const BoundedExecutor&) = delete;

  // Queues `task`. Errors: kResourceExhausted (queue full; the task is not
  // run), kCancelled (shut down; the task is not run).
  Status Submit(Task task);

  // Stops accepting tasks and stops the monitor, runs the queued tasks with
  // cancelled == true on this thread, waits for running tasks (overdue ones
  // included: blocks until they return) and joins every thread. Idempotent.
  // Must not be called from inside a task.
  void Shutdown();

  // Tasks waiting in the queue.
  std::size_t queued() const;
  // Tasks running now that are overdue and were replaced (<= max_overdue).
  std::size_t overdue() const;
  // Worker threads that exist now: started and not yet joined, the monitor
  // not counted. <= threads + max_overdue; 0 after Shutdown().
  std::size_t threads_alive() const;

 private:
  // One worker thread. Its node stays put in workers_ (a std::list) until the
  // thread is joined, so the thread keeps a pointer to it.
  struct Worker {
    std::thread thread;                             // touched only by spawner/joiner
    std::chrono::steady_clock::time_point started;  // of the running task
    bool busy = false;                              // running a task
    bool overdue = false;                           // busy past overdue_after, replaced
    bool exited = false;                            // left Work(); to be joined
  };

  void Work(Worker* self);
  void Monitor();
  void SpawnLocked();         // REQUIRES: mu_ held
  void MarkOverdueLocked();   // REQUIRES: mu_ held
  void TopUpLocked();         // REQUIRES: mu_ held

  const ExecutorOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;          // workers: a task was queued, or stopping
  std::condition_variable monitor_cv_;  // monitor: stopping
  std::deque<Task> queue_;      // GUARDED_BY(mu_)
  bool stopping_ = false;       // GUARDED_BY(mu_)
  std::list<Worker> workers_;   // GUARDED_BY(mu_) not yet joined
  int active_ = 0;              // GUARDED_BY(mu_) alive, not exited, not overdue
  std::size_t overdue_ = 0;     // GUARDED_BY(mu_) workers with overdue == true
  std::thread monitor_;         // GUARDED_BY(mu_) moved out by Shutdown()
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_EXECUTOR_H_
