#include "parity_holder.h"

#include <isa-l/erasure_code.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "protector.h"
#include "tessera/erasure/codec.h"

namespace tessera::orchestrator {
namespace {

using gen::ErrorCode;

void PutBE(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
std::string SlotKey(int slot) {
  std::string k;
  PutBE(&k, static_cast<uint32_t>(slot), 4);
  return k;
}
std::string SlotSeqKey(int slot, uint64_t seq) {
  std::string k = SlotKey(slot);
  PutBE(&k, seq, 8);
  return k;
}
// Identifies one attempt at an advance: staged deltas, the prepared record and the commit must
// all name the same one.
std::string StageId(int64_t epoch, int64_t from_gen, int64_t to_gen) {
  return std::to_string(epoch) + ":" + std::to_string(from_gen) + ":" + std::to_string(to_gen);
}

std::string PageKey(uint64_t pgno) {
  std::string k;
  PutBE(&k, pgno, 8);
  return k;
}
MDB_val Val(const std::string& s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string Str(const MDB_val& v) {
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

// Record layout: gen, covered_seq, last_page, epoch (8 bytes each, big-endian), then the
// descriptor bytes.
constexpr size_t kRecordHeader = 32;

std::string EncodeRecord(const gen::GenRecord& r) {
  std::string s;
  PutBE(&s, static_cast<uint64_t>(r.gen), 8);
  PutBE(&s, static_cast<uint64_t>(r.covered_seq), 8);
  PutBE(&s, static_cast<uint64_t>(r.last_page), 8);
  PutBE(&s, static_cast<uint64_t>(r.epoch), 8);
  s += r.descriptor;
  return s;
}

}  // namespace

// A LMDB write or read transaction that aborts unless committed.
class HolderTxn {
 public:
  HolderTxn(MDB_env* env, bool write, const std::string& node) : node_(node) {
    int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &t_);
    if (rc != 0) Fail(rc, "begin");
  }
  ~HolderTxn() {
    if (t_) mdb_txn_abort(t_);
  }
  MDB_txn* get() { return t_; }
  void Commit() {
    int rc = mdb_txn_commit(t_);
    t_ = nullptr;
    if (rc != 0) Fail(rc, "commit");
  }
  bool Get(MDB_dbi dbi, const std::string& key, MDB_val* v) {
    MDB_val k = Val(key);
    int rc = mdb_get(t_, dbi, &k, v);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) Fail(rc, "get");
    return true;
  }
  void Put(MDB_dbi dbi, const std::string& key, const std::string& value) {
    MDB_val k = Val(key), v = Val(value);
    int rc = mdb_put(t_, dbi, &k, &v, 0);
    if (rc != 0) Fail(rc, "put");
  }
  [[noreturn]] void Fail(int rc, const char* what) const {
    Throw(rc == MDB_MAP_FULL ? ErrorCode::UNAVAILABLE : ErrorCode::INTERNAL,
          std::string("parity holder storage ") + what + ": " + mdb_strerror(rc), node_);
  }

 private:
  MDB_txn* t_ = nullptr;
  std::string node_;
};

namespace {

gen::GenRecord LoadRecord(HolderTxn& t, MDB_dbi records, int slot, const std::string& node) {
  gen::GenRecord r;
  MDB_val v;
  if (t.Get(records, SlotKey(slot), &v)) {
    if (v.mv_size < kRecordHeader) {
      Throw(ErrorCode::INTERNAL,
            "parity holder record of slot " + std::to_string(slot) + " is truncated", node);
    }
    const char* p = static_cast<const char*>(v.mv_data);
    r.gen = static_cast<int64_t>(GetBE(p, 8));
    r.covered_seq = static_cast<int64_t>(GetBE(p + 8, 8));
    r.last_page = static_cast<int64_t>(GetBE(p + 16, 8));
    r.epoch = static_cast<int64_t>(GetBE(p + 24, 8));
    r.descriptor.assign(p + kRecordHeader, v.mv_size - kRecordHeader);
  }
  return r;
}

// Last tail seq of `slot` (0 when none).
int64_t TailLast(HolderTxn& t, MDB_dbi tail, int slot) {
  MDB_cursor* c;
  if (mdb_cursor_open(t.get(), tail, &c) != 0) return 0;
  std::string next = SlotKey(slot + 1);
  MDB_val k = Val(next), v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  rc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_PREV) : mdb_cursor_get(c, &k, &v, MDB_LAST);
  int64_t last = 0;
  if (rc == 0 && k.mv_size == 12 &&
      GetBE(static_cast<const char*>(k.mv_data), 4) == static_cast<uint64_t>(slot)) {
    last = static_cast<int64_t>(GetBE(static_cast<const char*>(k.mv_data) + 4, 8));
  }
  mdb_cursor_close(c);
  return last;
}

// Deletes the keys of `dbi` in [from, to) (byte order).
void DeleteRange(HolderTxn& t, MDB_dbi dbi, const std::string& from, const std::string& to) {
  MDB_cursor* c;
  if (int rc = mdb_cursor_open(t.get(), dbi, &c); rc != 0) t.Fail(rc, "cursor");
  MDB_val k = Val(from), v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && Str(k) < to) {
    if (int d = mdb_cursor_del(c, 0); d != 0) {
      mdb_cursor_close(c);
      t.Fail(d, "delete");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
    if (rc == 0) continue;  // the cursor now sits on the next key
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
}

}  // namespace

Result<std::unique_ptr<ParityHolder>> ParityHolder::Open(const std::string& dir,
                                                         const std::string& scheme, int k, int m,
                                                         int row, const std::string& node) {
  if (k < 1 || m < 1 || row < 0 || row >= m) {
    return Status::InvalidArgument("parity holder row " + std::to_string(row) + " of a " +
                                   std::to_string(k) + "+" + std::to_string(m) + " code");
  }
  std::unique_ptr<ParityHolder> h(new ParityHolder);
  h->node_ = node;
  h->scheme_ = scheme;
  h->k_ = k;
  h->m_ = m;
  h->row_ = row;
  if (scheme == "xor") {
    if (m != 1) return Status::InvalidArgument("xor protection has exactly one parity holder");
    h->coeff_.assign(k, 1);
  } else if (scheme == "rs") {
    TESSERA_ASSIGN_OR_RETURN(auto codec, erasure::Codec::Create(erasure::Scheme::kRs, k, m));
    auto mat = codec->matrix();
    for (int i = 0; i < k; ++i) {
      h->coeff_.push_back(
          mat[(static_cast<size_t>(k) + static_cast<size_t>(row)) * static_cast<size_t>(k) +
              static_cast<size_t>(i)]);
    }
  } else {
    return Status::InvalidArgument("unknown protection scheme '" + scheme + "'");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create " + dir + ": " + ec.message());
  std::string path = dir + "/parity.mdb";
  auto lmdb = [&](int rc, const std::string& what) {
    return Status::IoError("parity holder " + path + ": " + what + ": " + mdb_strerror(rc));
  };
  if (int rc = mdb_env_create(&h->env_); rc != 0) return lmdb(rc, "env");
  mdb_env_set_maxdbs(h->env_, 8);
  mdb_env_set_mapsize(h->env_, size_t{64} << 30);
  // Tails are written without fsync unless the write asked for it: they must survive the loss
  // of the *worker*, and a holder process that crashes keeps what it wrote in the page cache.
  // Through a writable map, such a commit is memory writes only (no pwrite per page), which
  // halves the cost a protected put adds; explicit syncs (sync writes, generations) msync.
  if (int rc = mdb_env_open(h->env_, path.c_str(), MDB_NOSUBDIR | MDB_NOSYNC | MDB_WRITEMAP, 0644);
      rc != 0) {
    return lmdb(rc, "open");
  }
  MDB_txn* t;
  if (int rc = mdb_txn_begin(h->env_, nullptr, 0, &t); rc != 0) return lmdb(rc, "begin");
  int rc = 0;
  for (auto [name, dbi] : {std::pair{"config", &h->config_},
                           {"parity", &h->parity_},
                           {"records", &h->records_},
                           {"tail", &h->tail_},
                           {"stage", &h->stage_}}) {
    if (rc == 0) rc = mdb_dbi_open(t, name, MDB_CREATE, dbi);
  }
  std::string shape = scheme + ":" + std::to_string(k) + "+" + std::to_string(m) + "/row" +
                      std::to_string(row) + "/page" + std::to_string(kProtectionPageSize);
  std::string key = "shape";
  MDB_val kv = Val(key), v;
  if (rc == 0) {
    int g = mdb_get(t, h->config_, &kv, &v);
    if (g == 0 && Str(v) != shape) {
      mdb_txn_abort(t);
      return Status::InvalidArgument("parity holder " + path + " holds parity of " + Str(v) +
                                     ", not " + shape);
    }
    if (g == MDB_NOTFOUND) {
      MDB_val sv = Val(shape);
      rc = mdb_put(t, h->config_, &kv, &sv, 0);
    } else if (g != 0) {
      rc = g;
    }
  }
  if (rc == 0)
    rc = mdb_txn_commit(t);
  else
    mdb_txn_abort(t);
  if (rc != 0) return lmdb(rc, "init");
  mdb_env_sync(h->env_, 1);
  spdlog::info("{}: parity holder row {} of {} (data in {})", node, row, shape, path);
  return h;
}

ParityHolder::~ParityHolder() {
  if (env_) {
    mdb_env_sync(env_, 1);
    mdb_env_close(env_);
  }
}

void ParityHolder::CheckSlot(int slot) const {
  if (slot < 0 || slot >= k_) {
    Throw(ErrorCode::INVALID_ARGUMENT,
          "slot " + std::to_string(slot) + " out of range 0.." + std::to_string(k_ - 1), node_);
  }
}

uint8_t ParityHolder::Coefficient(int slot) const { return coeff_[static_cast<size_t>(slot)]; }

namespace {
// Refuses an epoch below the recorded one; returns true when the record must be raised.
bool CheckEpoch(const gen::GenRecord& r, int slot, int64_t epoch, const std::string& node) {
  if (epoch < r.epoch) {
    Throw(ErrorCode::STALE_EPOCH,
          "slot " + std::to_string(slot) + " epoch " + std::to_string(epoch) +
              " is stale at this parity holder (it has seen " + std::to_string(r.epoch) + ")",
          node);
  }
  return epoch > r.epoch;
}
}  // namespace

namespace {
// Test failpoint TESSERA_FAILPOINT=fail_append_value:V: an append carrying a put of value V
// waits 500 ms (long enough for a test to read meanwhile), then fails without storing anything.
const std::string& FailAppendValue() {
  static const std::string v = FailpointArg("fail_append_value");
  return v;
}
// Test failpoint TESSERA_FAILPOINT=lose_answer_value:V: an append carrying a put of value V is
// stored, and then its answer is lost (the caller gets a transport-level error, not a refusal).
const std::string& LoseAnswerValue() {
  static const std::string v = FailpointArg("lose_answer_value");
  return v;
}
// Test failpoint TESSERA_FAILPOINT=slow_answer_value:V: an append carrying a put of value V is
// stored, and answered a second later (with the generation it read before that second).
const std::string& SlowAnswerValue() {
  static const std::string v = FailpointArg("slow_answer_value");
  return v;
}
bool CarriesValue(const std::vector<gen::TailEntry>& entries, const std::string& value) {
  for (const auto& e : entries) {
    auto ops = DecodeOps(e.batch);
    if (!ops.ok()) continue;
    for (const auto& op : *ops) {
      if (op.put && op.value == value) return true;
    }
  }
  return false;
}
}  // namespace

int64_t ParityHolder::AppendTail(int slot, int64_t epoch,
                                 const std::vector<gen::TailEntry>& entries, bool sync) {
  CheckSlot(slot);
  if (!FailAppendValue().empty() && CarriesValue(entries, FailAppendValue())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    Throw(ErrorCode::UNAVAILABLE, "failpoint fail_append_value", node_);
  }
  HolderTxn t(env_, true, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  if (CheckEpoch(r, slot, epoch, node_)) {
    r.epoch = epoch;
    t.Put(records_, SlotKey(slot), EncodeRecord(r));
  }
  for (const auto& e : entries) {
    if (e.seq <= r.covered_seq) continue;  // already inside the protected generation
    t.Put(tail_, SlotSeqKey(slot, static_cast<uint64_t>(e.seq)), e.batch);
  }
  t.Commit();
  if (sync) mdb_env_sync(env_, 1);
  if (!LoseAnswerValue().empty() && CarriesValue(entries, LoseAnswerValue())) {
    throw std::runtime_error("failpoint lose_answer_value: stored, answer lost");
  }
  if (!SlowAnswerValue().empty() && CarriesValue(entries, SlowAnswerValue())) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return r.gen;
}

void ParityHolder::StageDelta(int slot, int64_t epoch, int64_t from_gen, int64_t to_gen,
                              const std::vector<gen::PageDelta>& pages) {
  CheckSlot(slot);
  HolderTxn t(env_, true, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  CheckEpoch(r, slot, epoch, node_);
  // Staged deltas of an abandoned attempt (another target generation) are dropped first.
  std::string gkey = "stage:" + std::to_string(slot);
  MDB_val v;
  // Staged deltas belong to one (from, to) pair: an attempt from another base left pages that
  // must not be applied with these.
  std::string want = StageId(epoch, from_gen, to_gen);
  if (!t.Get(config_, gkey, &v) || Str(v) != want) {
    DeleteRange(t, stage_, SlotKey(slot), SlotKey(slot + 1));
    t.Put(config_, gkey, want);
  }
  for (const auto& p : pages) {
    if (p.bytes.size() != kProtectionPageSize || p.pgno < 2) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "delta of page " + std::to_string(p.pgno) + " has " + std::to_string(p.bytes.size()) +
                " bytes (pages are " + std::to_string(kProtectionPageSize) + ", from page 2)",
            node_);
    }
    t.Put(stage_, SlotSeqKey(slot, static_cast<uint64_t>(p.pgno)), p.bytes);
  }
  t.Commit();
}

gen::GenRecord ParityHolder::CommitGeneration(int slot, int64_t epoch, int64_t from_gen,
                                              int64_t to_gen, const std::string& descriptor,
                                              int64_t covered_seq, int64_t last_page,
                                              bool prepare_only) {
  CheckSlot(slot);
  HolderTxn t(env_, true, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  CheckEpoch(r, slot, epoch, node_);
  if (r.gen == to_gen && r.covered_seq == covered_seq) {  // a retried commit that landed
    r.tail_last = TailLast(t, tail_, slot);
    return r;
  }
  if (r.gen != from_gen) {
    Throw(ErrorCode::GENERATION_MISMATCH,
          "slot " + std::to_string(slot) + ": this holder records generation " +
              std::to_string(r.gen) + ", not " + std::to_string(from_gen),
          node_);
  }
  const std::string id = StageId(epoch, from_gen, to_gen);
  if (prepare_only) {
    // Phase 1: remember what to apply; the staged deltas stay where they are. Only deltas
    // staged by this very attempt count.
    MDB_val sg;
    if (!t.Get(config_, "stage:" + std::to_string(slot), &sg) || Str(sg) != id) {
      Throw(ErrorCode::GENERATION_MISMATCH,
            "slot " + std::to_string(slot) + ": no deltas staged for " + id, node_);
    }
    std::string prep;
    PutBE(&prep, static_cast<uint64_t>(from_gen), 8);
    PutBE(&prep, static_cast<uint64_t>(to_gen), 8);
    PutBE(&prep, static_cast<uint64_t>(covered_seq), 8);
    PutBE(&prep, static_cast<uint64_t>(last_page), 8);
    PutBE(&prep, id.size(), 4);
    prep += id;
    prep += descriptor;
    t.Put(config_, "prep:" + std::to_string(slot), prep);
    r.epoch = std::max(r.epoch, epoch);
    t.Put(records_, SlotKey(slot), EncodeRecord(r));
    r.tail_last = TailLast(t, tail_, slot);
    t.Commit();
    if (int rc = mdb_env_sync(env_, 1); rc != 0) {
      Throw(ErrorCode::INTERNAL, std::string("parity holder flush: ") + mdb_strerror(rc), node_);
    }
    return r;
  }
  r.epoch = std::max(r.epoch, epoch);
  return Apply(t, slot, r, id, from_gen, to_gen, descriptor, covered_seq, last_page);
}

gen::GenRecord ParityHolder::CommitPrepared(int slot, int64_t to_gen) {
  CheckSlot(slot);
  HolderTxn t(env_, true, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  if (r.gen == to_gen) {
    r.tail_last = TailLast(t, tail_, slot);
    return r;
  }
  MDB_val v;
  if (!t.Get(config_, "prep:" + std::to_string(slot), &v) || v.mv_size < 36) {
    Throw(ErrorCode::GENERATION_MISMATCH,
          "slot " + std::to_string(slot) + ": no generation is prepared here", node_);
  }
  const char* p = static_cast<const char*>(v.mv_data);
  int64_t from = static_cast<int64_t>(GetBE(p, 8)), to = static_cast<int64_t>(GetBE(p + 8, 8));
  int64_t covered = static_cast<int64_t>(GetBE(p + 16, 8));
  int64_t last_page = static_cast<int64_t>(GetBE(p + 24, 8));
  size_t id_len = GetBE(p + 32, 4);
  if (v.mv_size < 36 + id_len) {
    Throw(ErrorCode::INTERNAL, "slot " + std::to_string(slot) + ": prepared record truncated",
          node_);
  }
  std::string id(p + 36, id_len);
  std::string desc(p + 36 + id_len, v.mv_size - 36 - id_len);
  if (to != to_gen || from != r.gen) {
    Throw(ErrorCode::GENERATION_MISMATCH,
          "slot " + std::to_string(slot) + ": prepared generation " + std::to_string(from) +
              " -> " + std::to_string(to) + " does not lead from " + std::to_string(r.gen) +
              " to " + std::to_string(to_gen),
          node_);
  }
  return Apply(t, slot, r, id, from, to, desc, covered, last_page);
}

// Applies the staged deltas of `to_gen`, records it and drops the covered tail, in `t`.
gen::GenRecord ParityHolder::Apply(HolderTxn& t, int slot, gen::GenRecord r,
                                   const std::string& stage_id, int64_t from_gen, int64_t to_gen,
                                   const std::string& descriptor, int64_t covered_seq,
                                   int64_t last_page) {
  std::string gkey = "stage:" + std::to_string(slot);
  MDB_val sg;
  // The deltas must be exactly the ones staged for this (epoch, from, to): otherwise recording
  // `to_gen` would leave parity that is not the coded sum of the recorded images.
  if (!t.Get(config_, gkey, &sg) || Str(sg) != stage_id) {
    Throw(ErrorCode::GENERATION_MISMATCH,
          "slot " + std::to_string(slot) + ": the deltas staged here are not those of " + stage_id,
          node_);
  }
  const bool staged = true;
  // Apply every staged delta: parity ^= c · delta, in this one transaction.
  uint8_t c = Coefficient(slot);
  std::vector<uint8_t> tables(32);
  ec_init_tables(1, 1, &c, tables.data());
  std::string page(kProtectionPageSize, '\0');
  size_t applied = 0;
  if (staged) {
    MDB_cursor* cur;
    if (int rc = mdb_cursor_open(t.get(), stage_, &cur); rc != 0) t.Fail(rc, "cursor");
    std::string from = SlotKey(slot), to = SlotKey(slot + 1);
    MDB_val k = Val(from), v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && Str(k) < to;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      TESSERA_ASSERT(v.mv_size == kProtectionPageSize, "staged delta of the wrong size");
      uint64_t pgno = GetBE(static_cast<const char*>(k.mv_data) + 4, 8);
      MDB_val pv;
      if (t.Get(parity_, PageKey(pgno), &pv)) {
        TESSERA_ASSERT(pv.mv_size == kProtectionPageSize, "parity page of the wrong size");
        std::memcpy(page.data(), pv.mv_data, kProtectionPageSize);
      } else {
        std::memset(page.data(), 0, kProtectionPageSize);
      }
      auto* dst = reinterpret_cast<uint8_t*>(page.data());
      auto* src = static_cast<uint8_t*>(v.mv_data);
      if (c == 1) {
        for (size_t i = 0; i < kProtectionPageSize; ++i) dst[i] ^= src[i];
      } else {
        ec_encode_data_update(static_cast<int>(kProtectionPageSize), 1, 1, 0, tables.data(), src,
                              &dst);
      }
      t.Put(parity_, PageKey(pgno), page);
      ++applied;
    }
    mdb_cursor_close(cur);
    DeleteRange(t, stage_, from, to);
    MDB_val gk = Val(gkey);
    if (int rc = mdb_del(t.get(), config_, &gk, nullptr); rc != 0 && rc != MDB_NOTFOUND) {
      t.Fail(rc, "delete");
    }
  }
  std::string pkey = "prep:" + std::to_string(slot);
  MDB_val pk = Val(pkey);
  if (int rc = mdb_del(t.get(), config_, &pk, nullptr); rc != 0 && rc != MDB_NOTFOUND) {
    t.Fail(rc, "delete");
  }
  r.gen = to_gen;
  r.descriptor = descriptor;
  r.covered_seq = covered_seq;
  r.last_page = last_page;
  t.Put(records_, SlotKey(slot), EncodeRecord(r));
  DeleteRange(t, tail_, SlotSeqKey(slot, 0),
              SlotSeqKey(slot, static_cast<uint64_t>(covered_seq) + 1));
  r.tail_last = TailLast(t, tail_, slot);
  t.Commit();
  if (int rc = mdb_env_sync(env_, 1); rc != 0) {
    Throw(ErrorCode::INTERNAL, std::string("parity holder flush: ") + mdb_strerror(rc), node_);
  }
  spdlog::debug("{}: slot {} generation {} -> {} ({} pages)", node_, slot, from_gen, to_gen,
                applied);
  return r;
}

gen::GenRecord ParityHolder::GetRecord(int slot, int64_t epoch) {
  CheckSlot(slot);
  HolderTxn t(env_, true, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  bool raised = CheckEpoch(r, slot, epoch, node_);
  if (raised) {
    r.epoch = epoch;
    t.Put(records_, SlotKey(slot), EncodeRecord(r));
  }
  r.tail_last = TailLast(t, tail_, slot);
  t.Commit();
  if (raised) mdb_env_sync(env_, 1);  // the raised epoch must outlive a crash of this holder
  return r;
}

std::vector<gen::TailEntry> ParityHolder::ReadTail(int slot, int64_t epoch, int64_t after_seq,
                                                   int max_entries) {
  CheckSlot(slot);
  HolderTxn t(env_, false, node_);
  gen::GenRecord r = LoadRecord(t, records_, slot, node_);
  CheckEpoch(r, slot, epoch, node_);
  std::vector<gen::TailEntry> out;
  MDB_cursor* c;
  if (int rc = mdb_cursor_open(t.get(), tail_, &c); rc != 0) t.Fail(rc, "cursor");
  std::string from = SlotSeqKey(slot, static_cast<uint64_t>(after_seq) + 1), to = SlotKey(slot + 1);
  MDB_val k = Val(from), v;
  size_t bytes = 0;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
       rc == 0 && Str(k) < to && static_cast<int>(out.size()) < max_entries && bytes < (8u << 20);
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    gen::TailEntry e;
    e.seq = static_cast<int64_t>(GetBE(static_cast<const char*>(k.mv_data) + 4, 8));
    e.batch = Str(v);
    bytes += e.batch.size();
    out.push_back(std::move(e));
  }
  mdb_cursor_close(c);
  return out;
}

gen::ParityPages ParityHolder::ReadParity(int64_t first_pgno, int count) {
  ParityView v = ReadParityView(first_pgno, count);
  gen::ParityPages out;
  out.records = std::move(v.records);
  out.run.present = std::move(v.present);
  out.run.pages = ConcatPages(v.pages, kProtectionPageSize);
  return out;
}

ParityHolder::ParityView ParityHolder::ReadParityView(int64_t first_pgno, int count) {
  if (first_pgno < 0 || count < 0 || count > 4096) {
    Throw(ErrorCode::INVALID_ARGUMENT, "ReadParity: bad page range", node_);
  }
  auto t = std::make_shared<HolderTxn>(env_, false, node_);
  ParityView out;
  for (int i = 0; i < k_; ++i) {
    gen::GenRecord r = LoadRecord(*t, records_, i, node_);
    r.tail_last = TailLast(*t, tail_, i);
    out.records.push_back(r);
  }
  out.present.assign(static_cast<size_t>(count), '\0');
  out.pages.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    MDB_val v;
    if (t->Get(parity_, PageKey(static_cast<uint64_t>(first_pgno + i)), &v) &&
        v.mv_size == kProtectionPageSize) {
      out.present[static_cast<size_t>(i)] = 1;
      out.pages.push_back(static_cast<const uint8_t*>(v.mv_data));
    }
  }
  out.txn = std::move(t);
  return out;
}

}  // namespace tessera::orchestrator
