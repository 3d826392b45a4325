#include "redis/submission_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "common/dcheck.h"

namespace tiercache::redis::internal {

SubmissionQueue::~SubmissionQueue() {
  if (event_fd_ >= 0) ::close(event_fd_);
}

Status SubmissionQueue::Init() {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return event_fd_ < 0 ? Status::Internal("eventfd creation failed") : Status::Ok();
}

bool SubmissionQueue::Push(Request* const* reqs, size_t n) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    queued_.insert(queued_.end(), reqs, reqs + n);
    // Counted under the lock, so pushed_ never falls behind taken_: a take
    // that sees them equal has nothing queued (TakeAll's shortcut is exact),
    // and PrepareSleep never sees them unequal with nothing to take.
    pushed_.fetch_add(n, std::memory_order_seq_cst);
  }
  if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) Wake();
  return true;
}

std::vector<Request*> SubmissionQueue::Close() {
  std::vector<Request*> left;
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  left.swap(queued_);
  return left;
}

void SubmissionQueue::Wake() {
  TIERCACHE_DCHECK(event_fd_ >= 0);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof(one));
}

void SubmissionQueue::TakeAll(std::vector<Request*>* out) {
  // Nothing pushed since the last take: no lock. A push whose count is not
  // visible yet is taken next time; if the I/O thread goes to sleep first,
  // that push sees `sleeping_` and wakes it (PrepareSleep: both sides are
  // seq_cst, the push's count before its load of sleeping_).
  if (pushed_.load(std::memory_order_acquire) == taken_) return;
  const size_t before = out->size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_.empty()) return;
    if (out->empty()) {
      out->swap(queued_);  // the vectors trade buffers: no allocation in steady state
    } else {
      out->insert(out->end(), queued_.begin(), queued_.end());
      queued_.clear();
    }
  }
  taken_ += out->size() - before;
}

bool SubmissionQueue::PrepareSleep() {
  sleeping_.store(true, std::memory_order_seq_cst);
  if (pushed_.load(std::memory_order_seq_cst) != taken_) {
    sleeping_.store(false, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void SubmissionQueue::ConsumeWake() {
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(event_fd_, &v, sizeof(v));
}

}  // namespace tiercache::redis::internal
