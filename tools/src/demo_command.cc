// `tessera demo`: a whole local cluster in one command. Starts a manager and three workers as
// child processes on loopback, loads keys with progress, reads every one back, SIGKILLs a worker
// and restarts it on the same data, checks every key again, wipes another worker and rebuilds it
// from parity, scrubs, and shuts the cluster down with cleanup. Exits 0 only if every check
// passed.
#include <httplib.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "tessera/orchestrator/client.h"

namespace tessera::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Child {
  pid_t pid = -1;
  std::vector<std::string> argv;
  std::string log;

  bool Start() {
    pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
      // The cluster goes with the demo: a demo stopped by a signal leaves no process behind.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() == 1) _exit(127);  // the demo is already gone
      FILE* f = std::fopen(log.c_str(), "a");
      if (f) {
        dup2(fileno(f), 1);
        dup2(fileno(f), 2);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv("/proc/self/exe", args.data());
      _exit(127);
    }
    return true;
  }
  bool Running() {
    if (pid <= 0) return false;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      pid = -1;
      return false;
    }
    return true;
  }
  void Kill(int sig) {
    if (pid > 0) kill(pid, sig);
  }
  bool WaitExit(std::chrono::milliseconds timeout) {
    auto end = Clock::now() + timeout;
    while (Running()) {
      if (Clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  ~Child() {
    if (Running()) {
      Kill(SIGKILL);
      WaitExit(std::chrono::seconds(5));
    }
  }
};

struct Step {
  std::string name;
  bool ok;
  double secs;
  std::string detail;
};

class Demo {
 public:
  std::vector<int> ports;
  uint64_t keys = 100000;
  int managers = 1;
  std::string dir;
  // The demo made `dir` (then it removes it after a pass); otherwise it removes only what it
  // put there, never what the directory held before.
  bool own_dir = true;
  std::vector<Step> steps;
  std::vector<Child*> children;  // every manager and worker, for WaitServing

  int Run() {
    std::string host = "127.0.0.1";
    // Managers: the MANAGER port, and with --managers 3 the two ports after the last worker's.
    std::vector<std::string> maddrs = {host + ":" + std::to_string(ports[1])};
    for (int i = 1; i < managers; ++i)
      maddrs.push_back(host + ":" + std::to_string(ports.back() + i));
    std::string manager;
    for (const auto& a : maddrs) manager += (manager.empty() ? "" : ",") + a;
    std::printf("Tessera demo: %s %s, HTTP status %s:%d, %zu workers, %llu keys\n",
                managers > 1 ? "managers (Raft)" : "manager", manager.c_str(), host.c_str(),
                ports[0], ports.size() - 2, static_cast<unsigned long long>(keys));
    std::printf("data and logs under %s\n\n", dir.c_str());
    {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) {
        std::fprintf(stderr, "tessera demo: cannot create %s: %s\n", dir.c_str(),
                     ec.message().c_str());
        return kExitFailure;
      }
    }

    std::vector<std::unique_ptr<Child>> mgrs;
    for (int i = 0; i < managers; ++i) {
      auto m = std::make_unique<Child>();
      std::string name = managers > 1 ? "manager-" + std::to_string(i + 1) : "manager";
      m->argv = {"tessera",
                 "manager",
                 "--listen",
                 maddrs[static_cast<size_t>(i)],
                 "--data",
                 dir + "/" + name,
                 "--workers",
                 std::to_string(ports.size() - 2),
                 "--heartbeat-ms",
                 "200",
                 "--heartbeat-timeout-ms",
                 "1500",
                 "--protection",
                 ports.size() - 2 >= 2 ? "xor" : "none"};
      if (i == 0) {
        m->argv.push_back("--http");
        m->argv.push_back(host + ":" + std::to_string(ports[0]));
      }
      if (managers > 1) {
        m->argv.push_back("--peers");
        m->argv.push_back(manager);
      }
      m->log = dir + "/" + name + ".log";
      created_.push_back(name);
      created_.push_back(name + ".log");
      mgrs.push_back(std::move(m));
    }
    std::vector<std::unique_ptr<Child>> workers;
    for (size_t i = 2; i < ports.size(); ++i) {
      auto w = std::make_unique<Child>();
      w->argv = {"tessera",   "worker", "--listen", host + ":" + std::to_string(ports[i]),
                 "--manager", manager,  "--data",   dir + "/worker-" + std::to_string(i - 1)};
      w->log = dir + "/worker-" + std::to_string(i - 1) + ".log";
      created_.push_back("worker-" + std::to_string(i - 1));
      created_.push_back("worker-" + std::to_string(i - 1) + ".log");
      workers.push_back(std::move(w));
    }

    for (auto& m : mgrs) children.push_back(m.get());
    for (auto& w : workers) children.push_back(w.get());
    bool ok = Do(managers > 1 ? "start 3 managers and the workers" : "start manager and workers",
                 [&](std::string* d) {
                   for (auto& m : mgrs) {
                     if (!m->Start()) return false;
                   }
                   for (auto& w : workers) {
                     if (!w->Start()) return false;
                   }
                   *d = std::to_string(workers.size() + mgrs.size()) + " processes";
                   return true;
                 });
    orchestrator::ClientOptions co;
    co.manager = manager;
    co.deadline = std::chrono::milliseconds(15000);
    auto client = std::move(orchestrator::Client::Connect(co)).value();
    // Status polls that give up fast, so that a manager or worker that exited is noticed.
    orchestrator::ClientOptions quick_opts = co;
    quick_opts.deadline = std::chrono::milliseconds(1000);
    auto quick = std::move(orchestrator::Client::Connect(quick_opts)).value();
    ok = ok && Do("workers register, shard map forms",
                  [&](std::string* d) { return WaitServing(*quick, workers.size(), d); });
    ok = ok && Do("HTTP GET /health and /status", [&](std::string* d) {
           httplib::Client http(host, ports[0]);
           auto h = http.Get("/health");
           auto s = http.Get("/status");
           if (!h || h->status != 200 || !s || s->status != 200) return false;
           *d = std::to_string(s->body.size()) + " bytes of JSON";
           return s->body.find("\"serving\"") != std::string::npos;
         });
    ok = ok && Do("load " + std::to_string(keys) + " keys",
                  [&](std::string* d) { return Load(*client, d); });
    ok = ok && Do("read back every key", [&](std::string* d) { return CheckAll(*client, d); });
    if (managers > 1) {
      ok = ok && Do("SIGKILL the leader manager during writes",
                    [&](std::string* d) { return KillLeader(*client, mgrs, maddrs, d); });
    }
    int64_t version_before_kill = 0;
    ok = ok && Do("SIGKILL worker 1", [&](std::string* d) {
           auto m = client->GetShardMap(true);
           if (m.ok()) version_before_kill = m->version;
           workers[0]->Kill(SIGKILL);
           bool dead = workers[0]->WaitExit(std::chrono::seconds(5));
           *d = "pid gone: " + std::string(dead ? "yes" : "no");
           return dead;
         });
    ok = ok && Do("restart worker 1 on its data", [&](std::string* d) {
           if (!workers[0]->Start()) return false;
           // Serving again once the new incarnation has registered (the map version moves on).
           return WaitServing(*quick, workers.size(), d, version_before_kill);
         });
    ok =
        ok && Do("read back every key again", [&](std::string* d) { return CheckAll(*client, d); });
    if (workers.size() >= 2) {
      // The disk of a worker is lost: it comes back empty and rebuilds from the others' images
      // and the XOR parity held by the manager, then replays the tail of unprotected writes.
      const size_t lost = 1;
      const std::string name = "worker " + std::to_string(lost + 1);
      ok = ok && Do("SIGKILL " + name + ", delete its data directory", [&](std::string* d) {
             auto m = client->GetShardMap(true);
             if (m.ok()) version_before_kill = m->version;
             workers[lost]->Kill(SIGKILL);
             bool dead = workers[lost]->WaitExit(std::chrono::seconds(5));
             std::error_code ec;
             std::filesystem::remove_all(dir + "/worker-" + std::to_string(lost + 1), ec);
             *d = std::string("pid gone: ") + (dead ? "yes" : "no") +
                  ", data directory deleted: " + (ec ? "NO" : "yes");
             return dead && !ec;
           });
      ok = ok && Do("restart " + name + " empty: rebuild from parity", [&](std::string* d) {
             if (!workers[lost]->Start()) return false;
             return WaitRebuild(*client, workers.size(), d, version_before_kill);
           });
      ok = ok && Do("read back every key after the rebuild",
                    [&](std::string* d) { return CheckAll(*client, d); });
      ok = ok && Do("scrub: parity matches the data", [&](std::string* d) {
             auto rep = client->Scrub();
             if (!rep.ok()) {
               *d = rep.status().ToString();
               return false;
             }
             *d = std::to_string(rep->stripes_checked) + " stripes, " +
                  std::to_string(rep->mismatches) + " mismatches";
             return rep->mismatches == 0 && rep->unverified == 0;
           });
    }
    ok = ok && Do("shutdown --cleanup", [&](std::string* d) {
           Status s = client->Shutdown(true);
           if (!s.ok()) {
             *d = s.ToString();
             return false;
           }
           bool exited = true;
           for (auto& m : mgrs) exited = m->WaitExit(std::chrono::seconds(10)) && exited;
           for (auto& w : workers) exited = w->WaitExit(std::chrono::seconds(10)) && exited;
           bool data_gone = !std::filesystem::exists(dir + "/manager");
           for (int i = 1; i <= managers && managers > 1; ++i) {
             data_gone =
                 data_gone && !std::filesystem::exists(dir + "/manager-" + std::to_string(i));
           }
           for (size_t i = 1; i <= workers.size(); ++i) {
             data_gone =
                 data_gone && !std::filesystem::exists(dir + "/worker-" + std::to_string(i));
           }
           *d = std::string("processes exited: ") + (exited ? "yes" : "NO") +
                ", data deleted: " + (data_gone ? "yes" : "NO");
           return exited && data_gone;
         });

    std::printf("\nsummary\n");
    for (const auto& s : steps) {
      std::printf("  [%s] %-44s %7.2f s  %s\n", s.ok ? "ok" : "FAILED", s.name.c_str(), s.secs,
                  s.detail.c_str());
    }
    if (ok) {
      std::error_code ec;
      if (own_dir) {
        std::filesystem::remove_all(dir, ec);
      } else {
        for (const auto& name : created_) std::filesystem::remove_all(dir + "/" + name, ec);
      }
      std::printf("\ndemo passed: every check succeeded\n");
      return kExitOk;
    }
    std::printf("\ndemo FAILED: see the logs under %s\n", dir.c_str());
    return kExitFailure;
  }

 private:
  std::vector<std::string> created_;  // names under `dir` the demo made

  // The last non-empty line of a log file ("" when none).
  static std::string LastLine(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) return "";
    std::string last;
    char buf[1024];
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
      std::string line(buf);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      if (!line.empty()) last = line;
    }
    std::fclose(f);
    return last;
  }

  // Writers put keys while the leader is SIGKILLed; every acknowledged key must be there after
  // a new leader is elected; the killed manager restarts and rejoins as a follower.
  bool KillLeader(orchestrator::Client& c, std::vector<std::unique_ptr<Child>>& mgrs,
                  const std::vector<std::string>& maddrs, std::string* d) {
    auto st = c.GetStatus();
    if (!st.ok()) {
      *d = st.status().ToString();
      return false;
    }
    size_t leader = maddrs.size();
    for (size_t i = 0; i < maddrs.size(); ++i) {
      if (maddrs[i] == st->manager_address) leader = i;
    }
    if (leader == maddrs.size()) {
      *d = "no leader among the managers";
      return false;
    }
    std::mutex mu;
    std::vector<std::pair<std::string, std::string>> acked;
    std::atomic<bool> stop{false};
    std::atomic<int64_t> killed_ns{0}, first_after_ns{0};
    std::vector<std::thread> writers;
    writers.reserve(4);
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        for (uint64_t i = 0; !stop.load(); ++i) {
          std::string k = "failover-" + std::to_string(t) + "-" + std::to_string(i);
          int64_t started = Clock::now().time_since_epoch().count();
          if (!c.Put(k, Value(i), false).ok()) continue;
          int64_t killed = killed_ns.load(), expected = 0;
          if (killed != 0 && started > killed)
            first_after_ns.compare_exchange_strong(expected,
                                                   Clock::now().time_since_epoch().count());
          std::lock_guard<std::mutex> l(mu);
          acked.emplace_back(k, Value(i));
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    killed_ns.store(Clock::now().time_since_epoch().count());
    mgrs[leader]->Kill(SIGKILL);
    bool dead = mgrs[leader]->WaitExit(std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));
    stop.store(true);
    for (auto& w : writers) w.join();
    auto now = c.GetStatus();
    std::string next = now.ok() ? now->manager_address : now.status().ToString();
    size_t missing = 0;
    for (const auto& [k, v] : acked) {
      auto got = c.Get(k);
      missing += got.ok() && *got && **got == v ? 0 : 1;
    }
    bool restarted = mgrs[leader]->Start();
    char b[256];
    std::snprintf(b, sizeof b,
                  "leader %s killed, new leader %s; writes again after %.0f ms; %zu acknowledged "
                  "writes, %zu missing",
                  maddrs[leader].c_str(), next.c_str(),
                  first_after_ns.load() ? (first_after_ns.load() - killed_ns.load()) / 1e6 : -1.0,
                  acked.size(), missing);
    *d = b;
    return dead && now.ok() && next != maddrs[leader] && first_after_ns.load() != 0 &&
           missing == 0 && restarted;
  }

  template <typename F>
  bool Do(const std::string& name, F&& f) {
    std::printf("- %s ...\n", name.c_str());
    std::fflush(stdout);
    auto t0 = Clock::now();
    std::string detail;
    bool ok = f(&detail);
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    steps.push_back({name, ok, secs, detail});
    std::printf("  %s (%.2f s) %s\n", ok ? "ok" : "FAILED", secs, detail.c_str());
    std::fflush(stdout);
    return ok;
  }

  bool WaitServing(orchestrator::Client& c, size_t n, std::string* d, int64_t after_version = 0) {
    auto end = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < end) {
      for (Child* ch : children) {
        if (!ch->Running()) {  // e.g. its port was taken: no use waiting for it
          *d = ch->argv[1] + " " + ch->argv[3] + " exited: " + LastLine(ch->log) + " (log " +
               ch->log + ")";
          return false;
        }
      }
      auto s = c.GetStatus();
      if (s.ok() && s->map.formed && s->map.state == "serving" && s->map.version > after_version) {
        size_t up = 0;
        for (const auto& node : s->nodes) up += node.up && node.progress.empty() ? 1 : 0;
        if (up == n && s->nodes.size() == n && s->map.protection.rebuilding.empty()) {
          *d = std::to_string(n) + " workers up, map version " + std::to_string(s->map.version);
          (void)c.GetShardMap(true);
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    *d = "timed out waiting for the cluster";
    return false;
  }

  // Waits for the rebuilt worker to serve, printing its progress as `tessera status` shows it.
  bool WaitRebuild(orchestrator::Client& c, size_t n, std::string* d, int64_t after_version) {
    auto end = Clock::now() + std::chrono::seconds(120);
    std::string last_progress;
    bool seen_rebuild = false;
    while (Clock::now() < end) {
      auto s = c.GetStatus();
      if (s.ok()) {
        for (const auto& node : s->nodes) {
          if (node.progress.empty()) continue;
          auto j = nlohmann::json::parse(node.progress, nullptr, false);
          if (j.is_discarded()) continue;
          std::string phase = j.value("phase", "");
          if (phase == "rebuilding") {
            seen_rebuild = true;
            last_progress = std::to_string(j.value("pages_rebuilt", 0)) + "/" +
                            std::to_string(j.value("pages_total", 0)) + " pages, " +
                            std::to_string(static_cast<int>(j.value("mb_per_s", 0.0))) + " MB/s";
            std::fprintf(stderr, "\r  rebuild %s, %.1f s left      ", last_progress.c_str(),
                         j.value("seconds_left", 0.0));
          } else {
            std::fprintf(stderr, "\r  %-60s", phase.c_str());
          }
        }
      }
      std::string w;
      if (s.ok() && s->map.version > after_version && s->map.protection.rebuilding.empty() &&
          WaitServing(c, n, &w, after_version)) {
        std::fprintf(stderr, "\n");
        *d = w;
        *d += seen_rebuild ? ", rebuilt (last seen " + last_progress + ")" : ", rebuilt";
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    *d = "timed out waiting for the rebuild";
    return false;
  }

  static std::string Value(uint64_t i) { return "value-" + std::to_string(i * 2654435761u); }

  bool Load(orchestrator::Client& c, std::string* d) {
    auto t0 = Clock::now();
    std::vector<std::pair<std::string, std::string>> kvs;
    for (uint64_t i = 0; i < keys;) {
      kvs.clear();
      for (; i < keys && kvs.size() < 2000; ++i)
        kvs.emplace_back("demo-" + std::to_string(i), Value(i));
      Status s = c.PutMany(kvs, false);
      if (!s.ok()) {
        *d = s.ToString();
        return false;
      }
      Progress("load", i, t0);
    }
    std::fprintf(stderr, "\n");
    *d = Rate(keys, t0);
    return true;
  }

  bool CheckAll(orchestrator::Client& c, std::string* d) {
    auto t0 = Clock::now();
    std::atomic<uint64_t> next{0}, done{0}, bad{0};
    std::string first_error;
    std::mutex mu;
    std::vector<std::thread> ts;
    ts.reserve(4);
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] {
        for (uint64_t i; (i = next++) < keys;) {
          auto v = c.Get("demo-" + std::to_string(i));
          if (!v.ok() || !*v || **v != Value(i)) {
            ++bad;
            std::lock_guard<std::mutex> l(mu);
            if (first_error.empty()) {
              first_error = "key demo-" + std::to_string(i) + ": " +
                            (!v.ok() ? v.status().ToString()
                             : !*v   ? "missing"
                                     : "wrong value");
            }
          }
          ++done;
        }
      });
    }
    while (done.load() < keys && bad.load() == 0) {
      Progress("check", done.load(), t0);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (auto& t : ts) t.join();
    Progress("check", done.load(), t0);
    std::fprintf(stderr, "\n");
    if (bad.load() > 0) {
      *d = std::to_string(bad.load()) + " bad keys; first: " + first_error;
      return false;
    }
    *d = std::to_string(keys) + " keys correct, " + Rate(keys, t0);
    return true;
  }

  void Progress(const char* what, uint64_t n, Clock::time_point t0) const {
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    int filled = static_cast<int>(30 * n / std::max<uint64_t>(keys, 1));
    std::fprintf(stderr, "\r  %-5s [%s%s] %llu/%llu  %.0f ops/s ", what,
                 std::string(filled, '#').c_str(), std::string(30 - filled, '.').c_str(),
                 static_cast<unsigned long long>(n), static_cast<unsigned long long>(keys),
                 n / std::max(secs, 1e-9));
  }

  static std::string Rate(uint64_t n, Clock::time_point t0) {
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    char b[64];
    std::snprintf(b, sizeof b, "%.0f ops/s", n / std::max(secs, 1e-9));
    return b;
  }
};

}  // namespace

