// engine_compare: the same workloads on Tessera, LMDB (default write path and MDB_WRITEMAP) and
// RocksDB, run one after another in this process on the same machine; prints ops/s for each and
// Tessera's ratio to each peer.
//
//   engine_compare [--num N] [--value-size B] [--big-num N] [--dir DIR] [--only w1,w2,...]
//
// Keys are 16 bytes. Fill workloads commit batches of 1000 without flushing (each engine's
// "nosync"); the sync workloads commit one put per transaction and flush each.
#include <dirent.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tessera/engine/db.h"

#ifdef TESSERA_HAVE_ROCKSDB
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "engine_compare: %s\n", what.c_str());
  std::exit(1);
}

std::string Key(uint64_t k) {
  char b[17];
  std::snprintf(b, sizeof b, "%016" PRIu64, k);
  return std::string(b, 16);
}

uint64_t DirBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  if (!S_ISDIR(st.st_mode)) return static_cast<uint64_t>(st.st_blocks) * 512;
  uint64_t total = 0;
  DIR* d = opendir(path.c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    total += DirBytes(path + "/" + n);
  }
  closedir(d);
  return total;
}

void RemoveAll(const std::string& path) {
  std::string cmd = "rm -rf '" + path + "'";
  if (std::system(cmd.c_str()) != 0) Die("cannot remove " + path);
}

// --group-commit-spin-us: Tessera's Options::group_commit_spin_us.
uint32_t g_group_commit_spin_us = 0;

// One engine behind a small common interface.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string Name() const = 0;
  virtual void Open(const std::string& dir) = 0;
  virtual void Close() = 0;
  // Applies puts (and deletes when value is null) in one transaction.
  virtual void Write(const std::vector<std::pair<std::string, const std::string*>>& ops,
                     bool sync) = 0;
  virtual bool Get(const std::string& key, std::string* out) = 0;
  virtual uint64_t ScanAll() = 0;  // returns entries seen
  virtual std::string Path() const = 0;
};

class TesseraEngine : public Engine {
 public:
  std::string Name() const override { return "tessera"; }
  void Open(const std::string& dir) override {
    path_ = dir + "/tessera.db";
    tessera::engine::Options o;
    o.group_commit_spin_us = g_group_commit_spin_us;
    auto db = tessera::engine::Db::Open(path_, o);
    if (!db.ok()) Die(db.status().ToString());
    db_ = std::move(db).value();
  }
  void Close() override { db_.reset(); }
  void Write(const std::vector<std::pair<std::string, const std::string*>>& ops,
             bool sync) override {
    auto w = db_->BeginWrite();
    if (!w.ok()) Die(w.status().ToString());
    for (const auto& [k, v] : ops) {
      tessera::Status s = v ? (*w)->Put(k, *v) : (*w)->Delete(k);
      if (!s.ok() && !s.IsNotFound()) Die(s.ToString());
    }
    tessera::Status s = (*w)->Commit(tessera::engine::WriteOptions{sync});
    if (!s.ok()) Die(s.ToString());
  }
  bool Get(const std::string& key, std::string* out) override { return db_->Get(key, out).ok(); }
  uint64_t ScanAll() override {
    auto r = std::move(db_->BeginRead()).value();
    auto c = std::move(r->NewCursor()).value();
    uint64_t n = 0, bytes = 0;
    tessera::Status s = c->First();
    for (; s.ok() && c->Valid(); s = c->Next()) {
      bytes += c->value().size();
      ++n;
    }
    if (!s.ok()) Die(s.ToString());
    return n + (bytes == UINT64_MAX);
  }
  std::string Path() const override { return path_; }

  // Group commit: concurrent writers through Db::Write.
  void WriteOne(const std::string& k, const std::string& v, bool sync) {
    tessera::engine::WriteBatch b;
    b.Put(k, v);
    tessera::Status s = db_->Write(b, tessera::engine::WriteOptions{sync});
    if (!s.ok()) Die(s.ToString());
  }

