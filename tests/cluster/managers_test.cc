// Three managers replicated with Raft, as real processes on loopback: SIGKILL the leader during
// a client workload and lose no acknowledged write; no progress without a quorum; followers name
// the leader; the lock service's counter under fenced writes across a failover; an expired
// session frees its lock; a stale token is rejected.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "ManagerService.h"
#include "subprocess.h"
#include "tessera/orchestrator/client.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

namespace gen = ::tessera::rpc::gen;
using Clock = std::chrono::steady_clock;
using testing::FreePort;
using testing::Process;
using testing::TempDir;

std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

class Managers {
 public:
  explicit Managers(int workers) : workers_(workers) {
    for (int i = 0; i < 3; ++i) ports_.push_back(FreePort());
    for (int i = 0; i < workers; ++i) worker_ports_.push_back(FreePort());
    managers_.resize(3);
    worker_procs_.resize(static_cast<size_t>(workers));
  }

  std::string List() const {
    std::string s;
    for (int p : ports_) s += (s.empty() ? "" : ",") + Addr(p);
    return s;
  }
  std::string Address(int i) const { return Addr(ports_[static_cast<size_t>(i)]); }
  int IndexOf(const std::string& address) const {
    for (int i = 0; i < 3; ++i) {
      if (Address(i) == address) return i;
    }
    return -1;
  }

  void StartManager(int i) {
    std::vector<std::string> argv{TESSERA_BIN, "manager",
                                  "--listen",  Address(i),
                                  "--peers",   List(),
                                  "--data",    dir_.File("manager" + std::to_string(i)),
                                  "--workers", std::to_string(std::max(workers_, 1))};
    for (auto& f : testing::FastManagerFlags()) argv.push_back(f);
    if (workers_ == 0) {
      // Managers alone (the lock service): no workers to protect.
      argv.push_back("--protection");
      argv.push_back("none");
    }
    managers_[static_cast<size_t>(i)] =
        std::make_unique<Process>(argv, dir_.File("manager" + std::to_string(i) + ".log"));
  }
  void StartWorker(int i) {
    worker_procs_[static_cast<size_t>(i)] = std::make_unique<Process>(
        std::vector<std::string>{TESSERA_BIN, "worker", "--listen",
                                 Addr(worker_ports_[static_cast<size_t>(i)]), "--manager", List(),
                                 "--data", dir_.File("worker" + std::to_string(i))},
        dir_.File("worker" + std::to_string(i) + ".log"));
  }
  void Start() {
    for (int i = 0; i < 3; ++i) StartManager(i);
    for (int i = 0; i < workers_; ++i) StartWorker(i);
  }
  Process& manager(int i) { return *managers_[static_cast<size_t>(i)]; }
  Process& worker(int i) { return *worker_procs_[static_cast<size_t>(i)]; }

  std::unique_ptr<Client> NewClient(int deadline_ms = 10000) {
    ClientOptions o;
    o.manager = List();
    o.deadline = std::chrono::milliseconds(deadline_ms);
    return std::move(Client::Connect(o)).value();
  }

