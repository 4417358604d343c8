// The cluster with real processes on loopback: registration (duplicates, restarts), routing,
// SIGKILL and restart, epochs, the token, garbage on the wire, shutdown, manager restart.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "ManagerService.h"
#include "WorkerService.h"
#include "subprocess.h"
#include "tessera/orchestrator/client.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

namespace gen = ::tessera::rpc::gen;
using testing::Process;
using testing::RunCommand;
using testing::TempDir;

using testing::FreePort;

std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

class Cluster {
 public:
  explicit Cluster(int workers = 3, std::string token = "") : token_(std::move(token)) {
    if (!token_.empty()) {
      token_file_ = dir_.File("token");
      std::ofstream(token_file_) << token_ << "\n";
    }
    manager_port_ = FreePort();
    for (int i = 0; i < workers; ++i) worker_ports_.push_back(FreePort());
    workers_.resize(workers);
  }

  std::vector<std::string> Token() const {
    return token_file_.empty() ? std::vector<std::string>{}
                               : std::vector<std::string>{"--token-file", token_file_};
  }

  void StartManager() {
    std::vector<std::string> argv = {TESSERA_BIN, "manager",
                                     "--listen",  manager(),
                                     "--data",    dir_.File("manager"),
                                     "--workers", std::to_string(worker_ports_.size())};
    for (auto& f : testing::FastManagerFlags()) argv.push_back(f);
    for (auto& t : Token()) argv.push_back(t);
    manager_ = std::make_unique<Process>(argv, dir_.File("manager.log"));
  }

  void StartWorker(size_t i) {
    std::vector<std::string> argv = {TESSERA_BIN, "worker",  "--listen", Addr(worker_ports_[i]),
                                     "--manager", manager(), "--data",   WorkerDir(i)};
    for (auto& t : Token()) argv.push_back(t);
    workers_[i] = std::make_unique<Process>(argv, dir_.File("worker" + std::to_string(i) + ".log"));
  }

  void Start() {
    StartManager();
    for (size_t i = 0; i < workers_.size(); ++i) StartWorker(i);
    ASSERT_TRUE(WaitServing()) << Logs();
  }

  std::unique_ptr<Client> NewClient(bool with_token = true) {
    ClientOptions o;
    o.manager = manager();
    o.token = with_token ? token_ : "";
    o.deadline = std::chrono::milliseconds(10000);
    return std::move(Client::Connect(o)).value();
  }

