// Protection with real processes on loopback: a worker whose data directory is wiped rebuilds
// every acknowledged write from the parity and the tails (xor on the manager, rs:4+2 on parity
// workers), a crash between the tail appends and the local commit, a lost parity holder, a
// zombie from an old epoch, and scrub. Writers record every acknowledgement; after recovery each
// key must hold its last acknowledged value (or the value of a later write that failed, which
// may or may not have survived).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "ParityService.h"
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

// A manager, `data` data workers and `parity` parity workers (nodes data.. are parity).
class PCluster {
 public:
  PCluster(std::string protection, int data, int parity)
      : protection_(std::move(protection)), data_(data) {
    manager_port_ = FreePort();
    for (int i = 0; i < data + parity; ++i) ports_.push_back(FreePort());
    nodes_.resize(ports_.size());
  }

  int protect_interval_ms = 200;   // --protect-interval-ms of the nodes started after
  std::vector<std::string> flags;  // added to the manager's and every node's command line

  void StartManager() {
    std::vector<std::string> argv{TESSERA_BIN,    "manager",
                                  "--listen",     manager(),
                                  "--data",       dir_.File("manager"),
                                  "--workers",    std::to_string(data_),
                                  "--protection", protection_};
    for (auto& f : testing::FastManagerFlags()) argv.push_back(f);
    argv.insert(argv.end(), flags.begin(), flags.end());
    manager_ = std::make_unique<Process>(argv, dir_.File("manager.log"));
  }

  void StartNode(size_t i, const std::vector<std::string>& env = {},
                 const std::vector<std::string>& extra = {}, int port = 0) {
    std::vector<std::string> argv = {TESSERA_BIN,
                                     "worker",
                                     "--listen",
                                     Addr(port ? port : ports_[i]),
                                     "--manager",
                                     manager(),
                                     "--data",
                                     NodeDir(i),
                                     "--role",
                                     static_cast<int>(i) < data_ ? "worker" : "parity",
                                     "--protect-every",
                                     "300",
                                     "--protect-interval-ms",
                                     std::to_string(protect_interval_ms)};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    nodes_[i] = std::make_unique<Process>(
        argv, dir_.File("node" + std::to_string(i) + "-" + std::to_string(++starts_) + ".log"),
        env);
  }

  void Start() {
    StartManager();
    for (size_t i = 0; i < nodes_.size(); ++i) StartNode(i);
    ASSERT_TRUE(WaitServing()) << Logs();
  }

  std::unique_ptr<Client> NewClient(int deadline_ms = 20000) {
    ClientOptions o;
    o.manager = manager();
    o.deadline = std::chrono::milliseconds(deadline_ms);
    return std::move(Client::Connect(o)).value();
  }

  // Formed, every node up, nothing rebuilding, and a read of every shard succeeds.
  bool WaitServing(int seconds = 60) {
    auto c = NewClient(2000);
    for (int i = 0; i < seconds * 20; ++i) {
      auto s = c->GetStatus();
      if (s.ok() && s->map.formed && s->map.state == "serving" &&
          s->map.protection.rebuilding.empty()) {
        size_t up = 0;
        for (const auto& n : s->nodes) up += n.up && n.progress.empty();
        if (up == nodes_.size()) {
          bool all = true;
          std::set<int> covered;
          for (int k = 0; all && covered.size() < static_cast<size_t>(s->map.num_shards); ++k) {
            std::string key = "probe-" + std::to_string(k);
            int shard = ShardOf(key, s->map.num_shards);
            if (covered.count(shard)) continue;
            all = c->Get(key).ok();
            covered.insert(shard);
          }
          if (all) return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  void Wipe(size_t i) {
    std::error_code ec;
    std::filesystem::remove_all(NodeDir(i), ec);
    ASSERT_FALSE(ec) << ec.message();
  }

  std::string NodeId(size_t i) const {
    std::ifstream in(NodeDir(i) + "/node_id");
    std::string id;
    std::getline(in, id);
    return id;
  }

  std::string Logs() const { return testing::LogsIn(dir_.path(), 6000); }

  // Text of every log of node i.
  std::string NodeLogs(size_t i) const {
    std::string out;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
      std::string name = e.path().filename().string();
      if (name.rfind("node" + std::to_string(i) + "-", 0) == 0) out += testing::ReadFile(e.path());
    }
    return out;
  }

  std::string manager() const { return Addr(manager_port_); }
  std::string NodeDir(size_t i) const { return dir_.File("node" + std::to_string(i)); }
  std::string ManagerDir() const { return dir_.File("manager"); }
  Process& node(size_t i) { return *nodes_[i]; }
  Process& manager_process() { return *manager_; }
  int port(size_t i) const { return ports_[i]; }

 private:
  TempDir dir_;
  std::string protection_;
  int data_;
  int manager_port_;
  int starts_ = 0;
  std::vector<int> ports_;
  std::unique_ptr<Process> manager_;
  std::vector<std::unique_ptr<Process>> nodes_;
};

// Writers that record acknowledgements: thread t owns keys "t<t>-<i>" and writes them in rounds.
class Load {
 public:
  Load(PCluster& c, int threads, int keys_per_thread) : keys_(keys_per_thread) {
    acked_.resize(threads);
    failed_.resize(threads);
    for (int t = 0; t < threads; ++t) {
      clients_.push_back(c.NewClient());
      acked_[t].assign(keys_, "");
      failed_[t].assign(keys_, {});
    }
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] {
        for (uint64_t round = 1; !stop_.load(); ++round) {
          for (int i = 0; i < keys_ && !stop_.load(); ++i) {
            std::string v = "r" + std::to_string(round) + "-" + std::string(60 + i % 80, 'x');
            Status s = clients_[t]->Put(Key(t, i), v, false);
            if (s.ok()) {
              acked_[t][i] = v;
              failed_[t][i].clear();
              acks_.fetch_add(1);
            } else {
              failed_[t][i].insert(v);  // may or may not have survived
            }
          }
        }
      });
    }
  }
  ~Load() { Stop(); }

  static std::string Key(int t, int i) { return "t" + std::to_string(t) + "-" + std::to_string(i); }

