// WalStorage: the Raft log as an append-only file with one flush per Save (see storage.h for the
// format's invariants).
#define XXH_INLINE_ALL
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tessera/raft/storage.h"

namespace tessera::raft {
namespace {

static_assert(std::endian::native == std::endian::little, "the log format is little-endian");

constexpr uint32_t kMagic = 0x4c415754;  // "TWAL"
constexpr size_t kHeader = 32;
constexpr uint32_t kMaxRecord = uint32_t{1} << 30;

enum RecordType : uint8_t {
  kBase = 1,       // compaction point: index, term (first record of the file)
  kEntry = 2,      // index, term, type, data
  kHard = 3,       // term, vote, commit
  kSnapPoint = 4,  // index, term: the log was replaced by the snapshot file's
  kCommit = 5,     // end of a batch
};

void PutU64(std::string* s, uint64_t v) { s->append(reinterpret_cast<const char*>(&v), 8); }
uint64_t GetU64(std::string_view s, size_t off) {
  uint64_t v = 0;
  std::memcpy(&v, s.data() + off, 8);
  return v;
}

uint64_t Checksum(std::string_view header24, std::string_view payload) {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, header24.data(), header24.size());
  XXH3_64bits_update(&st, payload.data(), payload.size());
  return XXH3_64bits_digest(&st);
}

void AppendRecord(std::string* out, RecordType type, uint64_t batch, std::string_view payload) {
  std::string h(24, '\0');
  const uint32_t magic = kMagic;
  const auto len = static_cast<uint32_t>(payload.size());
  std::memcpy(h.data(), &magic, 4);
  h[4] = static_cast<char>(type);
  std::memcpy(h.data() + 8, &batch, 8);
  std::memcpy(h.data() + 16, &len, 4);
  out->append(h);
  PutU64(out, Checksum(h, payload));
  out->append(payload);
  out->append((8 - payload.size() % 8) % 8, '\0');
}

struct Record {
  RecordType type;
  uint64_t batch;
  std::string_view payload;
  size_t size;  // header, payload and padding
};

// The record at `off`, or nullopt if there is none intact there.
std::optional<Record> ParseRecord(std::string_view buf, size_t off) {
  if (buf.size() - off < kHeader) return std::nullopt;
  uint32_t magic = 0, len = 0;
  std::memcpy(&magic, buf.data() + off, 4);
  std::memcpy(&len, buf.data() + off + 16, 4);
  if (magic != kMagic || len > kMaxRecord || len > buf.size() - off - kHeader) return std::nullopt;
  std::string_view payload = buf.substr(off + kHeader, len);
  if (Checksum(buf.substr(off, 24), payload) != GetU64(buf, off + 24)) return std::nullopt;
  const size_t size = kHeader + len + (8 - len % 8) % 8;
  // The padding is not in the checksum; it must be zeros, so that damage there is seen too.
  for (size_t i = off + kHeader + len; i < std::min(off + size, buf.size()); ++i) {
    if (buf[i] != '\0') return std::nullopt;
  }
  return Record{static_cast<RecordType>(static_cast<uint8_t>(buf[off + 4])), GetU64(buf, off + 8),
                payload, std::min(size, buf.size() - off)};
}

std::string Pair(uint64_t a, uint64_t b) {
  std::string s;
  PutU64(&s, a);
  PutU64(&s, b);
  return s;
}

std::string EntryPayload(const Entry& e) {
  std::string s = Pair(e.index, e.term);
  s.push_back(static_cast<char>(e.type));
  s.append(e.data);
  return s;
}

std::string HardPayload(const HardState& hs) {
  std::string s = Pair(hs.term, hs.vote);
  PutU64(&s, hs.commit);
  return s;
}

Status WriteAll(int fd, std::string_view data, uint64_t off, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "writing " + what);
    data.remove_prefix(static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status WriteZeros(int fd, uint64_t from, uint64_t to, const std::string& what) {
  static const std::string kZeros(1 << 20, '\0');
  while (from < to) {
    const uint64_t n = std::min<uint64_t>(to - from, kZeros.size());
    TESSERA_RETURN_IF_ERROR(WriteAll(fd, std::string_view(kZeros).substr(0, n), from, what));
    from += n;
  }
  return Status::Ok();
}

Status SyncFd(int fd, const std::string& what) {
  if (::fdatasync(fd) != 0) return ErrnoStatus(errno, "flushing " + what);
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "opening directory " + dir);
  Status s = ::fsync(fd) == 0 ? Status::Ok() : ErrnoStatus(errno, "flushing directory " + dir);
  ::close(fd);
  return s;
}

Result<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "opening " + path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = ErrnoStatus(errno, "reading " + path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Writes `data` and then `zeros_to - data.size()` zero bytes to `path`.tmp, flushes it and renames
// it over `path`; the directory is flushed too, so the new file survives a crash.
Status ReplaceFile(const std::string& dir, const std::string& name, std::string_view data,
                   uint64_t zeros_to) {
  const std::string path = dir + "/" + name, tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "creating " + tmp);
  Status s = WriteAll(fd, data, 0, tmp);
  if (s.ok()) s = WriteZeros(fd, data.size(), std::max<uint64_t>(zeros_to, data.size()), tmp);
  if (s.ok()) s = SyncFd(fd, tmp);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = ErrnoStatus(errno, "renaming " + tmp);
  }
  if (s.ok()) s = SyncDir(dir);
  return s;
}

