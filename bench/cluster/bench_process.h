// Shared by the cluster benchmarks: a `tessera` child process (its output appended to a log,
// SIGKILLed when the object goes), reading its log, and a latency-recording loop over threads.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tessera::bench {

struct Proc {
  pid_t pid = -1;
  void Start(const std::vector<std::string>& argv, const std::string& log) {
    pid = fork();
    if (pid == 0) {
      // Gone with the bench, however it ends (a Die skips the destructors).
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = std::fopen(log.c_str(), "a");
      if (f) {
        dup2(fileno(f), 1);
        dup2(fileno(f), 2);
      }
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      execv(TESSERA_BIN, a.data());
      _exit(127);
    }
  }
  void Kill() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  ~Proc() { Kill(); }
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Polls the cluster's status until its shard map has formed; false after `timeout`.
template <class ClientT>
bool WaitFormed(ClientT& client, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto s = client.GetStatus();
    if (s.ok() && s->map.formed) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// CPU time (user + system, in clock ticks) the process has used so far; 0 if it is gone.
inline uint64_t CpuTicks(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return utime + stime;
}

// Waits until the processes together have used under 5% of a core in every 250 ms window for
// `quiet_for` (background work such as a generation advance, which starts on a timer, has
// finished), at most `timeout`; returns the time waited.
inline std::chrono::milliseconds WaitQuiet(const std::vector<pid_t>& pids,
                                           std::chrono::milliseconds quiet_for,
                                           std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto window = std::chrono::milliseconds(250);
  const double ticks_per_window = static_cast<double>(sysconf(_SC_CLK_TCK)) * 0.25;
  auto total = [&] {
    uint64_t t = 0;
    for (pid_t p : pids) t += CpuTicks(p);
    return t;
  };
  std::chrono::milliseconds quiet{0};
  for (;;) {
    uint64_t before = total();
    std::this_thread::sleep_for(window);
    double used = static_cast<double>(total() - before);
    quiet = used < 0.05 * ticks_per_window ? quiet + window : std::chrono::milliseconds{0};
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (quiet >= quiet_for || waited >= timeout) return waited;
  }
}

struct Rate {
  double ops_per_sec = 0;
  double p50_us = 0, p99_us = 0;
};

// Runs `op(thread, i)` `total` times over `threads` threads; records each latency.
inline Rate Measure(int threads, uint64_t total, const std::function<void(int, uint64_t)>& op) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::vector<double>> lat(static_cast<size_t>(threads));
  std::atomic<uint64_t> next{0};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      auto& mine = lat[static_cast<size_t>(t)];
      mine.reserve(total / static_cast<uint64_t>(threads) + 1);
      for (uint64_t i; (i = next++) < total;) {
        auto a = Clock::now();
        op(t, i);
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      }
    });
  }
  for (auto& t : ts) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  if (all.empty()) return {};
  return {static_cast<double>(total) / secs, all[all.size() / 2],
          all[std::min(all.size() - 1, all.size() * 99 / 100)]};
}

}  // namespace tessera::bench