  // The leader's index once one answers (and, with workers, once the cluster serves).
  int WaitLeader(std::chrono::milliseconds timeout = std::chrono::milliseconds(15000)) {
    auto c = NewClient(1000);
    auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      auto s = c->GetStatus();
      if (s.ok() && (workers_ == 0 || s->map.state == "serving")) {
        size_t up = 0;
        for (const auto& n : s->nodes) up += n.up;
        if (up == static_cast<size_t>(workers_)) return IndexOf(s->manager_address);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

  std::string Logs() const { return testing::LogsIn(dir_.path(), 6000); }
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  int workers_;
  std::vector<int> ports_, worker_ports_;
  std::vector<std::unique_ptr<Process>> managers_, worker_procs_;
};

TEST(ManagersTest, LeaderKilledDuringWorkloadLosesNoAcknowledgedWrite) {
  Managers m(3);
  m.Start();
  int leader = m.WaitLeader();
  ASSERT_GE(leader, 0) << m.Logs();

  // Writers record every acknowledged put; the leader dies in the middle.
  std::mutex mu;
  std::map<std::string, std::string> acked;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> kill_ns{0}, first_after_ns{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      auto c = m.NewClient(20000);
      for (int i = 0; !stop.load(); ++i) {
        std::string k = "w" + std::to_string(t) + "-" + std::to_string(i);
        std::string v = "v" + std::to_string(i * 7 + t);
        int64_t started = Clock::now().time_since_epoch().count();
        if (!c->Put(k, v, false).ok()) continue;
        int64_t now = Clock::now().time_since_epoch().count();
        int64_t killed = kill_ns.load();
        int64_t expected = 0;
        // The first write begun after the kill (the xor parity moved to the new leader).
        if (killed != 0 && started > killed) first_after_ns.compare_exchange_strong(expected, now);
        std::lock_guard<std::mutex> l(mu);
        acked[k] = v;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  kill_ns.store(Clock::now().time_since_epoch().count());
  m.manager(leader).Kill(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  stop.store(true);
  for (auto& w : writers) w.join();
  ASSERT_NE(first_after_ns.load(), 0) << "no write succeeded after the leader died\n" << m.Logs();
  std::printf("first acknowledged write %.0f ms after SIGKILL of the leader; %zu writes acked\n",
              (first_after_ns.load() - kill_ns.load()) / 1e6, acked.size());

  int next = m.WaitLeader();
  ASSERT_GE(next, 0) << m.Logs();
  EXPECT_NE(next, leader);

  // The new leader knows the cluster: a worker restarted now re-registers through it.
  m.worker(1).Kill(SIGKILL);
  m.StartWorker(1);
  ASSERT_GE(m.WaitLeader(), 0) << m.Logs();

  // The killed manager comes back as a follower and catches up.
  m.StartManager(leader);
  auto c = m.NewClient(20000);
  size_t checked = 0;
  for (const auto& [k, v] : acked) {
    auto got = c->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status().ToString() << "\n" << m.Logs();
    ASSERT_TRUE(got->has_value()) << "acknowledged key " << k << " lost\n" << m.Logs();
    ASSERT_EQ(**got, v) << k;
    ++checked;
  }
  EXPECT_GT(checked, 100u);
  auto s = c->GetStatus();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->managers.size(), 3u);
  EXPECT_GE(s->raft_term, 2);

  // Shutdown stops all three managers and the workers; cleanup leaves no data.
  ASSERT_TRUE(c->Shutdown(true).ok()) << m.Logs();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m.manager(i).Wait(std::chrono::seconds(10)), 0) << i;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m.worker(i).Wait(std::chrono::seconds(10)), 0) << i;
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(std::filesystem::exists(m.dir() + "/manager" + std::to_string(i))) << i;
    EXPECT_FALSE(std::filesystem::exists(m.dir() + "/worker" + std::to_string(i))) << i;
  }
}

TEST(ManagersTest, FollowersNameTheLeaderAndNothingCommitsWithoutAQuorum) {
  Managers m(0);
  m.Start();
  int leader = m.WaitLeader();
  ASSERT_GE(leader, 0) << m.Logs();
  int follower = (leader + 1) % 3;

  // A follower refuses with NOT_LEADER and the leader's address.
  auto conn = rpc::Connect(*rpc::Endpoint::Parse(m.Address(follower)), rpc::Timeouts{});
  ASSERT_TRUE(conn.ok());
  gen::ManagerServiceClient raw(conn->protocol);
  std::vector<gen::RaftMessage> replies;
  try {
    gen::ShardMap map;
    raw.GetShardMap(map, "");
    FAIL() << "a follower served the shard map";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::NOT_LEADER) << e.message;
    EXPECT_EQ(e.leader, m.Address(leader)) << e.message;
  }
  // A malformed raft message is refused by name and changes nothing.
  try {
    gen::RaftMessage bad;
    bad.type = 99;
    bad.from_id = 1;
    bad.to_id = 2;
    raw.RaftStep(replies, "", 1, {bad}, m.List());
    FAIL() << "a malformed raft message was accepted";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::INVALID_ARGUMENT) << e.message;
  }

  // A manager started with another --peers list is refused by name, not taken for a member.
  try {
    raw.RaftStep(replies, "", 1, {}, m.Address(0) + "," + m.Address(2) + "," + m.Address(1));
    FAIL() << "a raft message from a manager with another peer list was accepted";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::INVALID_ARGUMENT) << e.message;
    EXPECT_NE(e.message.find("same list"), std::string::npos) << e.message;
  }
  // An id outside the peer list (or the receiver's own) is not taken for a member either.
  for (int64_t id : {int64_t{0}, int64_t{4}, int64_t{follower + 1}}) {
    try {
      raw.RaftStep(replies, "", id, {}, m.List());
      FAIL() << "raft messages from id " << id << " were accepted";
    } catch (const gen::TesseraError& e) {
      EXPECT_EQ(e.code, gen::ErrorCode::INVALID_ARGUMENT) << e.message;
      EXPECT_NE(e.message.find("not a peer"), std::string::npos) << e.message;
    }
  }

  auto c = m.NewClient(1500);
  auto session = c->OpenSession(std::chrono::milliseconds(5000), "quorum test");
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  auto token = (*session)->Acquire("a", std::chrono::milliseconds(0));
  ASSERT_TRUE(token.ok()) << token.status().ToString();

  // Two of three down: nothing can be committed (the survivor cannot even stay leader).
  m.manager((leader + 1) % 3).Kill(SIGKILL);
  m.manager((leader + 2) % 3).Kill(SIGKILL);
  auto lonely = c->OpenSession(std::chrono::milliseconds(5000), "no quorum");
  EXPECT_FALSE(lonely.ok());
  EXPECT_TRUE(lonely.status().IsUnavailable()) << lonely.status().ToString();

  // One back: a quorum again, and the state committed before is all there.
  m.StartManager((leader + 1) % 3);
  ASSERT_GE(m.WaitLeader(), 0) << m.Logs();
  auto c2 = m.NewClient(10000);
  auto list = c2->ListLocks();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  bool found = false;
  for (const auto& l : list->locks) found = found || (l.name == "a" && l.token == *token);
  EXPECT_TRUE(found) << "lock a with token " << *token << " lost";
  auto again = c2->OpenSession(std::chrono::milliseconds(5000), "quorum back");
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

