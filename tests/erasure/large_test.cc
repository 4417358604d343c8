// Shards longer than ISA-L's int length limit (2^31 − 1 bytes): the codec cuts them into pieces.
// Needs about 4.5 GiB of memory, hence the "soak" label (run with ctest -L soak).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "tessera/erasure/codec.h"

namespace tessera::erasure {
namespace {

TEST(ErasureLargeTest, ShardsLongerThanTwoGiB) {
  const size_t len = (size_t{1} << 31) + 4099;
  std::unique_ptr<uint8_t[]> a(new uint8_t[len]), p(new uint8_t[len]), q(new uint8_t[len]);
  for (size_t i = 0; i < len; i += 4096) a[i] = static_cast<uint8_t>(i / 4096 * 31 + 1);
  a[len - 1] = 0x5A;
  for (Scheme s : {Scheme::kXor, Scheme::kRs}) {
    auto c = std::move(Codec::Create(s, 1, 1)).value();  // 1+1: parity is a copy of the data
    std::memset(p.get(), 0xFF, len);
    const uint8_t* data[] = {a.get()};
    uint8_t* parity[] = {p.get()};
    ASSERT_TRUE(c->Encode(data, parity, len).ok());
    EXPECT_EQ(std::memcmp(a.get(), p.get(), len), 0) << SchemeName(s);
    const uint8_t* all[] = {a.get(), p.get()};
    auto v = c->Verify(all, len);
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(*v);
    std::memset(q.get(), 0, len);
    uint8_t* shards[] = {q.get(), p.get()};
    const int erased[] = {0};
    ASSERT_TRUE(c->Decode(shards, erased, len).ok());
    EXPECT_EQ(std::memcmp(a.get(), q.get(), len), 0) << SchemeName(s);
  }
}

}  // namespace
}  // namespace tessera::erasure
