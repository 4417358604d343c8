// manager_bench: the replicated control plane. Three `tessera manager --peers` processes on
// loopback; through the client library it measures
//   - replicated writes: lock acquires and releases, each one Raft log entry committed on a
//     quorum with the log flushed (fsync) on each manager, with 1 and 16 clients, p50/p99;
//   - lock acquire+release pairs/s: 1 client; 8 clients on 8 locks; 8 clients on one lock
//     (handoffs: each waiter is granted in FIFO order as the holder releases);
//   - failover: SIGKILL the leader, time until the first replicated write begun after the kill
//     succeeds (median of several), the killed manager restarted in between.
// With --etcd, and `etcd` on PATH (Debian: etcd-server), a 3-member etcd cluster runs the same
// workloads side by side through its v3 JSON gateway (puts, lease + lock/unlock, failover), and
// the ratios tessera/etcd are printed. Without it, the ratios are against the etcd 3.4 figures
// measured on this machine class (issue #8).
//
//   manager_bench [--ops N] [--failovers K] [--base-port P] [--etcd]
#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_process.h"
#include "tessera/orchestrator/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using tessera::bench::Measure;
using tessera::bench::Proc;
using tessera::bench::Rate;
using tessera::orchestrator::Client;
using tessera::orchestrator::LockSession;

[[noreturn]] void Die(const std::string& s) {
  std::fprintf(stderr, "manager_bench: %s\n", s.c_str());
  std::exit(1);
}

std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// What a control plane offers the benchmark: one replicated write, lock pairs, the leader.
class Plane {
 public:
  virtual ~Plane() = default;
  virtual std::string name() const = 0;
  // A replicated write by client `t` (its i-th).
  virtual bool Write(int t, uint64_t i) = 0;
  // One acquire + release of `lock` by client `t` (blocking while another holds it).
  virtual bool LockPair(int t, const std::string& lock) = 0;
  // Index of the leader (0..2), or -1.
  virtual int Leader() = 0;
  virtual void Kill(int i) = 0;
  virtual void Restart(int i) = 0;
};

