// Cluster commands: `tessera manager`, `tessera worker`, and the client commands put, get, del,
// scan, load, status, shutdown.
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>

#include "cli.h"
#include "tessera/orchestrator/client.h"
#include "tessera/orchestrator/manager.h"
#include "tessera/orchestrator/worker.h"

namespace tessera::cli {
namespace {

using orchestrator::Client;
using orchestrator::ClientOptions;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int Fail(const std::string& cmd, const Status& s) {
  std::fprintf(stderr, "tessera %s: %s\n", cmd.c_str(), s.ToString().c_str());
  return kExitFailure;
}

// True when nothing listens at `address`: every address it resolves to refused the connection.
// False when something answered, or the address could not be tried (the request then reports it).
bool Refused(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;  // a port, not a service name (the client's parser agrees)
  addrinfo* res = nullptr;
  if (::getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints,
                    &res) != 0) {
    return false;
  }
  bool refused = res != nullptr;
  for (addrinfo* a = res; a != nullptr && refused; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      refused = false;
      break;
    }
    int err = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      socklen_t len = sizeof err;
      if (::poll(&p, 1, 1000) != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = ETIMEDOUT;
      }
    }
    ::close(fd);
    refused = err == ECONNREFUSED;
  }
  ::freeaddrinfo(res);
  return refused;
}

struct ClientFlags {
  std::string manager = "127.0.0.1:8081";
  std::string token_file;
  int deadline_ms = 10000;

  void Add(CLI::App* app) {
    app->add_option("--manager", manager,
                    "Manager address HOST:PORT, or every manager's, comma-separated (the leader "
                    "is found)")
        ->capture_default_str();
    app->add_option("--token-file", token_file, "File holding the cluster token");
    app->add_option("--deadline-ms", deadline_ms, "Give up on a request after this long")
        ->capture_default_str()
        ->check(CLI::Range(100, 3600000));
  }

  Result<std::unique_ptr<Client>> Connect() const {
    ClientOptions o;
    o.manager = manager;
    o.deadline = std::chrono::milliseconds(deadline_ms);
    TESSERA_ASSIGN_OR_RETURN(o.token, orchestrator::ReadTokenFile(token_file));
    // No manager running, or a mistyped --manager: said after kRefusedFor (or the deadline, if
    // shorter), where the requests would retry for the whole deadline. A manager that is starting
    // or restarting (`tessera manager ... &` and a command right after it) binds its port
    // within that time.
    constexpr std::chrono::milliseconds kRefusedFor{3000};
    const auto give_up = std::chrono::steady_clock::now() + std::min(o.deadline, kRefusedFor);
    auto none_listens = [&] {
      size_t from = 0;
      for (;;) {
        const size_t comma = manager.find(',', from);
        if (!Refused(manager.substr(from, comma - from))) return false;
        if (comma == std::string::npos) return true;
        from = comma + 1;
      }
    };
    while (none_listens()) {
      const auto left = give_up - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        return Status::Unavailable(
            "no manager is listening at " + manager + " (connection refused for " +
            std::to_string(std::min(o.deadline, kRefusedFor).count()) +
            " ms): start one with 'tessera manager', or name the running ones with --manager");
      }
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(100)));
    }
    return Client::Connect(o);
  }
};

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 32 && c < 127 && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out;
}

