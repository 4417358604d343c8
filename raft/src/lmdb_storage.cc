#include <lmdb.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tessera/raft/storage.h"

namespace tessera::raft {
namespace {

constexpr char kHardStateKey[] = "hardstate";
constexpr char kCompactedKey[] = "compacted";
constexpr char kSnapshotKey[] = "snapshot";
constexpr size_t kChecksumSize = 8;

Status MdbStatus(int rc, std::string_view what) {
  std::string msg = "raft storage: " + std::string(what) + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
      return Status::NoSpace(std::move(msg));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      return Status::Corruption(std::move(msg));
    default:
      return rc > 0 ? ErrnoStatus(rc, msg) : Status::IoError(std::move(msg));
  }
}

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string LogKeyBytes(uint64_t index) {  // big-endian, so LMDB's byte order is index order
  std::string k(8, '\0');
  for (int i = 0; i < 8; ++i) k[7 - i] = static_cast<char>((index >> (8 * i)) & 0xff);
  return k;
}

uint64_t LogKeyIndex(const MDB_val& k) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<const uint8_t*>(k.mv_data)[i];
  return v;
}

std::string LogKeyName(uint64_t index) { return "log/" + std::to_string(index); }
std::string MetaKeyName(const char* key) { return std::string("meta/") + key; }

// The checksum covers the key's name so that a record copied under another key is caught too.
uint64_t Checksum(std::string_view key_name, std::string_view payload) {
  const uint64_t seed = XXH3_64bits(key_name.data(), key_name.size());
  return XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
}

std::string Seal(std::string_view key_name, std::string payload) {
  const uint64_t sum = Checksum(key_name, payload);
  PutU64(payload, sum);
  return payload;
}

Result<std::string_view> Unseal(std::string_view key_name, const MDB_val& v) {
  if (v.mv_size < kChecksumSize) {
    return Status::Corruption("raft storage: record " + std::string(key_name) + " is truncated (" +
                              std::to_string(v.mv_size) + " bytes)");
  }
  std::string_view payload(static_cast<const char*>(v.mv_data), v.mv_size - kChecksumSize);
  if (GetU64(payload.data() + payload.size()) != Checksum(key_name, payload)) {
    return Status::Corruption("raft storage: record " + std::string(key_name) +
                              " fails its checksum (truncated or damaged, " +
                              std::to_string(v.mv_size) + " bytes)");
  }
  return payload;
}

MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

// A transaction that aborts unless committed.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  Status Begin(MDB_env* env, bool write) {
    int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_);
    if (rc != 0) {
      txn_ = nullptr;
      return MdbStatus(rc,
                       write ? "beginning a write transaction" : "beginning a read transaction");
    }
    return Status::Ok();
  }
  // mdb_txn_commit syncs the data file before returning (the env is opened without MDB_NOSYNC).
  Status Commit() {
    int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;
    return rc == 0 ? Status::Ok() : MdbStatus(rc, "committing");
  }
  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  Cursor() = default;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() {
    if (c_ != nullptr) mdb_cursor_close(c_);
  }
  Status Open(MDB_txn* txn, MDB_dbi dbi) {
    int rc = mdb_cursor_open(txn, dbi, &c_);
    if (rc != 0) {
      c_ = nullptr;
      return MdbStatus(rc, "opening a cursor");
    }
    return Status::Ok();
  }
  MDB_cursor* get() const { return c_; }

 private:
  MDB_cursor* c_ = nullptr;
};

// Reads meta/<key>; nullopt when absent.
Result<std::optional<std::string_view>> GetMeta(MDB_txn* txn, MDB_dbi dbi, const char* key) {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string_view>();
  if (rc != 0) return MdbStatus(rc, "reading " + MetaKeyName(key));
  TESSERA_ASSIGN_OR_RETURN(std::string_view payload, Unseal(MetaKeyName(key), v));
  return std::optional<std::string_view>(payload);
}