// The resource the lock guards: it remembers the highest token it has seen and refuses reads
// and writes carrying an older one (a holder whose session expired is stale).
class FencedCounter {
 public:
  bool Read(int64_t token, int64_t* value) {
    std::lock_guard<std::mutex> l(mu_);
    if (token < highest_) return false;
    highest_ = token;
    *value = value_;
    return true;
  }
  bool Write(int64_t token, int64_t value) {
    std::lock_guard<std::mutex> l(mu_);
    if (token < highest_) {
      ++rejected_;
      return false;
    }
    highest_ = token;
    value_ = value;
    return true;
  }
  int64_t value() {
    std::lock_guard<std::mutex> l(mu_);
    return value_;
  }
  int64_t rejected() {
    std::lock_guard<std::mutex> l(mu_);
    return rejected_;
  }

 private:
  std::mutex mu_;
  int64_t highest_ = 0, value_ = 0, rejected_ = 0;
};

TEST(ManagersTest, EightClientsCountExactlyUnderTheLockAcrossAFailover) {
  Managers m(0);
  m.Start();
  int leader = m.WaitLeader();
  ASSERT_GE(leader, 0) << m.Logs();
  constexpr int kClients = 8, kEach = 25;
  FencedCounter counter;
  std::atomic<int> done{0};
  std::atomic<int64_t> last_token{0};
  std::atomic<bool> tokens_increase{true};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      auto c = m.NewClient(20000);
      std::unique_ptr<LockSession> session;
      for (int got = 0; got < kEach;) {
        if (!session || !session->alive()) {
          auto s = c->OpenSession(std::chrono::milliseconds(2000), "counter " + std::to_string(t));
          if (!s.ok()) continue;
          session = std::move(s).value();
        }
        auto token = session->Acquire("counter", std::chrono::milliseconds(20000));
        if (!token.ok()) continue;
        int64_t prev = last_token.exchange(*token);
        if (*token <= prev) tokens_increase.store(false);
        int64_t v = 0;
        if (counter.Read(*token, &v)) {
          std::this_thread::sleep_for(std::chrono::microseconds(500));
          if (counter.Write(*token, v + 1)) ++got;
        }
        (void)session->Release("counter", *token);
      }
      done.fetch_add(1);
    });
  }
  // Kill the leader once the count is under way.
  while (counter.value() < 40) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  m.manager(leader).Kill(SIGKILL);
  for (auto& c : clients) c.join();
  EXPECT_EQ(counter.value(), kClients * kEach) << m.Logs();
  EXPECT_TRUE(tokens_increase.load()) << "a grant reused or lowered a fencing token";
  std::printf("count %lld with %lld stale writes refused\n",
              static_cast<long long>(counter.value()), static_cast<long long>(counter.rejected()));
}