int RunLoad(const ClientFlags& f, uint64_t count, size_t value_size, size_t batch,
            const std::string& prefix) {
  auto c = f.Connect();
  if (!c.ok()) return Fail("load", c.status());
  std::string value(value_size, 'v');
  std::mt19937_64 rng(7);
  for (auto& ch : value) ch = static_cast<char>('a' + rng() % 26);
  auto start = std::chrono::steady_clock::now();
  auto last_print = start;
  std::vector<std::pair<std::string, std::string>> kvs;
  for (uint64_t i = 0; i < count;) {
    kvs.clear();
    for (; i < count && kvs.size() < batch; ++i)
      kvs.emplace_back(prefix + std::to_string(i), value);
    Status s = (*c)->PutMany(kvs, false);
    if (!s.ok())
      return Fail("load", s.WithContext("after " + std::to_string(i - kvs.size()) + " keys"));
    auto now = std::chrono::steady_clock::now();
    if (now - last_print > std::chrono::milliseconds(250) || i == count) {
      double secs = std::chrono::duration<double>(now - start).count();
      int width = 30;
      int filled = static_cast<int>(width * i / count);
      std::fprintf(stderr, "\r  load [%s%s] %llu/%llu keys  %.0f ops/s ",
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                   static_cast<unsigned long long>(i), static_cast<unsigned long long>(count),
                   i / std::max(secs, 1e-9));
      last_print = now;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "\n");
  std::printf("loaded %llu keys of %zu bytes in %.2f s (%.0f ops/s)\n",
              static_cast<unsigned long long>(count), value_size, secs,
              count / std::max(secs, 1e-9));
  return kExitOk;
}

struct LockArgs {
  ClientFlags f;
  std::string name;
  std::vector<std::string> command;
  bool list = false;
  bool try_only = false;
  int64_t wait_ms = 0;  // 0: no limit
  int64_t ttl_ms = 10000;
};

int RunLockList(const LockArgs& a) {
  auto c = a.f.Connect();
  if (!c.ok()) return Fail("lock", c.status());
  auto l = (*c)->ListLocks();
  if (!l.ok()) return Fail("lock", l.status());
  std::printf("%-32s %8s  %-40s %7s\n", "lock", "token", "holder", "waiters");
  for (const auto& lk : l->locks) {
    std::string holder = lk.holder_session != 0 ? "session " + std::to_string(lk.holder_session) +
                                                      " (" + lk.holder_owner + ")"
                         : lk.holder_owner.empty() ? "free"
                                                   : lk.holder_owner;
    std::printf("%-32s %8lld  %-40s %7d\n", Printable(lk.name).c_str(),
                static_cast<long long>(lk.token), holder.c_str(), lk.waiters);
  }
  std::printf("%zu sessions\n", l->sessions.size());
  for (const auto& s : l->sessions) {
    std::printf("  session %lld: %s (TTL %lld ms)\n", static_cast<long long>(s.id), s.owner.c_str(),
                static_cast<long long>(s.ttl_ms));
  }
  return kExitOk;
}

// Runs the command while holding the lock; the exit code is the command's.
int RunLocked(const LockArgs& a) {
  if (a.command.empty()) {
    std::fprintf(stderr, "tessera lock: give the command to run: tessera lock %s -- COMMAND\n",
                 a.name.c_str());
    return kExitUsage;
  }
  auto c = a.f.Connect();
  if (!c.ok()) return Fail("lock", c.status());
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  std::string owner = std::string(host) + ":" + std::to_string(::getpid()) + " " + a.command[0];
  auto session = (*c)->OpenSession(std::chrono::milliseconds(a.ttl_ms), owner);
  if (!session.ok()) return Fail("lock", session.status());
  auto wait = a.try_only      ? std::chrono::milliseconds(0)
              : a.wait_ms > 0 ? std::chrono::milliseconds(a.wait_ms)
                              : std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::hours(24 * 365 * 10));  // "no limit"
  auto token = (*session)->Acquire(a.name, wait);
  if (!token.ok()) return Fail("lock", token.status());
  std::fprintf(stderr, "tessera lock: holding '%s' (fencing token %lld, session %lld)\n",
               a.name.c_str(), static_cast<long long>(*token),
               static_cast<long long>((*session)->id()));
  // SIGTERM and SIGINT reach the command (below) and the lock is released once it has exited:
  // by default they ended this process alone, its command running on unlocked (another holder
  // got the lock after the TTL). A command that outlives this process (SIGKILL) dies with it.
  InstallStopHandlers();
  const pid_t parent = ::getpid();
  pid_t child = ::fork();
  if (child < 0) return Fail("lock", ErrnoStatus(errno, "fork"));
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(128 + SIGKILL);  // the parent died before prctl
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::setenv("TESSERA_LOCK_NAME", a.name.c_str(), 1);
    ::setenv("TESSERA_LOCK_TOKEN", std::to_string(*token).c_str(), 1);
    ::setenv("TESSERA_LOCK_SESSION", std::to_string((*session)->id()).c_str(), 1);
    std::vector<char*> argv;
    for (const auto& s : a.command) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "tessera lock: cannot run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  bool lost = false, forwarded = false, killed = false;
  auto stopped_at = std::chrono::steady_clock::now();
  for (;;) {
    pid_t r = ::waitpid(child, &status, WNOHANG);
    if (r == child) break;
    if (r < 0 && errno != EINTR) return Fail("lock", ErrnoStatus(errno, "waitpid"));
    if (!lost && !(*session)->alive()) {
      std::fprintf(stderr,
                   "tessera lock: the session expired and '%s' may now be held by another; "
                   "stopping the command\n",
                   a.name.c_str());
      ::kill(child, SIGTERM);
      lost = true;
      stopped_at = std::chrono::steady_clock::now();
    }
    if (g_stop.load() && !forwarded) {
      ::kill(child, SIGTERM);
      forwarded = true;
      stopped_at = std::chrono::steady_clock::now();
    }
    if ((lost || forwarded) && !killed &&
        std::chrono::steady_clock::now() - stopped_at > std::chrono::seconds(10)) {
      std::fprintf(stderr, "tessera lock: the command ignored SIGTERM for 10 s; killing it\n");
      ::kill(child, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!lost) {
    Status rs = (*session)->Release(a.name, *token);
    if (!rs.ok()) std::fprintf(stderr, "tessera lock: release: %s\n", rs.ToString().c_str());
  }
  (void)(*session)->Close();
  if (lost) return kExitFailure;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

void RegisterClusterCommands(CLI::App& app, Context& ctx) {
  // ---- manager ----
  auto mo = std::make_shared<orchestrator::ManagerOptions>();
  auto mtoken = std::make_shared<std::string>();
  auto* manager = app.add_subcommand("manager", "Run a manager (the cluster's control plane)");
  manager->add_option("--listen", mo->listen, "Address to serve on HOST:PORT")
      ->capture_default_str();
  manager->add_option("--data", mo->data_dir, "Data directory (Raft log and snapshot in LMDB)")
      ->capture_default_str();
  manager->add_option("--peers", mo->peers,
                      "Every manager HOST:PORT,HOST:PORT,HOST:PORT (3 or 5, the same list on each, "
                      "--listen among them): replicate the cluster state with Raft");
  manager->add_option("--http", mo->http, "Serve GET /health and GET /status on HOST:PORT");
  manager->add_option("--shards", mo->num_shards, "Number of shards")
      ->capture_default_str()
      ->check(CLI::Range(1, orchestrator::kMaxShards));
  manager
      ->add_option("--workers", mo->expected_workers,
                   "Workers to wait for before the shard map forms")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  manager->add_option("--heartbeat-ms", mo->heartbeat_ms, "Worker heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  manager
      ->add_option("--heartbeat-timeout-ms", mo->heartbeat_timeout_ms,
                   "Mark a worker down after this long without a heartbeat")
      ->capture_default_str()
      ->check(CLI::Range(50, 600000));
  manager
      ->add_option("--protection", mo->protection,
                   "Parity protecting the workers' data: xor (parity on this manager), rs:K+M "
                   "(K data workers, M workers started with --role parity) or none")
      ->capture_default_str();
  manager
      ->add_option(
          "--poll-us", mo->poll_us,
          "How long a connection that just answered polls for its next request before its thread "
          "sleeps, in microseconds (0: sleep at once). Saves a wake-up per request where waking "
          "a sleeping thread is slow (virtual machines); stops for 100 ms whenever a yield shows "
          "busy CPUs; costs up to this much CPU per request that does not follow soon")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  manager->add_option("--token-file", *mtoken, "File holding the cluster token");
  manager->callback([&ctx, mo, mtoken] {
    ctx.action = [mo, mtoken] {
      auto t = orchestrator::ReadTokenFile(*mtoken);
      if (!t.ok()) return Fail("manager", t.status());
      mo->token = *t;
      InstallStopHandlers();
      Status s = orchestrator::RunManager(*mo, &g_stop);
      return s.ok() ? kExitOk : Fail("manager", s);
    };
  });

  // ---- worker ----
  auto wo = std::make_shared<orchestrator::WorkerOptions>();
  auto wtoken = std::make_shared<std::string>();
  auto* worker = app.add_subcommand("worker", "Run a worker (stores and serves shards)");
  worker->add_option("--listen", wo->listen, "Address to serve on HOST:PORT")
      ->capture_default_str();
  worker
      ->add_option("--manager", wo->manager,
                   "Manager address HOST:PORT, or every manager's, comma-separated")
      ->capture_default_str();
  worker->add_option("--data", wo->data_dir, "Data directory (node id and engine file)")
      ->capture_default_str();
  worker->add_option("--token-file", *wtoken, "File holding the cluster token");
  worker->add_flag("--sync", wo->sync, "Flush every write before acknowledging it");
  worker->add_option("--role", wo->role, "worker (stores shards) or parity (a parity holder)")
      ->capture_default_str()
      ->check(CLI::IsMember({"worker", "parity"}));
  worker->add_option("--replace", wo->replace,
                     "Take over the slot of this node id (starting with an empty data directory)");
  worker
      ->add_option("--min-holders", wo->min_holders,
                   "Parity holders that must store a write before it is acknowledged (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 255));
  worker
      ->add_option("--protect-every", wo->protect_every,
                   "Commits between protected generations (the tails shrink at each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  worker
      ->add_option("--protect-interval-ms", wo->protect_interval_ms,
                   "Longest time between protected generations while writes arrive")
      ->capture_default_str()
      ->check(CLI::Range(10, 3600000));
  worker
      ->add_option(
          "--poll-us", wo->poll_us,
          "How long a connection that just answered polls for its next request, and a write for "
          "its parity holders' answers, before its thread sleeps, in microseconds (0: sleep at "
          "once). Saves a wake-up per request where waking a sleeping thread is slow (virtual "
          "machines); stops for 100 ms whenever a yield shows busy CPUs; costs up to this much "
          "CPU per request or tail append that does not follow soon")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  worker->callback([&ctx, wo, wtoken] {
    ctx.action = [wo, wtoken] {
      auto t = orchestrator::ReadTokenFile(*wtoken);
      if (!t.ok()) return Fail("worker", t.status());
      wo->token = *t;
      InstallStopHandlers();
      Status s = orchestrator::RunWorker(*wo, &g_stop);
      return s.ok() ? kExitOk : Fail("worker", s);
    };
  });

  // ---- put / get / del ----
  struct KV {
    ClientFlags f;
    std::string key, value;
    bool nosync = false;
  };
  auto put = std::make_shared<KV>();
  auto* putc = app.add_subcommand("put", "Store KEY = VALUE in the cluster");
  putc->add_option("KEY", put->key, "Key")->required();
  putc->add_option("VALUE", put->value, "Value")->required();
  putc->add_flag("--nosync", put->nosync, "Do not wait for the worker to flush");
  put->f.Add(putc);
  putc->callback([&ctx, put] {
    ctx.action = [put] {
      auto c = put->f.Connect();
      if (!c.ok()) return Fail("put", c.status());
      Status s = (*c)->Put(put->key, put->value, !put->nosync);
      if (!s.ok()) return Fail("put", s);
      std::printf("ok\n");
      return kExitOk;
    };
  });

  auto get = std::make_shared<KV>();
  auto* getc = app.add_subcommand("get", "Print the value of KEY (exit 1 when absent)");
  getc->add_option("KEY", get->key, "Key")->required();
  get->f.Add(getc);
  getc->callback([&ctx, get] {
    ctx.action = [get] {
      auto c = get->f.Connect();
      if (!c.ok()) return Fail("get", c.status());
      auto v = (*c)->Get(get->key);
      if (!v.ok()) return Fail("get", v.status());
      if (!*v) {
        std::fprintf(stderr, "tessera get: key '%s' not found\n", Printable(get->key).c_str());
        return kExitFailure;
      }
      std::printf("%s\n", (*v)->c_str());
      return kExitOk;
    };
  });

  auto del = std::make_shared<KV>();
  auto* delc = app.add_subcommand("del", "Delete KEY (exit 1 when absent)");
  delc->add_option("KEY", del->key, "Key")->required();
  del->f.Add(delc);
  delc->callback([&ctx, del] {
    ctx.action = [del] {
      auto c = del->f.Connect();
      if (!c.ok()) return Fail("del", c.status());
      auto existed = (*c)->Delete(del->key);
      if (!existed.ok()) return Fail("del", existed.status());
      if (!*existed) {
        std::fprintf(stderr, "tessera del: key '%s' not found\n", Printable(del->key).c_str());
        return kExitFailure;
      }
      std::printf("deleted\n");
      return kExitOk;
    };
  });

  // ---- scan ----
  struct ScanArgs {
    ClientFlags f;
    std::string prefix;
    int limit = 100;
  };
  auto scan = std::make_shared<ScanArgs>();
  auto* scanc = app.add_subcommand("scan", "List keys and values (ordered within each shard)");
  scanc->add_option("--prefix", scan->prefix, "Only keys starting with this");
  scanc->add_option("--limit", scan->limit, "At most this many entries")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  scan->f.Add(scanc);
  scanc->callback([&ctx, scan] {
    ctx.action = [scan] {
      auto c = scan->f.Connect();
      if (!c.ok()) return Fail("scan", c.status());
      int left = scan->limit;
      std::string token;
      do {
        auto page = (*c)->Scan(scan->prefix, std::min(left, orchestrator::kMaxScanLimit), token);
        if (!page.ok()) return Fail("scan", page.status());
        for (const auto& it : page->items) {
          std::printf("%s\t%s\n", Printable(it.key).c_str(), Printable(it.value).c_str());
        }
        left -= static_cast<int>(page->items.size());
        token = page->next;
      } while (left > 0 && !token.empty());
      return kExitOk;
    };
  });

  // ---- load ----
  struct LoadArgs {
    ClientFlags f;
    uint64_t count = 100000;
    size_t value_size = 100;
    size_t batch = 1000;
    std::string prefix = "key";
  };
  auto load = std::make_shared<LoadArgs>();
  auto* loadc = app.add_subcommand("load", "Bulk-load COUNT generated keys (dummy data)");
  loadc->add_option("--count", load->count, "Keys to write")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  loadc->add_option("--value-size", load->value_size, "Bytes per value")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  loadc->add_option("--batch", load->batch, "Keys per request batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  loadc->add_option("--prefix", load->prefix, "Key prefix (keys are PREFIX0, PREFIX1, ...)")
      ->capture_default_str();
  load->f.Add(loadc);
  loadc->callback([&ctx, load] {
    ctx.action = [load] {
      return RunLoad(load->f, load->count, load->value_size, load->batch, load->prefix);
    };
  });

  // ---- status ----
  struct StatusArgs {
    ClientFlags f;
    bool json = false;
  };
  auto st = std::make_shared<StatusArgs>();
  auto* stc = app.add_subcommand("status", "Show the cluster's nodes and shard map");
  stc->add_flag("--json", st->json, "Print JSON");
  st->f.Add(stc);
  stc->callback([&ctx, st] {
    ctx.action = [st] {
      auto c = st->f.Connect();
      if (!c.ok()) return Fail("status", c.status());
      auto s = (*c)->GetStatus();
      if (!s.ok()) return Fail("status", s.status());
      if (st->json) {
        std::printf("%s\n", orchestrator::StatusJson(*s).c_str());
        return kExitOk;
      }
      std::printf("cluster %s: %s, map version %lld, %d shards, %zu/%d workers\n",
                  s->manager_address.c_str(), s->map.state.c_str(),
                  static_cast<long long>(s->map.version), s->map.num_shards, s->nodes.size(),
                  s->expected_workers);
      if (s->managers.size() > 1) {
        std::string list;
        for (const auto& m : s->managers) list += (list.empty() ? "" : ", ") + m;
        std::printf("managers: %s; leader %s (raft term %lld, commit index %lld)\n", list.c_str(),
                    s->manager_address.c_str(), static_cast<long long>(s->raft_term),
                    static_cast<long long>(s->raft_commit));
      }
      std::printf("%-20s %-22s %-6s %-5s %7s %14s\n", "node", "address", "role", "up", "shards",
                  "heartbeat");
      for (const auto& n : s->nodes) {
        std::printf("%-20s %-22s %-6s %-5s %7d %11lld ms\n", n.node_id.c_str(), n.address.c_str(),
                    n.role.c_str(), n.up ? "yes" : "DOWN", n.shards_owned,
                    static_cast<long long>(n.last_heartbeat_ms_ago));
        if (!n.progress.empty()) std::printf("    progress: %s\n", n.progress.c_str());
      }
      const auto& p = s->map.protection;
      if (p.scheme == "none") {
        std::printf("protection: none\n");
      } else {
        std::printf("protection: %s, %d data slots + %d parity holders%s\n", p.scheme.c_str(), p.k,
                    p.m, p.frozen ? ", generations frozen (a rebuild is running)" : "");
        for (int slot : p.rebuilding) {
          std::printf("  slot %d is rebuilding from parity\n", slot);
        }
      }
      return kExitOk;
    };
  });

  // ---- scrub ----
  auto scrub = std::make_shared<ClientFlags>();
  auto* scc = app.add_subcommand(
      "scrub",
      "Recompute the parity from the workers' protected images and report mismatches. Exit 0: "
      "all match; 1: a mismatch (or the scrub failed); 3: no mismatch, but some stripes could "
      "not be checked (reported as unverified)");
  scrub->Add(scc);
  scc->callback([&ctx, scrub] {
    ctx.action = [scrub] {
      auto c = scrub->Connect();
      if (!c.ok()) return Fail("scrub", c.status());
      auto t0 = std::chrono::steady_clock::now();
      auto rep = (*c)->Scrub([](uint64_t done, uint64_t total) {
        if (isatty(2))
          std::fprintf(stderr, "\rscrub %llu/%llu pages", static_cast<unsigned long long>(done),
                       static_cast<unsigned long long>(total));
      });
      if (isatty(2)) std::fprintf(stderr, "\n");
      if (!rep.ok()) return Fail("scrub", rep.status());
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (const auto& pr : rep->problems) std::printf("  %s\n", pr.c_str());
      std::printf("scrub: %llu stripes checked in %.2f s, %llu mismatches, %llu unverified\n",
                  static_cast<unsigned long long>(rep->stripes_checked), secs,
                  static_cast<unsigned long long>(rep->mismatches),
                  static_cast<unsigned long long>(rep->unverified));
      if (rep->mismatches > 0) return 1;
      return rep->unverified > 0 ? 3 : kExitOk;
    };
  });

  // ---- lock ----
  auto la = std::make_shared<LockArgs>();
  auto* lockc = app.add_subcommand(
      "lock",
      "Run COMMAND while holding lock NAME (tessera lock NAME -- COMMAND ARGS...), or list the "
      "locks with --list. The command sees TESSERA_LOCK_TOKEN, the lock's fencing token");
  lockc->add_option("name", la->name, "Lock name");
  lockc->add_option("command", la->command, "Command and its arguments (after --)");
  lockc->add_flag("--list", la->list, "List the locks, their holders and the sessions");
  lockc->add_flag("--try", la->try_only, "Fail at once (exit 1) when the lock is held");
  lockc->add_option("--wait-ms", la->wait_ms, "Give up after waiting this long (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{86400000}));
  lockc
      ->add_option("--ttl-ms", la->ttl_ms,
                   "Session TTL: the lock is released this long after this process stops "
                   "keeping it alive")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{200}, int64_t{3600000}));
  la->f.Add(lockc);
  lockc->callback([&ctx, la] {
    ctx.action = [la] {
      if (la->list) {
        if (!la->name.empty()) {
          std::fprintf(stderr, "tessera lock: --list takes no lock name or command\n");
          return kExitUsage;
        }
        return RunLockList(*la);
      }
      if (la->name.empty()) {
        std::fprintf(stderr,
                     "tessera lock: give a lock name (tessera lock NAME -- COMMAND) or "
                     "--list\n");
        return kExitUsage;
      }
      return RunLocked(*la);
    };
  });

  // ---- shutdown ----
  struct ShutdownArgs {
    ClientFlags f;
    bool cleanup = false;
  };
  auto sd = std::make_shared<ShutdownArgs>();
  auto* sdc = app.add_subcommand("shutdown",
                                 "Shut the cluster down: workers flush and exit, then the manager");
  sdc->add_flag("--cleanup", sd->cleanup, "Also delete every node's data directory");
  sd->f.Add(sdc);
  sdc->callback([&ctx, sd] {
    ctx.action = [sd] {
      auto c = sd->f.Connect();
      if (!c.ok()) return Fail("shutdown", c.status());
      Status s = (*c)->Shutdown(sd->cleanup);
      if (!s.ok()) return Fail("shutdown", s);
      std::printf("cluster shut down%s\n", sd->cleanup ? " and data deleted" : "");
      return kExitOk;
    };
  });
}

}  // namespace tessera::cli
