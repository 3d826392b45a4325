// Cache::get_many, set, invalidate, and the lease key of a key.
#include <vector>

#include "core/cache_impl.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

// For every cluster slot, a short string that hashes to it.
const std::vector<std::string>& SlotTags() {
  static const std::vector<std::string>* tags = [] {
    auto* t = new std::vector<std::string>(redis::kSlotCount);
    int filled = 0;
    for (uint64_t n = 0; filled < redis::kSlotCount; ++n) {
      std::string s = std::to_string(n);
      std::string& slot = (*t)[redis::KeySlot(s)];
      if (slot.empty()) {
        slot = std::move(s);
        ++filled;
      }
    }
    return t;
  }();
  return *tags;
}

}  // namespace

std::string LeaseKeyFor(std::string_view key) {
  // A key with a hash tag keeps it when a suffix is appended.
  if (redis::HashTagOf(key).size() < key.size()) return std::string(key) + ":lease";
  // Otherwise prefix a tag that hashes to the key's own slot.
  return "{" + SlotTags()[redis::KeySlot(key)] + "}:lease:" + std::string(key);
}

Result<std::vector<Result<CachedValue>>> Cache::get_many(const std::vector<std::string>& keys,
                                                         const BatchLoader& loader, const GetOptions& options) {
  if (keys.empty()) return Status::InvalidArgument("get_many: no keys");
  Impl& im = *impl_;
  Result<CallSettings> settings = ResolveCallSettings(im.o, options);
  if (!settings.ok()) return settings.status();
  const CallSettings s = *settings;
  const Clock::TimePoint start = im.clock->Now();
  const Clock::TimePoint deadline = start + s.hard_timeout;

  const size_t n = keys.size();
  std::vector<Result<CachedValue>> out(n, Status::Internal("unset"));
  std::vector<std::optional<CachedValue>> stale(n);
  std::vector<size_t> missing;
  for (size_t i = 0; i < n; ++i) {
    if (Status bad = im.CheckKey(keys[i]); !bad.ok()) {
      out[i] = bad;
    } else if (std::optional<CachedValue> hit = im.ReadL1(keys[i], s, &stale[i])) {
      out[i] = std::move(*hit);
    } else {
      missing.push_back(i);
    }
  }

  // One L2 read for all L1 misses.
  if (!missing.empty() && im.o.l2) {
    std::vector<std::string> ask;
    for (size_t i : missing) ask.push_back(keys[i]);
    Result<std::vector<std::optional<std::string>>> got =
        im.CallL2(deadline, [&](milliseconds dl) { return im.o.l2->GetMany(ask, dl); });
    if (got.ok() && got->size() == ask.size()) {
      std::vector<size_t> still;
      const WallTime now = im.clock->WallNow();
      for (size_t j = 0; j < ask.size(); ++j) {
        const size_t i = missing[j];
        std::optional<CachedValue> v;
        if ((*got)[j]) {
          auto bytes = std::make_shared<const std::string>(std::move(*(*got)[j]));
          Result<std::optional<CachedValue>> d = im.FromEnvelope(std::move(bytes), ValueSource::kL2, true);
          if (!d.ok()) im.metrics->Add(Counter::kDecodeError, Tier::kL2);
          if (d.ok() && d->has_value()) v = std::move(**d);
        }
        if (v && now < v->expires_at_) {
          im.metrics->Add(Counter::kHit, Tier::kL2);
          im.FillL1(keys[i], *v);
          out[i] = std::move(*v);
          continue;
        }
        im.metrics->Add(Counter::kMiss, Tier::kL2);
        if (v && now - v->expires_at_ <= s.max_stale &&
            (!stale[i] || v->version_ >= stale[i]->version_)) {
          stale[i] = Impl::AsStale(std::move(*v));
        }
        still.push_back(i);
      }
      missing.swap(still);
    }
  }
  if (missing.empty()) return out;

  // One loader call for what is still missing, in the background.
  std::vector<std::string> load_keys;
  for (size_t i : missing) load_keys.push_back(keys[i]);
  auto state = std::make_shared<std::pair<std::mutex, std::optional<Result<std::vector<Result<CachedValue>>>>>>();
  auto cv = std::make_shared<std::condition_variable>();
  Impl* impl = impl_.get();
  Status submitted = im.loaders->Submit([impl, state, cv, load_keys, loader, s](bool cancelled) {
    Result<std::vector<Result<CachedValue>>> r = Status::Cancelled("cache shut down before the load ran");
    if (!cancelled) r = impl->LoadManyAndFill(load_keys, loader, s);
    {
      std::lock_guard<std::mutex> lock(state->first);
      state->second.emplace(std::move(r));
    }
    cv->notify_all();
  });
  std::optional<Result<std::vector<Result<CachedValue>>>> loaded;
  if (submitted.ok()) {
    std::unique_lock<std::mutex> lock(state->first);
    while (!state->second && im.clock->Now() < deadline) {
      cv->wait_for(lock, std::min<std::chrono::nanoseconds>(deadline - im.clock->Now(), milliseconds(5)));
    }
    loaded = state->second;
  }
  for (size_t j = 0; j < missing.size(); ++j) {
    const size_t i = missing[j];
    Status failed = !submitted.ok() ? submitted
                    : !loaded       ? Status::DeadlineExceeded("batch load did not finish within the hard timeout")
                    : !loaded->ok() ? loaded->status()
                                    : Status::Ok();
    if (failed.ok() && (**loaded)[j].ok()) {
      out[i] = (**loaded)[j];
    } else if (stale[i]) {
      out[i] = im.ServeStale(*stale[i]);
    } else {
      out[i] = failed.ok() ? (**loaded)[j].status() : failed;
    }
  }
  return out;
}

