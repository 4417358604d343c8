// Shared by the cluster benchmarks: a `tessera` child process (its output appended to a log,
// SIGKILLed when the object goes), reading its log, and a latency-recording loop over threads.
#pragma once

#include <signal.h>
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
