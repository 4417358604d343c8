// generation_bench: what a generation advance costs (xor 3+1, the manager holding the parity), as
// a function of the pages changed since the last one, at two data sizes. For each base size the
// cluster is loaded and fully protected, then rounds update U random existing keys and wait for
// the advance that protects them; the workers' "protected generation" log lines give the pages
// the engine reported changed, the deltas sent and the time. If the cost follows the changed
// pages, the time per 1,000 changed pages is about the same at both sizes and for every U.
//
//   generation_bench [--small N] [--large N] [--value-size B] [--base-port P]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench_process.h"
#include "tessera/orchestrator/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using tessera::bench::Proc;
using tessera::bench::ReadFile;
using tessera::orchestrator::Client;

[[noreturn]] void Die(const std::string& s) {
  std::fprintf(stderr, "generation_bench: %s\n", s.c_str());
  std::exit(1);
}

struct Advances {
  size_t count = 0, changed = 0, deltas = 0;
  double ms = 0;  // summed over the workers (they advance in parallel)
};

// The advances logged after byte offset `from[i]` of each worker log; moves the offsets on.
Advances Collect(const std::vector<std::string>& logs, std::vector<size_t>* from) {
  static const std::regex re(
      R"(protected generation \d+: (\d+) changed pages, (\d+) deltas .* in ([0-9.]+) ms)");
  Advances a;
  for (size_t i = 0; i < logs.size(); ++i) {
    std::string text = ReadFile(logs[i]);
    std::string fresh = text.substr(std::min((*from)[i], text.size()));
    (*from)[i] = text.size();
    for (std::sregex_iterator it(fresh.begin(), fresh.end(), re), end; it != end; ++it) {
      ++a.count;
      a.changed += std::stoull((*it)[1]);
      a.deltas += std::stoull((*it)[2]);
      a.ms += std::stod((*it)[3]);
    }
  }
  return a;
}

void Run(uint64_t keys, size_t value_size, int base, const std::string& dir) {
  const std::string mgr = "127.0.0.1:" + std::to_string(base);
  std::filesystem::create_directories(dir);
  Proc m;
  m.Start({"tessera", "manager", "--listen", mgr, "--data", dir + "/m", "--workers", "3",
           "--protection", "xor"},
          dir + "/m.log");
  std::vector<std::unique_ptr<Proc>> ws;
  std::vector<std::string> logs;
  for (int i = 0; i < 3; ++i) {
    logs.push_back(dir + "/w" + std::to_string(i) + ".log");
    ws.push_back(std::make_unique<Proc>());
    // Advances on a short timer only: each round's updates are protected by the next one.
    ws.back()->Start({"tessera", "worker", "--listen", "127.0.0.1:" + std::to_string(base + 1 + i),
                      "--manager", mgr, "--data", dir + "/w" + std::to_string(i), "--protect-every",
                      "100000000", "--protect-interval-ms", "300"},
                     logs.back());
  }
  tessera::orchestrator::ClientOptions co;
  co.manager = mgr;
  co.deadline = std::chrono::milliseconds(60000);
  auto client = std::move(Client::Connect(co)).value();
  if (!tessera::bench::WaitFormed(*client, std::chrono::seconds(20))) {
    Die("the cluster did not form in 20 s; logs in " + dir);
  }
  std::mt19937_64 rng(keys);
  std::string value(value_size, 'v');
  auto put = [&](const std::vector<uint64_t>& ids) {
    std::vector<std::pair<std::string, std::string>> kvs;
    for (size_t i = 0; i < ids.size();) {
      kvs.clear();
      for (; i < ids.size() && kvs.size() < 1000; ++i) {
        for (auto& c : value) c = static_cast<char>('a' + rng() % 26);
        kvs.emplace_back("key" + std::to_string(ids[i]), value);
      }
      if (!client->PutMany(kvs, false).ok()) Die("put failed");
    }
  };
  std::vector<size_t> from(logs.size(), 0);
  // Waits until no advance has been logged for a while; returns what was logged meanwhile.
  auto settle = [&]() {
    Advances total;
    auto quiet_since = Clock::now();
    while (Clock::now() - quiet_since < std::chrono::milliseconds(1200)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      Advances a = Collect(logs, &from);
      if (a.count > 0) quiet_since = Clock::now();
      total.count += a.count;
      total.changed += a.changed;
      total.deltas += a.deltas;
      total.ms += a.ms;
    }
    return total;
  };
  std::vector<uint64_t> all(keys);
  for (uint64_t i = 0; i < keys; ++i) all[i] = i;
  auto t0 = Clock::now();
  put(all);
  Advances first = settle();
  std::printf("%9llu keys loaded in %.1f s; first generations: %zu pages in %.0f ms\n",
              static_cast<unsigned long long>(keys),
              std::chrono::duration<double>(Clock::now() - t0).count(), first.deltas, first.ms);
  for (uint64_t u : {10ULL, 100ULL, 1000ULL, 10000ULL}) {
    std::vector<uint64_t> ids(u);
    for (auto& id : ids) id = rng() % keys;
    put(ids);
    Advances a = settle();
    const double per1k = a.changed > 0 ? a.ms * 1000.0 / static_cast<double>(a.changed) : 0;
    std::printf("%9llu %9llu %10zu %10zu %9.1f %10.1f %12.1f\n",
                static_cast<unsigned long long>(keys), static_cast<unsigned long long>(u),
                a.changed, a.deltas, a.deltas * 4096 / 1e6, a.ms, per1k);
  }
  (void)client->Shutdown(true);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t small = 20000, large = 200000;
  size_t value_size = 100;
  int base = 28380;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--small" && i + 1 < argc) {
      small = std::stoull(argv[++i]);
    } else if (a == "--large" && i + 1 < argc) {
      large = std::stoull(argv[++i]);
    } else if (a == "--value-size" && i + 1 < argc) {
      value_size = std::stoul(argv[++i]);
    } else if (a == "--base-port" && i + 1 < argc) {
      base = std::stoi(argv[++i]);
    } else {
      std::printf(
          "usage: generation_bench [--small N] [--large N] [--value-size B] [--base-port P]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/tessera-generation-bench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp");
  const std::string dir = tmpl;
  std::printf("generation_bench: xor 3+1, %zu-byte values; advances every 300 ms\n", value_size);
  std::printf("%9s %9s %10s %10s %9s %10s %12s\n", "keys", "updated", "changed", "deltas", "MB",
              "ms (sum)", "ms/1k pages");
  Run(small, value_size, base, dir + "/small");
  Run(large, value_size, base + 10, dir + "/large");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
