// L2Store over tiercache's Redis client.
#include <algorithm>

#include "core/scripts.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {


Result<redis::CallOptions> CallBy(milliseconds timeout) {
  if (timeout < milliseconds(1)) return Status::DeadlineExceeded("L2 call started after its deadline");
  redis::CallOptions call;
  call.timeout = timeout;
  return call;
}

uint64_t BigEndian(const std::string& bytes) {
  uint64_t v = 0;
  for (unsigned char c : bytes) v = (v << 8) | c;
  return v;
}

// Reads the scripts' {1} / {0, <8-byte version>} reply.
Result<FenceOutcome> ParseFence(const Result<redis::Reply>& r) {
  if (!r.ok()) return r.status();
  if (!r->IsArray() || r->elements.empty() || !r->elements[0].IsInteger()) {
    return Status::Internal("unexpected fence script reply: " + r->ToString());
  }
  FenceOutcome out;
  out.stored = r->elements[0].integer == 1;
  if (!out.stored && r->elements.size() == 2 && r->elements[1].IsString()) {
    out.stored_version = BigEndian(r->elements[1].str);
  }
  return out;
}

class RedisL2Store final : public L2Store {
 public:
  explicit RedisL2Store(std::shared_ptr<redis::RedisClient> client)
      : client_(std::move(client)),
        fill_(std::string(scripts::kFencedFill)),
        tombstone_(std::string(scripts::kTombstone)),
        acquire_(std::string(scripts::kLeaseAcquire)),
        extend_(std::string(scripts::kLeaseExtend)),
        release_(std::string(scripts::kLeaseRelease)) {}

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    return client_->Get(key, *call);
  }

  Result<std::vector<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    return client_->MGet(keys, *call);
  }

  Result<FenceOutcome> FencedFill(std::string_view key, std::string_view envelope, milliseconds ttl,
                                  std::string_view lease_key, std::string_view token,
                                  milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    std::vector<std::string> keys{std::string(key)};
    std::vector<std::string> args{std::string(envelope), std::to_string(std::max<int64_t>(ttl.count(), 1))};
    if (!lease_key.empty()) {
      keys.emplace_back(lease_key);
      args.emplace_back(token);
    }
    return ParseFence(client_->Eval(fill_, keys, args, *call));
  }

  Status Put(std::string_view key, std::string_view envelope, milliseconds ttl, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    redis::SetOptions set;
    set.ttl = std::max(ttl, milliseconds(1));
    set.call = *call;
    return client_->Set(key, envelope, set).status();
  }

  Result<FenceOutcome> Tombstone(std::string_view key, std::string_view envelope, milliseconds ttl,
                                 milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    return ParseFence(client_->Eval(tombstone_, {std::string(key)},
                                    {std::string(envelope), std::to_string(std::max<int64_t>(ttl.count(), 1))},
                                    *call));
  }

  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view lease_key, std::string_view token,
                                    milliseconds ttl, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    Result<redis::Reply> r =
        client_->Eval(acquire_, {std::string(key), std::string(lease_key)},
                      {std::string(token), std::to_string(std::max<int64_t>(ttl.count(), 1))}, *call);
    if (!r.ok()) return r.status();
    if (!r->IsArray() || r->elements.empty() || !r->elements[0].IsInteger()) {
      return Status::Internal("unexpected lease script reply: " + r->ToString());
    }
    LeaseOutcome out;
    out.won = r->elements[0].integer == 1;
    if (r->elements.size() > 1 && r->elements[1].IsString()) out.value = std::move(r->elements[1].str);
    return out;
  }

  Result<bool> ExtendLease(std::string_view lease_key, std::string_view token, milliseconds ttl,
                           milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    Result<redis::Reply> r = client_->Eval(extend_, {std::string(lease_key)},
                                           {std::string(token), std::to_string(std::max<int64_t>(ttl.count(), 1))},
                                           *call);
    if (!r.ok()) return r.status();
    return r->IsInteger() && r->integer == 1;
  }

  Result<bool> ReleaseLease(std::string_view lease_key, std::string_view token, milliseconds timeout) override {
    Result<redis::CallOptions> call = CallBy(timeout);
    if (!call.ok()) return call.status();
    Result<redis::Reply> r = client_->Eval(release_, {std::string(lease_key)}, {std::string(token)}, *call);
    if (!r.ok()) return r.status();
    return r->IsInteger() && r->integer == 1;
  }

 private:
  std::shared_ptr<redis::RedisClient> client_;
  const redis::Script fill_;
  const redis::Script tombstone_;
  const redis::Script acquire_;
  const redis::Script extend_;
  const redis::Script release_;
};

}  // namespace

std::shared_ptr<L2Store> MakeRedisL2Store(std::shared_ptr<redis::RedisClient> client) {
  return std::make_shared<RedisL2Store>(std::move(client));
}

}  // namespace tiercache