 private:
  std::string path_;
  std::unique_ptr<tessera::engine::Db> db_;
};

class LmdbEngine : public Engine {
 public:
  explicit LmdbEngine(bool writemap) : writemap_(writemap) {}
  std::string Name() const override { return writemap_ ? "lmdb-writemap" : "lmdb"; }
  void Open(const std::string& dir) override {
    path_ = dir + "/lmdb";
    ::mkdir(path_.c_str(), 0755);
    static std::atomic<uint64_t> generations{0};
    generation_ = ++generations;
    Check(mdb_env_create(&env_), "env_create");
    Check(mdb_env_set_mapsize(env_, size_t{32} << 30), "set_mapsize");
    Check(mdb_env_set_maxreaders(env_, 126), "set_maxreaders");
    unsigned flags = MDB_NOTLS | (writemap_ ? MDB_WRITEMAP : 0);
    Check(mdb_env_open(env_, path_.c_str(), flags, 0644), "env_open");
    MDB_txn* t;
    Check(mdb_txn_begin(env_, nullptr, 0, &t), "txn_begin");
    Check(mdb_dbi_open(t, nullptr, 0, &dbi_), "dbi_open");
    Check(mdb_txn_commit(t), "commit");
  }
  void Close() override {
    if (env_) mdb_env_close(env_);
    env_ = nullptr;
  }
  void Write(const std::vector<std::pair<std::string, const std::string*>>& ops,
             bool sync) override {
    // Per-transaction durability: MDB_NOSYNC toggled on the environment.
    mdb_env_set_flags(env_, MDB_NOSYNC, sync ? 0 : 1);
    MDB_txn* t;
    Check(mdb_txn_begin(env_, nullptr, 0, &t), "txn_begin");
    for (const auto& [k, v] : ops) {
      MDB_val key{k.size(), const_cast<char*>(k.data())};
      if (v) {
        MDB_val val{v->size(), const_cast<char*>(v->data())};
        Check(mdb_put(t, dbi_, &key, &val, 0), "put");
      } else {
        int rc = mdb_del(t, dbi_, &key, nullptr);
        if (rc != 0 && rc != MDB_NOTFOUND) Check(rc, "del");
      }
    }
    Check(mdb_txn_commit(t), "commit");
  }
  bool Get(const std::string& k, std::string* out) override {
    // One reusable read transaction per thread and environment generation (an address can be
    // reused by the next environment, a generation cannot).
    thread_local MDB_txn* t = nullptr;
    thread_local uint64_t owner = 0;
    if (owner != generation_) {
      t = nullptr;
      owner = generation_;
    }
    if (t == nullptr) {
      Check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t), "rd txn");
    } else {
      Check(mdb_txn_renew(t), "renew");
    }
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val;
    int rc = mdb_get(t, dbi_, &key, &val);
    if (rc == 0) out->assign(static_cast<const char*>(val.mv_data), val.mv_size);
    mdb_txn_reset(t);
    return rc == 0;
  }
  uint64_t ScanAll() override {
    MDB_txn* t;
    MDB_cursor* c;
    Check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t), "rd txn");
    Check(mdb_cursor_open(t, dbi_, &c), "cursor");
    MDB_val k, v;
    uint64_t n = 0, bytes = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      bytes += v.mv_size;
      ++n;
    }
    mdb_cursor_close(c);
    mdb_txn_abort(t);
    return n + (bytes == UINT64_MAX);
  }
  std::string Path() const override { return path_; }

 private:
  static void Check(int rc, const char* what) {
    if (rc != 0) Die(std::string("lmdb ") + what + ": " + mdb_strerror(rc));
  }
  bool writemap_;
  std::string path_;
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  uint64_t generation_ = 0;
};

