// PollYielding: what the engine's group commit and the rpc layer's polling rely on. The slow-yield
// rule is checked for real: a thread pinned to one CPU beside a spinning thread pinned there too
// waits out the spinner's time slice in its yield.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "tessera/common/poll.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

int64_t Now() { return Clock::now().time_since_epoch().count(); }

// Other tests may keep the CPUs busy and make a yield slow, which rightly ends the poll early:
// such a try is run again with the switch reset.
template <typename Try>
void WithoutSlowYields(Try&& attempt) {
  for (int i = 0; i < 50; ++i) {
    std::atomic<int64_t> off{0};
    if (attempt(off)) return;
    ASSERT_NE(off.load(), 0) << "a try failed without a slow yield";
  }
  FAIL() << "every one of 50 tries met a slow yield";
}

TEST(PollYieldingTest, ReturnsTrueOnceReady) {
  WithoutSlowYields([](std::atomic<int64_t>& off) {
    int calls = 0;
    bool ready = PollYielding(off, milliseconds(1000), [&] { return ++calls == 5; });
    if (off.load() != 0) return false;
    EXPECT_TRUE(ready);
    EXPECT_EQ(calls, 5);
    return true;
  });
}

TEST(PollYieldingTest, GivesUpAfterItsBudget) {
  WithoutSlowYields([](std::atomic<int64_t>& off) {
    int calls = 0;
    const auto start = Clock::now();
    bool ready = PollYielding(off, milliseconds(3), [&] {
      ++calls;
      return false;
    });
    const auto took = Clock::now() - start;
    if (off.load() != 0) return false;
    EXPECT_FALSE(ready);
    EXPECT_GE(took, milliseconds(3));
    EXPECT_GT(calls, 1);
    return true;
  });
}

TEST(PollYieldingTest, ASlowYieldTurnsPollingOffForEveryPollerSharingTheSwitch) {
  // This thread and a spinner on one CPU: a yield hands the CPU to the spinner until the
  // scheduler takes it back, a whole time slice later.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &allowed)) ++cpu;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
  std::atomic<bool> stop{false}, running{false};
  std::thread spinner([&] {
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    running = true;
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  while (!running) sched_yield();

  std::atomic<int64_t> off{0};
  const auto start = Clock::now();
  bool ready = PollYielding(off, milliseconds(2000), [] { return false; });
  const auto took = Clock::now() - start;
  const int64_t off_until = off.load();
  const int64_t checked_at = Now();
  // A second poller sharing the switch gives up at once, without a single look.
  int calls = 0;
  const auto second_start = Clock::now();
  bool second = PollYielding(off, milliseconds(2000), [&] {
    ++calls;
    return true;
  });
  const auto second_took = Clock::now() - second_start;
  stop = true;
  spinner.join();
  cpu_set_t all = allowed;
  pthread_setaffinity_np(pthread_self(), sizeof all, &all);

  EXPECT_FALSE(ready);
  EXPECT_LT(took, milliseconds(1000)) << "the slow yield should have ended the poll";
  EXPECT_GT(off_until, checked_at) << "polling should be off for kPollOff after the slow yield";
  EXPECT_LE(off_until, checked_at + std::chrono::duration_cast<Clock::duration>(kPollOff).count());
  EXPECT_FALSE(second);
  EXPECT_EQ(calls, 0);
  EXPECT_LT(second_took, milliseconds(50));

  // Once kPollOff has passed, polling works again (unless other tests' load made a new slow
  // yield, which moves the switch on).
  while (Now() < off.load()) std::this_thread::sleep_for(milliseconds(5));
  int later = 0;
  bool again = PollYielding(off, milliseconds(2000), [&] { return ++later == 3; });
  EXPECT_TRUE(again || off.load() > off_until);
}

}  // namespace
}  // namespace tessera