Status Put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view key_name,
           std::string payload, unsigned flags = 0) {
  std::string value = Seal(key_name, std::move(payload));
  MDB_val k = Val(key), v = Val(value);
  int rc = mdb_put(txn, dbi, &k, &v, flags);
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "writing " + std::string(key_name));
}

Status PutMeta(MDB_txn* txn, MDB_dbi dbi, const char* key, std::string payload) {
  return Put(txn, dbi, key, MetaKeyName(key), std::move(payload));
}

struct LogPoint {
  uint64_t index = 0;
  uint64_t term = 0;
};

Result<LogPoint> ReadCompacted(MDB_txn* txn, MDB_dbi meta) {
  TESSERA_ASSIGN_OR_RETURN(auto payload, GetMeta(txn, meta, kCompactedKey));
  if (!payload) return LogPoint{};
  if (payload->size() != 16) {
    return Status::Corruption("raft storage: record " + MetaKeyName(kCompactedKey) + " has " +
                              std::to_string(payload->size()) + " bytes, expected 16");
  }
  return LogPoint{GetU64(payload->data()), GetU64(payload->data() + 8)};
}

Result<Snapshot> ReadSnapshot(MDB_txn* txn, MDB_dbi meta) {
  TESSERA_ASSIGN_OR_RETURN(auto payload, GetMeta(txn, meta, kSnapshotKey));
  Snapshot s;
  if (!payload) return s;
  const std::string name = MetaKeyName(kSnapshotKey);
  if (payload->size() < 20) {
    return Status::Corruption("raft storage: record " + name + " is truncated");
  }
  s.meta.index = GetU64(payload->data());
  s.meta.term = GetU64(payload->data() + 8);
  uint32_t n = 0;
  std::memcpy(&n, payload->data() + 16, 4);
  if (payload->size() < 20 + uint64_t{n} * 8) {
    return Status::Corruption("raft storage: record " + name + " is truncated");
  }
  for (uint32_t i = 0; i < n; ++i) s.meta.voters.push_back(GetU64(payload->data() + 20 + 8 * i));
  s.data.assign(payload->substr(20 + size_t{n} * 8));
  return s;
}

std::string EncodeSnapshot(const Snapshot& s) {
  std::string p;
  PutU64(p, s.meta.index);
  PutU64(p, s.meta.term);
  const auto n = static_cast<uint32_t>(s.meta.voters.size());
  p.append(reinterpret_cast<const char*>(&n), 4);
  for (uint64_t v : s.meta.voters) PutU64(p, v);
  p += s.data;
  return p;
}

Result<Entry> DecodeEntry(uint64_t index, const MDB_val& v) {
  const std::string name = LogKeyName(index);
  TESSERA_ASSIGN_OR_RETURN(std::string_view payload, Unseal(name, v));
  if (payload.size() < 9) {
    return Status::Corruption("raft storage: record " + name + " is truncated (" +
                              std::to_string(payload.size()) + " payload bytes)");
  }
  const auto type = static_cast<uint8_t>(payload[8]);
  if (type > static_cast<uint8_t>(EntryType::kNoop)) {
    return Status::Corruption("raft storage: record " + name + " has unknown entry type " +
                              std::to_string(type));
  }
  return Entry{GetU64(payload.data()), index, static_cast<EntryType>(type),
               std::string(payload.substr(9))};
}

Result<Entry> ReadEntry(MDB_txn* txn, MDB_dbi log, uint64_t index) {
  std::string key = LogKeyBytes(index);
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn, log, &k, &v);
  if (rc == MDB_NOTFOUND) {
    // Inside [first, last] every index has a record; a hole is damage, not absence.
    return Status::Corruption("raft storage: record " + LogKeyName(index) + " is missing");
  }
  if (rc != 0) return MdbStatus(rc, "reading " + LogKeyName(index));
  return DecodeEntry(index, v);
}