class TesseraPlane : public Plane {
 public:
  TesseraPlane(const std::string& dir, int base) : dir_(dir) {
    for (int i = 0; i < 3; ++i) ports_.push_back(base + i);
    for (int i = 0; i < 3; ++i) Restart(i);
    for (int t = 0; t < 16; ++t) {
      tessera::orchestrator::ClientOptions o;
      o.manager = List();
      o.deadline = std::chrono::milliseconds(10000);
      auto c = Client::Connect(o);
      if (!c.ok()) Die(c.status().ToString());
      clients_.push_back(std::move(c).value());
    }
    for (int t = 0; t < 16; ++t) {
      std::unique_ptr<LockSession> s;
      for (int tries = 0; tries < 100 && !s; ++tries) {
        auto r = clients_[static_cast<size_t>(t)]->OpenSession(std::chrono::milliseconds(10000),
                                                               "bench " + std::to_string(t));
        if (r.ok()) {
          s = std::move(r).value();
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      if (!s) Die("no session: the managers did not elect a leader");
      sessions_.push_back(std::move(s));
    }
  }
  std::string name() const override { return "tessera"; }
  std::string List() const {
    std::string s;
    for (int p : ports_) s += (s.empty() ? "" : ",") + Addr(p);
    return s;
  }
  bool Write(int t, uint64_t i) override {
    // Alternately acquire and release this client's own lock: one log entry each.
    auto& s = *sessions_[static_cast<size_t>(t)];
    std::string lock = "w" + std::to_string(t);
    if (i / 16 % 2 == 0 || tokens_[t] == 0) {
      auto r = s.Acquire(lock, std::chrono::milliseconds(0));
      if (r.ok()) tokens_[t] = *r;
      return r.ok();
    }
    bool ok = s.Release(lock, tokens_[t]).ok();
    tokens_[t] = 0;
    return ok;
  }
  bool LockPair(int t, const std::string& lock) override {
    auto& s = *sessions_[static_cast<size_t>(t)];
    auto r = s.Acquire(lock, std::chrono::milliseconds(10000));
    return r.ok() && s.Release(lock, *r).ok();
  }
  int Leader() override {
    auto st = clients_[0]->GetStatus();
    if (!st.ok()) return -1;
    for (int i = 0; i < 3; ++i) {
      if (Addr(ports_[static_cast<size_t>(i)]) == st->manager_address) return i;
    }
    return -1;
  }
  void Kill(int i) override { procs_[static_cast<size_t>(i)].Kill(); }
  void Restart(int i) override {
    procs_[static_cast<size_t>(i)].Start(
        {TESSERA_BIN, "manager", "--listen", Addr(ports_[static_cast<size_t>(i)]), "--peers",
         List(), "--data", dir_ + "/manager" + std::to_string(i), "--protection", "none",
         "--workers", "1"},
        dir_ + "/manager" + std::to_string(i) + ".log");
  }

 private:
  std::string dir_;
  std::vector<int> ports_;
  Proc procs_[3];
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::unique_ptr<LockSession>> sessions_;
  int64_t tokens_[16] = {};
};

// etcd 3.x through its JSON gateway (/v3/...): keys and values base64.
std::string B64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

class EtcdPlane : public Plane {
 public:
  EtcdPlane(const std::string& dir, int base) : dir_(dir) {
    for (int i = 0; i < 3; ++i) {
      client_ports_.push_back(base + 10 + 2 * i);
      peer_ports_.push_back(base + 11 + 2 * i);
    }
    for (int i = 0; i < 3; ++i) Restart(i);
    for (int t = 0; t < 16; ++t) {
      nlohmann::json lease;
      for (int tries = 0; tries < 100 && !lease.contains("ID"); ++tries) {
        lease = Post(t, "/v3/lease/grant", {{"TTL", 3600}});  // outlives the run: no keep-alive
        if (!lease.contains("ID")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (!lease.contains("ID")) Die("etcd did not answer a lease grant");
      leases_.push_back(lease.at("ID").get<std::string>());
    }
  }
  std::string name() const override { return "etcd"; }
  bool Write(int t, uint64_t i) override {
    auto r = Post(
        t, "/v3/kv/put",
        {{"key", B64("k" + std::to_string(t) + "-" + std::to_string(i))}, {"value", B64("v")}});
    return r.contains("header");
  }
  bool LockPair(int t, const std::string& lock) override {
    auto r =
        Post(t, "/v3/lock/lock", {{"name", B64(lock)}, {"lease", leases_[static_cast<size_t>(t)]}});
    if (!r.contains("key")) return false;
    auto u = Post(t, "/v3/lock/unlock", {{"key", r.at("key")}});
    return u.contains("header");
  }
  int Leader() override {
    for (int i = 0; i < 3; ++i) {
      httplib::Client c("127.0.0.1", client_ports_[static_cast<size_t>(i)]);
      c.set_connection_timeout(0, 300000);
      auto r = c.Post("/v3/maintenance/status", "{}", "application/json");
      if (!r || r->status != 200) continue;
      auto j = nlohmann::json::parse(r->body, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.value("leader", "") == j["header"].value("member_id", "x")) return i;
    }
    return -1;
  }
  void Kill(int i) override { procs_[static_cast<size_t>(i)].Kill(); }
  void Restart(int i) override {
    std::string cluster;
    for (int j = 0; j < 3; ++j) {
      cluster += (j ? "," : "") + std::string("e") + std::to_string(j) + "=http://" +
                 Addr(peer_ports_[static_cast<size_t>(j)]);
    }
    std::string name = "e" + std::to_string(i);
    pid_t pid = fork();
    if (pid == 0) {
      FILE* f = std::fopen((dir_ + "/" + name + ".log").c_str(), "a");
      if (f) {
        dup2(fileno(f), 1);
        dup2(fileno(f), 2);
      }
      std::string client = "http://" + Addr(client_ports_[static_cast<size_t>(i)]);
      std::string peer = "http://" + Addr(peer_ports_[static_cast<size_t>(i)]);
      std::string data = dir_ + "/" + name;
      execlp("etcd", "etcd", "--name", name.c_str(), "--data-dir", data.c_str(),
             "--listen-client-urls", client.c_str(), "--advertise-client-urls", client.c_str(),
             "--listen-peer-urls", peer.c_str(), "--initial-advertise-peer-urls", peer.c_str(),
             "--initial-cluster", cluster.c_str(), "--initial-cluster-state", "new", "--log-level",
             "error", static_cast<char*>(nullptr));
      _exit(127);
    }
    procs_[static_cast<size_t>(i)].pid = pid;
  }

 private:
  // One POST to any member (client t starts at member t % 3 and moves on when one fails).
  nlohmann::json Post(int t, const std::string& path, const nlohmann::json& body) {
    std::lock_guard<std::mutex> l(mu_[t]);
    for (int attempt = 0; attempt < 3; ++attempt) {
      int m = (t + attempt + shift_[t]) % 3;
      auto& c = conn_[t][m];
      if (!c) {
        c = std::make_unique<httplib::Client>("127.0.0.1", client_ports_[static_cast<size_t>(m)]);
        c->set_keep_alive(true);
        c->set_tcp_nodelay(true);
        c->set_connection_timeout(0, 300000);
        c->set_read_timeout(15, 0);
      }
      auto r = c->Post(path, body.dump(), "application/json");
      if (r && r->status == 200) {
        auto j = nlohmann::json::parse(r->body, nullptr, false);
        if (!j.is_discarded()) return j;
      }
      c.reset();
      shift_[t] = (shift_[t] + 1) % 3;
    }
    return nlohmann::json::object();
  }

  std::string dir_;
  std::vector<int> client_ports_, peer_ports_;
  Proc procs_[3];
  std::vector<std::string> leases_;
  std::mutex mu_[16];
  std::unique_ptr<httplib::Client> conn_[16][3];
  int shift_[16] = {};
};

struct Figures {
  Rate writes1, writes16, pairs1, pairs8, handoffs8;
  double failover_ms = 0, failover_max_ms = 0;
};

Figures Run(Plane& p, uint64_t ops, int failovers) {
  Figures f;
  std::printf("\n== %s: 3 members on loopback ==\n", p.name().c_str());
  for (int i = 0; i < 100 && p.Leader() < 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto check = [&](bool ok) {
    if (!ok) Die(p.name() + ": an operation failed");
  };
  f.writes1 = Measure(1, ops / 4, [&](int t, uint64_t i) { check(p.Write(t, i)); });
  std::printf("replicated writes, 1 client:    %8.0f /s  p50 %7.0f us  p99 %7.0f us\n",
              f.writes1.ops_per_sec, f.writes1.p50_us, f.writes1.p99_us);
  f.writes16 = Measure(16, ops, [&](int t, uint64_t i) { check(p.Write(t, i)); });
  std::printf("replicated writes, 16 clients:  %8.0f /s  p50 %7.0f us  p99 %7.0f us\n",
              f.writes16.ops_per_sec, f.writes16.p50_us, f.writes16.p99_us);
  f.pairs1 = Measure(1, ops / 8, [&](int t, uint64_t) { check(p.LockPair(t, "one")); });
  std::printf("lock pairs, 1 client:           %8.0f /s  p50 %7.0f us\n", f.pairs1.ops_per_sec,
              f.pairs1.p50_us);
  f.pairs8 = Measure(8, ops / 4,
                     [&](int t, uint64_t) { check(p.LockPair(t, "own-" + std::to_string(t))); });
  std::printf("lock pairs, 8 clients, 8 locks: %8.0f /s  p50 %7.0f us\n", f.pairs8.ops_per_sec,
              f.pairs8.p50_us);
  f.handoffs8 = Measure(8, ops / 8, [&](int t, uint64_t) { check(p.LockPair(t, "shared")); });
  std::printf("lock handoffs, 8 clients, 1 lock: %6.0f /s  p50 %7.0f us\n", f.handoffs8.ops_per_sec,
              f.handoffs8.p50_us);

  std::vector<double> times;
  for (int k = 0; k < failovers; ++k) {
    int leader = -1;
    for (int i = 0; i < 100 && leader < 0; ++i) {
      leader = p.Leader();
      if (leader < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (leader < 0) Die(p.name() + ": no leader before failover " + std::to_string(k));
    auto killed = Clock::now();
    p.Kill(leader);
    uint64_t i = 1000000 * (k + 1);
    while (!p.Write(0, i++)) {
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
    times.push_back(ms);
    std::printf("failover %d: first write %.0f ms after SIGKILL of the leader\n", k + 1, ms);
    p.Restart(leader);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // let it catch up
  }
  f.failover_ms = Median(times);
  f.failover_max_ms = times.empty() ? 0 : *std::max_element(times.begin(), times.end());
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t ops = 20000;
  int failovers = 5;
  int base = 28100;
  bool etcd = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--ops") {
      ops = std::stoull(next());
    } else if (a == "--failovers") {
      failovers = std::stoi(next());
    } else if (a == "--base-port") {
      base = std::stoi(next());
    } else if (a == "--etcd") {
      etcd = true;
    } else {
      Die("usage: manager_bench [--ops N] [--failovers K] [--base-port P] [--etcd]");
    }
  }
  std::string dir = std::filesystem::temp_directory_path() /
                    ("tessera-manager-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  Figures t;
  {
    TesseraPlane plane(dir, base);
    t = Run(plane, ops, failovers);
  }
  Figures e;
  bool have_etcd = false;
  if (etcd) {
    if (std::system("command -v etcd >/dev/null 2>&1") != 0) {
      std::printf("\n--etcd: no etcd on PATH (Debian: apt-get install etcd-server); skipped\n");
    } else {
      EtcdPlane plane(dir, base);
      e = Run(plane, ops, failovers);
      have_etcd = true;
    }
  }
  if (!have_etcd) {
    // etcd 3.4, 3 members on loopback, measured on this machine class (issue #8).
    e.writes16.ops_per_sec = 4000;
    e.pairs1.ops_per_sec = 310;
    e.pairs8.ops_per_sec = 670;
    e.handoffs8.ops_per_sec = 80;
    e.failover_ms = 1200;
  }
  std::printf("\n== tessera / etcd (%s) ==\n",
              have_etcd ? "side by side, etcd through its JSON gateway"
                        : "etcd figures from issue #8: writes 3-5k/s (4k used), failover 1.2 s");
  std::printf("replicated writes, 16 clients: %.2fx   (target >= 1.5x)\n",
              t.writes16.ops_per_sec / e.writes16.ops_per_sec);
  std::printf("lock pairs, 1 client:          %.2fx   (target >= 2x)\n",
              t.pairs1.ops_per_sec / e.pairs1.ops_per_sec);
  std::printf("lock pairs, 8 clients/8 locks: %.2fx   (target >= 2x)\n",
              t.pairs8.ops_per_sec / e.pairs8.ops_per_sec);
  std::printf("lock handoffs, 8 clients/1:    %.2fx   (target >= 2x)\n",
              t.handoffs8.ops_per_sec / e.handoffs8.ops_per_sec);
  std::printf("failover median: tessera %.0f ms (max %.0f), etcd %.0f ms   (target <= 600 ms)\n",
              t.failover_ms, t.failover_max_ms, e.failover_ms);
  std::filesystem::remove_all(dir);
  return 0;
}
