// TESSERA_ASSERT: an invariant check that stays on in release builds.
//
// Use it for invariants of on-disk formats and protocols, where continuing after a violation could
// lose or corrupt data. It is not for validating input: bad input gets a Status. On failure it
// prints the condition, file, line and message to stderr and aborts the process.
#pragma once

#include <sstream>
#include <string>

namespace tessera::detail {

[[noreturn]] void AssertFail(const char* cond, const char* file, int line, const std::string& msg);

template <typename... Args>
std::string AssertMessage(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace tessera::detail

#define TESSERA_ASSERT(cond, ...)                                           \
  do {                                                                      \
    if (__builtin_expect(!(cond), 0)) {                                     \
      ::tessera::detail::AssertFail(                                        \
          #cond, __FILE__, __LINE__,                                        \
          ::tessera::detail::AssertMessage("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                       \
  } while (0)
