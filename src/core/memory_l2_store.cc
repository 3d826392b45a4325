// The in-process L2Store: a mutex-guarded map with TTLs, applying the same
// fencing rules as the Lua scripts in scripts.cc.
#include <map>
#include <mutex>

#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"

namespace tiercache {
namespace {

struct Item {
  std::string bytes;
  Clock::TimePoint expires;
};

class InMemoryL2Store final : public L2Store {
 public:
  explicit InMemoryL2Store(Clock* clock) : clock_(clock ? clock : Clock::Real()) {}

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Item* item = Find(key);
    if (item == nullptr) return std::optional<std::string>();
    return std::optional<std::string>(item->bytes);
  }

  Result<std::vector<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    for (const std::string& k : keys) {
      const Item* item = Find(k);
      out.push_back(item ? std::optional<std::string>(item->bytes) : std::nullopt);
    }
    return out;
  }

  Result<FenceOutcome> FencedFill(std::string_view key, std::string_view envelope, std::chrono::milliseconds ttl,
                                  std::string_view lease_key, std::string_view token, milliseconds) override {
    Result<EnvelopeView> fresh = DecodeEnvelope(envelope);
    if (!fresh.ok() || fresh->kind == EntryKind::kTombstone) {
      return Status::InvalidArgument("fenced fill: not a value or negative envelope");
    }
    std::lock_guard<std::mutex> lock(mu_);
    FenceOutcome out;
    std::optional<uint64_t> stored = StoredVersion(key, nullptr);
    if (stored && *stored > fresh->version) {
      out.stored_version = *stored;
    } else {
      StoreLocked(key, envelope, ttl);
      out.stored = true;
    }
    if (!lease_key.empty()) {
      const Item* lease = Find(lease_key);
      if (lease != nullptr && lease->bytes == token) items_.erase(std::string(lease_key));
    }
    return out;
  }

  Status Put(std::string_view key, std::string_view envelope, std::chrono::milliseconds ttl,
             milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    StoreLocked(key, envelope, ttl);
    return Status::Ok();
  }

  Result<FenceOutcome> Tombstone(std::string_view key, std::string_view envelope, std::chrono::milliseconds ttl,
                                 milliseconds) override {
    Result<EnvelopeView> fresh = DecodeEnvelope(envelope);
    if (!fresh.ok() || fresh->kind != EntryKind::kTombstone) {
      return Status::InvalidArgument("tombstone: not a tombstone envelope");
    }
    std::lock_guard<std::mutex> lock(mu_);
    EntryKind kind = EntryKind::kValue;
    std::optional<uint64_t> stored = StoredVersion(key, &kind);
    if (stored && (*stored > fresh->version || (*stored == fresh->version && kind != EntryKind::kTombstone))) {
      return FenceOutcome{false, *stored};
    }
    StoreLocked(key, envelope, ttl);
    return FenceOutcome{true, 0};
  }

  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view lease_key, std::string_view token,
                                    std::chrono::milliseconds ttl, milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    LeaseOutcome out;
    if (Find(lease_key) == nullptr) {
      StoreLocked(lease_key, token, ttl);
      out.won = true;
    }
    if (const Item* item = Find(key)) out.value = item->bytes;
    return out;
  }

  Result<bool> ExtendLease(std::string_view lease_key, std::string_view token, std::chrono::milliseconds ttl,
                           milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Item* lease = Find(lease_key);
    if (lease == nullptr || lease->bytes != token) return false;
    StoreLocked(lease_key, token, ttl);
    return true;
  }

  Result<bool> ReleaseLease(std::string_view lease_key, std::string_view token, milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Item* lease = Find(lease_key);
    if (lease == nullptr || lease->bytes != token) return false;
    items_.erase(std::string(lease_key));
    return true;
  }

  void PutRaw(std::string_view key, std::string_view bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    StoreLocked(key, bytes, std::chrono::hours(1));
  }

 private:
  // REQUIRES: mu_ held. Drops the item if it has expired.
  const Item* Find(std::string_view key) {
    auto it = items_.find(key);
    if (it == items_.end()) return nullptr;
    if (clock_->Now() >= it->second.expires) {
      items_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  std::optional<uint64_t> StoredVersion(std::string_view key, EntryKind* kind) {
    const Item* item = Find(key);
    if (item == nullptr) return std::nullopt;
    Result<EnvelopeView> e = DecodeEnvelope(item->bytes);
    if (!e.ok()) return std::nullopt;
    if (kind != nullptr) *kind = e->kind;
    return e->version;
  }

  // REQUIRES: mu_ held.
  void StoreLocked(std::string_view key, std::string_view bytes, std::chrono::milliseconds ttl) {
    items_[std::string(key)] = Item{std::string(bytes), clock_->Now() + ttl};
  }

  Clock* const clock_;
  std::mutex mu_;
  std::map<std::string, Item, std::less<>> items_;  // GUARDED_BY(mu_)
};

}  // namespace

std::shared_ptr<L2Store> MakeInMemoryL2Store(Clock* clock) { return std::make_shared<InMemoryL2Store>(clock); }

void InMemoryL2StorePutRaw(L2Store* store, std::string_view key, std::string_view bytes) {
  static_cast<InMemoryL2Store*>(store)->PutRaw(key, bytes);
}

}  // namespace tiercache