// Snapshot file: [magic u32, voter count u32, index, term, voters..., data length, data, XXH3].
constexpr uint32_t kSnapMagic = 0x50534e54;  // "TNSP"

std::string EncodeSnapshot(const Snapshot& snap) {
  std::string s;
  const uint32_t magic = kSnapMagic;
  const auto voters = static_cast<uint32_t>(snap.meta.voters.size());
  s.append(reinterpret_cast<const char*>(&magic), 4);
  s.append(reinterpret_cast<const char*>(&voters), 4);
  PutU64(&s, snap.meta.index);
  PutU64(&s, snap.meta.term);
  for (uint64_t v : snap.meta.voters) PutU64(&s, v);
  PutU64(&s, snap.data.size());
  s.append(snap.data);
  PutU64(&s, XXH3_64bits(s.data(), s.size()));
  return s;
}

Result<Snapshot> DecodeSnapshot(std::string_view s, const std::string& path) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("raft snapshot " + path + ": " + why);
  };
  if (s.size() < 32) return bad("truncated (" + std::to_string(s.size()) + " bytes)");
  if (XXH3_64bits(s.data(), s.size() - 8) != GetU64(s, s.size() - 8)) {
    return bad("checksum mismatch");
  }
  uint32_t magic = 0, voters = 0;
  std::memcpy(&magic, s.data(), 4);
  std::memcpy(&voters, s.data() + 4, 4);
  if (magic != kSnapMagic) return bad("not a snapshot file");
  Snapshot snap;
  snap.meta.index = GetU64(s, 8);
  snap.meta.term = GetU64(s, 16);
  size_t off = 24;
  if (voters > (s.size() - 32) / 8) return bad("voter count " + std::to_string(voters));
  for (uint32_t i = 0; i < voters; ++i, off += 8) snap.meta.voters.push_back(GetU64(s, off));
  const uint64_t len = GetU64(s, off);
  off += 8;
  if (len != s.size() - 8 - off) return bad("data length " + std::to_string(len));
  snap.data.assign(s.substr(off, len));
  return snap;
}

}  // namespace

WalStorage::WalStorage(std::string dir, const WalStorageOptions& options)
    : dir_(std::move(dir)), options_(options) {}

WalStorage::~WalStorage() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<WalStorage>> WalStorage::Open(const std::string& dir,
                                                     const WalStorageOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("raft log: creating " + dir + ": " + ec.message());
  std::unique_ptr<WalStorage> w(new WalStorage(dir, options));
  TESSERA_RETURN_IF_ERROR(w->Load().WithContext("raft log " + dir));
  return w;
}

