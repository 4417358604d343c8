// rebuild_bench: how fast a worker that lost its disk rebuilds from parity, next to the codec's
// raw decode speed for the same shape, and what a generation advance costs.
//
//   rebuild_bench [--keys N] [--value-size B] [--base-port P]
//
// For xor (3 workers, parity on the manager) and rs:4+2 (4 workers, 2 parity workers): starts the
// cluster on loopback, loads N keys, waits until every worker has protected its data, SIGKILLs
// one worker, deletes its data directory, restarts it, and reports the rebuild as the worker
// logs it (pages, MB, seconds, MB/s) plus the time until the cluster serves again.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_process.h"
#include "tessera/erasure/codec.h"
#include "tessera/orchestrator/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using tessera::orchestrator::Client;

[[noreturn]] void Die(const std::string& s) {
  std::fprintf(stderr, "rebuild_bench: %s\n", s.c_str());
  std::exit(1);
}

using tessera::bench::Proc;
using tessera::bench::ReadFile;

// Raw ISA-L decode of one erased data shard, 1 MiB shards: MB of the rebuilt shard per second.
double RawDecodeMBs(const std::string& scheme, int k, int m) {
  auto codec = std::move(tessera::erasure::Codec::Create(scheme, k, m)).value();
  const size_t len = 1 << 20;
  std::vector<std::vector<uint8_t>> shards(k + m, std::vector<uint8_t>(len));
  for (int i = 0; i < k; ++i) {
    for (size_t b = 0; b < len; ++b) shards[i][b] = static_cast<uint8_t>(b * 31 + i);
  }
  std::vector<const uint8_t*> d;
  std::vector<uint8_t*> p, all;
  for (int i = 0; i < k; ++i) d.push_back(shards[i].data());
  for (int j = 0; j < m; ++j) p.push_back(shards[k + j].data());
  for (auto& s : shards) all.push_back(s.data());
  if (!codec->Encode(d, p, len).ok()) Die("encode");
  std::vector<int> erased{0};
  auto t0 = Clock::now();
  int n = 0;
  while (Clock::now() - t0 < std::chrono::milliseconds(500)) {
    if (!codec->Decode(all, erased, len).ok()) Die("decode");
    ++n;
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  return n * (len / 1e6) / secs;
}

struct Outcome {
  std::string line;  // the worker's "rebuilt ..." log line
  double mbs = 0;
  double serve_secs = 0;
};

Outcome Run(const std::string& protection, int data, int parity, int base, uint64_t keys,
            size_t value_size, const std::string& dir) {
  std::string mgr = "127.0.0.1:" + std::to_string(base);
  Proc m;
  m.Start({"tessera", "manager", "--listen", mgr, "--data", dir + "/m", "--workers",
           std::to_string(data), "--protection", protection},
          dir + "/m.log");
  std::vector<std::unique_ptr<Proc>> nodes;
  auto start = [&](int i) {
    auto p = std::make_unique<Proc>();
    p->Start(
        {"tessera", "worker", "--listen", "127.0.0.1:" + std::to_string(base + 1 + i), "--manager",
         mgr, "--data", dir + "/n" + std::to_string(i), "--role", i < data ? "worker" : "parity"},
        dir + "/n" + std::to_string(i) + ".log");
    return p;
  };
  for (int i = 0; i < data + parity; ++i) nodes.push_back(start(i));
  tessera::orchestrator::ClientOptions co;
  co.manager = mgr;
  co.deadline = std::chrono::milliseconds(60000);
  auto client = std::move(Client::Connect(co)).value();
  (void)tessera::bench::WaitFormed(*client, std::chrono::seconds(20));
  std::string value(value_size, 'v');
  std::vector<std::pair<std::string, std::string>> kvs;
  for (uint64_t i = 0; i < keys;) {
    kvs.clear();
    for (; i < keys && kvs.size() < 1000; ++i) {
      value[0] = static_cast<char>('a' + i % 26);
      kvs.emplace_back("key" + std::to_string(i), value);
    }
    if (!client->PutMany(kvs, false).ok()) Die("load failed");
  }
  // Let every worker protect what it holds: wait until no worker has logged a new generation
  // for 8 s (advances come every 2 s while anything changed; the first ones, of the whole load,
  // take seconds). A fixed 10 s wait was often too short for rs: the lost worker's last
  // generation held part of its data (the rest came from the tail), or a survivor's generation
  // moved under the rebuild and it started over.
  {
    auto count = [&] {
      size_t n = 0;
      for (int i = 0; i < data; ++i) {
        std::string text = ReadFile(dir + "/n" + std::to_string(i) + ".log");
        for (size_t at = 0; (at = text.find("protected generation", at)) != std::string::npos;
             ++at) {
          ++n;
        }
      }
      return n;
    };
    size_t last = count();
    auto since = Clock::now();
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    while (Clock::now() - since < std::chrono::seconds(8) && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      size_t now = count();
      if (now != last || now < static_cast<size_t>(data)) {
        last = now;
        since = Clock::now();
      }
    }
  }
  const int lost = 1;
  nodes[lost]->Kill();
  std::filesystem::remove_all(dir + "/n" + std::to_string(lost));
  std::string log = dir + "/n" + std::to_string(lost) + ".log";
  auto t0 = Clock::now();
  nodes[lost] = start(lost);
  Outcome out;
  std::regex re(R"(rebuilt .* \(([0-9.]+) MB/s\))");
  for (int i = 0; i < 6000; ++i) {
    std::string text = ReadFile(log);
    std::smatch mt;
    if (std::regex_search(text, mt, re)) {
      out.line = mt.str(0);
      out.mbs = std::stod(mt[1]);
    }
    if (text.find("serving (protected)") != std::string::npos &&
        text.rfind("serving (protected)") > text.rfind("rebuilt")) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  out.serve_secs = std::chrono::duration<double>(Clock::now() - t0).count();
  auto v = client->Get("key" + std::to_string(keys / 2));
  if (!v.ok() || !v->has_value()) Die("a key is missing after the rebuild");
  (void)client->Shutdown(true);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t keys = 200000;
  size_t value_size = 1000;
  int base = 28080;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--keys" && i + 1 < argc) {
      keys = std::stoull(argv[++i]);
    } else if (a == "--value-size" && i + 1 < argc) {
      value_size = std::stoul(argv[++i]);
    } else if (a == "--base-port" && i + 1 < argc) {
      base = std::stoi(argv[++i]);
    } else {
      std::printf("usage: rebuild_bench [--keys N] [--value-size B] [--base-port P]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/tessera-rebuild-bench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp");
  std::string dir = tmpl;
  std::printf("rebuild_bench: %llu keys of %zu bytes, one worker wiped and rebuilt\n",
              static_cast<unsigned long long>(keys), value_size);
  std::printf("%-10s %-60s %10s %12s %14s\n", "scheme", "worker log", "MB/s", "raw decode",
              "serving after");
  struct Case {
    std::string protection, scheme;
    int data, parity, k, m;
  };
  for (const Case& c : {Case{"xor", "xor", 3, 0, 3, 1}, Case{"rs:4+2", "rs", 4, 2, 4, 2}}) {
    std::string sub = dir + "/" + c.scheme;
    std::filesystem::create_directories(sub);
    Outcome o = Run(c.protection, c.data, c.parity, base, keys, value_size, sub);
    base += 20;
    double raw = RawDecodeMBs(c.scheme, c.k, c.m);
    std::printf("%-10s %-60s %10.0f %9.0f MB/s %12.2f s\n", c.protection.c_str(), o.line.c_str(),
                o.mbs, raw, o.serve_secs);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
