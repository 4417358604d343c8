#include "tessera/erasure/shard_file.h"

#include <fcntl.h>
#include <isa-l/crc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>

#include "tessera/common/errors.h"

namespace tessera::erasure {
namespace {

constexpr char kMagic[8] = {'T', 'S', 'R', 'A', 'E', 'C', '1', '\n'};
constexpr uint8_t kFormatVersion = 1;
constexpr size_t kCrcOffset = 48;
constexpr size_t kHeaderCrcOffset = 52;
// ISA-L's CRC takes an int length; larger spans are fed in pieces.
constexpr size_t kCrcPiece = size_t{1} << 30;
// Buffer alignment that gives ISA-L's kernels their aligned fast paths.
constexpr size_t kBufferAlign = 64;

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t Stripes(uint64_t length, int k, uint32_t chunk) {
  const uint64_t stripe = static_cast<uint64_t>(k) * chunk;
  return std::max<uint64_t>(1, (length + stripe - 1) / stripe);
}

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBuf AllocAligned(size_t bytes) {
  const size_t rounded = (bytes + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
  auto* p =
      static_cast<uint8_t*>(std::aligned_alloc(kBufferAlign, std::max(rounded, kBufferAlign)));
  if (p == nullptr) throw std::bad_alloc();
  return AlignedBuf(p);
}

// Reads up to n bytes, stopping early only at end of file. Returns the count read.
Result<size_t> ReadUpTo(int fd, uint8_t* buf, size_t n, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "reading " + path);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

Result<size_t> PreadUpTo(int fd, uint8_t* buf, size_t n, uint64_t offset, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "reading " + path);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

Status WriteAll(int fd, const uint8_t* buf, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "writing " + path);
    }
    buf += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status PwriteAll(int fd, const uint8_t* buf, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, buf, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "writing " + path);
    }
    buf += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status SyncAndClose(Fd& fd, const std::string& path) {
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync " + path);
  Fd closing = std::move(fd);
  return Status::Ok();
}

// Temporary files that are removed unless committed by renaming them to their final names.
class PendingFiles {
 public:
  ~PendingFiles() {
    for (const auto& [tmp, final_path] : files_) ::unlink(tmp.c_str());
  }
  void Add(std::string tmp, std::string final_path) {
    files_.emplace_back(std::move(tmp), std::move(final_path));
  }
  Status Commit() {
    for (const auto& [tmp, final_path] : files_) {
      if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
        std::string what = "renaming ";
        what.append(tmp).append(" to ").append(final_path);
        return ErrnoStatus(errno, what);
      }
    }
    files_.clear();
    return Status::Ok();
  }

 private:
  std::vector<std::pair<std::string, std::string>> files_;
};

Result<Fd> CreateTemp(const std::string& final_path, std::string* tmp_path) {
  std::string tmpl = final_path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return ErrnoStatus(errno, "creating a temporary file for " + final_path);
  ::fchmod(fd, 0644);
  *tmp_path = tmpl;
  return Fd(fd);
}

std::string Describe(const ShardHeader& h) {
  return std::string(SchemeName(h.scheme)) + " " + std::to_string(h.k) + "+" + std::to_string(h.m) +
         ", chunk " + std::to_string(h.chunk_size) + ", length " + std::to_string(h.length) +
         ", file id " + std::to_string(h.file_id);
}

bool SameEncoding(const ShardHeader& a, const ShardHeader& b) {
  return a.scheme == b.scheme && a.k == b.k && a.m == b.m && a.chunk_size == b.chunk_size &&
         a.length == b.length && a.payload_length == b.payload_length && a.file_id == b.file_id;
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc) {
  // ISA-L's crc32_iscsi neither pre- nor post-inverts; the standard CRC32C does both.
  uint32_t state = ~crc;
  for (size_t off = 0; off < data.size(); off += kCrcPiece) {
    const size_t piece = std::min(kCrcPiece, data.size() - off);
    state = crc32_iscsi(const_cast<uint8_t*>(data.data() + off), static_cast<int>(piece), state);
  }
  return ~state;
}

