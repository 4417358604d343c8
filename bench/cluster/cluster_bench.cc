// cluster_bench: puts and gets through the client library against a manager and 3 workers on
// loopback (real `tessera` processes), with 1 and 16 concurrent clients, next to a bare Thrift
// round trip (WorkerService.Ping to an in-process server on the same transport stack): the
// ceiling. The same echo served by a forked process is measured too ("echo, other process"):
// every cluster call crosses processes, as a round trip to it does. So is an echo relayed by a
// third process to that one ("echo, relayed"): the shape of a protected put, which the worker
// answers only once its parity holder has answered. Prints ops/s, p50 and p99 latency, and the
// ratio to each.
//
//   cluster_bench [--ops N] [--value-size B] [--base-port P] [--only TEXT] [--poll-us N]
//                 [--manager-poll-us N] [--clients N,N...] [--workers N]
//
// The rows run in order (per client count: puts unprotected, puts xor, gets); the gets start
// once the xor cluster's processes are idle (it has sent the generation those puts started). Then
// paired rounds, two operations back to back five times, give median ratios: gets and
// unprotected puts against the in-process echo, and xor puts against unprotected puts.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <thrift/concurrency/ThreadFactory.h>
#include <thrift/concurrency/ThreadManager.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/transport/TNonblockingServerSocket.h>

#include "WorkerService.h"
#include "bench_process.h"
#include "tessera/orchestrator/client.h"
#include "tessera/rpc/rpc.h"

namespace {

namespace gen = ::tessera::rpc::gen;
using Clock = std::chrono::steady_clock;
using tessera::orchestrator::Client;

[[noreturn]] void Die(const std::string& s) {
  std::fprintf(stderr, "cluster_bench: %s\n", s.c_str());
  std::exit(1);
}

// The ceiling: a handler that does nothing but answer.
class EchoHandler : public gen::WorkerServiceIf {
 public:
  void Get(gen::GetReply&, const std::string&, int32_t, int64_t, const std::string&) override {}
  void Write(const std::string&, const std::vector<gen::Op>&, bool) override {}
  void Scan(gen::ScanReply&, const std::string&, int32_t, int64_t, const std::string&,
            const std::string&, int32_t) override {}
  void Ping(std::string& r, const std::string&) override { r = "pong"; }
  void Shutdown(const std::string&, bool) override {}
  void ReadImage(gen::PageRun&, const std::string&, int64_t, int64_t, int32_t) override {}
  void Progress(std::string&, const std::string&) override {}
  int64_t AppendTail(const std::string&, int32_t, int64_t, const std::vector<gen::TailEntry>&,
                     bool) override {
    return 0;
  }
  void StageDelta(const std::string&, int32_t, int64_t, int64_t, const std::vector<gen::PageDelta>&,
                  int64_t) override {}
  void CommitGeneration(gen::GenRecord&, const std::string&, int32_t, int64_t, int64_t, int64_t,
                        const std::string&, int64_t, int64_t, bool) override {}
  void CommitPrepared(gen::GenRecord&, const std::string&, int32_t, int64_t) override {}
  void GetRecord(gen::GenRecord&, const std::string&, int32_t, int64_t) override {}
  void ReadTail(std::vector<gen::TailEntry>&, const std::string&, int32_t, int64_t, int64_t,
                int32_t) override {}
  void ReadParity(gen::ParityPages&, const std::string&, int64_t, int32_t) override {}
};

// An echo that first asks another process's echo, as a protected worker stores a tail entry at
// its parity holder before it answers: the floor of any put that crosses a second process.
class RelayHandler : public EchoHandler {
 public:
  RelayHandler(tessera::rpc::Endpoint next, std::chrono::microseconds spin)
      : next_(std::move(next)), spin_(spin) {}
  void Ping(std::string& r, const std::string& t) override {
    auto lease = pool_.Get(next_);
    if (!lease.ok()) throw std::runtime_error(lease.status().ToString());
    try {
      (*lease)->send_Ping(t);
      if (spin_.count() > 0) tessera::rpc::SpinForReply((*lease)->getInputProtocol().get(), spin_);
      (*lease)->recv_Ping(r);
    } catch (...) {
      lease->Broken();  // not back into the pool
      throw;
    }
  }