// The last index in the log: the last record, or the compaction point when there is none.
Result<uint64_t> ReadLast(MDB_txn* txn, MDB_dbi log, const LogPoint& compacted) {
  Cursor c;
  TESSERA_RETURN_IF_ERROR(c.Open(txn, log));
  MDB_val k, v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_LAST);
  if (rc == MDB_NOTFOUND) return compacted.index;
  if (rc != 0) return MdbStatus(rc, "finding the last log record");
  if (k.mv_size != 8) return Status::Corruption("raft storage: a log key is not 8 bytes");
  return LogKeyIndex(k);
}

// Deletes every log record with index >= from (from_end = true) or <= to (from_end = false).
Status DeleteRange(MDB_txn* txn, MDB_dbi log, uint64_t bound, bool from_end) {
  Cursor c;
  TESSERA_RETURN_IF_ERROR(c.Open(txn, log));
  const std::string key = LogKeyBytes(bound);
  for (;;) {
    // Re-seek after every delete rather than trust the cursor position LMDB leaves behind.
    MDB_val k = Val(key), v;
    int rc = from_end ? mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE)
                      : mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
    if (rc == MDB_NOTFOUND) break;
    if (rc != 0) return MdbStatus(rc, "scanning log records");
    if (!from_end && (k.mv_size != 8 || LogKeyIndex(k) > bound)) break;
    rc = mdb_cursor_del(c.get(), 0);
    if (rc != 0) return MdbStatus(rc, "deleting log records");
  }
  return Status::Ok();
}

Result<uint64_t> TermAt(MDB_txn* txn, MDB_dbi meta, MDB_dbi log, uint64_t index) {
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn, meta));
  if (index == compacted.index) return compacted.term;
  if (index < compacted.index) {
    return Status::NotFound("raft log: entry " + std::to_string(index) + " is compacted");
  }
  TESSERA_ASSIGN_OR_RETURN(uint64_t last, ReadLast(txn, log, compacted));
  if (index > last) {
    return Status::Unavailable("raft log: entry " + std::to_string(index) + " is past the end");
  }
  TESSERA_ASSIGN_OR_RETURN(Entry e, ReadEntry(txn, log, index));
  return e.term;
}

}  // namespace

LmdbStorage::LmdbStorage(MDB_env* env, unsigned meta_dbi, unsigned log_dbi, std::string dir)
    : env_(env), meta_dbi_(meta_dbi), log_dbi_(log_dbi), dir_(std::move(dir)) {}

LmdbStorage::~LmdbStorage() { mdb_env_close(env_); }

Result<std::unique_ptr<LmdbStorage>> LmdbStorage::Open(const std::string& dir,
                                                       const LmdbStorageOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "creating raft storage directory " + dir);
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return MdbStatus(rc, "creating the environment");
  auto fail = [&](int code, const std::string& what) -> Status {
    mdb_env_close(env);
    return MdbStatus(code, what + " " + dir);
  };
  if ((rc = mdb_env_set_maxdbs(env, 2)) != 0) return fail(rc, "setting maxdbs for");
  if ((rc = mdb_env_set_mapsize(env, options.map_size)) != 0) return fail(rc, "setting map size");
  // Default flags: every commit is synced, which is the point of this storage.
  if ((rc = mdb_env_open(env, dir.c_str(), 0, 0644)) != 0) return fail(rc, "opening");
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(env, nullptr, 0, &txn)) != 0) return fail(rc, "opening databases in");
  MDB_dbi meta = 0, log = 0;
  if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta)) != 0 ||
      (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &log)) != 0) {
    mdb_txn_abort(txn);
    return fail(rc, "opening databases in");
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return fail(rc, "opening databases in");
  return std::unique_ptr<LmdbStorage>(new LmdbStorage(env, meta, log, dir));
}

Result<InitialState> LmdbStorage::LoadInitialState() {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  InitialState st;
  TESSERA_ASSIGN_OR_RETURN(auto hs, GetMeta(txn.get(), meta_dbi_, kHardStateKey));
  if (hs) {
    if (hs->size() != 24) {
      return Status::Corruption("raft storage: record " + MetaKeyName(kHardStateKey) + " has " +
                                std::to_string(hs->size()) + " bytes, expected 24");
    }
    st.hard_state = {GetU64(hs->data()), GetU64(hs->data() + 8), GetU64(hs->data() + 16)};
  }
  TESSERA_ASSIGN_OR_RETURN(Snapshot snap, ReadSnapshot(txn.get(), meta_dbi_));
  st.voters = std::move(snap.meta.voters);
  return st;
}