void SerializeShardHeader(const ShardHeader& h, std::span<uint8_t, kShardHeaderSize> out) {
  uint8_t* p = out.data();
  std::memset(p, 0, kShardHeaderSize);
  std::memcpy(p, kMagic, sizeof(kMagic));
  p[8] = kFormatVersion;
  p[9] = static_cast<uint8_t>(h.scheme);
  p[10] = static_cast<uint8_t>(h.k);
  p[11] = static_cast<uint8_t>(h.m);
  p[12] = static_cast<uint8_t>(h.index);
  Put32(p + 16, h.chunk_size);
  Put64(p + 24, h.length);
  Put64(p + 32, h.payload_length);
  Put64(p + 40, h.file_id);
  Put32(p + kCrcOffset, h.payload_crc);
  Put32(p + kHeaderCrcOffset, Crc32c(std::span<const uint8_t>(p, kHeaderCrcOffset)));
}

Result<ShardHeader> ParseShardHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kShardHeaderSize) {
    return Status::Corruption("too short for a shard header (" + std::to_string(bytes.size()) +
                              " bytes)");
  }
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    return Status::Corruption("not a tessera shard (bad magic)");
  }
  if (Get32(p + kHeaderCrcOffset) != Crc32c(std::span<const uint8_t>(p, kHeaderCrcOffset))) {
    return Status::Corruption("shard header checksum mismatch");
  }
  if (p[8] != kFormatVersion) {
    return Status::Corruption("unsupported shard format version " + std::to_string(p[8]));
  }
  ShardHeader h;
  if (p[9] > static_cast<uint8_t>(Scheme::kRsCauchy)) {
    return Status::Corruption("unknown scheme " + std::to_string(p[9]) + " in shard header");
  }
  h.scheme = static_cast<Scheme>(p[9]);
  h.k = p[10];
  h.m = p[11];
  h.index = p[12];
  h.chunk_size = Get32(p + 16);
  h.length = Get64(p + 24);
  h.payload_length = Get64(p + 32);
  h.file_id = Get64(p + 40);
  h.payload_crc = Get32(p + kCrcOffset);
  auto codec = Codec::Create(h.scheme, h.k, h.m);
  if (!codec.ok()) return Status::Corruption("shard header: " + codec.status().message());
  if (h.index >= h.k + h.m) {
    return Status::Corruption("shard header: index " + std::to_string(h.index) + " >= k + m");
  }
  if (h.chunk_size == 0 || h.chunk_size > kMaxChunkSize) {
    return Status::Corruption("shard header: chunk size " + std::to_string(h.chunk_size) +
                              " out of range");
  }
  if (h.payload_length != Stripes(h.length, h.k, h.chunk_size) * h.chunk_size) {
    return Status::Corruption("shard header: payload length disagrees with the file length");
  }
  return h;
}

