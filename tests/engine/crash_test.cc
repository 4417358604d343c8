// Crash safety: a child process commits batches and is SIGKILLed at random points; and the
// simulated power cut of vmem, where writes not yet flushed are lost (or partly kept). Seeded;
// replay with TESSERA_SEED=<seed>.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

uint64_t Seed(const char* what) {
  const char* s = std::getenv("TESSERA_SEED");
  uint64_t seed = s ? std::strtoull(s, nullptr, 10) : std::random_device{}();
  std::printf("%s seed: %llu (replay with TESSERA_SEED=%llu)\n", what,
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  return seed;
}

std::string BatchKey(int batch, int j) {
  return "b" + std::to_string(batch % 50) + "-" + std::to_string(j);
}

// Child: commits batch after batch; each batch rewrites 40 keys with the batch number; after each
// commit returns, writes the batch number to `fd` (the acknowledgement).
// With `shrink`, every other batch first writes and deletes a few hundred pages of filler, then
// shrinks the file (a kill may land in any of Shrink's steps).
[[noreturn]] void Child(const std::string& path, int fd, bool sync, int start, bool shrink) {
  auto db = Db::Open(path);
  if (!db.ok()) _exit(3);
  for (int batch = start;; ++batch) {
    if (shrink && batch % 2 == 0) {
      WriteBatch fill, del;
      for (int j = 0; j < 3000; ++j) {
        fill.Put("filler" + std::to_string(j), std::string(300, 'f'));
        del.Delete("filler" + std::to_string(j));
      }
      if (!(*db)->Write(fill, WriteOptions{false}).ok()) _exit(6);
      if (!(*db)->Sync().ok()) _exit(7);
      if (!(*db)->Write(del, WriteOptions{false}).ok()) _exit(8);
      if (!(*db)->Shrink().ok()) _exit(9);
    }
    WriteBatch b;
    for (int j = 0; j < 40; ++j) {
      b.Put(BatchKey(batch, j), std::to_string(batch) + std::string(j * 13 % 300, 'x'));
    }
    b.Put("last", std::to_string(batch));
    if (!(*db)->Write(b, WriteOptions{sync}).ok()) _exit(4);
    if (write(fd, &batch, sizeof batch) != sizeof batch) _exit(5);
  }
}

// Every batch key holds a value from a single batch: the state is "all batches up to N".
void CheckState(Db& db, int acked, int* last_out) {
  std::string last;
  ASSERT_TRUE(db.Get("last", &last).ok());
  int n = std::stoi(last);
  ASSERT_GE(n, acked) << "an acknowledged batch was lost";
  ASSERT_LE(n, acked + 1) << "a batch that never started is present";
  for (int b = std::max(0, n - 49); b <= n; ++b) {
    for (int j = 0; j < 40; ++j) {
      std::string v;
      ASSERT_TRUE(db.Get(BatchKey(b, j), &v).ok()) << "batch " << b << " key " << j;
      ASSERT_EQ(v, std::to_string(b) + std::string(j * 13 % 300, 'x')) << "half-applied batch";
    }
  }
  *last_out = n;
}

void KillRounds(bool sync, bool shrink = false) {
  uint64_t seed = Seed(shrink ? "sigkill shrink" : sync ? "sigkill sync" : "sigkill nosync");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  std::string path = dir.File("db");
  int next = 0;
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(p[0]);
      Child(path, p[1], sync, next, shrink);
    }
    close(p[1]);
    auto delay = std::chrono::microseconds(2000 + rng() % 60000);
    std::this_thread::sleep_for(delay);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    int acked = next - 1, b;
    while (read(p[0], &b, sizeof b) == sizeof b) acked = b;
    close(p[0]);
    auto db = Db::Open(path);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    if (acked < 0) {
      std::string v;
      if (!(*db)->Get("last", &v).ok()) continue;  // killed before the first commit
    }
    int last = 0;
    CheckState(**db, acked, &last);
    auto rep = (*db)->Verify();
    ASSERT_TRUE(rep.ok) << rep.ToString();
    next = last + 1;
  }
}

TEST(EngineCrashTest, SigkillDuringSyncCommits) { KillRounds(true); }
TEST(EngineCrashTest, SigkillDuringNosyncCommits) { KillRounds(false); }
TEST(EngineCrashTest, SigkillDuringShrink) { KillRounds(false, /*shrink=*/true); }

// Opens the file after a crash: it must open and verify clean; *got = its main tree.
void ReopenVerifyAndRead(const std::string& path, std::map<std::string, std::string>* got) {
  auto re = Db::Open(path);
  ASSERT_TRUE(re.ok()) << re.status().ToString();
  auto rep = (*re)->Verify();
  ASSERT_TRUE(rep.ok) << rep.ToString();
  auto r = std::move((*re)->BeginRead()).value();
  auto cur = std::move(r->NewCursor()).value();
  for (Status s = cur->First(); cur->Valid(); s = cur->Next()) {
    ASSERT_TRUE(s.ok()) << s.ToString();
    (*got)[std::string(cur->key())] = std::string(cur->value());
  }
}

