#include "core/executor.h"

namespace tiercache {

BoundedExecutor::BoundedExecutor(int threads, std::size_t queue_capacity) : capacity_(queue_capacity) {
  threads_.reserve(static_cast<std::size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

BoundedExecutor::~BoundedExecutor() { Shutdown(); }

Status BoundedExecutor::Submit(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Cancelled("executor is shut down");
    if (queue_.size() >= capacity_) {
      return Status::ResourceExhausted("background queue full (" + std::to_string(capacity_) + " tasks)");
    }
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return Status::Ok();
}

void BoundedExecutor::Shutdown() {
  std::deque<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (Task& t : dropped) t(/*cancelled=*/true);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

std::size_t BoundedExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void BoundedExecutor::Work() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task(/*cancelled=*/false);
  }
}

}  // namespace tiercache
