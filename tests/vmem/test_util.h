// Helpers shared by the vmem tests: replayable seeds and running a check in a forked child.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

namespace tessera::vmem::testing {

// The seed of a randomized test: TESSERA_SEED if set, else a fresh one. Printed so that a failing
// run can be replayed with TESSERA_SEED=<seed>.
inline uint64_t TestSeed() {
  uint64_t seed;
  if (const char* env = std::getenv("TESSERA_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 0);
  } else {
    std::random_device rd;
    seed = (uint64_t{rd()} << 32) | rd();
  }
  std::printf("TESSERA_SEED=%llu (set it to replay this run)\n",
              static_cast<unsigned long long>(seed));
  return seed;
}

// Runs `body` in a forked child and returns its exit code (or -signal). The child reports a failed
// check by returning a non-zero code from `body` after printing why to stderr; gtest assertions
// are not used in the child because its failures would not reach the parent.
inline int RunInChild(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1000;
  if (pid == 0) _exit(body());
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1001;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? -WTERMSIG(status) : -1002;
}

#define CHILD_CHECK(cond, code)                                                     \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      return code;                                                                  \
    }                                                                               \
  } while (0)

}  // namespace tessera::vmem::testing