// Power cut: commits since the last flush may vanish, but the database opens at a state equal to
// some commit at or after the last synced one, never a mixture, and verifies clean.
TEST(EngineCrashTest, SimulatedPowerCutKeepsACommitPrefix) {
  uint64_t seed = Seed("power cut");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  std::string path = dir.File("db");
  std::vector<std::map<std::string, std::string>> states;  // state after each commit
  std::map<std::string, std::string> model;
  for (int round = 0; round < 25; ++round) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    Options o;
    o.simulate_power_cut = true;
    auto db = std::move(Db::Open(path, o)).value();
    states.assign(1, model);
    size_t last_synced = 0;
    int commits = 1 + static_cast<int>(rng() % 12);
    for (int c = 0; c < commits; ++c) {
      WriteBatch b;
      int n = 1 + static_cast<int>(rng() % 300);
      for (int i = 0; i < n; ++i) {
        std::string k = "k" + std::to_string(rng() % 3000);
        if (rng() % 4 == 0) {
          b.Delete(k);
          model.erase(k);
        } else {
          std::string v(rng() % 200 + (rng() % 20 == 0 ? 6000 : 0), static_cast<char>('a' + c));
          b.Put(k, v);
          model[k] = v;
        }
      }
      bool sync = rng() % 3 == 0;
      ASSERT_TRUE(db->Write(b, WriteOptions{sync}).ok());
      states.push_back(model);
      if (sync) last_synced = states.size() - 1;
    }
    if (rng() % 3 == 0) {
      // Shrink flushes: everything so far is durable, and the commits after it may be lost.
      ASSERT_TRUE(db->Shrink().ok());
      last_synced = states.size() - 1;
      for (int c = static_cast<int>(rng() % 3); c > 0; --c) {
        WriteBatch b;
        for (int i = 0; i < 50; ++i) {
          std::string k = "k" + std::to_string(rng() % 3000);
          b.Delete(k);
          model.erase(k);
        }
        ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
        states.push_back(model);
      }
    }
    double keep = (rng() % 3 == 0) ? 0.0 : static_cast<double>(rng() % 100) / 100.0;
    ASSERT_TRUE(db->SimulatePowerCut(rng(), keep).ok());
    db.reset();
    // Read back the whole state and find which commit it equals.
    std::map<std::string, std::string> got;
    ASSERT_NO_FATAL_FAILURE(ReopenVerifyAndRead(path, &got));
    size_t match = SIZE_MAX;
    for (size_t i = states.size(); i-- > 0;) {
      if (states[i] == got) {
        match = i;
        break;
      }
    }
    ASSERT_NE(match, SIZE_MAX) << "state after the power cut equals no commit";
    ASSERT_GE(match, last_synced) << "a synced commit was lost (keep " << keep << ")";
    model = got;
  }
}

// A power cut while Shrink runs (from another thread, at a random instant: before, between or
// within its commits and flushes, or during the cut): the database opens, verifies clean, and
// holds exactly its contents (Shrink changes no key; everything before it was synced).
TEST(EngineCrashTest, PowerCutDuringShrinkLosesNothing) {
  uint64_t seed = Seed("power cut during shrink");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  int finished = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    std::string path = dir.File("db" + std::to_string(round));
    Options o;
    o.simulate_power_cut = true;
    o.shrink_on_close = false;
    o.page_size = 4096u << (rng() % 2);
    std::map<std::string, std::string> model;
    auto db = std::move(Db::Open(path, o)).value();
    WriteBatch fill;
    for (int i = 0; i < 4000; ++i) {
      std::string k = "k" + std::to_string(i);
      std::string v(50 + rng() % 150 + (rng() % 15 == 0 ? o.page_size * (1 + rng() % 3) : 0),
                    static_cast<char>('a' + i % 26));
      fill.Put(k, v);
      if (rng() % 8 == 0) model[k] = v;
    }
    ASSERT_TRUE(db->Write(fill).ok());
    WriteBatch del;
    for (int i = 0; i < 4000; ++i) {
      if (!model.count("k" + std::to_string(i))) del.Delete("k" + std::to_string(i));
    }
    ASSERT_TRUE(db->Write(del).ok());  // synced
    std::atomic<bool> go{false};
    Status shrink;
    std::thread th([&] {
      while (!go) {
      }
      shrink = db->Shrink();
    });
    // Shrink of this much data takes a few hundred microseconds on a simulated disk.
    const auto delay = std::chrono::microseconds(rng() % 800);
    go = true;
    for (auto t0 = std::chrono::steady_clock::now();
         std::chrono::steady_clock::now() - t0 < delay;) {
    }
    const double keep = rng() % 3 == 0 ? 0.0 : static_cast<double>(rng() % 100) / 100.0;
    ASSERT_TRUE(db->SimulatePowerCut(rng(), keep).ok());
    th.join();
    if (shrink.ok()) ++finished;
    db.reset();
    std::map<std::string, std::string> got;
    ASSERT_NO_FATAL_FAILURE(ReopenVerifyAndRead(path, &got));
    ASSERT_TRUE(got == model) << "contents changed (" << got.size() << " keys, expected "
                              << model.size() << ")";
  }
  std::printf("%d of 20 shrinks finished before the power cut\n", finished);
}

}  // namespace
}  // namespace tessera::engine
