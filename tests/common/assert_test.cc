#include <gtest/gtest.h>

#include "tessera/common/assert.h"

namespace {

int Checked(int x) {
  TESSERA_ASSERT(x >= 0, "x was ", x);
  return x * 2;
}

TEST(AssertTest, PassingAssertHasNoEffect) { EXPECT_EQ(Checked(21), 42); }

TEST(AssertDeathTest, FailingAssertAbortsWithConditionLocationAndMessage) {
  EXPECT_DEATH(Checked(-5), "invariant violated at .*assert_test.cc:[0-9]+: x >= 0: x was -5");
}

TEST(AssertDeathTest, MessageIsOptional) {
  EXPECT_DEATH(TESSERA_ASSERT(1 + 1 == 3), "invariant violated at .*: 1 \\+ 1 == 3");
}

// The assert is an invariant check for release builds too: this file is always compiled with
// NDEBUG (see tests/CMakeLists.txt), so the checks above prove NDEBUG does not remove it.
#ifndef NDEBUG
#error "assert_test.cc must be compiled with NDEBUG"
#endif

}  // namespace