  bool WaitServing() {
    auto c = NewClient();
    for (int i = 0; i < 200; ++i) {
      auto s = c->GetStatus();
      if (s.ok() && s->map.formed && s->map.state == "serving") {
        size_t up = 0;
        for (const auto& n : s->nodes) up += n.up;
        if (up == workers_.size()) {
          // Every worker has learned its shards once a read of each shard succeeds.
          std::set<int> covered;
          for (int k = 0; covered.size() < static_cast<size_t>(s->map.num_shards); ++k) {
            std::string key = "probe-" + std::to_string(k);
            int shard = ShardOf(key, s->map.num_shards);
            if (covered.count(shard)) continue;
            if (!c->Get(key).ok()) return false;
            covered.insert(shard);
          }
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string Logs() const { return testing::LogsIn(dir_.path()); }

  std::string manager() const { return Addr(manager_port_); }
  std::string WorkerDir(size_t i) const { return dir_.File("worker" + std::to_string(i)); }
  int worker_port(size_t i) const { return worker_ports_[i]; }
  Process& worker(size_t i) { return *workers_[i]; }
  Process& manager_process() { return *manager_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  std::string token_, token_file_;
  int manager_port_;
  std::vector<int> worker_ports_;
  std::unique_ptr<Process> manager_;
  std::vector<std::unique_ptr<Process>> workers_;
};

TEST(ClusterTest, RoutesKeysAcrossWorkersAndReadsThemBack) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  std::vector<std::pair<std::string, std::string>> kvs;
  for (int i = 0; i < 10000; ++i)
    kvs.emplace_back("k" + std::to_string(i), "v" + std::to_string(i));
  ASSERT_TRUE(client->PutMany(kvs, false).ok());
  for (int i = 0; i < 10000; i += 7) {
    auto v = client->Get("k" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_TRUE(v->has_value()) << i;
    EXPECT_EQ(**v, "v" + std::to_string(i));
  }
  // Every worker owns shards, and every key is found exactly once by a full scan.
  auto st = client->GetStatus();
  ASSERT_TRUE(st.ok());
  for (const auto& n : st->nodes) EXPECT_GT(n.shards_owned, 0) << n.node_id;
  std::set<std::string> seen;
  std::string token;
  do {
    auto page = client->Scan("", 1000, token);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const auto& it : page->items) EXPECT_TRUE(seen.insert(it.key).second) << it.key;
    token = page->next;
  } while (!token.empty());
  EXPECT_EQ(seen.size(), 10000u);
  auto p = client->Scan("k999", 100);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->items.size(), 11u);  // k999, k9990..k9999
  EXPECT_TRUE(client->Delete("k5").value());
  EXPECT_FALSE(client->Delete("k5").value());
  EXPECT_FALSE(client->Get("k5")->has_value());
}

TEST(ClusterTest, DuplicateRegistrationIsHarmlessAndRestartBumpsEpochs) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  auto before = client->GetShardMap(true);
  ASSERT_TRUE(before.ok());
  auto st = client->GetStatus();
  ASSERT_TRUE(st.ok());
  const NodeInfo& n = st->nodes[0];
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(c.manager()), {});
  ASSERT_TRUE(conn.ok());
  gen::ManagerServiceClient mc(conn->protocol);
  gen::RegisterReply r1, r2;
  mc.Register(r1, "", n.node_id, n.address, n.incarnation, "worker", "",
              true);  // the same registration again
  mc.Register(r2, "", n.node_id, n.address, n.incarnation, "worker", "", true);
  EXPECT_EQ(r1.shard_map.version, before->version);
  EXPECT_EQ(r2.shard_map.version, before->version);
  // A late registration from an older (dead) incarnation is refused and changes nothing.
  try {
    gen::RegisterReply r;
    mc.Register(r, "", n.node_id, n.address, n.incarnation - 1, "worker", "", true);
    ADD_FAILURE() << "older incarnation accepted";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::STALE_EPOCH) << e.message;
  }
  EXPECT_EQ(client->GetShardMap(true)->version, before->version);
  // Bad registrations get clear errors.
  try {
    gen::RegisterReply r;
    mc.Register(r, "", "", "127.0.0.1:1", 1, "worker", "", true);
    ADD_FAILURE() << "empty node id accepted";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::INVALID_ARGUMENT);
  }
  try {
    gen::RegisterReply r;
    mc.Register(r, "", "x", "no-port", 1, "worker", "", true);
    ADD_FAILURE() << "bad address accepted";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::INVALID_ARGUMENT);
  }

  // Find worker 0's node and restart it: same node id, new incarnation, epochs of its shards bump.
  ASSERT_TRUE(client->Put("before-restart", "x").ok());
  c.worker(0).Kill(SIGKILL);
  c.worker(0).Wait(std::chrono::seconds(5));
  c.StartWorker(0);
  Result<ShardMap> after = client->GetShardMap(true);
  for (int i = 0; i < 200 && after.ok() && after->version == before->version; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = client->GetShardMap(true);
  }
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->version, before->version) << c.Logs();
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto st2 = client->GetStatus();
  EXPECT_EQ(st2->nodes.size(), 3u);  // still three nodes: the restart was not a new node
  int bumped = 0;
  for (int s = 0; s < after->num_shards; ++s) {
    EXPECT_EQ(after->shards[s].owner, before->shards[s].owner);
    bumped += after->shards[s].epoch > before->shards[s].epoch;
  }
  EXPECT_GT(bumped, 0);
  EXPECT_EQ(**client->Get("before-restart"), "x");
}