Status WalStorage::Load() {
  const std::string snap_path = dir_ + "/snapshot", wal_path = dir_ + "/wal";
  if (std::filesystem::exists(snap_path)) {
    TESSERA_ASSIGN_OR_RETURN(std::string bytes, ReadFile(snap_path));
    TESSERA_ASSIGN_OR_RETURN(snapshot_, DecodeSnapshot(bytes, snap_path));
  }
  if (!std::filesystem::exists(wal_path)) {
    if (!snapshot_.empty()) {
      return Status::Corruption("the snapshot file exists but the log file 'wal' is missing");
    }
    return Rewrite();  // a new log: the base batch
  }
  TESSERA_ASSIGN_OR_RETURN(std::string buf, ReadFile(wal_path));
  TESSERA_RETURN_IF_ERROR(Replay(buf));

  // The snapshot file may be newer than the log: a crash came after a snapshot was recorded but
  // before the log record that goes with it (or before Compact rewrote the log).
  const uint64_t point = mem_.FirstIndex().value() - 1;
  if (snapshot_.meta.index < point) {
    return Status::Corruption("the snapshot file (index " + std::to_string(snapshot_.meta.index) +
                              ") is older than the log's compaction point " +
                              std::to_string(point));
  }
  if (snapshot_.meta.index > point) {
    const Snapshot meta{snapshot_.meta, {}};
    auto term = mem_.Term(snapshot_.meta.index);
    if (term.ok() && *term == snapshot_.meta.term) {
      TESSERA_RETURN_IF_ERROR(mem_.CreateSnapshot(meta));
    } else {
      // The log is replaced by the snapshot; the rewritten log says so.
      TESSERA_RETURN_IF_ERROR(mem_.Save(nullptr, {}, &meta));
      return Rewrite();
    }
  }

  int fd = ::open(wal_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "opening " + wal_path);
  fd_ = fd;
  alloc_end_ = buf.size();
  // Whatever follows the last complete batch (a torn one) is zeroed, so that no fragment of it
  // can be mistaken for a record after new batches are written over its start.
  if (buf.find_first_not_of('\0', write_off_) != std::string::npos) {
    TESSERA_RETURN_IF_ERROR(WriteZeros(fd_, write_off_, alloc_end_, wal_path));
    TESSERA_RETURN_IF_ERROR(SyncFd(fd_, wal_path));
  }
  return Status::Ok();
}

Status WalStorage::Replay(const std::string& buf) {
  std::string_view b(buf);
  size_t off = 0;
  uint64_t last_batch = 0;
  std::vector<Record> pending;
  bool based = false;
  for (;;) {
    auto r = ParseRecord(b, off);
    if (!r || r->batch <= last_batch || (!pending.empty() && r->batch != pending[0].batch)) break;
    if (r->type != kCommit) {
      pending.push_back(*r);
      off += r->size;
      continue;
    }
    // A complete batch: apply it in the order Save wrote it.
    HardState hs;
    bool has_hs = false;
    std::vector<Entry> entries;
    Snapshot point;
    bool has_point = false;
    for (const Record& p : pending) {
      const std::string where =
          "batch " + std::to_string(p.batch) + " at offset " + std::to_string(off);
      auto need = [&](size_t n) {
        return p.payload.size() >= n ? Status::Ok()
                                     : Status::Corruption("log record too short in " + where);
      };
      switch (p.type) {
        case kBase:
          TESSERA_RETURN_IF_ERROR(need(16));
          if (based) return Status::Corruption("a second base record in " + where);
          based = true;
          if (GetU64(p.payload, 0) > 0) {
            point.meta.index = GetU64(p.payload, 0);
            point.meta.term = GetU64(p.payload, 8);
            has_point = true;
          }
          break;
        case kSnapPoint:
          TESSERA_RETURN_IF_ERROR(need(16));
          point.meta.index = GetU64(p.payload, 0);
          point.meta.term = GetU64(p.payload, 8);
          has_point = true;
          break;
        case kEntry: {
          TESSERA_RETURN_IF_ERROR(need(17));
          Entry e;
          e.index = GetU64(p.payload, 0);
          e.term = GetU64(p.payload, 8);
          e.type = static_cast<EntryType>(static_cast<uint8_t>(p.payload[16]));
          e.data.assign(p.payload.substr(17));
          entries.push_back(std::move(e));
          break;
        }
        case kHard:
          TESSERA_RETURN_IF_ERROR(need(24));
          hs = HardState{GetU64(p.payload, 0), GetU64(p.payload, 8), GetU64(p.payload, 16)};
          has_hs = true;
          break;
        default:
          return Status::Corruption("unknown log record type " +
                                    std::to_string(static_cast<int>(p.type)) + " in " + where);
      }
    }
    if (!based) return Status::Corruption("the log does not begin with a base record");
    Status s = mem_.Save(has_hs ? &hs : nullptr, entries, has_point ? &point : nullptr);
    if (!s.ok()) {
      return Status::Corruption("log batch " + std::to_string(r->batch) + " at offset " +
                                std::to_string(off) + " does not apply: " + s.message());
    }
    last_batch = r->batch;
    pending.clear();
    off += r->size;
    write_off_ = off;
  }
  if (!based) return Status::Corruption("the log has no complete base batch (damaged at offset 0)");
  // Records after the last complete batch. Those of the batch being written when a crash came
  // may be torn; an intact record of any later batch proves damage to a flushed one.
  for (size_t o = write_off_; o + kHeader <= b.size(); o += 8) {
    auto r = ParseRecord(b, o);
    if (r && r->batch > last_batch + 1) {
      return Status::Corruption("log record damaged at offset " + std::to_string(write_off_) +
                                " (after batch " + std::to_string(last_batch) + "), but batch " +
                                std::to_string(r->batch) + " follows at offset " +
                                std::to_string(o));
    }
  }
  next_batch_ = last_batch + 1;
  return Status::Ok();
}

