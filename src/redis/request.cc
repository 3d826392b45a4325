#include "redis/request.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace tiercache::redis::internal {
namespace {

void FutexWait(std::atomic<int32_t>* word, int32_t expected, std::chrono::nanoseconds timeout) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAIT_PRIVATE, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<int32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kPoolBound = 0;
#else
constexpr size_t kPoolBound = Request::kPooledPerThread;
#endif

struct FreeBlock {
  FreeBlock* next;
};

// Set when the thread's pool is destroyed (thread exit): a request freed
// after that (by another thread_local's destructor) goes to the allocator.
// Trivially destructible, so it may be read until the thread is gone.
thread_local bool request_pool_gone = false;

// The calling thread's free Request blocks.
struct RequestPool {
  FreeBlock* head = nullptr;
  size_t count = 0;
  ~RequestPool() {
    request_pool_gone = true;
    while (head != nullptr) {
      FreeBlock* b = head;
      head = b->next;
      ::operator delete(b);
    }
    count = 0;
  }
};

thread_local RequestPool request_pool;

}  // namespace

void* Request::operator new(size_t size) {
  if (request_pool_gone) return ::operator new(size);
  RequestPool& pool = request_pool;
  if (pool.head != nullptr && size == sizeof(Request)) {
    FreeBlock* b = pool.head;
    pool.head = b->next;
    --pool.count;
    return b;
  }
  return ::operator new(size);
}

void Request::operator delete(void* block) noexcept {
  if (request_pool_gone) {
    ::operator delete(block);
    return;
  }
  RequestPool& pool = request_pool;
  if (pool.count < kPoolBound) {
    auto* b = static_cast<FreeBlock*>(block);
    b->next = pool.head;
    pool.head = b;
    ++pool.count;
    return;
  }
  ::operator delete(block);
}

size_t Request::PooledBlocksForTesting() { return request_pool_gone ? 0 : request_pool.count; }

Result<std::optional<std::string>> ToOptionalString(Result<Reply>&& r) {
  if (!r.ok()) return r.status();
  if (r->IsNil()) return std::optional<std::string>();
  if (r->IsString() || r->IsStatus()) return std::optional<std::string>(std::move(r->str));
  return Status::Internal("unexpected reply " + r->ToString());
}

void FinishRequest(Request* req, Reply&& reply, std::vector<Request*>* wake_later) {
  // A GET's callback gets its value moved out of the reply, with no
  // Result<Reply> built around it first.
  if (req->string_callback && (reply.IsString() || reply.IsStatus() || reply.IsNil())) {
    // An async request changes state on the I/O thread only (here, or
    // abandoned by ExpireRequest), which runs this: no compare-and-swap.
    if (req->state.load(std::memory_order_relaxed) == Request::kPending) {
      req->state.store(Request::kDone, std::memory_order_relaxed);
      req->string_callback(reply.IsNil() ? std::optional<std::string>() : std::optional<std::string>(std::move(reply.str)));
    }
    req->Unref();
    return;
  }
  FinishRequest(req, Result<Reply>(std::move(reply)), wake_later);
}

void FinishRequest(Request* req, Result<Reply>&& r, std::vector<Request*>* wake_later) {
  if (req->Live()) {
    int32_t expected = Request::kPending;
    if (req->IsAsync()) {
      // The callback takes the result straight from `r`: nothing waits on
      // req->result. The engine holds the only reference, and it is dropped
      // below, so the callback (and what it captured) is destroyed with the
      // request, right after it ran.
      if (req->state.compare_exchange_strong(expected, Request::kDone, std::memory_order_acq_rel)) {
        if (req->string_callback) {
          req->string_callback(ToOptionalString(std::move(r)));
        } else {
          req->callback(std::move(r));
        }
      }
    } else {
      req->result.emplace(std::move(r));
      if (req->state.compare_exchange_strong(expected, Request::kDone, std::memory_order_seq_cst) &&
          req->caller_sleeping.load(std::memory_order_seq_cst) != 0) {
        if (wake_later != nullptr) {
          req->Ref();  // the caller may see kDone and leave before the wake
          wake_later->push_back(req);
        } else {
          FutexWakeAll(&req->state);
        }
      }
    }
  }
  req->Unref();
}

void WakeCaller(Request* req) {
  FutexWakeAll(&req->state);
  req->Unref();
}

void ExpireRequest(Request* req, const Status& s) {
  int32_t expected = Request::kPending;
  if (req->state.compare_exchange_strong(expected, Request::kAbandoned, std::memory_order_acq_rel)) {
    if (req->callback) {
      ReplyCallback cb = std::move(req->callback);
      cb(s);
    } else if (req->string_callback) {
      StringCallback cb = std::move(req->string_callback);
      cb(s);
    }
  }
}

Result<Reply> AwaitRequest(Request* req, std::chrono::microseconds spin, std::atomic<int>* spinners) {
  int32_t s = req->state.load(std::memory_order_acquire);
  // `spinners` counts every caller waiting in this client; spin only alone.
  bool alone = spinners == nullptr || spinners->fetch_add(1, std::memory_order_relaxed) == 0;
  if (alone && s == Request::kPending && spin.count() > 0) {
    auto spin_until = SteadyClock::now() + spin;
    while (s == Request::kPending && SteadyClock::now() < spin_until) {
      for (int i = 0; i < 16; ++i) CpuRelax();
      s = req->state.load(std::memory_order_acquire);
    }
  }
  struct Leave {
    std::atomic<int>* n;
    ~Leave() {
      if (n != nullptr) n->fetch_sub(1, std::memory_order_relaxed);
    }
  } leave{spinners};
  while (s == Request::kPending) {
    auto left = req->deadline - SteadyClock::now();
    if (left <= std::chrono::nanoseconds::zero()) {
      int32_t expected = Request::kPending;
      if (req->state.compare_exchange_strong(expected, Request::kAbandoned, std::memory_order_acq_rel)) {
        const std::string* node = req->node_name.load(std::memory_order_acquire);
        Status st = Status::DeadlineExceeded("deadline exceeded waiting for " +
                                             (node ? *node : std::string("a cluster node")));
        req->Unref();
        return st;
      }
      s = expected;
      break;
    }
    req->caller_sleeping.store(1, std::memory_order_seq_cst);
    FutexWait(&req->state, Request::kPending, left);
    s = req->state.load(std::memory_order_acquire);
  }
  Result<Reply> out =
      req->result ? std::move(*req->result) : Result<Reply>(Status::Internal("request finished without a result"));
  req->Unref();
  return out;
}

}  // namespace tiercache::redis::internal