TEST(ClusterTest, KilledWorkerKeepsItsDataAfterRestart) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  std::vector<std::pair<std::string, std::string>> kvs;
  for (int i = 0; i < 3000; ++i) kvs.emplace_back("key" + std::to_string(i), std::to_string(i * i));
  ASSERT_TRUE(client->PutMany(kvs, false).ok());
  for (size_t w = 0; w < 3; ++w) {
    c.worker(w).Kill(SIGKILL);
    c.worker(w).Wait(std::chrono::seconds(5));
    c.StartWorker(w);
  }
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  for (int i = 0; i < 3000; ++i) {
    auto v = client->Get("key" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_TRUE(v->has_value()) << "key" << i;
    ASSERT_EQ(**v, std::to_string(i * i));
  }
}

TEST(ClusterTest, WorkerRejectsStaleEpochWrongOwnerAndMissingToken) {
  Cluster c(3, "s3cret");
  c.Start();
  auto client = c.NewClient();
  auto map = client->GetShardMap(true);
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  const ShardInfo& si = map->shards[0];
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(si.address), {});
  ASSERT_TRUE(conn.ok());
  gen::WorkerServiceClient wc(conn->protocol);
  auto expect_code = [&](gen::ErrorCode::type code, auto&& call) {
    try {
      call();
      ADD_FAILURE() << "call succeeded, expected error " << code;
    } catch (const gen::TesseraError& e) {
      EXPECT_EQ(e.code, code) << e.message;
      EXPECT_FALSE(e.message.empty());
    }
  };
  gen::GetReply r;
  wc.Get(r, "s3cret", si.shard, si.epoch, "k");  // the right epoch works
  EXPECT_FALSE(r.found);
  expect_code(gen::ErrorCode::STALE_EPOCH,
              [&] { wc.Get(r, "s3cret", si.shard, si.epoch - 1, "k"); });
  expect_code(gen::ErrorCode::UNAUTHENTICATED, [&] { wc.Get(r, "", si.shard, si.epoch, "k"); });
  expect_code(gen::ErrorCode::UNAUTHENTICATED,
              [&] { wc.Get(r, "wrong", si.shard, si.epoch, "k"); });
  expect_code(gen::ErrorCode::INVALID_ARGUMENT, [&] { wc.Get(r, "s3cret", 999, 1, "k"); });
  for (const auto& other : map->shards) {
    if (other.owner != si.owner) {
      expect_code(gen::ErrorCode::NOT_OWNER,
                  [&] { wc.Get(r, "s3cret", other.shard, other.epoch, "k"); });
      break;
    }
  }
  // The CLI without the token: a clear error and exit 1; with it: works.
  auto no = RunCommand({TESSERA_BIN, "get", "k", "--manager", c.manager()});
  EXPECT_EQ(no.exit_code, 1);
  EXPECT_NE(no.err.find("unauthenticated"), std::string::npos) << no.err;
  std::string tf = c.dir() + "/token";
  auto put =
      RunCommand({TESSERA_BIN, "put", "k", "v", "--manager", c.manager(), "--token-file", tf});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  auto get = RunCommand({TESSERA_BIN, "get", "k", "--manager", c.manager(), "--token-file", tf});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v\n");
}

void SendRaw(int port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    (void)!write(fd, bytes.data(), bytes.size());
    char buf[256];
    timeval tv{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!read(fd, buf, sizeof buf);
  }
  close(fd);
}