void RegisterDemoCommand(CLI::App& app, Context& ctx) {
  auto ports = std::make_shared<std::vector<int>>();
  auto keys = std::make_shared<uint64_t>(100000);
  auto dir = std::make_shared<std::string>();
  auto managers = std::make_shared<int>(1);
  auto* demo = app.add_subcommand(
      "demo",
      "Run a local cluster end to end: start a manager and workers (xor parity), load and check "
      "keys, kill and restart a worker, wipe a worker and rebuild it from parity, scrub, shut "
      "down with cleanup");
  demo->add_option("PORTS", *ports,
                   "STATUS MANAGER WORKER... ports (default 8080 8081 8082 8083 8084)")
      ->check(CLI::Range(1, 65535));
  demo->add_option("--keys", *keys, "Keys to load and check")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  demo->add_option("--managers", *managers,
                   "1, or 3 managers replicated with Raft (the other two on the ports after the "
                   "last worker's); with 3 the leader is SIGKILLed during writes")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
  demo->add_option("--dir", *dir,
                   "Directory for data and logs (default: a new temporary one); after a pass the "
                   "demo removes what it made there, and the directory too if it made it");
  demo->callback([&ctx, ports, keys, dir, managers] {
    ctx.action = [ports, keys, dir, managers] {
      Demo d;
      d.managers = *managers;
      d.ports = ports->empty() ? std::vector<int>{8080, 8081, 8082, 8083, 8084} : *ports;
      if (d.ports.size() < 3) {
        std::fprintf(stderr, "tessera demo: give STATUS MANAGER and at least one WORKER port\n");
        return kExitUsage;
      }
      d.keys = *keys;
      if (*managers > 1 && d.ports.back() + *managers - 1 > 65535) {
        std::fprintf(stderr,
                     "tessera demo: with --managers %d the other managers take the %d ports after "
                     "the last worker's (%d), past 65535\n",
                     *managers, *managers - 1, d.ports.back());
        return kExitUsage;
      }
      if (dir->empty()) {
        char tmpl[] = "/tmp/tessera-demo-XXXXXX";
        if (!mkdtemp(tmpl)) {
          std::perror("tessera demo: mkdtemp");
          return kExitFailure;
        }
        d.dir = tmpl;
      } else {
        d.dir = *dir;
        std::error_code ec;
        d.own_dir = !std::filesystem::exists(*dir, ec);
        if (!d.own_dir && !std::filesystem::is_directory(*dir, ec)) {
          std::fprintf(stderr, "tessera demo: --dir %s exists and is not a directory\n",
                       dir->c_str());
          return kExitUsage;
        }
        for (const char* taken : {"manager", "manager-1", "worker-1"}) {
          if (!d.own_dir && std::filesystem::exists(*dir + "/" + taken, ec)) {
            std::fprintf(stderr,
                         "tessera demo: --dir %s already holds %s (an earlier demo's data?); give "
                         "an empty or new directory\n",
                         dir->c_str(), taken);
            return kExitUsage;
          }
        }
      }
      signal(SIGPIPE, SIG_IGN);
      return d.Run();
    };
  });
}

}  // namespace tessera::cli