Status Cache::set(std::string_view key, std::string_view payload, std::optional<uint64_t> version,
                  const GetOptions& options) {
  Impl& im = *impl_;
  TIERCACHE_RETURN_IF_ERROR(im.CheckKey(key));
  Result<CallSettings> s = ResolveCallSettings(im.o, options);
  if (!s.ok()) return s.status();
  if (payload.size() > im.o.max_value_bytes) {
    return Status::InvalidArgument("value of " + std::to_string(payload.size()) + " bytes exceeds max_value_bytes " +
                                   std::to_string(im.o.max_value_bytes));
  }
  LoadResult r;
  r.payload = std::string(payload);
  bool negative = false;
  Result<CachedValue> v =
      im.MakeValue(r, version.value_or(WallStamp(im.clock->WallNow())), nanoseconds(0), *s, &negative);
  if (!v.ok()) return v.status();
  return im.Fill(key, *v, *s, "", "", im.clock->Now() + im.o.l2_timeout, /*report_l2_errors=*/true);
}

Status Cache::invalidate(std::string_view key, std::optional<uint64_t> version) {
  Impl& im = *impl_;
  TIERCACHE_RETURN_IF_ERROR(im.CheckKey(key));
  const uint64_t v = version.value_or(WallStamp(im.clock->WallNow()));
  if (im.l1) TIERCACHE_RETURN_IF_ERROR(im.l1->invalidate(key, v, im.o.tombstone_ttl));
  if (!im.o.l2) return Status::Ok();
  EnvelopeView e;
  e.kind = EntryKind::kTombstone;
  e.version = v;
  e.written_at = im.clock->WallNow();
  e.expires_at = e.written_at + im.o.tombstone_ttl;
  Result<std::string> bytes = EncodeEnvelope(e);
  if (!bytes.ok()) return bytes.status();
  Result<FenceOutcome> r = im.CallL2(im.clock->Now() + im.o.l2_timeout, [&](milliseconds dl) {
    return im.o.l2->Tombstone(key, *bytes, im.o.tombstone_ttl, dl);
  });
  return r.status();  // refused (a newer entry is stored) is success: nothing to invalidate
}

}  // namespace tiercache