Result<uint64_t> LmdbStorage::FirstIndex() {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn.get(), meta_dbi_));
  return compacted.index + 1;
}

Result<uint64_t> LmdbStorage::LastIndex() {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn.get(), meta_dbi_));
  return ReadLast(txn.get(), log_dbi_, compacted);
}

Result<uint64_t> LmdbStorage::Term(uint64_t index) {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  return TermAt(txn.get(), meta_dbi_, log_dbi_, index);
}

Result<std::vector<Entry>> LmdbStorage::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn.get(), meta_dbi_));
  if (lo <= compacted.index) {
    return Status::NotFound("raft log: entry " + std::to_string(lo) + " is compacted");
  }
  TESSERA_ASSIGN_OR_RETURN(uint64_t last, ReadLast(txn.get(), log_dbi_, compacted));
  if (hi > last + 1) {
    return Status::Unavailable("raft log: entry " + std::to_string(hi - 1) + " is past the end");
  }
  std::vector<Entry> out;
  if (lo >= hi) return out;
  Cursor c;
  TESSERA_RETURN_IF_ERROR(c.Open(txn.get(), log_dbi_));
  std::string key = LogKeyBytes(lo);
  MDB_val k = Val(key), v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_KEY);
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    if (rc == MDB_NOTFOUND || (rc == 0 && (k.mv_size != 8 || LogKeyIndex(k) != i))) {
      return Status::Corruption("raft storage: record " + LogKeyName(i) + " is missing");
    }
    if (rc != 0) return MdbStatus(rc, "reading " + LogKeyName(i));
    TESSERA_ASSIGN_OR_RETURN(Entry e, DecodeEntry(i, v));
    bytes += e.data.size();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(std::move(e));
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  return out;
}

Result<Snapshot> LmdbStorage::GetSnapshot() {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, false));
  return ReadSnapshot(txn.get(), meta_dbi_);
}

Status LmdbStorage::Save(const HardState* hard_state, const std::vector<Entry>& entries,
                         const Snapshot* snapshot) {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, true));
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn.get(), meta_dbi_));
  uint64_t last = 0;
  if (snapshot != nullptr && !snapshot->empty()) {
    TESSERA_ASSIGN_OR_RETURN(Snapshot current, ReadSnapshot(txn.get(), meta_dbi_));
    if (snapshot->meta.index <= current.meta.index) {
      return Status::InvalidArgument("raft storage: snapshot at " +
                                     std::to_string(snapshot->meta.index) + " is not newer than " +
                                     std::to_string(current.meta.index));
    }
    // A received snapshot replaces the whole log (the state machine only calls this when its
    // log does not contain the snapshot's last entry).
    int rc = mdb_drop(txn.get(), log_dbi_, 0);
    if (rc != 0) return MdbStatus(rc, "emptying the log");
    TESSERA_RETURN_IF_ERROR(PutMeta(txn.get(), meta_dbi_, kSnapshotKey, EncodeSnapshot(*snapshot)));
    compacted = {snapshot->meta.index, snapshot->meta.term};
    std::string point;
    PutU64(point, compacted.index);
    PutU64(point, compacted.term);
    TESSERA_RETURN_IF_ERROR(PutMeta(txn.get(), meta_dbi_, kCompactedKey, std::move(point)));
    last = compacted.index;
  } else {
    TESSERA_ASSIGN_OR_RETURN(last, ReadLast(txn.get(), log_dbi_, compacted));
  }
  if (!entries.empty()) {
    for (size_t i = 1; i < entries.size(); ++i) {
      if (entries[i].index != entries[i - 1].index + 1) {
        return Status::InvalidArgument("raft storage: entries to append are not contiguous");
      }
    }
    if (entries[0].index > last + 1) {
      return Status::InvalidArgument("raft storage: append at " + std::to_string(entries[0].index) +
                                     " leaves a gap after " + std::to_string(last));
    }
    size_t skip = 0;  // entries already compacted are committed and identical; drop them
    while (skip < entries.size() && entries[skip].index <= compacted.index) ++skip;
    if (skip < entries.size()) {
      TESSERA_RETURN_IF_ERROR(DeleteRange(txn.get(), log_dbi_, entries[skip].index, true));
      for (size_t i = skip; i < entries.size(); ++i) {
        const Entry& e = entries[i];
        std::string payload;
        payload.reserve(9 + e.data.size() + kChecksumSize);
        PutU64(payload, e.term);
        payload.push_back(static_cast<char>(e.type));
        payload += e.data;
        // MDB_APPEND: keys go in ascending order after the deletion, the cheap path in LMDB.
        TESSERA_RETURN_IF_ERROR(Put(txn.get(), log_dbi_, LogKeyBytes(e.index), LogKeyName(e.index),
                                    std::move(payload), MDB_APPEND));
      }
    }
  }
  if (hard_state != nullptr) {
    std::string p;
    PutU64(p, hard_state->term);
    PutU64(p, hard_state->vote);
    PutU64(p, hard_state->commit);
    TESSERA_RETURN_IF_ERROR(PutMeta(txn.get(), meta_dbi_, kHardStateKey, std::move(p)));
  }
  return txn.Commit();
}