#ifdef TESSERA_HAVE_ROCKSDB
class RocksEngine : public Engine {
 public:
  std::string Name() const override { return "rocksdb"; }
  void Open(const std::string& dir) override {
    path_ = dir + "/rocksdb";
    rocksdb::Options o;
    o.create_if_missing = true;
    o.IncreaseParallelism(2);
    rocksdb::BlockBasedTableOptions t;
    t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
    rocksdb::DB* db;
    rocksdb::Status s = rocksdb::DB::Open(o, path_, &db);
    if (!s.ok()) Die("rocksdb open: " + s.ToString());
    db_.reset(db);
  }
  void Close() override { db_.reset(); }
  void Write(const std::vector<std::pair<std::string, const std::string*>>& ops,
             bool sync) override {
    rocksdb::WriteBatch b;
    for (const auto& [k, v] : ops) {
      if (v) {
        b.Put(k, *v);
      } else {
        b.Delete(k);
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    rocksdb::Status s = db_->Write(wo, &b);
    if (!s.ok()) Die("rocksdb write: " + s.ToString());
  }
  bool Get(const std::string& k, std::string* out) override {
    return db_->Get(rocksdb::ReadOptions(), k, out).ok();
  }
  uint64_t ScanAll() override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    uint64_t n = 0, bytes = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      bytes += it->value().size();
      ++n;
    }
    return n + (bytes == UINT64_MAX);
  }
  std::string Path() const override { return path_; }

 private:
  std::string path_;
  std::unique_ptr<rocksdb::DB> db_;
};
#endif

struct Config {
  uint64_t num = 1000000;
  size_t value_size = 100;
  uint64_t big_num = 200000;
  size_t big_value = 4096;
  std::string dir;
  std::vector<std::string> only;
  std::vector<std::string> engines;  // empty: all
  uint64_t sync_ops = 2000;
  int rounds = 1;
};

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    out.push_back(s.substr(p, e - p));
    p = e + 1;
  }
  return out;
}

bool Wanted(const Config& c, const std::string& w) {
  return c.only.empty() || std::find(c.only.begin(), c.only.end(), w) != c.only.end();
}

// results[workload][engine][round] = ops/s (or MiB for size rows)
std::map<std::string, std::map<std::string, std::vector<double>>> results;
std::vector<std::string> order;

void Record(const std::string& workload, const std::string& engine, double v) {
  if (results.find(workload) == results.end()) order.push_back(workload);
  results[workload][engine].push_back(v);
  std::printf("  %-22s %-14s %14.0f\n", workload.c_str(), engine.c_str(), v);
  std::fflush(stdout);
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

void Fill(Engine& e, const std::vector<uint64_t>& keys, const std::string& value, size_t batch) {
  std::vector<std::pair<std::string, const std::string*>> ops;
  ops.reserve(batch);
  for (size_t i = 0; i < keys.size(); i += batch) {
    ops.clear();
    for (size_t j = i; j < std::min(keys.size(), i + batch); ++j)
      ops.emplace_back(Key(keys[j]), &value);
    e.Write(ops, false);
  }
}

double ReadRandom(Engine& e, uint64_t num, uint64_t ops, int threads, bool missing) {
  std::atomic<uint64_t> found{0};
  auto start = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(1234 + t);
      std::string v;
      uint64_t f = 0;
      for (uint64_t i = 0; i < ops / threads; ++i) {
        uint64_t k = rng() % num;
        if (e.Get(Key(missing ? k + num : k), &v)) ++f;
      }
      found += f;
    });
  }
  for (auto& t : ts) t.join();
  double secs = Seconds(start);
  uint64_t want = missing ? 0 : ops / threads * threads;
  if (found != want) {
    Die(e.Name() + ": read " + std::to_string(found) + " of " + std::to_string(want) + " keys");
  }
  return static_cast<double>(ops / threads * threads) / secs;
}