uint64_t WalStorage::AllocFor(uint64_t used) const {
  // At least one whole zero-filled step beyond what is used, rounded to steps.
  const uint64_t step = std::max<uint64_t>(options_.preallocate_bytes, 4096);
  return (used + step + step - 1) / step * step;
}

Status WalStorage::Fail(Status s) {
  failed_ = s;
  return s;
}

Status WalStorage::Rewrite() {
  const uint64_t first = mem_.FirstIndex().value(), last = mem_.LastIndex().value();
  const uint64_t batch = next_batch_++;
  std::string out;
  AppendRecord(&out, kBase, batch, Pair(first - 1, mem_.Term(first - 1).value()));
  if (last >= first) {
    TESSERA_ASSIGN_OR_RETURN(std::vector<Entry> entries,
                             mem_.Entries(first, last + 1, std::numeric_limits<uint64_t>::max()));
    for (const Entry& e : entries) AppendRecord(&out, kEntry, batch, EntryPayload(e));
  }
  TESSERA_ASSIGN_OR_RETURN(InitialState init, mem_.LoadInitialState());
  AppendRecord(&out, kHard, batch, HardPayload(init.hard_state));
  AppendRecord(&out, kCommit, batch, {});
  const uint64_t alloc = AllocFor(out.size());
  TESSERA_RETURN_IF_ERROR(ReplaceFile(dir_, "wal", out, alloc));
  const std::string path = dir_ + "/wal";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "opening " + path);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  write_off_ = out.size();
  alloc_end_ = alloc;
  return Status::Ok();
}

Status WalStorage::AppendBatch(const std::string& records) {
  const std::string what = dir_ + "/wal";
  if (write_off_ + records.size() > alloc_end_) {
    // Grow in zero-filled steps; this flush also commits the new file size.
    const uint64_t alloc = AllocFor(write_off_ + records.size());
    TESSERA_RETURN_IF_ERROR(WriteZeros(fd_, alloc_end_, alloc, what));
    alloc_end_ = alloc;
  }
  TESSERA_RETURN_IF_ERROR(WriteAll(fd_, records, write_off_, what));
  TESSERA_RETURN_IF_ERROR(SyncFd(fd_, what));
  write_off_ += records.size();
  return Status::Ok();
}

Status WalStorage::WriteSnapshotFile(const Snapshot& snapshot) {
  return ReplaceFile(dir_, "snapshot", EncodeSnapshot(snapshot), 0);
}