Result<std::vector<std::string>> EncodeFile(const std::string& path,
                                            const EncodeFileOptions& options) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec,
                           Codec::Create(options.scheme, options.k, options.m));
  const int k = options.k;
  const int n = codec->n();
  if (options.chunk_size > kMaxChunkSize) {
    return Status::InvalidArgument("chunk size " + std::to_string(options.chunk_size) +
                                   " exceeds the maximum " + std::to_string(kMaxChunkSize));
  }
  Fd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return ErrnoStatus(errno, "opening " + path);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is a directory");
  const bool known_size = S_ISREG(st.st_mode);
  const uint64_t size = known_size ? static_cast<uint64_t>(st.st_size) : 0;

  uint32_t chunk = options.chunk_size;
  if (chunk == 0) {
    chunk = kDefaultChunkSize;
    if (known_size) {
      chunk = static_cast<uint32_t>(std::clamp<uint64_t>((size + k - 1) / k, 1, kDefaultChunkSize));
    }
  }

  std::random_device rd;
  const uint64_t file_id = (static_cast<uint64_t>(rd()) << 32) ^ rd();

  PendingFiles pending;
  std::vector<Fd> outs(n);
  std::vector<std::string> finals(n), tmps(n);
  for (int i = 0; i < n; ++i) {
    finals[i] = path + "." + std::to_string(i);
    TESSERA_ASSIGN_OR_RETURN(outs[i], CreateTemp(finals[i], &tmps[i]));
    pending.Add(tmps[i], finals[i]);
    // The header is written last, once the payload CRC is known; reserve its place.
    if (::lseek(outs[i].get(), static_cast<off_t>(kShardHeaderSize), SEEK_SET) < 0) {
      return ErrnoStatus(errno, "seeking in " + tmps[i]);
    }
  }

  // Shards sit back to back in one buffer, so a stripe of the file is read in one call straight
  // into the k data shards.
  AlignedBuf buf = AllocAligned(static_cast<size_t>(n) * chunk);
  std::vector<const uint8_t*> data(k);
  std::vector<uint8_t*> parity(codec->m());
  for (int i = 0; i < k; ++i) data[i] = buf.get() + static_cast<size_t>(i) * chunk;
  for (int j = 0; j < codec->m(); ++j) parity[j] = buf.get() + static_cast<size_t>(k + j) * chunk;
  std::vector<uint32_t> crcs(n, 0);
  const size_t stripe_bytes = static_cast<size_t>(k) * chunk;
  uint64_t length = 0;
  uint64_t stripes = 0;
  for (;;) {
    TESSERA_ASSIGN_OR_RETURN(size_t got, ReadUpTo(in.get(), buf.get(), stripe_bytes, path));
    if (got == 0 && stripes > 0) break;
    std::memset(buf.get() + got, 0, stripe_bytes - got);
    TESSERA_RETURN_IF_ERROR(codec->Encode(data, parity, chunk));
    for (int i = 0; i < n; ++i) {
      const uint8_t* shard = buf.get() + static_cast<size_t>(i) * chunk;
      crcs[i] = Crc32c(std::span(shard, chunk), crcs[i]);
      TESSERA_RETURN_IF_ERROR(WriteAll(outs[i].get(), shard, chunk, tmps[i]));
    }
    length += got;
    ++stripes;
    if (options.progress) options.progress(length, size);
    if (got < stripe_bytes) break;
  }

  ShardHeader h;
  h.scheme = options.scheme;
  h.k = k;
  h.m = codec->m();
  h.chunk_size = chunk;
  h.length = length;
  h.payload_length = stripes * chunk;
  h.file_id = file_id;
  TESSERA_ASSERT(h.payload_length == Stripes(length, k, chunk) * chunk, "stripe count drifted");
  for (int i = 0; i < n; ++i) {
    h.index = i;
    h.payload_crc = crcs[i];
    std::array<uint8_t, kShardHeaderSize> hdr{};
    SerializeShardHeader(h, hdr);
    TESSERA_RETURN_IF_ERROR(PwriteAll(outs[i].get(), hdr.data(), hdr.size(), 0, tmps[i]));
    TESSERA_RETURN_IF_ERROR(SyncAndClose(outs[i], tmps[i]));
  }
  TESSERA_RETURN_IF_ERROR(pending.Commit());
  return finals;
}

