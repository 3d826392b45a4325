#include "core/lease_keeper.h"

#include <utility>
#include <vector>

namespace tiercache {

LeaseKeeper::LeaseKeeper(std::chrono::milliseconds period, Extend extend)
    : period_(period), extend_(std::move(extend)), thread_([this] { Run(); }) {}

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
  while (!stop_) {
    cv_.wait_for(lock, period_, [this] { return stop_; });
    if (stop_) return;
    const auto now = std::chrono::steady_clock::now();
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