Status LmdbStorage::CreateSnapshot(const Snapshot& snapshot) {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, true));
  TESSERA_ASSIGN_OR_RETURN(Snapshot current, ReadSnapshot(txn.get(), meta_dbi_));
  if (snapshot.meta.index <= current.meta.index) {
    return Status::InvalidArgument("raft storage: snapshot at " +
                                   std::to_string(snapshot.meta.index) + " is not newer than " +
                                   std::to_string(current.meta.index));
  }
  auto term = TermAt(txn.get(), meta_dbi_, log_dbi_, snapshot.meta.index);
  if (!term.ok()) return term.status().WithContext("raft storage: creating a snapshot");
  if (*term != snapshot.meta.term) {
    return Status::InvalidArgument(
        "raft storage: snapshot term " + std::to_string(snapshot.meta.term) + " but entry " +
        std::to_string(snapshot.meta.index) + " has term " + std::to_string(*term));
  }
  TESSERA_RETURN_IF_ERROR(PutMeta(txn.get(), meta_dbi_, kSnapshotKey, EncodeSnapshot(snapshot)));
  return txn.Commit();
}

Status LmdbStorage::Compact(uint64_t index) {
  Txn txn;
  TESSERA_RETURN_IF_ERROR(txn.Begin(env_, true));
  TESSERA_ASSIGN_OR_RETURN(LogPoint compacted, ReadCompacted(txn.get(), meta_dbi_));
  if (index <= compacted.index) return Status::Ok();  // already compacted
  TESSERA_ASSIGN_OR_RETURN(Snapshot current, ReadSnapshot(txn.get(), meta_dbi_));
  if (index > current.meta.index) {
    return Status::InvalidArgument("raft storage: compacting to " + std::to_string(index) +
                                   " would discard entries after the snapshot at " +
                                   std::to_string(current.meta.index));
  }
  auto term = TermAt(txn.get(), meta_dbi_, log_dbi_, index);
  if (!term.ok()) return term.status().WithContext("raft storage: compacting");
  TESSERA_RETURN_IF_ERROR(DeleteRange(txn.get(), log_dbi_, index, false));
  std::string point;
  PutU64(point, index);
  PutU64(point, *term);
  TESSERA_RETURN_IF_ERROR(PutMeta(txn.get(), meta_dbi_, kCompactedKey, std::move(point)));
  return txn.Commit();
}

}  // namespace tessera::raft
