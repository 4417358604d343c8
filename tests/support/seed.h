// The seed of a randomized test, shared by the test binaries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace tessera::testing {

// TESSERA_SEED if set, else a fresh seed; printed, with `what` naming the test, so that a
// failing run can be replayed with TESSERA_SEED=<seed>.
inline uint64_t TestSeed(const char* what) {
  const char* s = std::getenv("TESSERA_SEED");
  uint64_t seed = s ? std::strtoull(s, nullptr, 10) : std::random_device{}();
  std::printf("%s seed: %llu (replay with TESSERA_SEED=%llu)\n", what,
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace tessera::testing
