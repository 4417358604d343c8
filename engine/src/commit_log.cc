#include "commit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "db_impl.h"
#include "format.h"

namespace tessera::engine {
namespace {

using format::Load;
using format::Store;

constexpr uint32_t kRecordMagic = 0x474c5354;  // "TSLG"
constexpr uint64_t kHeaderBytes = 40;
// The file grows by its own size, from 64 KiB to steps of 4 MiB: small databases keep a small log.
constexpr uint64_t kMinGrowStep = uint64_t{64} << 10;
constexpr uint64_t kMaxGrowStep = uint64_t{4} << 20;

uint64_t Padded(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// Covers the header after the crc field and the payload, which follows the header.
uint32_t RecordCrc(const uint8_t* record, uint64_t payload_bytes) {
  return Crc32c(record + 8, kHeaderBytes - 8 + payload_bytes);
}

// A record at `off` of `file`, if one is whole there: its header fields and payload.
struct Parsed {
  bool ok = false;
  uint64_t db_id = 0, era = 0, txnid = 0, next = 0;
  std::string_view payload;
};

Parsed ParseAt(std::string_view file, uint64_t off) {
  Parsed r;
  if (off + kHeaderBytes > file.size()) return r;
  const auto* h = reinterpret_cast<const uint8_t*>(file.data() + off);
  if (Load<uint32_t>(h) != kRecordMagic) return r;
  uint64_t len = Load<uint32_t>(h + 8);
  if (len > CommitLog::kMaxRecordBytes || off + kHeaderBytes + len > file.size()) return r;
  r.payload = file.substr(off + kHeaderBytes, len);
  if (Load<uint32_t>(h + 4) != RecordCrc(h, len)) return r;
  r.db_id = Load<uint64_t>(h + 16);
  r.era = Load<uint64_t>(h + 24);
  r.txnid = Load<uint64_t>(h + 32);
  r.next = off + Padded(kHeaderBytes + len);
  r.ok = true;
  return r;
}

uint64_t ReadVarint(std::string_view s, size_t* pos, bool* ok) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= s.size()) break;
    auto b = static_cast<uint8_t>(s[(*pos)++]);
    v |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) return v;
  }
  *ok = false;
  return 0;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

Result<std::vector<CommitLog::Record>> CommitLog::ReadAll(const std::string& path, uint64_t db_id,
                                                          uint64_t after_txnid) {
  std::vector<Record> out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return ErrnoStatus(errno, "open " + path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoStatus(e, "stat " + path);
  }
  std::string file(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < file.size()) {
    ssize_t n = ::pread(fd, file.data() + got, file.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      return ErrnoStatus(e, "read " + path);
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);

  uint64_t off = 0;
  uint64_t era = 0;
  while (true) {
    Parsed r = ParseAt(file, off);
    if (!r.ok || r.db_id != db_id) break;
    if (!out.empty() && (r.era != era || r.txnid != out.back().txnid + 1)) break;
    era = r.era;
    out.push_back(Record{r.txnid, off, std::string(r.payload)});
    off = r.next;
  }
  // Where the sequence ended, a later record of the same era means damage in the middle: the
  // commits after it were acknowledged and must not be dropped silently. Records of older eras
  // hold txnids no newer than the meta being opened, so with no era known any newer one counts.
  const uint64_t newer_than = out.empty() ? after_txnid : out.back().txnid;
  for (uint64_t o = off + 8; o + kHeaderBytes <= file.size(); o += 8) {
    if (Load<uint32_t>(reinterpret_cast<const uint8_t*>(file.data() + o)) != kRecordMagic) continue;
    Parsed r = ParseAt(file, o);
    if (r.ok && r.db_id == db_id && (out.empty() || r.era == era) && r.txnid > newer_than) {
      return Status::Corruption("commit log '" + path + "' is damaged at offset " +
                                std::to_string(off) + " (after txn " + std::to_string(newer_than) +
                                ") but holds later commits from offset " + std::to_string(o));
    }
  }
  return out;
}

CommitLog::CommitLog(std::string path) : path_(std::move(path)) {
  const int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  struct stat st;
  if (fd < 0) return;  // absent (or unusable: the first Append says why)
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return;
  }
  fd_ = fd;
  size_ = static_cast<uint64_t>(st.st_size);
}

CommitLog::~CommitLog() {
  if (fd_ >= 0) ::close(fd_);
}

void CommitLog::Remove() {
  struct stat mine, named;
  if (fd_ < 0 || ::fstat(fd_, &mine) != 0 || ::stat(path_.c_str(), &named) != 0) return;
  if (mine.st_dev == named.st_dev && mine.st_ino == named.st_ino) (void)::unlink(path_.c_str());
}

