// PollYielding: waiting awake for something due soon instead of sleeping. A thread woken from a
// sleep may start tens of microseconds late (an idle CPU of a virtual machine wakes slowly); one
// that polls, yielding the CPU between polls, sees the event at once while the CPUs are idle.
// With busy CPUs it is the other way round: a poller that yielded to a busy thread waits out that
// thread's time slice, where a sleeping thread runs as soon as it is woken. So a yield that took
// longer than kSlowYield turns polling off, for kPollOff, for every poller sharing the switch.
//
// Thread safety: any number of threads may poll with one `off_until`.
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tessera {

inline constexpr std::chrono::microseconds kSlowYield{200};
inline constexpr std::chrono::milliseconds kPollOff{100};

// Calls ready() until it returns true (then true) or `budget` has passed (false), yielding the
// CPU between calls. False at once while polling is off: `off_until` holds the steady_clock ticks
// until which it is, and a slow yield sets it.
template <typename Ready>
bool PollYielding(std::atomic<int64_t>& off_until, std::chrono::microseconds budget,
                  Ready&& ready) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  if (start.time_since_epoch().count() < off_until.load(std::memory_order_relaxed)) return false;
  const auto until = start + budget;
  for (;;) {
    if (ready()) return true;
    const auto before = Clock::now();
    if (before >= until) return false;
    sched_yield();
    if (Clock::now() - before > kSlowYield) {
      off_until.store((Clock::now() + kPollOff).time_since_epoch().count(),
                      std::memory_order_relaxed);
      return false;
    }
  }
}

}  // namespace tessera