Result<InitialState> WalStorage::LoadInitialState() {
  TESSERA_ASSIGN_OR_RETURN(InitialState init, mem_.LoadInitialState());
  init.voters = snapshot_.meta.voters;
  return init;
}
Result<std::vector<Entry>> WalStorage::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) {
  return mem_.Entries(lo, hi, max_bytes);
}
Result<uint64_t> WalStorage::Term(uint64_t index) { return mem_.Term(index); }
Result<uint64_t> WalStorage::FirstIndex() { return mem_.FirstIndex(); }
Result<uint64_t> WalStorage::LastIndex() { return mem_.LastIndex(); }
Result<Snapshot> WalStorage::GetSnapshot() { return snapshot_; }

Status WalStorage::Save(const HardState* hard_state, const std::vector<Entry>& entries,
                        const Snapshot* snapshot) {
  if (!failed_.ok()) return failed_;
  TESSERA_RETURN_IF_ERROR(mem_.CheckSave(entries, snapshot));
  for (const Entry& e : entries) {
    // A record must fit its 32-bit length (and the limit replay enforces).
    if (e.data.size() > kMaxRecord - 17) {
      return Status::InvalidArgument("raft log: entry " + std::to_string(e.index) + " of " +
                                     std::to_string(e.data.size()) + " bytes is over the " +
                                     std::to_string(kMaxRecord - 17) + "-byte limit");
    }
  }
  const bool has_snap = snapshot != nullptr && !snapshot->empty();
  if (!has_snap && entries.empty() && hard_state == nullptr) return Status::Ok();
  // The snapshot file first: the log record that refers to it must never be on disk without it.
  if (has_snap) {
    if (Status s = WriteSnapshotFile(*snapshot); !s.ok()) return Fail(s);
  }
  const uint64_t batch = next_batch_;
  std::string out;
  if (has_snap) {
    AppendRecord(&out, kSnapPoint, batch, Pair(snapshot->meta.index, snapshot->meta.term));
  }
  for (const Entry& e : entries) AppendRecord(&out, kEntry, batch, EntryPayload(e));
  if (hard_state != nullptr) AppendRecord(&out, kHard, batch, HardPayload(*hard_state));
  AppendRecord(&out, kCommit, batch, {});
  if (Status s = AppendBatch(out); !s.ok()) return Fail(s);
  ++next_batch_;
  Snapshot meta;
  if (has_snap) {
    meta.meta = snapshot->meta;
    snapshot_ = *snapshot;
  }
  Status s = mem_.Save(hard_state, entries, has_snap ? &meta : nullptr);
  TESSERA_ASSERT(s.ok(), "raft log: a checked Save failed in memory: ", s.ToString());
  return Status::Ok();
}

Status WalStorage::CreateSnapshot(const Snapshot& snapshot) {
  if (!failed_.ok()) return failed_;
  if (snapshot.meta.index <= snapshot_.meta.index) {
    return Status::InvalidArgument("raft storage: snapshot at " +
                                   std::to_string(snapshot.meta.index) + " is not newer than " +
                                   std::to_string(snapshot_.meta.index));
  }
  auto term = mem_.Term(snapshot.meta.index);
  if (!term.ok()) return term.status().WithContext("raft storage: creating a snapshot");
  if (*term != snapshot.meta.term) {
    return Status::InvalidArgument(
        "raft storage: snapshot term " + std::to_string(snapshot.meta.term) + " but entry " +
        std::to_string(snapshot.meta.index) + " has term " + std::to_string(*term));
  }
  if (Status s = WriteSnapshotFile(snapshot); !s.ok()) return Fail(s);
  Status s = mem_.CreateSnapshot(Snapshot{snapshot.meta, {}});
  TESSERA_ASSERT(s.ok(), "raft log: a checked snapshot failed in memory: ", s.ToString());
  snapshot_ = snapshot;
  return Status::Ok();
}

Status WalStorage::Compact(uint64_t index) {
  if (!failed_.ok()) return failed_;
  const uint64_t before = mem_.FirstIndex().value();
  TESSERA_RETURN_IF_ERROR(mem_.Compact(index));
  if (mem_.FirstIndex().value() == before) return Status::Ok();
  // Dropped entries may reappear after a crash before the rewrite; that is harmless.
  if (Status s = Rewrite(); !s.ok()) return Fail(s);
  return Status::Ok();
}

}  // namespace tessera::raft