TEST(ClusterTest, GarbageAndOversizedFramesDoNotCrashServers) {
  Cluster c;
  c.Start();
  std::mt19937_64 rng(1);
  std::vector<int> ports = {std::stoi(c.manager().substr(10))};
  for (size_t i = 0; i < 3; ++i) ports.push_back(c.worker_port(i));
  for (int port : ports) {
    std::string junk(4096, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    SendRaw(port, junk);
    SendRaw(port, std::string("\x7f\xff\xff\xff", 4) + std::string(100, 'x'));     // 2 GiB frame
    SendRaw(port, std::string("\x00\x00\x01\x00", 4) + std::string(256, '\x80'));  // bad message
    SendRaw(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  EXPECT_TRUE(c.manager_process().Running());
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(c.worker(i).Running());
  auto client = c.NewClient();
  EXPECT_TRUE(client->Put("still", "alive").ok());
  EXPECT_EQ(**client->Get("still"), "alive");
  // Values beyond the limit are refused with a clear error, not a crash.
  Status big = client->Put("big", std::string(kMaxValueBytes + 1, 'b'));
  EXPECT_TRUE(big.IsInvalidArgument()) << big.ToString();
  EXPECT_TRUE(client->Put(std::string(2000, 'k'), "v").IsInvalidArgument());
}

TEST(ClusterTest, ShutdownWithCleanupLeavesNoProcessAndNoData) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("a", "1").ok());
  auto r = RunCommand({TESSERA_BIN, "shutdown", "--cleanup", "--manager", c.manager()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(c.manager_process().Wait(std::chrono::seconds(10)), 0) << c.Logs();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.worker(i).Wait(std::chrono::seconds(10)), 0) << c.Logs();
    EXPECT_FALSE(std::filesystem::exists(c.WorkerDir(i))) << c.WorkerDir(i);
  }
  EXPECT_FALSE(std::filesystem::exists(c.dir() + "/manager"));
}

// TLA+ finding 4 (tla/README.md): a shutdown that could not tell every worker keeps refusing
// Register long enough for a worker still retrying it to learn of the shutdown and exit.
TEST(ClusterTest, ShutdownBeforeTheClusterFormedRefusesAWorkerStartingMeanwhile) {
  Cluster c(2);
  c.StartManager();
  auto client = c.NewClient();
  auto st = client->GetStatus();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_FALSE(st->map.formed);
  // Nobody has registered, so nobody is told; a worker that comes up meanwhile (or was
  // retrying all along) must still hear of the shutdown before the manager is gone.
  Status shutdown;
  std::thread t([&] { shutdown = client->Shutdown(false); });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  c.StartWorker(0);
  t.join();
  EXPECT_TRUE(shutdown.ok()) << shutdown.ToString();
  EXPECT_EQ(c.manager_process().Wait(std::chrono::seconds(15)), 0) << c.Logs();
  EXPECT_EQ(c.worker(0).Wait(std::chrono::seconds(15)), 0) << c.Logs();
}

TEST(ClusterTest, WorkerRestartedDuringShutdownIsRefusedAndExits) {
  Cluster c;
  c.Start();
  c.worker(1).Kill(SIGKILL);
  c.worker(1).Wait(std::chrono::seconds(5));
  // The manager cannot tell worker 1, so it lingers; worker 1 comes back meanwhile.
  auto client = c.NewClient();
  Status shutdown;
  std::thread t([&] { shutdown = client->Shutdown(false); });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  c.StartWorker(1);
  t.join();
  EXPECT_TRUE(shutdown.IsUnavailable()) << shutdown.ToString();  // names the worker not told
  EXPECT_EQ(c.manager_process().Wait(std::chrono::seconds(15)), 0) << c.Logs();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.worker(i).Wait(std::chrono::seconds(15)), 0) << "worker " << i << c.Logs();
  }
}

TEST(ClusterTest, ShutdownWithoutCleanupKeepsDataForTheNextStart) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("durable", "yes", false).ok());
  ASSERT_TRUE(client->Shutdown(false).ok());
  EXPECT_EQ(c.manager_process().Wait(std::chrono::seconds(10)), 0);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(c.worker(i).Wait(std::chrono::seconds(10)), 0);
  c.Start();
  auto again = c.NewClient();
  EXPECT_EQ(**again->Get("durable"), "yes");
}

TEST(ClusterTest, RestartedManagerKeepsItsShardMap) {
  Cluster c;
  c.Start();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("m", "1").ok());
  auto before = client->GetShardMap(true);
  ASSERT_TRUE(before.ok());
  c.manager_process().Kill(SIGKILL);
  c.manager_process().Wait(std::chrono::seconds(5));
  c.StartManager();
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto after = c.NewClient()->GetShardMap(true);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->formed);
  ASSERT_EQ(after->num_shards, before->num_shards);
  for (int s = 0; s < after->num_shards; ++s) {
    EXPECT_EQ(after->shards[s].owner, before->shards[s].owner);
    EXPECT_EQ(after->shards[s].epoch, before->shards[s].epoch);
  }
  EXPECT_EQ(**c.NewClient()->Get("m"), "1");
}