Result<DecodeFileReport> DecodeFile(const std::vector<std::string>& shard_paths,
                                    const std::string& out, const ProgressFn& progress) {
  if (shard_paths.empty()) return Status::InvalidArgument("no shard files given");
  DecodeFileReport report;

  struct Candidate {
    std::string path;
    Fd fd;
    ShardHeader header;
  };
  std::vector<Candidate> candidates;
  for (const std::string& p : shard_paths) {
    Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      report.skipped.push_back({p, ErrnoStatus(errno, "open").message()});
      continue;
    }
    std::array<uint8_t, kShardHeaderSize> hdr{};
    auto got = PreadUpTo(fd.get(), hdr.data(), hdr.size(), 0, p);
    if (!got.ok()) {
      report.skipped.push_back({p, got.status().message()});
      continue;
    }
    auto h = ParseShardHeader(std::span<const uint8_t>(hdr.data(), *got));
    if (!h.ok()) {
      report.skipped.push_back({p, h.status().message()});
      continue;
    }
    candidates.push_back({p, std::move(fd), *h});
  }
  if (candidates.empty()) {
    return Status::InvalidArgument("none of the " + std::to_string(shard_paths.size()) +
                                   " files is a readable tessera shard");
  }

  // Headers must describe one encoding; mixing shards of different files would decode garbage.
  const ShardHeader& ref = candidates.front().header;
  std::map<int, size_t> by_index;
  for (size_t c = 0; c < candidates.size(); ++c) {
    const Candidate& cand = candidates[c];
    if (!SameEncoding(cand.header, ref)) {
      return Status::InvalidArgument("shard headers disagree: " + candidates.front().path + " is " +
                                     Describe(ref) + " but " + cand.path + " is " +
                                     Describe(cand.header));
    }
    auto [it, inserted] = by_index.emplace(cand.header.index, c);
    if (!inserted) {
      return Status::InvalidArgument("shard headers disagree: " + candidates[it->second].path +
                                     " and " + cand.path + " both claim shard index " +
                                     std::to_string(cand.header.index));
    }
  }
  report.header = ref;
  const int k = ref.k;
  const int n = ref.k + ref.m;
  const uint32_t chunk = ref.chunk_size;
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, Codec::Create(ref.scheme, ref.k, ref.m));

  // Pass 1: check each shard's size and payload CRC; a shard that fails is erased.
  AlignedBuf buf = AllocAligned(static_cast<size_t>(n) * chunk);
  std::vector<int> slot(n, -1);  // shard index -> candidate, for intact shards
  for (auto& [index, c] : by_index) {
    Candidate& cand = candidates[c];
    struct stat st {};
    if (::fstat(cand.fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + cand.path);
    if (static_cast<uint64_t>(st.st_size) != kShardHeaderSize + ref.payload_length) {
      report.skipped.push_back(
          {cand.path, "size " + std::to_string(st.st_size) + " bytes, expected " +
                          std::to_string(kShardHeaderSize + ref.payload_length)});
      continue;
    }
    uint32_t crc = 0;
    for (uint64_t off = 0; off < ref.payload_length; off += chunk) {
      TESSERA_ASSIGN_OR_RETURN(size_t got, PreadUpTo(cand.fd.get(), buf.get(), chunk,
                                                     kShardHeaderSize + off, cand.path));
      if (got != chunk) return Status::IoError(cand.path + ": shard shrank while being read");
      crc = Crc32c(std::span(buf.get(), chunk), crc);
    }
    if (crc != cand.header.payload_crc) {
      report.skipped.push_back({cand.path, "payload checksum mismatch"});
      continue;
    }
    slot[index] = static_cast<int>(c);
  }
  std::vector<int> survivors;
  for (int i = 0; i < n; ++i) {
    if (slot[i] < 0) {
      report.erased.push_back(i);
    } else if (static_cast<int>(survivors.size()) < k) {
      survivors.push_back(i);
    }
  }
  if (static_cast<int>(survivors.size()) < k) {
    std::string why;
    for (int i = 0; i < n; ++i) {
      if (by_index.count(i) == 0) why += "; shard " + std::to_string(i) + " missing";
    }
    for (const auto& s : report.skipped) why += "; " + s.path + ": " + s.reason;
    return Status::Corruption("only " + std::to_string(survivors.size()) + " of the " +
                              std::to_string(n) + " shards are intact but " + std::to_string(k) +
                              " are needed to rebuild the file" + why)
        .WithCCode(TESSERA_TOO_MANY_ERASURES);
  }
  bool data_lost = false;
  for (int e : report.erased) data_lost = data_lost || e < k;

  // Pass 2: stream stripes from the first k intact shards (the ones Decode reads), rebuild lost
  // data shards, append the data to the output. CRCs are recomputed so that a shard modified
  // between the passes is caught rather than silently decoded.
  std::string tmp;
  TESSERA_ASSIGN_OR_RETURN(Fd outfd, CreateTemp(out, &tmp));
  PendingFiles pending;
  pending.Add(tmp, out);
  std::vector<uint8_t*> shards(n);
  for (int i = 0; i < n; ++i) shards[i] = buf.get() + static_cast<size_t>(i) * chunk;
  std::vector<uint32_t> crcs(n, 0);
  const uint64_t stripes = ref.payload_length / chunk;
  const size_t stripe_bytes = static_cast<size_t>(k) * chunk;
  uint64_t written = 0;
  for (uint64_t s = 0; s < stripes; ++s) {
    for (int i : survivors) {
      Candidate& cand = candidates[slot[i]];
      TESSERA_ASSIGN_OR_RETURN(size_t got, PreadUpTo(cand.fd.get(), shards[i], chunk,
                                                     kShardHeaderSize + s * chunk, cand.path));
      if (got != chunk) return Status::IoError(cand.path + ": shard shrank while being read");
      crcs[i] = Crc32c(std::span(shards[i], chunk), crcs[i]);
    }
    if (data_lost) TESSERA_RETURN_IF_ERROR(codec->Decode(shards, report.erased, chunk));
    const size_t take = static_cast<size_t>(std::min<uint64_t>(stripe_bytes, ref.length - written));
    TESSERA_RETURN_IF_ERROR(WriteAll(outfd.get(), buf.get(), take, tmp));
    written += take;
    if (progress) progress(written, ref.length);
  }
  for (int i : survivors) {
    if (crcs[i] != candidates[slot[i]].header.payload_crc) {
      return Status::Corruption(candidates[slot[i]].path + " changed while it was being decoded");
    }
  }
  TESSERA_RETURN_IF_ERROR(SyncAndClose(outfd, tmp));
  TESSERA_RETURN_IF_ERROR(pending.Commit());
  report.length = written;
  return report;
}

}  // namespace tessera::erasure