bool CommitLog::Fits(uint64_t payload_bytes) const {
  return payload_bytes <= kMaxRecordBytes &&
         offset_ + Padded(kHeaderBytes + payload_bytes) <= kMaxLogBytes;
}

Status CommitLog::Append(uint64_t db_id, uint64_t era, uint64_t txnid, std::string_view payload) {
  TESSERA_ASSERT(Fits(payload.size()), "commit log record does not fit");
  if (fd_ < 0) {
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, "open " + path_);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      return ErrnoStatus(e, "stat " + path_);
    }
    fd_ = fd;
    size_ = static_cast<uint64_t>(st.st_size);
    // The file's name must survive a power cut too, or its records vanish with it.
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return ErrnoStatus(errno, "open directory " + dir);
    const bool synced = ::fsync(dfd) == 0;
    const int e = errno;
    ::close(dfd);
    if (!synced) return ErrnoStatus(e, "fsync directory " + dir);
  }
  const uint64_t total = Padded(kHeaderBytes + payload.size());
  // Zero-filled growth ahead of need: later appends then change no file metadata.
  if (offset_ + total > size_) {
    const uint64_t step = std::clamp(size_, kMinGrowStep, kMaxGrowStep);
    uint64_t new_size = (offset_ + total + step - 1) / step * step;
    std::vector<uint8_t> zeros(static_cast<size_t>(new_size - size_));
    Status grown = PwriteAll(fd_, zeros.data(), zeros.size(), size_, "write " + path_);
    if (!grown.ok()) {
      // A nearly full disk: the step ahead of need may not fit where this record does (a 4 MiB
      // step failed with 176 KiB free). Grow by what the record needs only (to whole 4 KiB).
      new_size = (offset_ + total + 4095) / 4096 * 4096;
      zeros.assign(static_cast<size_t>(new_size - size_), 0);
      TESSERA_RETURN_IF_ERROR(PwriteAll(fd_, zeros.data(), zeros.size(), size_, "write " + path_));
    }
    size_ = new_size;
  }
  std::string rec(static_cast<size_t>(total), '\0');
  auto* h = reinterpret_cast<uint8_t*>(rec.data());
  Store(h, kRecordMagic);
  Store(h + 8, static_cast<uint32_t>(payload.size()));
  Store(h + 16, db_id);
  Store(h + 24, era);
  Store(h + 32, txnid);
  std::memcpy(h + kHeaderBytes, payload.data(), payload.size());
  Store(h + 4, RecordCrc(h, payload.size()));
  Status st = PwriteAll(fd_, rec.data(), rec.size(), offset_, "write " + path_);
  if (st.ok() && ::fdatasync(fd_) != 0) st = ErrnoStatus(errno, "fdatasync " + path_);
  if (!st.ok()) {
    // The caller reports the commit failed: its record, whole or partly written, must not be
    // replayed at the next open. Zeros end the log there (best effort: the disk is failing).
    std::vector<uint8_t> zeros(static_cast<size_t>(total));
    (void)PwriteAll(fd_, zeros.data(), zeros.size(), offset_, "write " + path_);
    return st;
  }
  offset_ += total;
  return Status::Ok();
}

namespace logop {

void Append(std::string* out, Kind kind, std::string_view tree, std::string_view key,
            std::string_view value) {
  out->push_back(static_cast<char>(kind));
  PutVarint(out, tree.size());
  out->append(tree);
  if (kind == kPut || kind == kDelete) {
    PutVarint(out, key.size());
    out->append(key);
  }
  if (kind == kPut) {
    PutVarint(out, value.size());
    out->append(value);
  }
}

Result<std::vector<Op>> Decode(std::string_view payload) {
  std::vector<Op> ops;
  size_t pos = 0;
  while (pos < payload.size()) {
    const size_t at = pos;
    auto bad = [&] {
      return Status::Corruption("commit log payload is malformed at byte " + std::to_string(at));
    };
    Op op{};
    op.kind = static_cast<Kind>(payload[pos++]);
    if (op.kind < kPut || op.kind > kDropTree) return bad();
    bool ok = true;
    auto field = [&](std::string_view* f) {
      uint64_t n = ReadVarint(payload, &pos, &ok);
      if (!ok || n > payload.size() - pos) {
        ok = false;
        return;
      }
      *f = payload.substr(pos, n);
      pos += n;
    };
    field(&op.tree);
    if (ok && (op.kind == kPut || op.kind == kDelete)) field(&op.key);
    if (ok && op.kind == kPut) field(&op.value);
    if (!ok) return bad();
    ops.push_back(op);
  }
  return ops;
}

}  // namespace logop

}  // namespace tessera::engine
