// tiered_get HOST:PORT — get-or-load one key through L1 and a Redis Cluster,
// then again (an L1 hit), then invalidate it. Exit status 0 when every step
// did what it should.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "tiercache/cache.h"
#include "tiercache/redis/redis_client.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tiered_get HOST:PORT\n");
    return 2;
  }
  const std::string seed = argv[1];
  const auto colon = seed.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "tiered_get: %s is not HOST:PORT\n", argv[1]);
    return 2;
  }
  tiercache::redis::RedisClientOptions ro;
  ro.seeds = {{seed.substr(0, colon), std::stoi(seed.substr(colon + 1))}};
  auto client = tiercache::redis::RedisClient::Create(ro);
  if (!client.ok()) {
    std::fprintf(stderr, "tiered_get: %s\n", client.status().ToString().c_str());
    return 1;
  }
  tiercache::CacheOptions o;
  o.l2 = tiercache::MakeRedisL2Store(std::shared_ptr(std::move(*client)));
  o.ttl = std::chrono::seconds(60);
  o.l1.default_ttl = std::chrono::seconds(2);
  auto cache = tiercache::Cache::Create(o);
  if (!cache.ok()) {
    std::fprintf(stderr, "tiered_get: %s\n", cache.status().ToString().c_str());
    return 1;
  }

  const std::string key = "example:{installed}:" + std::to_string(std::chrono::steady_clock::now()
                                                                      .time_since_epoch()
                                                                      .count());
  int loads = 0;
  auto load = [&](std::string_view) -> tiercache::Result<tiercache::LoadResult> {
    ++loads;
    return tiercache::LoadResult{std::string("hello from the source of truth"), /*version=*/1};
  };
  for (int i = 0; i < 2; ++i) {
    auto v = (*cache)->Get(key, load);
    if (!v.ok()) {
      std::fprintf(stderr, "tiered_get: %s\n", v.status().ToString().c_str());
      return 1;
    }
    std::printf("get %d: %s\n", i + 1, std::string(v->payload()).c_str());
  }
  auto st = (*cache)->Invalidate(key, 2);
  if (!st.ok()) {
    std::fprintf(stderr, "tiered_get: invalidate: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("loads: %d (want 1)\n", loads);
  return loads == 1 ? 0 : 1;
}