TEST(ManagersTest, ExpiredSessionFreesItsLockAndAStaleTokenIsRejected) {
  Managers m(0);
  m.Start();
  ASSERT_GE(m.WaitLeader(), 0) << m.Logs();
  // `tessera lock` holds the lock while its command runs; SIGKILL it (and its command) so no
  // keep-alive arrives any more.
  Process holder({TESSERA_BIN, "lock", "job", "--ttl-ms", "1000", "--manager", m.List(), "--",
                  "sleep", "300.25"},
                 m.dir() + "/lock.log");
  auto c = m.NewClient();
  int64_t first = 0;
  for (int i = 0; i < 200 && first == 0; ++i) {
    auto l = c->ListLocks();
    if (l.ok()) {
      for (const auto& lk : l->locks) {
        if (lk.name == "job" && lk.holder_session != 0) first = lk.token;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(first, 0) << m.Logs() << testing::ReadFile(m.dir() + "/lock.log");
  auto checked = c->CheckToken("job", first);
  ASSERT_TRUE(checked.ok());
  EXPECT_TRUE(*checked);
  holder.Kill(SIGKILL);  // its command dies with it (AStoppedLockHolderStopsItsCommand)

  auto session = c->OpenSession(std::chrono::milliseconds(5000), "next holder");
  ASSERT_TRUE(session.ok());
  auto t0 = Clock::now();
  auto token = (*session)->Acquire("job", std::chrono::milliseconds(10000));
  double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_TRUE(token.ok()) << token.status().ToString() << "\n" << m.Logs();
  EXPECT_GT(*token, first);
  EXPECT_LT(waited, 5.0) << "the expired session's lock was freed late";
  std::printf("lock freed %.2f s after its holder died (TTL 1 s)\n", waited);

  // The dead holder's token is stale now; its late release does not free the new grant.
  auto stale = c->CheckToken("job", first);
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(*stale);
  auto current = c->CheckToken("job", *token);
  ASSERT_TRUE(current.ok());
  EXPECT_TRUE(*current);
  auto other = c->OpenSession(std::chrono::milliseconds(5000), "intruder");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE((*other)->Release("job", *token).ok());  // not its grant: nothing happens
  EXPECT_TRUE(*c->CheckToken("job", *token));
  auto busy = (*other)->Acquire("job", std::chrono::milliseconds(0));
  EXPECT_TRUE(busy.status().IsBusy()) << busy.status().ToString();

  // Released: the token is no longer current; the next grant's is higher.
  ASSERT_TRUE((*session)->Release("job", *token).ok());
  EXPECT_FALSE(*c->CheckToken("job", *token));
  auto next = (*other)->Acquire("job", std::chrono::milliseconds(0));
  ASSERT_TRUE(next.ok());
  EXPECT_GT(*next, *token);

  // Bad input: reserved names, unknown sessions.
  auto reserved = (*other)->Acquire("shard/0", std::chrono::milliseconds(0));
  EXPECT_TRUE(reserved.status().IsInvalidArgument()) << reserved.status().ToString();
  ASSERT_TRUE((*session)->Close().ok());
  auto closed = (*session)->Acquire("job2", std::chrono::milliseconds(0));
  EXPECT_TRUE(closed.status().IsNotFound()) << closed.status().ToString();
}

TEST(ManagersTest, AFollowerBehindTheCompactedLogCatchesUpFromASnapshot) {
  Managers m(0);
  m.Start();
  int leader = m.WaitLeader();
  ASSERT_GE(leader, 0) << m.Logs();
  const int behind = (leader + 1) % 3, other = (leader + 2) % 3;
  m.manager(behind).Kill(SIGKILL);
  // More commands than the managers keep in the log (a snapshot every 5,000, 1,000 kept).
  constexpr int kThreads = 8, kPairs = 450;
  std::vector<int64_t> last(kThreads, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      auto c = m.NewClient();
      auto s = c->OpenSession(std::chrono::milliseconds(10000), "t" + std::to_string(t));
      if (!s.ok()) return;
      for (int i = 0; i < kPairs; ++i) {
        auto tok = (*s)->Acquire("lock-" + std::to_string(t), std::chrono::milliseconds(0));
        if (!tok.ok() || !(*s)->Release("lock-" + std::to_string(t), *tok).ok()) return;
        last[static_cast<size_t>(t)] = *tok;
      }
    });
  }
  for (auto& t : ts) t.join();
  for (int t = 0; t < kThreads; ++t) ASSERT_EQ(last[static_cast<size_t>(t)], kPairs) << t;
  // The lagging manager returns; then the other follower goes, so nothing commits unless the
  // returned one caught up (through an InstallSnapshot: its missing entries are compacted).
  m.StartManager(behind);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  m.manager(other).Kill(SIGKILL);
  auto c = m.NewClient(10000);
  auto s = c->OpenSession(std::chrono::milliseconds(5000), "after");
  ASSERT_TRUE(s.ok()) << s.status().ToString() << m.Logs();
  for (int t = 0; t < kThreads; ++t) {
    auto tok = (*s)->Acquire("lock-" + std::to_string(t), std::chrono::milliseconds(0));
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    EXPECT_EQ(*tok, kPairs + 1) << "lock-" << t;  // the token sequence survived the snapshot
  }
  // And the returned manager can lead: kill the leader, start the other again.
  m.manager(leader).Kill(SIGKILL);
  m.StartManager(other);
  int next = m.WaitLeader();
  ASSERT_GE(next, 0) << m.Logs();
  auto list = c->ListLocks();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  int seen = 0;
  for (const auto& l : list->locks) seen += l.name.rfind("lock-", 0) == 0 && l.token == kPairs + 1;
  EXPECT_EQ(seen, kThreads);
  EXPECT_NE(testing::ReadFile(m.dir() + "/manager" + std::to_string(behind) + ".log")
                .find("restored cluster state"),
            std::string::npos)
      << "the lagging manager did not install a snapshot";
}

// Also: given a directory that already holds a file, the demo removes only what it made there.
TEST(ManagersTest, DemoWithThreeManagersPassesEveryStep) {
  TempDir d;
  ASSERT_TRUE(std::filesystem::create_directory(d.File("demo")));
  { std::ofstream(d.File("demo/notes.txt")) << "mine\n"; }
  std::vector<std::string> argv = {TESSERA_BIN, "demo", "--managers", "3",
                                   "--keys",    "5000", "--dir",      d.File("demo")};
  for (int i = 0; i < 5; ++i) argv.push_back(std::to_string(FreePort()));
  // The extra managers listen on the two ports after the last worker's: free ones, most likely.
  auto r = testing::RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("[ok] SIGKILL the leader manager during writes"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("demo passed"), std::string::npos) << r.out;
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(d.File("demo"))) {
    left.push_back(e.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(testing::ReadFile(d.File("demo/notes.txt")), "mine\n");
}

// `tessera lock` stopped with SIGTERM stops its command and exits once that has (releasing the
// lock then); SIGKILLed, its command dies with it. Before, either ended `tessera lock` alone and
// its command ran on without the lock, while another holder got it after the TTL.
TEST(ManagersTest, AStoppedLockHolderStopsItsCommand) {
  Managers m(0);
  m.Start();
  ASSERT_GE(m.WaitLeader(), 0) << m.Logs();
  for (int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGKILL");
    const std::string pidfile = m.dir() + "/cmd" + std::to_string(sig) + ".pid";
    Process holder(
        {TESSERA_BIN, "lock", "job", "--ttl-ms", "1000", "--manager", m.List(), "--", "sh", "-c",
         "echo $$ > " + pidfile + ".tmp; mv " + pidfile + ".tmp " + pidfile + "; exec sleep 300"},
        m.dir() + "/lock.log");
    for (int i = 0; i < 200 && !std::filesystem::exists(pidfile); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(std::filesystem::exists(pidfile)) << testing::ReadFile(m.dir() + "/lock.log");
    const pid_t cmd = std::atoi(testing::ReadFile(pidfile).c_str());
    ASSERT_GT(cmd, 0);
    holder.Kill(sig);
    if (sig == SIGTERM) {
      EXPECT_EQ(holder.Wait(std::chrono::seconds(15)), 128 + SIGTERM)
          << testing::ReadFile(m.dir() + "/lock.log");
    }
    // Gone, or a zombie its new parent has yet to reap.
    auto running = [&] {
      const std::string stat = testing::ReadFile("/proc/" + std::to_string(cmd) + "/stat");
      const size_t paren = stat.rfind(')');
      return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
    };
    for (int i = 0; i < 100 && running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(running()) << "the command outlived `tessera lock`";
    if (running()) ::kill(cmd, SIGKILL);
  }
}

// A member restarted without --peers (or with another list) is refused before it serves: on its
// own it led a one-manager cluster on the same log, granted a lock the real cluster held, and its
// entries later overwrote committed ones.
TEST(ManagersTest, AMemberRestartedWithoutPeersIsRefused) {
  Managers m(0);
  m.Start();
  const int leader = m.WaitLeader();
  ASSERT_GE(leader, 0) << m.Logs();
  const int f = (leader + 1) % 3;
  const std::string data = m.dir() + "/manager" + std::to_string(f);
  for (int i = 0; i < 100 && !std::filesystem::exists(data + "/cluster.json"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(data + "/cluster.json")) << m.Logs();
  m.manager(f).Kill(SIGKILL);
  for (const std::vector<std::string>& peers :
       {std::vector<std::string>{}, std::vector<std::string>{"--peers", m.Address(f)}}) {
    std::vector<std::string> argv{TESSERA_BIN, "manager", m.Address(f),   "--data", data,
                                  "--workers", "1",       "--protection", "none"};
    argv.insert(argv.begin() + 2, "--listen");
    argv.insert(argv.end(), peers.begin(), peers.end());
    Process alone(argv, m.dir() + "/alone.log");
    EXPECT_NE(alone.Wait(std::chrono::seconds(15)), 0) << "kept running";
    const std::string log = testing::ReadFile(m.dir() + "/alone.log");
    EXPECT_NE(log.find("belongs to a manager started with --peers " + m.List()), std::string::npos)
        << log;
    EXPECT_EQ(log.find("became the leader"), std::string::npos) << log;
  }
}

TEST(ManagersTest, BadPeerListsAreRefusedWithAClearMessage) {
  TempDir d;
  int a = FreePort(), b = FreePort(), c = FreePort();
  auto run = [&](const std::string& listen, const std::string& peers) {
    return testing::RunCommand(
        {TESSERA_BIN, "manager", "--listen", listen, "--peers", peers, "--data", d.File("m")});
  };
  auto r = run(Addr(a), Addr(b) + "," + Addr(c) + "," + Addr(c + 1));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("must include this manager"), std::string::npos) << r.err;
  r = run(Addr(a), Addr(a) + "," + Addr(b));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("1, 3 or 5"), std::string::npos) << r.err;
  r = run(Addr(a), Addr(a) + "," + Addr(b) + "," + Addr(b));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("twice"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tessera::orchestrator
