// The allocation promise, checked by counting every global operator new in this process:
// Encode and Update never allocate, and Decode allocates only the first time it meets a pattern.
// (Replacing operator new is process-wide, so allocations inside libtessera_erasure.so count too.)
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "tessera/erasure/codec.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tessera::erasure {
namespace {

struct Buffers {
  Buffers(int n, size_t len) : storage(n, std::vector<uint8_t>(len, 7)) {
    for (auto& s : storage) ptrs.push_back(s.data());
  }
  std::vector<std::vector<uint8_t>> storage;
  std::vector<uint8_t*> ptrs;
};

TEST(ErasureAllocationTest, EncodeUpdateAndRepeatedDecodeDoNotAllocate) {
  for (Scheme s : {Scheme::kXor, Scheme::kRs, Scheme::kRsCauchy}) {
    const int k = 6, m = s == Scheme::kXor ? 1 : 3;
    auto codec = std::move(Codec::Create(s, k, m)).value();
    const size_t len = 100001;
    Buffers b(k + m, len);
    std::vector<uint8_t> fresh(len, 9);
    std::span<const uint8_t* const> data(const_cast<const uint8_t* const*>(b.ptrs.data()), k);
    std::span<uint8_t* const> parity(b.ptrs.data() + k, m);
    const std::vector<int> erased = {0, k};  // one data shard and the first parity shard
    const std::vector<int> one = {2};
    const std::span<const int> pattern =
        s == Scheme::kXor ? std::span<const int>(one) : std::span<const int>(erased);
    ASSERT_TRUE(codec->Decode(b.ptrs, pattern, len).ok());  // first sight of the pattern

    const long before = g_allocations.load();
    ASSERT_TRUE(codec->Encode(data, parity, len).ok());
    ASSERT_TRUE(codec->Update(parity, 1, b.ptrs[1], fresh.data(), len).ok());
    ASSERT_TRUE(codec->Decode(b.ptrs, pattern, len).ok());
    ASSERT_TRUE(codec->Decode(b.ptrs, pattern, 17).ok());
    EXPECT_EQ(g_allocations.load() - before, 0) << SchemeName(s);

    if (s != Scheme::kXor) {  // a new pattern does allocate (its tables), so the count is live
      const std::vector<int> other = {1, 2};
      ASSERT_TRUE(codec->Decode(b.ptrs, other, len).ok());
      EXPECT_GT(g_allocations.load() - before, 0);
    }
  }
}

}  // namespace
}  // namespace tessera::erasure