 private:
  tessera::rpc::Endpoint next_;
  std::chrono::microseconds spin_;
  tessera::rpc::ClientPool<gen::WorkerServiceClient> pool_;
};

using Result = tessera::bench::Rate;
using tessera::bench::Measure;

using tessera::bench::Proc;

}  // namespace

int main(int argc, char** argv) {
  uint64_t ops = 100000;
  size_t value_size = 100;
  int base = 27080;
  std::string only;
  int poll_us = 100;         // the manager's and workers' default
  int manager_poll_us = -1;  // -1: poll_us
  std::vector<int> client_counts{1, 16};
  int workers = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    try {
      if (a == "--ops" && i + 1 < argc) {
        ops = std::stoull(argv[++i]);
      } else if (a == "--value-size" && i + 1 < argc) {
        value_size = std::stoul(argv[++i]);
      } else if (a == "--base-port" && i + 1 < argc) {
        base = std::stoi(argv[++i]);
      } else if (a == "--only" && i + 1 < argc) {
        only = argv[++i];
      } else if (a == "--poll-us" && i + 1 < argc) {
        poll_us = std::stoi(argv[++i]);
      } else if (a == "--clients" && i + 1 < argc) {
        client_counts.clear();
        for (std::string_view l = argv[++i]; !l.empty();) {
          size_t comma = std::min(l.find(','), l.size());
          client_counts.push_back(std::stoi(std::string(l.substr(0, comma))));
          if (client_counts.back() < 1) Die("--clients: each count must be at least 1");
          l.remove_prefix(std::min(comma + 1, l.size()));
        }
      } else if (a == "--workers" && i + 1 < argc) {
        workers = std::stoi(argv[++i]);
        if (workers < 2) Die("--workers must be at least 2 (xor protection needs two)");
      } else if (a == "--manager-poll-us" && i + 1 < argc) {
        manager_poll_us = std::stoi(argv[++i]);
      } else {
        std::printf(
            "usage: cluster_bench [--ops N] [--value-size B] [--base-port P] [--only TEXT]\n"
            "                     [--poll-us N] [--manager-poll-us N] [--clients N,N...]\n"
            "                     [--workers N]\n"
            "  --only TEXT          run only the rows whose name contains TEXT (and the echoes)\n"
            "  --poll-us N          the servers' --poll-us, the echoes' included (default 100)\n"
            "  --manager-poll-us N  the managers' --poll-us (default: --poll-us)\n"
            "  --clients N,N...     concurrent clients of each row (default 1,16)\n"
            "  --workers N          workers in each cluster (default 3, at least 2)\n");
        return a == "--help" ? 0 : 2;
      }
    } catch (const std::logic_error&) {  // std::stoi and friends
      Die("bad value for " + a + ": " + (i < argc ? argv[i] : ""));
    }
  }
  signal(SIGPIPE, SIG_IGN);
  // The same echo in a process of its own, as the workers are: forked before this process
  // starts any thread. A round trip to it pays the cross-process switches a worker's does.
  auto far_ep = tessera::rpc::Endpoint{"127.0.0.1", base + 7};
  pid_t far_pid = fork();
  if (far_pid < 0) Die("fork");
  if (far_pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // gone with the bench, however it ends
    auto far = tessera::rpc::Server::Start(
        far_ep, std::make_shared<gen::WorkerServiceProcessor>(std::make_shared<EchoHandler>()),
        tessera::rpc::ServerOptions{std::chrono::microseconds(poll_us)});
    if (!far.ok()) _exit(1);
    for (;;) pause();
  }
  // The relay, in a third process, in front of that echo.
  auto relay_ep = tessera::rpc::Endpoint{"127.0.0.1", base + 6};
  pid_t relay_pid = fork();
  if (relay_pid < 0) Die("fork");
  if (relay_pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto relay = tessera::rpc::Server::Start(
        relay_ep,
        std::make_shared<gen::WorkerServiceProcessor>(
            std::make_shared<RelayHandler>(far_ep, std::chrono::microseconds(poll_us))),
        tessera::rpc::ServerOptions{std::chrono::microseconds(poll_us)});
    if (!relay.ok()) _exit(1);
    for (;;) pause();
  }
  char tmpl[] = "/tmp/cluster_bench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp");
  std::string dir = tmpl;

  // Ceiling: bare Thrift round trips to an in-process server (polling as the workers' servers
  // do).
  auto echo_ep = tessera::rpc::Endpoint{"127.0.0.1", base + 9};
  auto echo = tessera::rpc::Server::Start(
      echo_ep, std::make_shared<gen::WorkerServiceProcessor>(std::make_shared<EchoHandler>()),
      tessera::rpc::ServerOptions{std::chrono::microseconds(poll_us)});
  if (!echo.ok()) Die(echo.status().ToString());
  tessera::rpc::ClientPool<gen::WorkerServiceClient> pool;
  auto echo_op = [&](int, uint64_t) {
    auto lease = pool.Get(echo_ep);
    if (!lease.ok()) Die(lease.status().ToString());
    std::string r;
    (*lease)->Ping(r, "");
  };

  // A Ping to a forked echo, which may still be binding its port.
  auto ping_child = [](tessera::rpc::ClientPool<gen::WorkerServiceClient>& pool,
                       const tessera::rpc::Endpoint& ep) {
    for (int attempt = 0;; ++attempt) {
      auto lease = pool.Get(ep);
      if (lease.ok()) {
        std::string r;
        (*lease)->Ping(r, "");
        return;
      }
      if (attempt == 100) Die(lease.status().ToString());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  tessera::rpc::ClientPool<gen::WorkerServiceClient> far_pool, relay_pool;
  auto far_op = [&](int, uint64_t) { ping_child(far_pool, far_ep); };
  auto relay_op = [&](int, uint64_t) { ping_child(relay_pool, relay_ep); };

  // The same echo on TNonblockingServer (libevent, 2 I/O threads + a 4-thread worker pool), to
  // compare the two server models on this machine.
  auto nb_socket =
      std::make_shared<apache::thrift::transport::TNonblockingServerSocket>("127.0.0.1", base + 8);
  auto tm = apache::thrift::concurrency::ThreadManager::newSimpleThreadManager(4);
  tm->threadFactory(std::make_shared<apache::thrift::concurrency::ThreadFactory>());
  tm->start();
  auto nb = std::make_shared<apache::thrift::server::TNonblockingServer>(
      std::make_shared<gen::WorkerServiceProcessor>(std::make_shared<EchoHandler>()),
      std::make_shared<apache::thrift::protocol::TBinaryProtocolFactory>(), nb_socket, tm);
  nb->setNumIOThreads(2);
  std::thread nb_thread([nb] { nb->serve(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let it bind and start serving
  auto nb_ep = tessera::rpc::Endpoint{"127.0.0.1", base + 8};
  tessera::rpc::ClientPool<gen::WorkerServiceClient> nb_pool;
  auto nb_op = [&](int, uint64_t) {
    auto lease = nb_pool.Get(nb_ep);
    if (!lease.ok()) Die(lease.status().ToString());
    std::string r;
    (*lease)->Ping(r, "");
  };

  // The clusters: the default (xor parity on the manager) and an unprotected one, so the cost
  // of protection shows as a ratio.
  struct ClusterRun {
    std::unique_ptr<Proc> m;
    std::vector<std::unique_ptr<Proc>> ws;
    std::unique_ptr<Client> client;
  };
  auto start_cluster = [&](const std::string& protection, int port0) {
    ClusterRun c;
    std::string mgr = "127.0.0.1:" + std::to_string(port0);
    std::string sub = dir + "/" + protection;
    c.m = std::make_unique<Proc>();
    c.m->Start({"tessera", "manager", "--listen", mgr, "--data", sub + "/m", "--workers",
                std::to_string(workers), "--protection", protection, "--poll-us",
                std::to_string(manager_poll_us < 0 ? poll_us : manager_poll_us)},
               sub + "-m.log");
    for (int i = 0; i < workers; ++i) {
      c.ws.push_back(std::make_unique<Proc>());
      c.ws.back()->Start({"tessera", "worker", "--listen",
                          "127.0.0.1:" + std::to_string(port0 + 1 + i), "--manager", mgr, "--data",
                          sub + "/w" + std::to_string(i), "--poll-us", std::to_string(poll_us)},
                         sub + "-w" + std::to_string(i) + ".log");
    }
    tessera::orchestrator::ClientOptions co;
    co.manager = mgr;
    c.client = std::move(Client::Connect(co)).value();
    if (!tessera::bench::WaitFormed(*c.client, std::chrono::seconds(10))) {
      Die("the " + protection + " cluster did not form in 10 s (see " + sub + "-m.log)");
    }
    // Warm up: every worker learned its shards and every connection exists.
    for (int i = 0; i < 2000; ++i) {
      if (!c.client->Put("warm" + std::to_string(i), "x", false).ok()) Die("warm-up put failed");
    }
    return c;
  };
  ClusterRun prot = start_cluster("xor", base + 1);
  ClusterRun bare = start_cluster("none", base + 10);
  Client* client = prot.client.get();
  std::string value(value_size, 'v');
  auto put_op = [&](int, uint64_t i) {
    tessera::Status s = client->Put("key" + std::to_string(i), value, false);
    if (!s.ok()) Die(s.ToString());
  };
  auto bare_put_op = [&](int, uint64_t i) {
    tessera::Status s = bare.client->Put("key" + std::to_string(i), value, false);
    if (!s.ok()) Die(s.ToString());
  };
  auto get_op = [&](int, uint64_t i) {
    auto v = client->Get("key" + std::to_string(i % ops));
    if (!v.ok() || !v->has_value()) Die("get failed");
  };

  struct Row {
    std::string name;
    int threads;
    Result r;
  };
  std::vector<Row> rows;
  if (std::string("put nosync, xor").find(only) == std::string::npos) {
    // The gets read what the xor put rows write; without those rows, load the keys first.
    std::vector<std::pair<std::string, std::string>> kvs;
    for (uint64_t i = 0; i < ops; ++i) {
      kvs.emplace_back("key" + std::to_string(i), value);
      if (kvs.size() == 1000 || i + 1 == ops) {
        if (!client->PutMany(kvs, false).ok()) Die("loading the keys for the gets failed");
        kvs.clear();
      }
    }
  }
  auto row = [&](const std::string& name, int threads, const auto& op) {
    const bool ceiling = name.rfind("thrift", 0) == 0 || name.rfind("echo, other", 0) == 0 ||
                         name.rfind("echo, relayed", 0) == 0;
    if (!ceiling && name.find(only) == std::string::npos) return;
    rows.push_back({name, threads, Measure(threads, ops, op)});
  };
  for (int threads : client_counts) {
    row("thrift echo (ceiling)", threads, echo_op);
    row("echo, other process", threads, far_op);
    row("echo, relayed", threads, relay_op);
    row("echo, nonblocking srv", threads, nb_op);
    row("put nosync, unprotected", threads, bare_put_op);
    row("put nosync, xor", threads, put_op);
    if (only.empty() || std::string("get").find(only) != std::string::npos) {
      // The xor cluster sends the generation the put rows started (an advance takes seconds
      // with tens of thousands of changed keys), and the kernel writes back the pages those
      // nosync puts dirtied; the gets wait for both (sync, then until the cluster's processes
      // are idle), so that they time reads rather than reads sharing two cores with that work.
      ::sync();
      std::vector<pid_t> pids{prot.m->pid};
      for (const auto& w : prot.ws) pids.push_back(w->pid);
      // Quiet for longer than the 2 s between advances: a gap before the next one is not enough.
      tessera::bench::WaitQuiet(pids, std::chrono::seconds(3), std::chrono::seconds(60));
    }
    row("get", threads, get_op);
  }
  std::printf(
      "cluster_bench: %llu ops per row, %zu-byte values, %d workers on loopback "
      "(gets and xor puts on the xor-protected cluster)\n",
      static_cast<unsigned long long>(ops), value_size, workers);
  std::printf("%-24s %8s %12s %10s %10s %12s %12s\n", "operation", "clients", "ops/s", "p50 us",
              "p99 us", "vs ceiling", "vs other-pr");
  for (const auto& row : rows) {
    double ceiling = 0, far = 0;
    for (const auto& c : rows) {
      if (c.threads != row.threads) continue;
      if (c.name.rfind("thrift", 0) == 0) ceiling = c.r.ops_per_sec;
      if (c.name.rfind("echo, other", 0) == 0) far = c.r.ops_per_sec;
    }
    std::printf("%-24s %8d %12.0f %10.1f %10.1f %11.2fx %11.2fx\n", row.name.c_str(), row.threads,
                row.r.ops_per_sec, row.r.p50_us, row.r.p99_us, row.r.ops_per_sec / ceiling,
                row.r.ops_per_sec / far);
  }
  for (int threads : client_counts) {
    double p = 0, u = 0, pp99 = 0, up99 = 0;
    for (const auto& row : rows) {
      if (row.threads != threads) continue;
      if (row.name == "put nosync, xor") p = row.r.ops_per_sec, pp99 = row.r.p99_us;
      if (row.name == "put nosync, unprotected") u = row.r.ops_per_sec, up99 = row.r.p99_us;
    }
    if (p == 0 || u == 0) continue;  // rows left out with --only
    std::printf("protected / unprotected puts, %2d clients: %.2fx ops/s, p99 %.1f vs %.1f us\n",
                threads, p / u, pp99, up99);
  }
  // Two rows run seconds apart, and this machine's speed moves that much between them (the
  // unprotected 16-client put row alone ranged 16k-39k ops/s over a day's runs). Paired rounds
  // measure two operations back to back, in alternating order, and report the median ratio.
  constexpr int kRounds = 5;
  // At least 10,000 ops a round: in shorter rounds, starting 16 threads weighs on the result.
  const uint64_t per_round = std::max<uint64_t>(ops / kRounds, 10000);
  auto paired = [&](const char* label, int threads, const auto& op, const auto& base_op) {
    std::vector<double> ratios;
    for (int r = 0; r < kRounds; ++r) {
      double x = 0, y = 0;
      if (r % 2 == 0) {
        x = Measure(threads, per_round, op).ops_per_sec;
        y = Measure(threads, per_round, base_op).ops_per_sec;
      } else {
        y = Measure(threads, per_round, base_op).ops_per_sec;
        x = Measure(threads, per_round, op).ops_per_sec;
      }
      ratios.push_back(x / y);
    }
    std::sort(ratios.begin(), ratios.end());
    std::printf("%s, %2d clients, %d paired rounds of %llu ops: median %.2fx (%.2f-%.2f)\n", label,
                threads, kRounds, static_cast<unsigned long long>(per_round), ratios[kRounds / 2],
                ratios.front(), ratios.back());
  };
  auto wanted = [&](const char* name) { return std::string(name).find(only) != std::string::npos; };
  // The targets against the ceiling: gets >= 0.7x, nosync puts >= 0.5x.
  for (int threads : client_counts) {
    if (wanted("get")) paired("get / thrift echo", threads, get_op, echo_op);
    if (wanted("put nosync, unprotected")) {
      paired("unprotected put / thrift echo", threads, bare_put_op, echo_op);
    }
  }
  if (wanted("put nosync, xor") && wanted("put nosync, unprotected")) {
    for (int threads : client_counts) {
      // The generation advance of the rows before (tens of thousands of puts) is not this
      // comparison's: the rounds start once the xor cluster is quiet. Each round's own advances
      // do count, as they run beside the next round (of either kind: the order alternates).
      ::sync();
      std::vector<pid_t> pids{prot.m->pid};
      for (const auto& w : prot.ws) pids.push_back(w->pid);
      tessera::bench::WaitQuiet(pids, std::chrono::seconds(3), std::chrono::seconds(60));
      paired("protected / unprotected puts", threads, put_op, bare_put_op);
      // What the second process costs any put that crosses one (no cluster, no engine).
      paired("relayed echo / echo, other process", threads, relay_op, far_op);
    }
  }
  (void)prot.client->Shutdown(true);
  (void)bare.client->Shutdown(true);
  nb->stop();
  nb_thread.join();
  for (pid_t pid : {far_pid, relay_pid}) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
