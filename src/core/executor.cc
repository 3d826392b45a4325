#include "core/executor.h"

#include <algorithm>
#include <cassert>
#include <string>
#include <utility>

namespace tiercache {

namespace {

ExecutorOptions FixedPoolOptions(int threads, std::size_t queue_capacity) {
  ExecutorOptions options;
  options.threads = threads;
  options.queue_capacity = queue_capacity;
  return options;  // overdue_after 0: no overdue handling
}

}  // namespace

BoundedExecutor::BoundedExecutor(const ExecutorOptions& options) : options_(options) {
  assert(options_.threads >= 1);
  assert(options_.queue_capacity >= 1);
  assert(options_.overdue_after.count() >= 0);
  assert(options_.max_overdue >= 0);
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < options_.threads; ++i) SpawnLocked();
  if (options_.overdue_after.count() > 0) monitor_ = std::thread([this] { Monitor(); });
}

BoundedExecutor::BoundedExecutor(int threads, std::size_t queue_capacity)
    : BoundedExecutor(FixedPoolOptions(threads, queue_capacity)) {}

BoundedExecutor::~BoundedExecutor() { Shutdown(); }

Status BoundedExecutor::Submit(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Cancelled("executor is shut down");
    if (queue_.size() >= options_.queue_capacity) {
      return Status::ResourceExhausted("background queue full (" + std::to_string(options_.queue_capacity) +
                                       " tasks)");
    }
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return Status::Ok();
}

void BoundedExecutor::Shutdown() {
  std::deque<Task> dropped;
  std::thread monitor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    monitor = std::move(monitor_);
  }
  cv_.notify_all();
  monitor_cv_.notify_all();
  // Once the monitor is gone nothing starts workers, so the list taken below
  // is every thread left.
  if (monitor.joinable()) monitor.join();
  for (Task& t : dropped) t(/*cancelled=*/true);
  std::list<Worker> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.splice(workers.end(), workers_);  // nodes stay put: workers keep `self`
  }
  for (Worker& w : workers) w.thread.join();
}

std::size_t BoundedExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

std::size_t BoundedExecutor::overdue() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overdue_;
}

std::size_t BoundedExecutor::threads_alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_.size();
}

void BoundedExecutor::SpawnLocked() {
  Worker& w = workers_.emplace_back();
  ++active_;
  w.thread = std::thread([this, &w] { Work(&w); });  // it waits for mu_ to start
}

void BoundedExecutor::Work(Worker* self) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping and drained
    Task task = std::move(queue_.front());
    queue_.pop_front();
    self->busy = true;
    self->started = std::chrono::steady_clock::now();
    lock.unlock();
    task(/*cancelled=*/false);
    task = nullptr;  // destroy what it captured before taking the lock
    lock.lock();
    self->busy = false;
    if (self->overdue) {
      // Replaced while it ran: rejoin only if the pool is short of workers.
      self->overdue = false;
      --overdue_;
      if (stopping_ || active_ >= options_.threads) {
        self->exited = true;  // the monitor (or Shutdown) joins this thread
        return;
      }
      ++active_;
    }
  }
  --active_;
  self->exited = true;
}

void BoundedExecutor::Monitor() {
  const std::chrono::milliseconds period = std::max(std::chrono::milliseconds(1), options_.overdue_after / 4);
  std::unique_lock<std::mutex> lock(mu_);
  while (!monitor_cv_.wait_for(lock, period, [this] { return stopping_; })) {
    // Reap threads that exited after their overdue task returned.
    std::list<Worker> exited;
    for (auto it = workers_.begin(); it != workers_.end();) {
      auto next = std::next(it);
      if (it->exited) exited.splice(exited.end(), workers_, it);
      it = next;
    }
    if (!exited.empty()) {
      lock.unlock();
      for (Worker& w : exited) w.thread.join();
      exited.clear();
      lock.lock();
      if (stopping_) break;
    }
    MarkOverdueLocked();
    TopUpLocked();
  }
}

void BoundedExecutor::MarkOverdueLocked() {
  const auto now = std::chrono::steady_clock::now();
  const auto max_overdue = static_cast<std::size_t>(options_.max_overdue);
  for (Worker& w : workers_) {
    if (overdue_ >= max_overdue) return;
    if (w.busy && !w.overdue && now - w.started >= options_.overdue_after) {
      w.overdue = true;
      ++overdue_;
      --active_;
    }
  }
}

void BoundedExecutor::TopUpLocked() {
  const auto bound = static_cast<std::size_t>(options_.threads + options_.max_overdue);
  while (!stopping_ && active_ < options_.threads && workers_.size() < bound) SpawnLocked();
}

}  // namespace tiercache