// Whether the log at `path` says `text` within 10 s.
bool LogSays(const std::string& path, const std::string& text) {
  for (int i = 0; i < 100; ++i) {
    if (testing::ReadFile(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A manager restarted on a cluster's data with another --workers or --shards refuses to start,
// naming the cluster's own (it kept the stored shard count silently, its log naming the flag's).
TEST(ClusterTest, ARestartWithOtherFlagsIsRefusedNamingTheClustersOwn) {
  TempDir d;
  const std::string listen = Addr(FreePort());
  // The cluster's own flags: it serves, and records its shape in DATA/cluster.json (then it is
  // SIGKILLed).
  auto serves = [&](const std::string& log) {
    Process p({TESSERA_BIN, "manager", "--listen", listen, "--data", d.File("m"), "--workers", "2",
               "--shards", "16", "--protection", "none"},
              d.File(log));
    if (!LogSays(d.File(log), "became the leader")) return false;
    for (int i = 0; i < 100 && !std::filesystem::exists(d.File("m/cluster.json")); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::filesystem::exists(d.File("m/cluster.json"));
  };
  ASSERT_TRUE(serves("first.log")) << testing::ReadFile(d.File("first.log"));
  auto refused = [&](const std::vector<std::string>& flags, const std::string& want) {
    std::vector<std::string> argv = {TESSERA_BIN, "manager", "--listen",
                                     listen,      "--data",  d.File("m")};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Process again(argv, d.File("again.log"));
    EXPECT_NE(again.Wait(std::chrono::seconds(15)), 0) << "kept running";
    const std::string log = testing::ReadFile(d.File("again.log"));
    EXPECT_NE(log.find(want), std::string::npos) << log;
    return log;
  };
  for (const auto& [flags, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--workers", "2", "--protection", "none"}, "has 16 shards, not --shards 64"},
           {{"--workers", "3", "--shards", "16", "--protection", "none"},
            "expects 2 workers, not --workers 3"},
           {{"--workers", "2", "--shards", "16", "--protection", "xor"},
            "belongs to a cluster with protection none over 0+0 nodes, not xor over 2+1"}}) {
    // Refused before serving, or creating anything (a parity holder's files, for xor).
    const std::string log = refused(flags, want);
    EXPECT_EQ(log.find("serving on"), std::string::npos) << log;
    EXPECT_FALSE(std::filesystem::exists(d.File("m/parity")));
  }
  // Data without the shape file (lost, or from before it existed): the replicated state still
  // refuses, once applied; and the right flags start, writing the file again.
  std::filesystem::remove(d.File("m/cluster.json"));
  refused({"--workers", "2", "--protection", "none"}, "has 16 shards, not --shards 64");
  EXPECT_TRUE(serves("right.log")) << testing::ReadFile(d.File("right.log"));
}

// A registered worker whose token a restarted manager refuses exits with the reason, through its
// shutdown (it returned with its threads running: SIGABRT, every worker of the cluster).
TEST(ClusterTest, AWorkerWhoseTokenARestartedManagerRefusesExitsCleanly) {
  TempDir d;
  {
    std::ofstream(d.File("token")) << "right\n";
    std::ofstream(d.File("other")) << "other\n";
  }
  const std::string mgr = Addr(FreePort());
  auto manager = [&](const std::string& token, const std::string& log) {
    return std::make_unique<Process>(
        std::vector<std::string>{TESSERA_BIN, "manager", "--listen", mgr, "--data", d.File("m"),
                                 "--workers", "1", "--protection", "none", "--token-file",
                                 d.File(token)},
        d.File(log));
  };
  auto first = manager("token", "m1.log");
  Process worker({TESSERA_BIN, "worker", "--listen", Addr(FreePort()), "--manager", mgr, "--data",
                  d.File("w"), "--token-file", d.File("token")},
                 d.File("w.log"));
  ASSERT_TRUE(LogSays(d.File("m1.log"), "registered")) << testing::ReadFile(d.File("m1.log"));
  first->Kill(SIGKILL);
  auto second = manager("other", "m2.log");
  const int code = worker.Wait(std::chrono::seconds(30));
  const std::string log = testing::ReadFile(d.File("w.log"));
  EXPECT_EQ(code, 1) << log;  // an exit code, not -SIGABRT (or still running: -1000)
  EXPECT_NE(log.find("manager refused the cluster token"), std::string::npos) << log;
}

// DATA/cluster.json: with xor a different --workers is named as such; a file this version would
// not write is refused by name, not read as zeros; and one left beside no Raft data (raft/
// removed to start afresh) does not hold the new cluster to the old shape.
TEST(ClusterTest, TheShapeFileNamesTheFlagAndIsTrustedOnlyBesideItsRaftData) {
  TempDir d;
  const std::string listen = Addr(FreePort());
  auto manager = [&](const std::string& workers, const std::string& log) {
    return std::make_unique<Process>(
        std::vector<std::string>{TESSERA_BIN, "manager", "--listen", listen, "--data", d.File("m"),
                                 "--workers", workers},
        d.File(log));
  };
  {
    auto first = manager("2", "first.log");
    ASSERT_TRUE(LogSays(d.File("first.log"), "became the leader"))
        << testing::ReadFile(d.File("first.log"));
    for (int i = 0; i < 100 && !std::filesystem::exists(d.File("m/cluster.json")); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(std::filesystem::exists(d.File("m/cluster.json")));
  }  // SIGKILLed
  const std::string shape = testing::ReadFile(d.File("m/cluster.json"));
  auto refused = [&](const std::string& workers, const std::string& want) {
    auto again = manager(workers, "again.log");
    EXPECT_NE(again->Wait(std::chrono::seconds(15)), 0) << "kept running";
    EXPECT_NE(testing::ReadFile(d.File("again.log")).find(want), std::string::npos)
        << testing::ReadFile(d.File("again.log"));
  };
  refused("3", "the cluster expects 2 workers (protection xor over 2+1 nodes), not --workers 3");
  for (const char* bad : {"{}", R"({"k":"2","m":1,"protection":"xor","shards":64,"workers":2})",
                          R"({"k":2,"m":1,"protection":"xor","shards":64.5,"workers":2})"}) {
    std::ofstream(d.File("m/cluster.json"), std::ios::trunc) << bad;
    refused("2", "cluster.json (the cluster's shape) is not what this version writes");
  }
  std::ofstream(d.File("m/cluster.json"), std::ios::trunc) << shape;
  std::filesystem::remove_all(d.File("m/raft"));
  std::filesystem::remove_all(d.File("m/parity"));
  auto fresh = manager("3", "fresh.log");
  ASSERT_TRUE(LogSays(d.File("fresh.log"), "became the leader"))
      << testing::ReadFile(d.File("fresh.log"));
  for (int i = 0; i < 100 && testing::ReadFile(d.File("m/cluster.json")) == shape; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(testing::ReadFile(d.File("m/cluster.json")).find(R"("workers":3)"), std::string::npos)
      << testing::ReadFile(d.File("m/cluster.json"));
}

// A second process with a live worker's node id (its data directory copied) is refused while the
// live one heartbeats, instead of fencing it; and a worker whose settings the manager refuses
// (--replace naming no node, a worker beyond --workers) exits with the reason instead of
// retrying forever.
TEST(ClusterTest, ADuplicateNodeIdIsRefusedAndABadReplaceExits) {
  Cluster c;
  c.Start();
  TempDir d;
  ASSERT_TRUE(std::filesystem::create_directory(d.File("dup")));
  std::filesystem::copy_file(c.WorkerDir(0) + "/node_id", d.File("dup/node_id"));
  Process dup({TESSERA_BIN, "worker", "--listen", Addr(FreePort()), "--manager", c.manager(),
               "--data", d.File("dup")},
              d.File("dup.log"));
  const bool refused = LogSays(d.File("dup.log"), "is registered and alive");
  EXPECT_TRUE(refused) << testing::ReadFile(d.File("dup.log"));
  dup.Kill(SIGKILL);
  // Nor does --replace naming a live node fence it (a mistyped id took a healthy worker out).
  const std::string live_id = testing::ReadFile(c.WorkerDir(0) + "/node_id");
  Process usurper(
      {TESSERA_BIN, "worker", "--listen", Addr(FreePort()), "--manager", c.manager(), "--data",
       d.File("usurper"), "--replace", live_id.substr(0, live_id.find_last_not_of("\n") + 1)},
      d.File("usurper.log"));
  EXPECT_TRUE(LogSays(d.File("usurper.log"), "that node is alive"))
      << testing::ReadFile(d.File("usurper.log"));
  usurper.Kill(SIGKILL);
  EXPECT_EQ(testing::ReadFile(c.WorkerDir(0) + ".log").find("fenced"), std::string::npos);
  EXPECT_TRUE(c.worker(0).Running()) << c.Logs();
  auto client = c.NewClient();
  for (int k = 0; k < 50; ++k) {  // every shard still served, worker 0's included
    ASSERT_TRUE(client->Put("after-dup-" + std::to_string(k), "v").ok()) << c.Logs();
  }

  Process bad({TESSERA_BIN, "worker", "--listen", Addr(FreePort()), "--manager", c.manager(),
               "--data", d.File("bad"), "--replace", "no-such-node"},
              d.File("bad.log"));
  EXPECT_NE(bad.Wait(std::chrono::seconds(15)), 0) << "kept running";
  EXPECT_NE(testing::ReadFile(d.File("bad.log")).find("no worker with that node id"),
            std::string::npos)
      << testing::ReadFile(d.File("bad.log"));
  // A fourth worker of a 3-worker cluster would get no shards and stay listed for good.
  Process extra({TESSERA_BIN, "worker", "--listen", Addr(FreePort()), "--manager", c.manager(),
                 "--data", d.File("extra")},
                d.File("extra.log"));
  EXPECT_NE(extra.Wait(std::chrono::seconds(15)), 0) << "kept running";
  EXPECT_NE(testing::ReadFile(d.File("extra.log")).find("already has its 3 data workers"),
            std::string::npos)
      << testing::ReadFile(d.File("extra.log"));
}

// The status port is the manager's alone: a second manager asked to serve HTTP on it refuses to
// start (it used to bind it too, through SO_REUSEPORT, and answer half of the requests).
TEST(ClusterTest, ASecondManagerCannotTakeTheFirstOnesStatusPort) {
  TempDir d;
  const int http = FreePort();
  const std::string http_addr = Addr(http);
  Process first({TESSERA_BIN, "manager", "--listen", Addr(FreePort()), "--data", d.File("m1"),
                 "--http", http_addr},
                d.File("m1.log"));
  ASSERT_TRUE(LogSays(d.File("m1.log"), "HTTP status on")) << testing::ReadFile(d.File("m1.log"));
  Process second({TESSERA_BIN, "manager", "--listen", Addr(FreePort()), "--data", d.File("m2"),
                  "--http", http_addr},
                 d.File("m2.log"));
  EXPECT_NE(second.Wait(std::chrono::seconds(10)), 0) << "the second manager kept running";
  EXPECT_NE(testing::ReadFile(d.File("m2.log")).find("cannot listen for HTTP on " + http_addr),
            std::string::npos)
      << testing::ReadFile(d.File("m2.log"));
}

TEST(ClusterTest, UnreachableWorkerIsReportedByName) {
  Cluster c;
  c.Start();
  ClientOptions o;
  o.manager = c.manager();
  o.deadline = std::chrono::milliseconds(1500);
  auto client = std::move(Client::Connect(o)).value();
  auto map = client->GetShardMap(true);
  ASSERT_TRUE(map.ok());
  // Stop worker 0 and find a key it owns.
  auto st = client->GetStatus();
  std::string victim_addr = Addr(c.worker_port(0));
  c.worker(0).Kill(SIGKILL);
  c.worker(0).Wait(std::chrono::seconds(5));
  for (int i = 0;; ++i) {
    std::string k = "probe" + std::to_string(i);
    if (map->shards[ShardOf(k, map->num_shards)].address != victim_addr) continue;
    auto v = client->Get(k);
    EXPECT_TRUE(v.status().IsUnavailable()) << v.status().ToString();
    EXPECT_NE(v.status().message().find(victim_addr), std::string::npos) << v.status().message();
    break;
  }
  auto bad =
      RunCommand({TESSERA_BIN, "status", "--manager", "127.0.0.1:1", "--deadline-ms", "300"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("127.0.0.1:1"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace tessera::orchestrator