  void WaitAcks(uint64_t n) {
    for (int i = 0; i < 2000 && acks_.load() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  uint64_t acks() const { return acks_.load(); }

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Every key holds its last acknowledged value, or one of the failed writes after it.
  void Check(Client& c) {
    int bad = 0;
    for (size_t t = 0; t < acked_.size(); ++t) {
      for (int i = 0; i < keys_; ++i) {
        auto v = c.Get(Key(static_cast<int>(t), i));
        ASSERT_TRUE(v.ok()) << v.status().ToString();
        const std::string& want = acked_[t][i];
        std::string got = v->has_value() ? **v : "";
        bool ok = got == want || failed_[t][i].count(got) > 0;
        if (!ok && bad++ < 10) {
          ADD_FAILURE() << Key(static_cast<int>(t), i) << ": got '" << got.substr(0, 12)
                        << "' but the last acknowledged write was '" << want.substr(0, 12) << "'";
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }

 private:
  int keys_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acks_{0};
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::vector<std::string>> acked_;
  std::vector<std::vector<std::set<std::string>>> failed_;
  std::vector<std::thread> threads_;
};

// Waits until the parity holder at `address` records a generation above 0 for all `slots`: the
// data workers have re-protected to it.
// The generation records a parity holder keeps, one per slot (none when it does not answer).
std::vector<gen::GenRecord> HolderRecords(const std::string& address) {
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(address), {});
  if (!conn.ok()) return {};
  gen::ParityServiceClient holder(conn->protocol);
  gen::ParityPages pp;
  try {
    holder.ReadParity(pp, "", 0, 0);
  } catch (const std::exception&) {
    return {};
  }
  return pp.records;
}

bool WaitReprotected(const std::string& address, size_t slots) {
  for (int i = 0; i < 200; ++i) {
    const auto records = HolderRecords(address);
    bool all = records.size() == slots;
    for (const auto& r : records) all = all && r.gen > 0;
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

void ExpectScrubClean(PCluster& c) {
  auto client = c.NewClient();
  auto rep = client->Scrub();
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_GT(rep->stripes_checked, 0u);
  EXPECT_EQ(rep->mismatches, 0u) << (rep->problems.empty() ? "" : rep->problems.front());
  EXPECT_EQ(rep->unverified, 0u) << (rep->problems.empty() ? "" : rep->problems.front());
}

// Checks `done` every 50 ms until it holds (true) or `limit` has passed (false).
template <typename Done>
bool WaitUntil(std::chrono::milliseconds limit, Done&& done) {
  for (auto until = std::chrono::steady_clock::now() + limit; !done();) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// Until the manager learns of a restart the cluster may look served as before: waits (up to a
// minute) for node i's new incarnation to serve after rebuilding (there is no "rebuilt N pages"
// line when its slot had no generation past the empty image yet: the tail is the whole rebuild).
bool WaitRebuilt(const PCluster& c, size_t i) {
  return WaitUntil(std::chrono::seconds(60), [&] {
    std::string logs = c.NodeLogs(i);
    size_t at = logs.find("its data was lost: rebuilding from parity");
    return at != std::string::npos && logs.find("serving (protected)", at) != std::string::npos;
  });
}

TEST(ProtectionTest, XorWipedWorkerRebuildsEveryAcknowledgedWrite) {
  PCluster c("xor", 3, 0);
  c.Start();
  {
    Load load(c, 4, 500);
    load.WaitAcks(3000);
    c.node(1).Kill(SIGKILL);
    c.node(1).Wait(std::chrono::milliseconds(5000));
    c.Wipe(1);
    c.StartNode(1);  // same address, empty directory: it takes its old slot and rebuilds
    uint64_t before = load.acks();
    load.WaitAcks(before + 3000);  // writes go on during and after the rebuild
    load.Stop();
    ASSERT_TRUE(c.WaitServing()) << c.Logs();
    auto client = c.NewClient();
    load.Check(*client);
  }
  EXPECT_NE(c.NodeLogs(1).find("rebuilt"), std::string::npos) << c.NodeLogs(1);
  ExpectScrubClean(c);
}

// Node 1 of an xor cluster under load dies by the failpoint at its 400th write; restarted with
// its disk intact, every acknowledged write is there and the parity scrubs clean. `flags` go to
// every process.
void CrashAtFailpointLosesNothing(const std::string& failpoint,
                                  const std::vector<std::string>& flags = {}) {
  PCluster c("xor", 3, 0);
  c.flags = flags;
  c.StartManager();
  c.StartNode(0);
  c.StartNode(1, {"TESSERA_FAILPOINT=" + failpoint + ":400"});
  c.StartNode(2);
  {
    auto probe = c.NewClient();
    for (int i = 0; i < 400; ++i) {
      auto s = probe->GetStatus();
      if (s.ok() && s->map.formed) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Load load(c, 3, 300);
    for (int i = 0; i < 600 && c.node(1).Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_FALSE(c.node(1).Running()) << c.NodeLogs(1);
    c.StartNode(1);  // disk intact: replays the tail, protects, then serves
    uint64_t before = load.acks();
    load.WaitAcks(before + 1000);
    load.Stop();
    ASSERT_TRUE(c.WaitServing()) << c.Logs();
    auto client = c.NewClient();
    load.Check(*client);
  }
  EXPECT_NE(c.NodeLogs(1).find("failpoint " + failpoint), std::string::npos);
  if (failpoint == "crash_after_tail") {
    // The tails have the write the engine never committed.
    EXPECT_NE(c.NodeLogs(1).find("replayed"), std::string::npos) << c.NodeLogs(1);
  }
  ExpectScrubClean(c);
}

TEST(ProtectionTest, CrashBetweenTailAppendsAndLocalCommitLosesNothing) {
  CrashAtFailpointLosesNothing("crash_after_tail");
}

// With one holder the local commit goes ahead while the append is in flight: die in between.
// Every connection polls (--poll-us), and the worker polls for the holder's answers.
TEST(ProtectionTest, CrashBetweenLocalCommitAndTailAcknowledgementLosesNothing) {
  CrashAtFailpointLosesNothing("crash_before_ack", {"--poll-us", "200"});
}

// One holder: a data worker commits a group locally while its tail append is in flight. No
// reader may see it before the holder acknowledges, and a failed append is undone.
TEST(ProtectionTest, ReadersSeeAWriteOnlyOnceItsTailIsAcknowledged) {
  PCluster c("rs:2+1", 2, 1);
  c.StartManager();
  c.StartNode(0);
  c.StartNode(1);
  c.StartNode(2, {"TESSERA_FAILPOINT=fail_append_value:BAD"});  // the parity holder
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("k", "v1").ok());
  auto get = [&](const std::string& key) -> std::string {
    auto v = client->Get(key);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() && v->has_value() ? **v : "<absent>";
  };
  // The holder sits on an append carrying "BAD" for 500 ms, then fails it (each retry too).
  std::atomic<bool> done{false};
  tessera::Status bad;
  std::thread writer([&] {
    auto short_client = c.NewClient(1500);
    bad = short_client->Put("k", "BAD");
    done = true;
  });
  std::vector<std::string> seen;
  while (!done) {
    seen.push_back(get("k"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  writer.join();
  EXPECT_FALSE(bad.ok());
  EXPECT_GT(seen.size(), 20u);
  for (const auto& v : seen) ASSERT_EQ(v, "v1");
  EXPECT_EQ(get("k"), "v1");
  {
    auto short_client = c.NewClient(1500);
    EXPECT_FALSE(short_client->Put("fresh", "BAD").ok());
  }
  EXPECT_EQ(get("fresh"), "<absent>");
  // Later writes on both workers commit on top of the undo: they do not bring "BAD" back.
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(client->Put("later-" + std::to_string(i), "x").ok());
  }
  EXPECT_EQ(get("k"), "v1");
  EXPECT_EQ(get("fresh"), "<absent>");
  std::string logs = c.NodeLogs(0) + c.NodeLogs(1);
  EXPECT_NE(logs.find("its local commit undone"), std::string::npos) << logs;
  // Nor does a restart with the disk intact.
  for (size_t i : {0, 1}) {
    c.node(i).Kill(SIGKILL);
    c.node(i).Wait(std::chrono::milliseconds(5000));
    c.StartNode(i);
  }
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  client = c.NewClient();
  EXPECT_EQ(get("k"), "v1");
  EXPECT_EQ(get("fresh"), "<absent>");
  EXPECT_EQ(get("later-7"), "x");
  ExpectScrubClean(c);
}

// A holder stores an append and its answer is lost. The worker gives the write up (with one
// holder it undoes its overlapped local commit; with two, the other holder stored the entry but
// not all did) and reports the failure only after a generation covering that seq reached every
// holder, which then drops the entry. So a rebuild right after the failure (no periodic advance
// in between: the interval is a minute) does not apply the write its client was told failed,
// nor does a restart with the disk intact after a second such failure.
void LostAnswerIsNotRevived(const std::string& scheme, int parity) {
  PCluster c(scheme, 2, parity);
  c.protect_interval_ms = 60000;
  c.StartManager();
  c.StartNode(0);
  c.StartNode(1);
  c.StartNode(2, {"TESSERA_FAILPOINT=lose_answer_value:LOST"});  // a parity holder
  for (int i = 3; i < 2 + parity; ++i) c.StartNode(static_cast<size_t>(i));
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("k", "v1").ok());
  auto put_lost = [&] {
    auto short_client = c.NewClient(3000);
    tessera::Status lost = short_client->Put("k", "LOST");
    ASSERT_FALSE(lost.ok());
    EXPECT_NE(lost.message().find("not applied"), std::string::npos) << lost.ToString();
    EXPECT_EQ(lost.message().find("outcome unknown"), std::string::npos) << lost.ToString();
  };
  auto expect_v1 = [&] {
    auto v = c.NewClient()->Get("k");
    ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
    EXPECT_EQ(**v, "v1");
  };
  auto map = client->GetShardMap(true);
  ASSERT_TRUE(map.ok());
  const std::string owner = map->shards[ShardOf("k", map->num_shards)].owner;
  const size_t victim = owner == c.NodeId(0) ? 0 : 1;
  ASSERT_EQ(owner, c.NodeId(victim));
  for (bool wipe : {true, false}) {  // a lost disk, then a restart with the disk intact
    SCOPED_TRACE(wipe ? "rebuild" : "restart");
    put_lost();
    expect_v1();
    c.node(victim).Kill(SIGKILL);
    c.node(victim).Wait(std::chrono::milliseconds(5000));
    if (wipe) c.Wipe(victim);
    c.StartNode(victim);
    ASSERT_TRUE(c.WaitServing()) << c.Logs();
    expect_v1();
    if (wipe) {
      EXPECT_NE(c.NodeLogs(victim).find("rebuilt"), std::string::npos);
    }
  }
  ExpectScrubClean(c);
}

TEST(ProtectionTest, AWriteWhoseAnswerWasLostIsNotRevivedOneHolder) {
  LostAnswerIsNotRevived("rs:2+1", 1);
}

TEST(ProtectionTest, AWriteWhoseAnswerWasLostIsNotRevivedTwoHolders) {
  LostAnswerIsNotRevived("rs:2+2", 2);
}

// An advance moves the holder's generation on while a tail append's answer is on its way: that
// answer names the generation before, which is not a holder that went back in time (one that
// lost its data), so the worker neither warns nor re-protects to it.
TEST(ProtectionTest, AnAdvanceDuringATailAppendIsNotTakenForAHolderThatLostItsData) {
  PCluster c("rs:2+1", 2, 1);
  c.StartManager();
  c.StartNode(0);
  c.StartNode(1);
  // The holder answers an append carrying SLOW a second after storing it.
  c.StartNode(2, {"TESSERA_FAILPOINT=slow_answer_value:SLOW"});
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  auto map = client->GetShardMap(true);
  ASSERT_TRUE(map.ok());
  const std::string owner = map->shards[ShardOf("k", map->num_shards)].owner;
  const size_t w = owner == c.NodeId(0) ? 0 : 1;
  ASSERT_EQ(owner, c.NodeId(w));
  auto advances = [&] {
    const std::string logs = c.NodeLogs(w);
    size_t n = 0;
    for (size_t at = logs.find("protected generation"); at != std::string::npos;
         at = logs.find("protected generation", at + 1)) {
      ++n;
    }
    return n;
  };
  ASSERT_TRUE(client->Put("k", "start").ok());  // so that an advance is due: the loop waits for it
  for (int i = 0; i < 3; ++i) {
    // Just after an advance, a write the next one (200 ms later) protects, then one whose answer
    // takes a second: that advance completes while the answer is on its way.
    const size_t last = advances();
    for (int t = 0; t < 200 && advances() == last; ++t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(client->Put("k", "v" + std::to_string(i)).ok());
    const size_t before = advances();
    ASSERT_TRUE(client->Put("k", "SLOW").ok());
    EXPECT_GT(advances(), before) << "no advance ran during the slow answer";
  }
  auto v = client->Get("k");
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
  EXPECT_EQ(**v, "SLOW");
  const std::string logs = c.NodeLogs(w);
  EXPECT_EQ(logs.find("re-protecting"), std::string::npos) << logs;
}

// The undo of a failed append fails too: the worker keeps serving the old value, refuses writes,
// and its next start rebuilds from parity rather than trust an engine holding the failed write.
TEST(ProtectionTest, AFailedUndoRefusesWritesAndTheRestartRebuilds) {
  PCluster c("rs:2+1", 2, 1);
  c.StartManager();
  c.StartNode(0, {"TESSERA_FAILPOINT=fail_undo:1"});
  c.StartNode(1, {"TESSERA_FAILPOINT=fail_undo:1"});
  c.StartNode(2, {"TESSERA_FAILPOINT=fail_append_value:BAD"});  // the parity holder
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("k", "v1").ok());
  {
    auto short_client = c.NewClient(1500);
    EXPECT_FALSE(short_client->Put("k", "BAD").ok());
  }
  auto v = client->Get("k");
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
  EXPECT_EQ(**v, "v1");
  size_t poisoned = 2;
  for (size_t i : {0, 1}) {
    if (c.NodeLogs(i).find("refusing writes") != std::string::npos) poisoned = i;
  }
  ASSERT_LT(poisoned, 2u) << c.Logs();
  {
    auto short_client = c.NewClient(1500);
    EXPECT_FALSE(short_client->Put("k", "v2").ok());  // refused: the worker is poisoned
  }
  c.node(poisoned).Kill(SIGKILL);
  c.node(poisoned).Wait(std::chrono::milliseconds(5000));
  c.StartNode(poisoned);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  EXPECT_NE(c.NodeLogs(poisoned).find("rebuilding from parity"), std::string::npos)
      << c.NodeLogs(poisoned);
  client = c.NewClient();
  v = client->Get("k");
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
  EXPECT_EQ(**v, "v1");
  ASSERT_TRUE(client->Put("k", "v3").ok());  // rebuilt, it takes writes again
  v = client->Get("k");
  ASSERT_TRUE(v.ok() && v->has_value());
  EXPECT_EQ(**v, "v3");
  ExpectScrubClean(c);
}

TEST(ProtectionTest, LostManagerParityIsReprotectedThenServesARebuild) {
  PCluster c("xor", 3, 0);
  c.Start();
  Load load(c, 3, 300);
  load.WaitAcks(2000);
  load.Stop();
  c.manager_process().Kill(SIGKILL);
  c.manager_process().Wait(std::chrono::milliseconds(5000));
  std::error_code ec;
  std::filesystem::remove_all(c.ManagerDir() + "/parity", ec);  // the parity holder's disk
  c.StartManager();
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  // The workers notice the empty holder at their next write and re-protect to it: every slot's
  // record comes back from generation 0.
  ASSERT_TRUE(c.NewClient()->Put("wake-up", "1").ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(c.NewClient()->Put("wake-" + std::to_string(i * 7919), "1").ok());
  ASSERT_TRUE(WaitReprotected(c.manager(), 3)) << c.Logs();
  ExpectScrubClean(c);
  // And the new parity is good enough to rebuild a wiped worker.
  c.node(0).Kill(SIGKILL);
  c.node(0).Wait(std::chrono::milliseconds(5000));
  c.Wipe(0);
  c.StartNode(0);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  load.Check(*c.NewClient());
}

TEST(ProtectionTest, Rs42SurvivesTwoWipedWorkersAtOnce) {
  PCluster c("rs:4+2", 4, 2);
  c.Start();
  {
    Load load(c, 4, 400);
    load.WaitAcks(4000);
    load.Stop();
    for (size_t i : {0, 2}) {
      c.node(i).Kill(SIGKILL);
      c.node(i).Wait(std::chrono::milliseconds(5000));
      c.Wipe(i);
    }
    c.StartNode(0);
    c.StartNode(2);
    ASSERT_TRUE(c.WaitServing(90)) << c.Logs();
    load.Check(*c.NewClient());
  }
  EXPECT_NE(c.NodeLogs(0).find("rebuilt"), std::string::npos);
  EXPECT_NE(c.NodeLogs(2).find("rebuilt"), std::string::npos);
  ExpectScrubClean(c);
}

TEST(ProtectionTest, CrashDuringAGenerationAdvanceThenALostWorkerRebuilds) {
  PCluster c("rs:2+2", 2, 2);
  c.StartManager();
  c.StartNode(0, {"TESSERA_FAILPOINT=crash_in_advance:3"});
  for (size_t i = 1; i < 4; ++i) c.StartNode(i);
  {
    Load load(c, 2, 300);
    // Node 0 dies in its third advance: holder 0 records the new generation, holder 1 not.
    for (int i = 0; i < 600 && c.node(0).Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_FALSE(c.node(0).Running()) << c.NodeLogs(0);
    c.StartNode(0);  // disk intact: pins both generations again and completes the advance
    uint64_t before = load.acks();
    load.WaitAcks(before + 1500);
    load.Stop();
    ASSERT_TRUE(c.WaitServing()) << c.Logs();
    ExpectScrubClean(c);
    // The parity is whole: the other data worker, wiped, rebuilds from it.
    c.node(1).Kill(SIGKILL);
    c.node(1).Wait(std::chrono::milliseconds(5000));
    c.Wipe(1);
    c.StartNode(1);
    ASSERT_TRUE(c.WaitServing()) << c.Logs();
    load.Check(*c.NewClient());
  }
  EXPECT_NE(c.NodeLogs(0).find("failpoint crash_in_advance"), std::string::npos);
  EXPECT_NE(c.NodeLogs(1).find("rebuilt"), std::string::npos);
}

TEST(ProtectionTest, CrashMidAdvanceThenBothDataWorkersWipedAreRebuilt) {
  // Node 0 dies between the commits of an advance: holder 0 records the new generation, holder 1
  // only has it prepared. Then both data workers lose their disks: decoding two erasures needs
  // both parity rows to agree, so the rebuild completes the prepared generation first.
  PCluster c("rs:2+2", 2, 2);
  c.StartManager();
  c.StartNode(0, {"TESSERA_FAILPOINT=crash_in_advance:3"});
  for (size_t i = 1; i < 4; ++i) c.StartNode(i);
  {
    Load load(c, 2, 300);
    for (int i = 0; i < 600 && c.node(0).Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_FALSE(c.node(0).Running()) << c.NodeLogs(0);
    load.Stop();
    c.node(1).Kill(SIGKILL);
    c.node(1).Wait(std::chrono::milliseconds(5000));
    c.Wipe(0);
    c.Wipe(1);
    c.StartNode(0);
    c.StartNode(1);
    ASSERT_TRUE(c.WaitServing(90)) << c.Logs();
    load.Check(*c.NewClient());
  }
  std::string logs = c.NodeLogs(0) + c.NodeLogs(1);
  EXPECT_NE(logs.find("'s prepared generation"), std::string::npos) << logs;
  ExpectScrubClean(c);
}

// A worker dies in an advance after the first holder applied the new generation and before the
// second did, and that first holder is down while the worker, wiped, rebuilds: the rebuild can
// only decode the older generation the second holder records. Once the first holder is back the
// worker finds it records a generation the worker does not hold, and rebuilds again from it
// (before, no advance could start from that generation and the worker never served: found in
// review).
TEST(ProtectionTest, ARebuildThatMissedANewerGenerationRebuildsAgainFromIt) {
  PCluster c("rs:2+2", 2, 2);
  c.StartManager();
  c.StartNode(0, {"TESSERA_FAILPOINT=crash_in_advance:3"});
  for (size_t i = 1; i < 4; ++i) c.StartNode(i);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto map = c.NewClient()->GetShardMap(true);
  ASSERT_TRUE(map.ok() && map->protection.holder_nodes.size() == 2u);
  const size_t first = map->protection.holder_nodes[0] == c.NodeId(2) ? 2 : 3;
  ASSERT_EQ(map->protection.holder_nodes[0], c.NodeId(first));
  Load load(c, 2, 300);
  // Node 0 dies in its third advance: the first holder records the new generation, the
  // second not.
  WaitUntil(std::chrono::seconds(30), [&] { return !c.node(0).Running(); });
  ASSERT_FALSE(c.node(0).Running()) << c.NodeLogs(0);
  load.Stop();
  c.node(first).Kill(SIGKILL);
  c.node(first).Wait(std::chrono::milliseconds(5000));
  c.Wipe(0);
  c.StartNode(0);
  WaitUntil(std::chrono::seconds(30),
            [&] { return c.NodeLogs(0).find("rebuilt") != std::string::npos; });
  ASSERT_NE(c.NodeLogs(0).find("rebuilt"), std::string::npos) << c.NodeLogs(0);
  c.StartNode(first);
  ASSERT_TRUE(WaitRebuilt(c, 0)) << c.Logs();
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  EXPECT_NE(c.NodeLogs(0).find("rebuilding again"), std::string::npos) << c.NodeLogs(0);
  load.Check(*c.NewClient());
  ExpectScrubClean(c);
}

TEST(ProtectionTest, WipedParityWorkerIsReprotectedAndCarriesARebuild) {
  PCluster c("rs:2+2", 2, 2);
  c.Start();
  Load load(c, 2, 300);
  load.WaitAcks(1500);
  load.Stop();
  // Parity worker 2 loses its disk and comes back empty on its address: it takes its old row,
  // and the data workers re-protect to it from generation 0.
  c.node(2).Kill(SIGKILL);
  c.node(2).Wait(std::chrono::milliseconds(5000));
  c.Wipe(2);
  c.StartNode(2);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  ASSERT_TRUE(WaitReprotected(Addr(c.port(2)), 2)) << c.Logs();
  ExpectScrubClean(c);
  // Now the other parity worker is gone and a data worker is wiped: only the re-protected row
  // can rebuild it.
  auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  const size_t served_before = count(c.NodeLogs(0), "serving (protected)");
  c.node(3).Kill(SIGKILL);
  c.node(0).Kill(SIGKILL);
  c.node(0).Wait(std::chrono::milliseconds(5000));
  c.Wipe(0);
  c.StartNode(0);
  auto client = c.NewClient();
  bool rebuilt = false;
  for (int i = 0; i < 600 && !rebuilt; ++i) {
    rebuilt = c.NodeLogs(0).find("rebuilt") != std::string::npos;
    if (!rebuilt) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(rebuilt) << c.Logs();
  // It serves only once what it holds is protected at every holder: holder 3 must come back.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(count(c.NodeLogs(0), "serving (protected)"), served_before) << c.NodeLogs(0);
  c.StartNode(3);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  load.Check(*client);
  ExpectScrubClean(c);
}

TEST(ProtectionTest, ZombieFromAnOldEpochCannotGetAWriteAcknowledged) {
  PCluster c("xor", 3, 0);
  c.Start();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("before", "1").ok());
  auto old_map = client->GetShardMap(true);
  ASSERT_TRUE(old_map.ok());
  const std::string zombie_id = c.NodeId(1);
  int zombie_shard = -1;
  int64_t zombie_epoch = 0;
  for (const auto& s : old_map->shards) {
    if (s.owner == zombie_id) {
      zombie_shard = s.shard;
      zombie_epoch = s.epoch;
    }
  }
  ASSERT_GE(zombie_shard, 0);
  // Freeze node 1; a replacement with an empty directory takes its slot on another port.
  c.node(1).Kill(SIGSTOP);
  std::string rdir = c.NodeDir(1) + "-replacement";
  int rport = FreePort();
  Process replacement({TESSERA_BIN, "worker", "--listen", Addr(rport), "--manager", c.manager(),
                       "--data", rdir, "--replace", zombie_id},
                      c.NodeDir(1) + "-replacement.log");
  bool replaced = false;
  for (int i = 0; i < 600 && !replaced; ++i) {
    auto m = client->GetShardMap(true);
    replaced = m.ok() && m->shards[zombie_shard].address == Addr(rport) &&
               m->protection.rebuilding.empty();
    if (!replaced) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(replaced) << c.Logs() << testing::ReadFile(c.NodeDir(1) + "-replacement.log");
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  // The zombie wakes up and is asked to write with the epoch it knows.
  c.node(1).Kill(SIGCONT);
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(Addr(c.port(1))), {});
  ASSERT_TRUE(conn.ok());
  gen::WorkerServiceClient zw(conn->protocol);
  gen::Op op;
  op.shard = zombie_shard;
  op.epoch = zombie_epoch;
  op.put = true;
  std::string zkey;
  for (int n = 0; zkey.empty(); ++n) {
    std::string k = "zombie-" + std::to_string(n);
    if (ShardOf(k, old_map->num_shards) == zombie_shard) zkey = k;
  }
  op.key = zkey;
  op.value = "zombie";
  bool refused = false;
  try {
    zw.Write("", {op}, false);
  } catch (const gen::TesseraError& e) {
    refused = true;
    EXPECT_TRUE(e.code == gen::ErrorCode::STALE_EPOCH || e.code == gen::ErrorCode::UNAVAILABLE)
        << e.message;
  } catch (const std::exception&) {
    refused = true;  // the zombie noticed it was replaced and exited
  }
  EXPECT_TRUE(refused);
  // Nothing the zombie did is visible; the data it held is served by the replacement.
  auto v = client->Get("before");
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
  EXPECT_EQ(**v, "1");
  auto z = client->Get(zkey);
  ASSERT_TRUE(z.ok());
  EXPECT_FALSE(z->has_value());
  replacement.Kill(SIGKILL);
}

// The protected snapshots a data worker pins, one per line of DATA/protected (Protector::SavePins
// writes the file, atomically, whenever the set changes).
size_t PinnedSnapshots(const PCluster& c, size_t i) {
  std::ifstream in(c.NodeDir(i) + "/protected");
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// The newest generation a data worker pins (the first field of each line of DATA/protected).
int64_t NewestPin(const PCluster& c, size_t i) {
  std::ifstream in(c.NodeDir(i) + "/protected");
  int64_t newest = 0;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) newest = std::max<int64_t>(newest, std::stoll(line));
  }
  return newest;
}

// Starts an rs:2+2 cluster in degraded mode: data workers (nodes 0 and 1) with
// --min-holders 1, parity holders nodes 2 and 3.
void StartDegraded(PCluster& c) {
  c.StartManager();
  for (size_t i : {0, 1}) c.StartNode(i, {}, {"--min-holders", "1"});
  for (size_t i : {2, 3}) c.StartNode(i);
}

// A parity holder's row is taken over by a new holder (the old one lost its disk and came back
// empty on its address), which dies before any data worker reached it: the workers know nothing
// it records, so a failed advance releases nothing and each leaves its snapshot pinned. With
// --min-holders 1 they keep acknowledging writes through the other holder, so pins pile up to
// the cap (Protector::kMaxPins = 32) and stop there. Once the holder is back, generations
// advance again, the pins are released, and the parity carries a rebuild of a wiped worker.
TEST(ProtectionTest, PinsStopAtTheCapWhileAnUnknownHolderIsDownAndAreReleasedAfter) {
  constexpr size_t kCap = 32;  // Protector::kMaxPins
  PCluster c("rs:2+2", 2, 2);
  c.protect_interval_ms = 10;  // an advance (a new pin) after every write, as fast as it can go
  StartDegraded(c);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  // Both data workers are frozen while parity worker 2 is replaced and dies again, so neither
  // reaches the new holder (kept well under the manager's 1 s heartbeat timeout).
  const std::string old_holder = c.NodeId(2);
  for (size_t i : {0, 1}) c.node(i).Kill(SIGSTOP);
  c.node(2).Kill(SIGKILL);
  c.node(2).Wait(std::chrono::milliseconds(5000));
  c.Wipe(2);
  c.StartNode(2);
  std::string new_holder;
  for (int i = 0; i < 500 && new_holder.empty(); ++i) {
    auto m = client->GetShardMap(true);
    if (m.ok()) {
      for (const auto& h : m->protection.holder_nodes) {
        if (!h.empty() && h == c.NodeId(2) && h != old_holder) new_holder = h;
      }
    }
    if (new_holder.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  c.node(2).Kill(SIGKILL);
  c.node(2).Wait(std::chrono::milliseconds(5000));
  for (size_t i : {0, 1}) c.node(i).Kill(SIGCONT);
  ASSERT_FALSE(new_holder.empty()) << c.Logs();

  Load load(c, 4, 200);
  // Writes go on; each worker's pins climb to the cap and never past it.
  size_t most = 0;
  auto at_cap = [&] {
    bool both = true;
    for (size_t i : {0, 1}) {
      size_t n = PinnedSnapshots(c, i);
      most = std::max(most, n);
      both = both && n == kCap;
    }
    return both;
  };
  bool capped = false;
  for (int i = 0; i < 600 && !capped; ++i) {
    capped = at_cap();
    if (!capped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(capped) << "pins: " << PinnedSnapshots(c, 0) << ", " << PinnedSnapshots(c, 1) << "\n"
                      << c.Logs();
  // At the cap the workers still acknowledge writes, and pin nothing more.
  const uint64_t acks_at_cap = load.acks();
  load.WaitAcks(acks_at_cap + 20);
  EXPECT_GE(load.acks(), acks_at_cap + 20) << c.Logs();
  for (int i = 0; i < 10; ++i) {
    at_cap();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LE(most, kCap);
  for (size_t i : {0, 1}) {
    EXPECT_NE(c.NodeLogs(i).find("protected snapshots are pinned"), std::string::npos)
        << c.NodeLogs(i);
  }

  // Writes stop, with the workers ahead of their newest pins (writes went on at the cap).
  load.Stop();
  std::vector<int64_t> newest_pins;
  for (size_t i : {0, 1}) newest_pins.push_back(NewestPin(c, i));
  std::sort(newest_pins.begin(), newest_pins.end());
  auto holder_gens = [](const std::string& address) {
    std::vector<int64_t> out;
    for (const auto& r : HolderRecords(address)) out.push_back(r.gen);
    std::sort(out.begin(), out.end());
    return out;
  };

  // The holder comes back with its (empty) disk: the workers protect to it and release the pins
  // no holder records. With no write to prompt them, they still go on past the newest pin to the
  // state they hold: an advance that stopped at the pin would leave the writes after it in one
  // holder's tails alone.
  c.StartNode(2);
  const bool reprotected = WaitReprotected(Addr(c.port(2)), 2);
  EXPECT_TRUE(reprotected) << c.Logs();
  bool released = false;
  for (int i = 0; i < 200 && !released; ++i) {
    released = PinnedSnapshots(c, 0) <= 2 && PinnedSnapshots(c, 1) <= 2;
    if (!released) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(released) << "pins: " << PinnedSnapshots(c, 0) << ", " << PinnedSnapshots(c, 1);
  bool covered = false;
  std::vector<int64_t> gens;
  for (int i = 0; i < 200 && !covered; ++i) {
    gens = holder_gens(Addr(c.port(2)));
    covered = gens.size() == newest_pins.size();
    for (size_t k = 0; covered && k < gens.size(); ++k) covered = gens[k] > newest_pins[k];
    if (!covered) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(covered) << "holder generations " << ::testing::PrintToString(gens)
                       << ", newest pins at the cap " << ::testing::PrintToString(newest_pins)
                       << "\n"
                       << c.Logs();
  ASSERT_TRUE(reprotected && released && covered);
  // Every acknowledged write survives the loss of a data worker's disk.
  c.node(0).Kill(SIGKILL);
  c.node(0).Wait(std::chrono::milliseconds(5000));
  c.Wipe(0);
  c.StartNode(0, {}, {"--min-holders", "1"});
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  EXPECT_NE(c.NodeLogs(0).find("rebuilt"), std::string::npos);
  load.Check(*c.NewClient());
}

// Seqs of the tail entries of every slot the parity holder at `address` keeps (slots 0..k-1).
std::vector<std::set<int64_t>> HolderTails(const std::string& address, int k) {
  std::vector<std::set<int64_t>> out(static_cast<size_t>(k));
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(address), {});
  if (!conn.ok()) return out;
  gen::ParityServiceClient holder(conn->protocol);
  for (int slot = 0; slot < k; ++slot) {
    std::vector<gen::TailEntry> entries;
    try {  // the highest epoch: a read raises nothing
      holder.ReadTail(entries, "", slot, std::numeric_limits<int64_t>::max(), 0, 100000);
    } catch (const std::exception&) {
      return {};
    }
    for (const auto& e : entries) out[static_cast<size_t>(slot)].insert(e.seq);
  }
  return out;
}

// With --min-holders 1 a write ("k" = "v2") is acknowledged while parity holder `hole_row` is
// down: that holder's tail lacks the entry. It comes back with its disk and stores the next
// writes, so its tail ends where the other holder's does, with a hole. The owner is then wiped,
// and its rebuild (started with `rebuild_env`) must serve "v2".
void HoleInAHolderTail(size_t hole_row, const std::vector<std::string>& rebuild_env = {},
                       const std::string& rebuild_logs = "") {
  PCluster c("rs:2+2", 2, 2);
  c.protect_interval_ms = 3600 * 1000;  // no advance covers the hole before the rebuild
  StartDegraded(c);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  // Each worker's first generation (made when the map formed) before the writes, so that none
  // made later covers the hole.
  WaitUntil(std::chrono::seconds(10), [&] {
    return c.NodeLogs(0).find("protected generation") != std::string::npos &&
           c.NodeLogs(1).find("protected generation") != std::string::npos;
  });
  auto client = c.NewClient();
  auto map = client->GetShardMap(true);
  ASSERT_TRUE(map.ok() && map->protection.holder_nodes.size() == 2u);
  const size_t down = map->protection.holder_nodes[hole_row] == c.NodeId(2) ? 2 : 3;
  ASSERT_EQ(map->protection.holder_nodes[hole_row], c.NodeId(down));
  const size_t up = 5 - down;
  const std::string owner = map->shards[ShardOf("k", map->num_shards)].owner;
  const size_t victim = owner == c.NodeId(0) ? 0 : 1;
  ASSERT_EQ(owner, c.NodeId(victim));
  ASSERT_TRUE(client->Put("k", "v1").ok());

  c.node(down).Kill(SIGKILL);
  c.node(down).Wait(std::chrono::milliseconds(5000));
  ASSERT_TRUE(client->Put("k", "v2").ok());  // acknowledged by the other holder alone
  c.StartNode(down);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  // The worker's appends skip a holder that gave no answer until a call reaches it again (one a
  // second).
  WaitUntil(std::chrono::seconds(10),
            [&] { return c.NodeLogs(victim).find("answers again") != std::string::npos; });
  ASSERT_NE(c.NodeLogs(victim).find("answers again"), std::string::npos) << c.NodeLogs(victim);
  // Writes to the same worker that the returned holder stores: its tail now ends where the
  // other holder's does, with a hole.
  int after = 0;
  for (int i = 0; after < 5; ++i) {
    std::string key = "after-" + std::to_string(i);
    if (map->shards[ShardOf(key, map->num_shards)].owner != owner) continue;
    ASSERT_TRUE(client->Put(key, "x").ok());
    ++after;
  }
  const auto with_hole = HolderTails(Addr(c.port(down)), 2);
  const auto full = HolderTails(Addr(c.port(up)), 2);
  bool hole = false;
  for (size_t slot = 0; slot < 2 && with_hole.size() == 2 && full.size() == 2; ++slot) {
    for (int64_t seq : full[slot]) {
      hole = hole ||
             (!with_hole[slot].count(seq) && !with_hole[slot].empty() &&
              seq < *with_hole[slot].rbegin() && *with_hole[slot].rbegin() == *full[slot].rbegin());
    }
  }
  ASSERT_TRUE(hole) << "no hole in the tails of the holder that was down\n" << c.Logs();

  c.node(victim).Kill(SIGKILL);
  c.node(victim).Wait(std::chrono::milliseconds(5000));
  c.Wipe(victim);
  c.StartNode(victim, rebuild_env, {"--min-holders", "1"});
  ASSERT_TRUE(WaitRebuilt(c, victim)) << c.NodeLogs(victim);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  EXPECT_NE(c.NodeLogs(victim).find(rebuild_logs), std::string::npos) << c.NodeLogs(victim);
  auto v = c.NewClient()->Get("k");
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status().ToString();
  EXPECT_EQ(**v, "v2") << c.Logs();
}

// The replay asks the holder with the hole first: with the longest tail alone (the code before
// 0890b26) the rebuild served "v1".
TEST(ProtectionTest, AWriteAHolderMissedSurvivesARebuildAfterTheHolderCameBack) {
  HoleInAHolderTail(0);
}

// The hole is at the second holder; the rebuilt worker's first advance applies at the first
// holder (which drops its tail, the only copy of "v2") and fails at the second. The retry must
// start after what the engine already holds: replayed again from the rebuild's seq, the second
// holder's tail alone put "v1" back over "v2" (found in review).
TEST(ProtectionTest, ARetryAfterAPartialCatchUpAdvanceKeepsAWriteOnlyADroppedTailHeld) {
  HoleInAHolderTail(1, {"TESSERA_FAILPOINT=fail_commit_after_first:1"},
                    "failpoint fail_commit_after_first");
}

// With --min-holders 1 and a parity holder down, writes go on through the other holder without
// each waiting out the attempts at the dead one (150 ms): after one failed call the worker's
// appends skip it, and a call once a second off the write path finds it back. Every
// acknowledged write survives a rebuild once the holder is back.
TEST(ProtectionTest, WritesSkipAParityHolderThatIsDownAndProbeItOnceASecond) {
  PCluster c("rs:2+2", 2, 2);
  StartDegraded(c);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  c.node(3).Kill(SIGKILL);
  c.node(3).Wait(std::chrono::milliseconds(5000));
  // Writes for 3 s: the probes of the dead holder (one a second) happen meanwhile.
  int writes = 0, slow = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(client->Put("k" + std::to_string(writes), "v" + std::to_string(writes)).ok())
        << c.Logs();
    ++writes;
    slow += std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(140);
  }
  // A write that waited for the dead holder took its three attempts, 150 ms: without the skip
  // every write does; with it, the first one at each worker only (2; 2 more allowed for a slow
  // machine).
  EXPECT_GE(slow, 1) << "no write found the holder down";
  EXPECT_LE(slow, 4) << slow << " of " << writes << " writes took over 140 ms";
  EXPECT_GT(writes, 10);
  EXPECT_NE((c.NodeLogs(0) + c.NodeLogs(1)).find("appends skip it"), std::string::npos)
      << c.NodeLogs(0);

  // Back, the holder is found by a probe and stores appends again.
  c.StartNode(3);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  bool answers = false;
  for (int i = 0; i < 100 && !answers; ++i) {
    ASSERT_TRUE(client->Put("after" + std::to_string(i), "x").ok());
    answers = (c.NodeLogs(0) + c.NodeLogs(1)).find("answers again") != std::string::npos;
    if (!answers) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(answers) << c.NodeLogs(0) << c.NodeLogs(1);

  // A wiped worker rebuilds every acknowledged write.
  c.node(0).Kill(SIGKILL);
  c.node(0).Wait(std::chrono::milliseconds(5000));
  c.Wipe(0);
  c.StartNode(0, {}, {"--min-holders", "1"});
  ASSERT_TRUE(WaitRebuilt(c, 0)) << c.NodeLogs(0);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto reader = c.NewClient();
  for (int i = 0; i < writes; ++i) {
    auto v = reader->Get("k" + std::to_string(i));
    ASSERT_TRUE(v.ok() && v->has_value()) << "k" << i << ": " << v.status().ToString();
    EXPECT_EQ(**v, "v" + std::to_string(i));
  }
}

TEST(ProtectionTest, AHungParityHolderHoldsAWriteForOneShortTimeoutOnly) {
  PCluster c("rs:2+2", 2, 2);
  StartDegraded(c);
  ASSERT_TRUE(c.WaitServing()) << c.Logs();
  auto client = c.NewClient();
  ASSERT_TRUE(client->Put("before", "x").ok()) << c.Logs();
  // Hung, not dead: its connections stay open and nothing answers, so an append learns of it
  // only by its I/O timeout.
  c.node(3).Kill(SIGSTOP);
  const int kWrites = 20;
  auto slowest = std::chrono::steady_clock::duration::zero();
  for (int i = 0; i < kWrites; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Status st = client->Put("k" + std::to_string(i), "v" + std::to_string(i));
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    ASSERT_TRUE(st.ok()) << "k" << i << ": " << st.ToString() << c.NodeLogs(0) << c.NodeLogs(1);
  }
  // The first write at each worker waited one 5 s timeout, then appends skipped the holder.
  // Three attempts of 10 s, as before, outlasted the client's 10 s I/O timeout.
  EXPECT_LT(slowest, std::chrono::seconds(9));
  const std::string logs = c.NodeLogs(0) + c.NodeLogs(1);
  EXPECT_NE(logs.find("no answer in 5000 ms"), std::string::npos) << logs;
  EXPECT_NE(logs.find("appends skip it"), std::string::npos) << logs;

  // Resumed, it answers again at each worker that skipped it...
  c.node(3).Kill(SIGCONT);
  for (size_t w : {0, 1}) {
    if (c.NodeLogs(w).find("appends skip it") == std::string::npos) continue;
    EXPECT_TRUE(WaitUntil(std::chrono::seconds(30), [&] {
      return c.NodeLogs(w).find("answers again") != std::string::npos;
    })) << c.NodeLogs(w);
  }
  // ... and stores appends again: with the other holder dead, every write is stored there alone.
  c.node(2).Kill(SIGKILL);
  c.node(2).Wait(std::chrono::milliseconds(5000));
  for (int i = 0; i < kWrites; ++i) {
    Status st = client->Put("m" + std::to_string(i), "w" + std::to_string(i));
    ASSERT_TRUE(st.ok()) << "m" << i << ": " << st.ToString() << c.NodeLogs(0) << c.NodeLogs(1);
  }
  for (int i = 0; i < kWrites; ++i) {
    auto v = client->Get("k" + std::to_string(i));
    ASSERT_TRUE(v.ok() && v->has_value()) << "k" << i << ": " << v.status().ToString();
    EXPECT_EQ(**v, "v" + std::to_string(i));
    v = client->Get("m" + std::to_string(i));
    ASSERT_TRUE(v.ok() && v->has_value()) << "m" << i << ": " << v.status().ToString();
    EXPECT_EQ(**v, "w" + std::to_string(i));
  }
}

}  // namespace
}  // namespace tessera::orchestrator
