#include "core/lease_keeper.h"

#include <utility>
#include <vector>

namespace tiercache {

LeaseKeeper::LeaseKeeper(std::chrono::milliseconds period, Extend extend)
    : period_(period), extend_(std::move(extend)), thread_([this] { Run(); }) {}

LeaseKeeper::~LeaseKeeper() { Stop(); }

void LeaseKeeper::Add(const std::string& token, const std::string& lease_key) {
  std::lock_guard<std::mutex> lock(mu_);
  leases_[token] = lease_key;
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
    std::vector<std::pair<std::string, std::string>> due(leases_.begin(), leases_.end());
    lock.unlock();
    for (const auto& [token, lease_key] : due) extend_(lease_key, token);
    lock.lock();
  }
}

}  // namespace tiercache