void RunEngine(Engine& e, const Config& c) {
  std::printf("== %s\n", e.Name().c_str());
  std::string dir = c.dir + "/" + e.Name();
  RemoveAll(dir);
  ::mkdir(dir.c_str(), 0755);
  std::string value(c.value_size, 'v');
  for (size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + i * 7 % 26);
  std::vector<uint64_t> seq(c.num);
  std::iota(seq.begin(), seq.end(), 0);
  std::vector<uint64_t> rnd = seq;
  std::shuffle(rnd.begin(), rnd.end(), std::mt19937_64(42));

  // fillseq in its own database.
  if (Wanted(c, "fillseq")) {
    std::string d = dir + "/seq";
    ::mkdir(d.c_str(), 0755);
    e.Open(d);
    auto t0 = Clock::now();
    Fill(e, seq, value, 1000);
    Record("fillseq", e.Name(), c.num / Seconds(t0));
    e.Close();
    RemoveAll(d);
  }
  std::string d = dir + "/main";
  ::mkdir(d.c_str(), 0755);
  e.Open(d);
  auto t0 = Clock::now();
  Fill(e, rnd, value, 1000);
  Record("fillrandom", e.Name(), c.num / Seconds(t0));
  if (Wanted(c, "overwrite")) {
    std::vector<uint64_t> ow = rnd;
    std::shuffle(ow.begin(), ow.end(), std::mt19937_64(7));
    t0 = Clock::now();
    Fill(e, ow, value, 1000);
    Record("overwrite", e.Name(), c.num / Seconds(t0));
  }
  if (Wanted(c, "readrandom")) {
    Record("readrandom", e.Name(), ReadRandom(e, c.num, c.num, 1, false));
    Record("readrandom-2t", e.Name(), ReadRandom(e, c.num, c.num, 2, false));
  }
  if (Wanted(c, "readseq")) {
    t0 = Clock::now();
    uint64_t n = 0;
    for (int i = 0; i < 3; ++i) n += e.ScanAll();
    if (n != 3 * c.num) Die(e.Name() + ": readseq saw " + std::to_string(n));
    Record("readseq", e.Name(), n / Seconds(t0));
  }
  if (Wanted(c, "readmissing")) {
    Record("readmissing", e.Name(), ReadRandom(e, c.num, c.num, 1, true));
  }
  if (Wanted(c, "mixed")) {
    // 90% random reads, 10% single-put write transactions (not flushed).
    std::mt19937_64 rng(99);
    uint64_t ops = c.num / 2;
    std::string v;
    std::vector<std::pair<std::string, const std::string*>> one(1);
    t0 = Clock::now();
    for (uint64_t i = 0; i < ops; ++i) {
      uint64_t k = rng() % c.num;
      if (i % 10 == 9) {
        one[0] = {Key(k), &value};
        e.Write(one, false);
      } else if (!e.Get(Key(k), &v)) {
        Die(e.Name() + ": mixed read missed");
      }
    }
    Record("mixed-90r10w", e.Name(), ops / Seconds(t0));
  }
  if (Wanted(c, "sync")) {
    std::vector<std::pair<std::string, const std::string*>> one(1);
    t0 = Clock::now();
    for (uint64_t i = 0; i < c.sync_ops; ++i) {
      one[0] = {Key(i * 7919 % c.num), &value};
      e.Write(one, true);
    }
    Record("sync-1writer", e.Name(), c.sync_ops / Seconds(t0));
    std::atomic<uint64_t> next{0};
    t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < 16; ++t) {
      ts.emplace_back([&] {
        std::vector<std::pair<std::string, const std::string*>> op(1);
        for (uint64_t i; (i = next++) < c.sync_ops * 2;) {
          if (auto* te = dynamic_cast<TesseraEngine*>(&e)) {
            te->WriteOne(Key(i * 104729 % c.num), value, true);
          } else {
            op[0] = {Key(i * 104729 % c.num), &value};
            e.Write(op, true);
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    Record("sync-16writers", e.Name(), c.sync_ops * 2 / Seconds(t0));
  }
  if (Wanted(c, "deleterandom")) {
    std::vector<std::pair<std::string, const std::string*>> ops;
    std::vector<uint64_t> del = rnd;
    std::shuffle(del.begin(), del.end(), std::mt19937_64(5));
    del.resize(c.num / 2);
    t0 = Clock::now();
    for (size_t i = 0; i < del.size(); i += 1000) {
      ops.clear();
      for (size_t j = i; j < std::min(del.size(), i + 1000); ++j)
        ops.emplace_back(Key(del[j]), nullptr);
      e.Write(ops, false);
    }
    Record("deleterandom", e.Name(), del.size() / Seconds(t0));
  }
  e.Close();
  Record("size-MiB(after-fill+ops)", e.Name(), DirBytes(d) / 1048576.0);
  RemoveAll(d);

  if (Wanted(c, "big")) {
    std::string bd = dir + "/big";
    ::mkdir(bd.c_str(), 0755);
    e.Open(bd);
    std::string big(c.big_value, 'B');
    std::vector<uint64_t> keys(c.big_num);
    std::iota(keys.begin(), keys.end(), 0);
    std::shuffle(keys.begin(), keys.end(), std::mt19937_64(3));
    t0 = Clock::now();
    Fill(e, keys, big, 100);
    Record("fillrandom-4KiB", e.Name(), c.big_num / Seconds(t0));
    Record("readrandom-4KiB", e.Name(), ReadRandom(e, c.big_num, c.big_num, 1, false));
    e.Close();
    Record("size-MiB-4KiB", e.Name(), DirBytes(bd) / 1048576.0);
    RemoveAll(bd);
  }
  RemoveAll(dir);
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  char tmpl[] = "/tmp/engine_compare-XXXXXX";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--num") {
      c.num = std::stoull(next());
    } else if (a == "--value-size") {
      c.value_size = std::stoul(next());
    } else if (a == "--big-num") {
      c.big_num = std::stoull(next());
    } else if (a == "--sync-ops") {
      c.sync_ops = std::stoull(next());
    } else if (a == "--dir") {
      c.dir = next();
    } else if (a == "--only") {
      c.only = SplitCommas(next());
    } else if (a == "--engines") {
      c.engines = SplitCommas(next());
    } else if (a == "--rounds") {
      const std::string v = next();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 1 || n > 100) {
        Die("--rounds takes a count from 1 to 100, not '" + v + "'");
      }
      c.rounds = static_cast<int>(n);
    } else if (a == "--group-commit-spin-us") {
      const unsigned long us = std::stoul(next());
      if (us > 1000000) Die("--group-commit-spin-us is at most 1000000");
      g_group_commit_spin_us = static_cast<uint32_t>(us);
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: engine_compare [--num N] [--value-size B] [--big-num N] [--sync-ops N]\n"
          "                      [--dir DIR] [--only fillseq,overwrite,readrandom,readseq,\n"
          "                       readmissing,mixed,sync,deleterandom,big]\n"
          "                      [--engines tessera,lmdb,lmdb-writemap,rocksdb]\n"
          "                      [--group-commit-spin-us N] [--rounds N]\n"
          "fillrandom always runs (the later workloads read its keys); --engines runs a\n"
          "subset, and tessera must be among them (every ratio is against it).\n"
          "--group-commit-spin-us sets Tessera's Options::group_commit_spin_us (default 0).\n"
          "--rounds N runs every engine N times, the engines' order rotating each round,\n"
          "and prints medians: of each engine's figures, and of the ratios of figures\n"
          "taken in the same round (with their range). On a machine whose timings vary\n"
          "by 10-20%% from run to run, one round decides little; the default is 1.\n");
      return 0;
    } else {
      Die("unknown argument " + a + " (see --help)");
    }
  }
  if (c.dir.empty()) {
    if (!mkdtemp(tmpl)) Die("mkdtemp failed");
    c.dir = tmpl;
  }
  if (::mkdir(c.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Die("cannot create --dir " + c.dir + ": " + std::strerror(errno));
  }
  std::printf("engine_compare: %" PRIu64 " keys of 16 bytes, %zu-byte values, dir %s\n", c.num,
              c.value_size, c.dir.c_str());
  std::vector<std::unique_ptr<Engine>> engines;
  engines.push_back(std::make_unique<TesseraEngine>());
  engines.push_back(std::make_unique<LmdbEngine>(false));
  engines.push_back(std::make_unique<LmdbEngine>(true));
#ifdef TESSERA_HAVE_ROCKSDB
  engines.push_back(std::make_unique<RocksEngine>());
#endif
  if (!c.engines.empty()) {
    if (std::find(c.engines.begin(), c.engines.end(), "tessera") == c.engines.end()) {
      Die("--engines must include tessera: every ratio is against it");
    }
    for (const auto& want : c.engines) {
      if (std::none_of(engines.begin(), engines.end(),
                       [&](const auto& e) { return e->Name() == want; })) {
        Die("unknown engine '" + want + "' in --engines (this build has tessera, lmdb, " +
            "lmdb-writemap" + std::string(engines.size() > 3 ? ", rocksdb)" : ")"));
      }
    }
    std::erase_if(engines, [&](const auto& e) {
      return std::find(c.engines.begin(), c.engines.end(), e->Name()) == c.engines.end();
    });
  }
  for (int r = 0; r < c.rounds; ++r) {
    if (c.rounds > 1) std::printf("-- round %d of %d\n", r + 1, c.rounds);
    // Rotated so that no engine always runs first (on a fresh page cache) or last.
    for (size_t i = 0; i < engines.size(); ++i) RunEngine(*engines[(i + r) % engines.size()], c);
  }
  RemoveAll(c.dir);

  if (c.rounds > 1) {
    std::printf(
        "\nmedians of %d rounds; each ratio is the median of the %d same-round ratios "
        "[lowest-highest]\n",
        c.rounds, c.rounds);
  }
  std::printf("\n%-26s", "workload (ops/s; size MiB)");
  for (auto& e : engines) std::printf(" %14s", e->Name().c_str());
  for (size_t i = 1; i < engines.size(); ++i)
    std::printf(" %16s", ("vs " + engines[i]->Name()).c_str());
  std::printf("\n");
  for (const auto& w : order) {
    std::printf("%-26s", w.c_str());
    auto& row = results[w];
    for (auto& e : engines) std::printf(" %14.0f", Median(row[e->Name()]));
    const std::vector<double>& mine = row["tessera"];
    bool size = w.rfind("size", 0) == 0;
    std::string spans;
    for (size_t i = 1; i < engines.size(); ++i) {
      const std::vector<double>& peer = row[engines[i]->Name()];
      std::vector<double> ratios;
      for (size_t r = 0; r < std::min(mine.size(), peer.size()); ++r) {
        // For sizes, a ratio above 1 means Tessera is smaller.
        ratios.push_back(size ? (mine[r] > 0 ? peer[r] / mine[r] : 0)
                              : (peer[r] > 0 ? mine[r] / peer[r] : 0));
      }
      std::printf(" %15.2fx", Median(ratios));
      if (ratios.size() > 1) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " [%.2f-%.2f]",
                      *std::min_element(ratios.begin(), ratios.end()),
                      *std::max_element(ratios.begin(), ratios.end()));
        spans += buf;
      }
    }
    std::printf("%s\n", spans.c_str());
  }
  std::printf(
      "(ratios: Tessera ops/s over the peer's; for size rows, the peer's size over "
      "Tessera's, so > 1 means Tessera is smaller)\n");
  return 0;
}
