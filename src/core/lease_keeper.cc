#include "core/lease_keeper.h"

#include <utility>
#include <vector>

namespace tiercache {

LeaseKeeper::LeaseKeeper(std::chrono::milliseconds period, Extend extend, Free release)
    : period_(period), extend_(std::move(extend)), release_(std::move(release)), thread_([this] { Run(); }) {}

LeaseKeeper::~LeaseKeeper() { Stop(); }

void LeaseKeeper::Add(const std::string& token, const std::string& key,
                      std::chrono::steady_clock::time_point give_up_at) {
  std::lock_guard<std::mutex> lock(mu_);
  leases_[token] = Held{key, give_up_at};
}

void LeaseKeeper::Remove(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  leases_.erase(token);
}

bool LeaseKeeper::Release(const std::string& token, const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.erase(token);
    if (stop_ || releases_.size() >= kMaxQueuedReleases) return false;
    releases_.emplace_back(token, key);
  }
  cv_.notify_all();
  return true;
}

size_t LeaseKeeper::queued_releases() const {
  std::lock_guard<std::mutex> lock(mu_);
  return releases_.size();
}

void LeaseKeeper::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseKeeper::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  auto next_extend = std::chrono::steady_clock::now() + period_;
  for (;;) {
    cv_.wait_until(lock, next_extend, [this] { return stop_ || !releases_.empty(); });
    while (!releases_.empty()) {  // also when stopping: give the leases back
      const auto [token, key] = std::move(releases_.front());
      releases_.pop_front();
      lock.unlock();
      release_(key, token);
      lock.lock();
    }
    if (stop_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_extend) continue;
    next_extend = now + period_;
    std::vector<std::pair<std::string, std::string>> due;  // token, key
    for (auto it = leases_.begin(); it != leases_.end();) {
      if (now >= it->second.give_up_at) {
        it = leases_.erase(it);  // past its lifetime: let it expire
      } else {
        due.emplace_back(it->first, it->second.key);
        ++it;
      }
    }
    lock.unlock();
    for (const auto& [token, key] : due) extend_(key, token);
    lock.lock();
  }
}

}  // namespace tiercache
