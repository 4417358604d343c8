// Db: open/recovery, snapshots and readers, transactions, commit and group commit.
#include <fcntl.h>
#include <isa-l/crc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "btree.h"
#include "db_impl.h"
#include "tessera/common/errors.h"
#include "tessera/common/poll.h"

namespace tessera::engine {

using format::kBranch;
using format::kFreelist;
using format::kFreelistBodyHeader;
using format::kFreeRunSize;
using format::kHeaderSize;
using format::kInvalidPage;
using format::kLeaf;
using format::kMagic;
using format::kMetaPages;
using format::kOverflow;
using format::Load;
using format::Store;

uint64_t NewDbId() {
  std::random_device rd;
  uint64_t id = (uint64_t{rd()} << 32) ^ rd() ^
                static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return id != 0 ? id : 1;
}

uint32_t Crc32c(const uint8_t* data, size_t len, uint32_t crc) {
  // ISA-L takes an int length; feed large buffers in pieces.
  while (len > 0) {
    int n = static_cast<int>(std::min<size_t>(len, size_t{1} << 30));
    crc = crc32_iscsi(const_cast<uint8_t*>(data), n, crc);
    data += n;
    len -= static_cast<size_t>(n);
  }
  return crc;
}

namespace {

using Txn = ReadTxn::Impl;

std::string Pg(uint64_t p) { return "page " + std::to_string(p); }

uint32_t MetaCrc(const Meta& m) {
  Meta c = m;
  c.crc = 0;
  return Crc32c(reinterpret_cast<const uint8_t*>(&c), sizeof c);
}

bool MetaLooksValid(const Meta& m, uint32_t page_size) {
  return m.magic == kMagic && m.version >= format::kMinFormatVersion &&
         m.version <= format::kFormatVersion && m.page_size == page_size && m.crc == MetaCrc(m) &&
         m.last_page >= kMetaPages;
}

// Whether a writer has `path` open (holds its flock): probed with a shared lock, dropped at once.
bool WriterHoldsLock(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // also drops the shared lock, if taken
  return held;
}

Status CheckKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeySize) {
    return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                   " bytes: keys must be 1 to " + std::to_string(kMaxKeySize) +
                                   " bytes")
        .WithCCode(TESSERA_KEY_TOO_LARGE);
  }
  return Status::Ok();
}

Status CheckValue(std::string_view value) {
  if (value.size() > kMaxValueSize) {
    return Status::InvalidArgument("value of " + std::to_string(value.size()) +
                                   " bytes exceeds the maximum of " + std::to_string(kMaxValueSize))
        .WithCCode(TESSERA_VALUE_TOO_LARGE);
  }
  return Status::Ok();
}

Status CheckTreeName(std::string_view tree) {
  if (tree.size() > kMaxTreeNameSize) {
    return Status::InvalidArgument("tree name of " + std::to_string(tree.size()) +
                                   " bytes exceeds the maximum of " +
                                   std::to_string(kMaxTreeNameSize));
  }
  return Status::Ok();
}

std::string_view InfoBytes(const TreeInfo& info) {
  return {reinterpret_cast<const char*>(&info), sizeof info};
}

// ---- open-time validation of the pages a meta's unflushed commits wrote ----
struct Validator {
  const Db::Impl* db;
  uint64_t last_page;
  uint64_t durable;
  uint64_t checked = 0;

  Status Page(uint64_t p, uint64_t txnid, uint32_t crc, int type, uint8_t** out) {
    if (p < kMetaPages || p >= last_page) return Status::Corruption(Pg(p) + " is out of range");
    uint8_t* page = db->Page(p);
    PageView v{page};
    uint64_t n = v.type() == kOverflow ? v.overflow_pages() : 1;
    if (n == 0 || p + n > last_page) return Status::Corruption(Pg(p) + " has a bad run length");
    if (v.pgno() != p || v.txnid() != txnid || (type >= 0 && v.type() != type) || v.crc() != crc ||
        db->PageCrc(page, n) != crc) {
      return Status::Corruption(Pg(p) + " does not match what its parent expects (txn " +
                                std::to_string(txnid) + ")");
    }
    ++checked;
    *out = page;
    return Status::Ok();
  }

  Status Run(format::LeafCell lc) {
    const uint64_t p = lc.ovf_pgno();
    if (!db->headerless_runs) {
      uint8_t* ov;
      return Page(p, lc.ovf_txnid(), lc.ovf_crc(), kOverflow, &ov);
    }
    TESSERA_RETURN_IF_ERROR(db->RunInFile(lc, last_page));
    TESSERA_RETURN_IF_ERROR(db->RunMatches(lc));
    ++checked;
    return Status::Ok();
  }

  Status Tree(uint64_t p, uint64_t txnid, uint32_t crc, bool catalog, int depth = 0) {
    if (p == kInvalidPage || txnid <= durable) return Status::Ok();
    if (depth > 64) return Status::Corruption(Pg(p) + ": tree too deep");
    uint8_t* page;
    TESSERA_RETURN_IF_ERROR(Page(p, txnid, crc, -1, &page));
    PageView v{page};
    for (unsigned i = 0; i < v.count(); ++i) {
      if (v.type() == kBranch) {
        format::BranchCell bc{v.cell(i)};
        TESSERA_RETURN_IF_ERROR(
            Tree(bc.child(), bc.child_txnid(), bc.child_crc(), catalog, depth + 1));
      } else if (v.type() == kLeaf) {
        format::LeafCell lc{v.cell(i)};
        if (lc.overflow()) {
          if (lc.ovf_txnid() > durable) TESSERA_RETURN_IF_ERROR(Run(lc));
        } else if (catalog && lc.vlen() == sizeof(TreeInfo)) {
          TreeInfo ti;
          std::memcpy(&ti, lc.val(), sizeof ti);
          TESSERA_RETURN_IF_ERROR(Tree(ti.root, ti.root_txnid, ti.root_crc, false));
        }
      } else {
        return Status::Corruption(Pg(p) + " has unknown type " + std::to_string(v.type()));
      }
    }
    return Status::Ok();
  }

  Status Freelist(uint64_t p, uint64_t txnid, uint32_t crc) {
    for (int guard = 0; p != kInvalidPage && txnid > durable; ++guard) {
      if (guard > 1 << 24) return Status::Corruption("freelist chain loops");
      uint8_t* page;
      TESSERA_RETURN_IF_ERROR(Page(p, txnid, crc, kFreelist, &page));
      const uint8_t* body = page + kHeaderSize;
      p = Load<uint64_t>(body);
      txnid = Load<uint64_t>(body + 8);
      crc = Load<uint32_t>(body + 16);
    }
    return Status::Ok();
  }
};

Status ValidateMeta(const Db::Impl* db, const Meta& m) {
  if (m.last_page > db->region->page_count()) {
    return Status::Corruption("meta txn " + std::to_string(m.txnid) + " names " +
                              std::to_string(m.last_page) + " pages but the file has " +
                              std::to_string(db->region->page_count()));
  }
  Validator v{db, m.last_page, m.durable_txn};
  TESSERA_RETURN_IF_ERROR(v.Tree(m.main.root, m.main.root_txnid, m.main.root_crc, false));
  TESSERA_RETURN_IF_ERROR(v.Tree(m.catalog.root, m.catalog.root_txnid, m.catalog.root_crc, true));
  return v.Freelist(m.freelist_head, m.freelist_txnid, m.freelist_crc);
}

Result<uint32_t> DetectPageSize(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  Meta m;
  uint32_t found = 0;
  for (uint32_t off = 0; off <= vmem::kMaxPageSize && found == 0;
       off = off == 0 ? vmem::kMinPageSize : off * 2) {
    ssize_t n = ::pread(fd, &m, sizeof m, off);
    if (n != static_cast<ssize_t>(sizeof m)) continue;
    // Meta 0 sits at offset 0; meta 1 at offset page_size.
    if (m.magic == kMagic && m.crc == MetaCrc(m) && (off == 0 || m.page_size == off)) {
      found = m.page_size;
    }
  }
  ::close(fd);
  if (found < vmem::kMinPageSize || found > vmem::kMaxPageSize || (found & (found - 1)) != 0) {
    return Status::Corruption("'" + path + "' is not a Tessera database: no valid meta page");
  }
  return found;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Db::Impl helpers

uint32_t Db::Impl::PageCrc(const uint8_t* page, uint64_t npages) const {
  if (crc_skips_gap && npages == 1) {
    PageView v{const_cast<uint8_t*>(page)};
    // A malformed header (lower past upper or the page) gets the whole-page checksum, which
    // cannot match what a commit stored for a well-formed one: Corruption, not a wild read.
    if ((v.type() == kBranch || v.type() == format::kLeaf) && v.lower() <= v.upper() &&
        v.upper() <= page_size) {
      uint32_t crc = Crc32c(page + 4, v.lower() - 4);
      return Crc32c(page + v.upper(), page_size - v.upper(), crc);
    }
  }
  return Crc32c(page + 4, npages * page_size - 4);
}

Status Db::Impl::VerifyChecksum(uint64_t p) const {
  const uint8_t* page = Page(p);
  PageView v{const_cast<uint8_t*>(page)};
  if (headerless_runs && v.type() == kOverflow) {
    return Status::Corruption(Pg(p) + ": overflow page header in a file whose runs have none");
  }
  uint64_t n = v.type() == kOverflow ? v.overflow_pages() : 1;
  if (n == 0 || p + n > region->page_count()) {
    return Status::Corruption(Pg(p) + ": overflow run of " + std::to_string(n) +
                              " pages runs past the end of the file");
  }
  uint32_t crc = PageCrc(page, n);
  if (crc != v.crc()) {
    return Status::Corruption(Pg(p) + ": checksum mismatch (stored " + std::to_string(v.crc()) +
                              ", computed " + std::to_string(crc) + ")");
  }
  // The checksum proves the page is what was written; the layout check makes sure that even a
  // well-checksummed but malformed page (a crafted file) cannot send a reader outside it.
  if (v.type() == kBranch || v.type() == format::kLeaf) {
    const uint32_t lower = v.lower();
    if (v.count() == 0 || lower > v.upper() || v.upper() > page_size) {
      return Status::Corruption(Pg(p) + ": bad node layout");
    }
    for (unsigned i = 0; i < v.count(); ++i) {
      uint32_t off = v.slot(i);
      uint32_t head = v.type() == kBranch ? format::kBranchCellHeader : format::kLeafCellHeader;
      // Cells live in [upper, page_size): the engine never writes one below upper, and in a
      // version 2 file bytes below upper are not covered by the checksum.
      if (off < v.upper() || off + head > page_size) {
        return Status::Corruption(Pg(p) + ": cell " + std::to_string(i) + " outside the page");
      }
      uint64_t size;  // read only the header bytes the check above proved are in the page
      if (v.type() == kBranch) {
        size = format::BranchCell{v.cell(i)}.size();
      } else {
        format::LeafCell lc{v.cell(i)};
        size = uint64_t{format::kLeafCellHeader} + lc.klen() +
               (lc.overflow() ? format::kOverflowRefSize : uint64_t{lc.vlen()});
      }
      if (off + size > page_size) {
        return Status::Corruption(Pg(p) + ": cell " + std::to_string(i) + " runs off the page");
      }
    }
  } else if (v.type() != kOverflow && v.type() != kFreelist) {
    return Status::Corruption(Pg(p) + ": unknown page type " + std::to_string(v.type()));
  }
  return Status::Ok();
}

Result<const uint8_t*> Db::Impl::CheckRun(format::LeafCell lc, uint64_t last_page) const {
  const uint64_t p = lc.ovf_pgno();
  if (!headerless_runs) {
    TESSERA_RETURN_IF_ERROR(CheckPage(p, last_page, kOverflow, lc.ovf_txnid()));
    const uint64_t cap = uint64_t{PageView{Page(p)}.overflow_pages()} * page_size - kHeaderSize;
    if (lc.vlen() > cap) {
      return Status::Corruption("overflow " + Pg(p) + " holds " + std::to_string(cap) +
                                " bytes but the value needs " + std::to_string(lc.vlen()));
    }
    return Page(p) + kHeaderSize;
  }
  // Runs this process wrote, or whose checksum it verified, are marked by their first page (a
  // run is only ever written whole, and read whole through its reference). This rests on only
  // this Db writing the file: a read-only Db beside a live writer, which may reuse a run's pages
  // after reading it, checks every time.
  TESSERA_RETURN_IF_ERROR(RunInFile(lc, last_page));
  if (opts.read_only || !IsRunVerified(p)) {
    TESSERA_RETURN_IF_ERROR(RunMatches(lc));
    if (!opts.read_only) const_cast<Impl*>(this)->SetRunVerified(p);
  }
  return Page(p);
}

Status Db::Impl::RunInFile(format::LeafCell lc, uint64_t last_page) const {
  const uint64_t p = lc.ovf_pgno();
  const uint64_t n = RunPagesFor(lc.vlen());
  if (p < kMetaPages || p >= last_page || n > last_page - p) {
    return Status::Corruption("overflow run at " + Pg(p) + " (" + std::to_string(n) +
                              " pages) is outside the database (" + std::to_string(last_page) +
                              " pages)");
  }
  return Status::Ok();
}

Status Db::Impl::RunMatches(format::LeafCell lc) const {
  const uint64_t p = lc.ovf_pgno();
  const uint32_t crc = RunCrc(Page(p), lc.vlen());
  if (crc != lc.ovf_crc()) {
    return Status::Corruption(
        "overflow run at " + Pg(p) + ": checksum mismatch (its leaf records " +
        std::to_string(lc.ovf_crc()) + ", computed " + std::to_string(crc) + ")");
  }
  return Status::Ok();
}

Status Db::Impl::CheckPage(uint64_t p, uint64_t last_page, int expect_type,
                           uint64_t expect_txnid) const {
  if (p < kMetaPages || p >= last_page) {
    return Status::Corruption(Pg(p) + " is outside the database (" + std::to_string(last_page) +
                              " pages)");
  }
  if (!IsVerified(p)) {
    TESSERA_RETURN_IF_ERROR(VerifyChecksum(p));
    const_cast<Impl*>(this)->SetVerified(p);
  }
  PageView v{Page(p)};
  if (v.pgno() != p) {
    return Status::Corruption(Pg(p) + " claims to be page " + std::to_string(v.pgno()));
  }
  if (expect_type >= 0 && v.type() != expect_type) {
    return Status::Corruption(Pg(p) + " has type " + std::to_string(v.type()) + ", expected " +
                              std::to_string(expect_type));
  }
  if (expect_txnid != 0 && v.txnid() != expect_txnid) {
    return Status::Corruption(Pg(p) + " was written by txn " + std::to_string(v.txnid()) +
                              " but its parent expects txn " + std::to_string(expect_txnid));
  }
  return Status::Ok();
}

Status Db::Impl::TrimToLastPage() {
  if (region->page_count() <= meta.last_page) return Status::Ok();
  TESSERA_RETURN_IF_ERROR(region->Truncate(meta.last_page));
  return region->Flush();
}

Status Db::Impl::FlushDurable(uint64_t txnid, uint32_t slot) {
  flushed_lately = true;
  Status s = region->Flush();
  if (!s.ok()) {
    // Never guess after a durability failure: every later write gets this error.
    fatal =
        Status::IoError("flush failed; the database refuses writes until reopened: " + s.message())
            .WithCCode(TESSERA_FATAL);
    return fatal;
  }
  flushes.fetch_add(1, std::memory_order_relaxed);
  durable_txn = txnid;
  durable_slot = slot;
  // The log may continue from here only if the meta now on disk names this file's db_id (a file
  // from before db_ids gets one with its first commit).
  Meta flushed;
  std::memcpy(&flushed, Page(slot), sizeof flushed);
  logged_upto = flushed.db_id != 0 && flushed.db_id == meta.db_id ? txnid : kNotLogged;
  if (log) log->Reset();
  return Status::Ok();
}

void Db::Impl::Publish(const Meta& m) {
  uint64_t words[kMetaWords];
  std::memcpy(words, &m, sizeof m);
  RingEntry& e = ring[m.txnid % kRing];
  // Orders the publication of the previous txn (current_txn) before this entry's stores: a reader
  // that read entry m.txnid - kRing and then sees current_txn below m.txnid - 1 (PinNewest) must
  // not have read any of these stores.
  std::atomic_thread_fence(std::memory_order_release);
  for (size_t i = 0; i < kMetaWords; ++i) e.w[i].store(words[i], std::memory_order_relaxed);
  current_txn.store(m.txnid, std::memory_order_seq_cst);
}

Meta Db::Impl::LoadRing(uint64_t txn) const {
  uint64_t words[kMetaWords];
  const RingEntry& e = ring[txn % kRing];
  for (size_t i = 0; i < kMetaWords; ++i) words[i] = e.w[i].load(std::memory_order_relaxed);
  Meta m;
  std::memcpy(&m, words, sizeof m);
  return m;
}

Result<size_t> Db::Impl::TakeReaderSlot() const {
  static thread_local size_t hint = std::hash<std::thread::id>()(std::this_thread::get_id());
  const size_t n = opts.max_readers;
  for (size_t i = 0; i < n; ++i) {
    size_t s = (hint + i) % n;
    uint32_t expected = 0;
    if (readers[s].busy.load(std::memory_order_relaxed) == 0 &&
        readers[s].busy.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) {
      hint = s;
      return s;
    }
  }
  return Status::Busy("too many concurrent readers (max_readers = " + std::to_string(n) + ")");
}

template <typename Load>
void Db::Impl::PinNewest(size_t slot, Load load) const {
  for (;;) {
    uint64_t t = current_txn.load(std::memory_order_acquire);
    readers[slot].txn.store(t, std::memory_order_seq_cst);
    if (current_txn.load(std::memory_order_seq_cst) != t) continue;
    const uint64_t read = load(t);
    std::atomic_thread_fence(std::memory_order_acquire);
    // The entry may have been overwritten while it was read (a writer kRing commits ahead).
    if (current_txn.load(std::memory_order_relaxed) >= t + kRing - 1) continue;
    if (read != t) continue;
    return;
  }
}

Result<size_t> Db::Impl::AcquireReader(Meta* m) const {
  TESSERA_ASSIGN_OR_RETURN(size_t slot, TakeReaderSlot());
  PinNewest(slot, [&](uint64_t t) {
    *m = LoadRing(t);
    return m->txnid;
  });
  return slot;
}

Result<size_t> Db::Impl::AcquireMainTree(TreeInfo* main, uint64_t* last_page) const {
  static_assert(offsetof(Meta, txnid) % 8 == 0 && offsetof(Meta, last_page) % 8 == 0 &&
                offsetof(Meta, main) % 8 == 0 && sizeof(TreeInfo) % 8 == 0);
  constexpr size_t kTxn = offsetof(Meta, txnid) / 8, kLast = offsetof(Meta, last_page) / 8,
                   kMain = offsetof(Meta, main) / 8, kMainWords = sizeof(TreeInfo) / 8;
  TESSERA_ASSIGN_OR_RETURN(size_t slot, TakeReaderSlot());
  PinNewest(slot, [&](uint64_t t) {
    const RingEntry& e = ring[t % kRing];
    uint64_t words[kMainWords];
    for (size_t i = 0; i < kMainWords; ++i) {
      words[i] = e.w[kMain + i].load(std::memory_order_relaxed);
    }
    std::memcpy(main, words, sizeof *main);
    *last_page = e.w[kLast].load(std::memory_order_relaxed);
    return e.w[kTxn].load(std::memory_order_relaxed);
  });
  return slot;
}

Result<size_t> Db::Impl::AcquireReaderAt(const Meta& m) const {
  for (size_t s = 0; s < opts.max_readers; ++s) {
    uint32_t expected = 0;
    if (readers[s].busy.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) {
      readers[s].txn.store(m.txnid, std::memory_order_seq_cst);
      return s;
    }
  }
  return Status::Busy(
      "too many concurrent readers (max_readers = " + std::to_string(opts.max_readers) + ")");
}

void Db::Impl::ReleaseReader(size_t slot) const {
  readers[slot].busy.store(0, std::memory_order_release);
}

void Db::Impl::LiveSnapshots(std::vector<uint64_t>* out) const {
  auto& live = *out;
  live.clear();
  for (size_t i = 0; i < opts.max_readers; ++i) {
    if (readers[i].busy.load(std::memory_order_seq_cst) != 0) {
      live.push_back(readers[i].txn.load(std::memory_order_seq_cst));
    }
  }
  if (replay_reader_floor != 0) live.push_back(replay_reader_floor);
  if (shared_readers) shared_readers->AppendLive(&live);  // read-only Dbs, any process
  std::sort(live.begin(), live.end());
}

// ---------------------------------------------------------------------------------------------
// WriteBatch

void WriteBatch::Put(std::string_view tree, std::string_view key, std::string_view value) {
  ops_.push_back({true, std::string(tree), std::string(key), std::string(value)});
  bytes_ += tree.size() + key.size() + value.size() + 16;
}

void WriteBatch::Delete(std::string_view tree, std::string_view key) {
  ops_.push_back({false, std::string(tree), std::string(key), {}});
  bytes_ += tree.size() + key.size() + 16;
}

void WriteBatch::Clear() {
  ops_.clear();
  bytes_ = 0;
}

std::string VerifyReport::ToString() const {
  std::string out = ok ? "verify: ok" : "verify: FAILED";
  out += " (" + std::to_string(pages_checked) + " pages, " + std::to_string(entries) +
         " entries checked)\n";
  for (const auto& p : problems) out += "  " + p + "\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Transactions

ReadTxn::Impl::~Impl() {
  if (slot != SIZE_MAX) db->ReleaseReader(slot);
}

Result<TreeInfo*> ReadTxn::Impl::Tree(std::string_view name, bool create) const {
  auto* self = const_cast<ReadTxn::Impl*>(this);
  if (name.empty()) return &self->meta.main;
  auto it = trees.find(name);
  if (it != trees.end()) {
    if (it->second.exists) return &it->second.info;
    if (!create) return Status::NotFound("tree '" + std::string(name) + "' does not exist");
  } else {
    TESSERA_RETURN_IF_ERROR(CheckTreeName(name));
    std::string_view bytes;
    Status s = btree::Get(*this, meta.catalog, name, &bytes);
    TreeState st;
    if (s.ok()) {
      if (bytes.size() != sizeof(TreeInfo)) {
        return Status::Corruption("catalog entry for tree '" + std::string(name) + "' has " +
                                  std::to_string(bytes.size()) + " bytes");
      }
      std::memcpy(&st.info, bytes.data(), sizeof st.info);
      st.exists = true;
    } else if (!s.IsNotFound()) {
      return s;
    }
    it = trees.emplace(std::string(name), st).first;
    if (st.exists) return &it->second.info;
    if (!create) return Status::NotFound("tree '" + std::string(name) + "' does not exist");
  }
  it->second.exists = true;
  it->second.dirty = true;
  it->second.info = TreeInfo{};
  return &it->second.info;
}

ReadTxn::ReadTxn(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReadTxn::~ReadTxn() = default;

Result<std::string_view> ReadTxn::Get(std::string_view tree, std::string_view key) const {
  if (impl_->finished) {
    return Status::InvalidArgument("transaction already finished").WithCCode(TESSERA_TXN_FINISHED);
  }
  TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, impl_->Tree(tree, false));
  std::string_view v;
  TESSERA_RETURN_IF_ERROR(btree::Get(*impl_, *info, key, &v));
  return v;
}

uint64_t ReadTxn::txnid() const { return impl_->meta.txnid; }
uint64_t ReadTxn::commit_seq() const { return impl_->meta.commit_seq; }

SnapshotDescriptor ReadTxn::Descriptor() const {
  SnapshotDescriptor d;
  d.page_size = impl_->db->page_size;
  d.txnid = impl_->meta.txnid;
  d.commit_seq = impl_->meta.commit_seq;
  d.last_page = impl_->meta.last_page;
  d.meta_bytes.assign(reinterpret_cast<const char*>(&impl_->meta), sizeof(Meta));
  return d;
}

Result<std::vector<std::string>> ReadTxn::ListTrees() const {
  std::vector<std::string> names;
  TESSERA_ASSIGN_OR_RETURN(auto cur, NewCatalogCursor(*impl_));
  // A step that fails also ends the cursor: its status is checked after the loop too.
  Status s = cur->First();
  for (; s.ok() && cur->Valid(); s = cur->Next()) names.emplace_back(cur->key());
  TESSERA_RETURN_IF_ERROR(s);
  // Trees created or dropped in this (write) transaction.
  for (const auto& [name, st] : impl_->trees) {
    if (!st.dirty) continue;
    auto it = std::lower_bound(names.begin(), names.end(), name);
    bool present = it != names.end() && *it == name;
    if (st.exists && !present) names.insert(it, name);
    if (!st.exists && present) names.erase(it);
  }
  return names;
}

WriteTxn::WriteTxn(std::unique_ptr<Impl> impl) : ReadTxn(std::move(impl)) {}

WriteTxn::~WriteTxn() {
  if (!impl_->finished) Abort();
}

namespace {

Status WritableTxn(const Txn& t) {
  if (t.finished) {
    return Status::InvalidArgument("transaction already finished").WithCCode(TESSERA_TXN_FINISHED);
  }
  if (!t.db->fatal.ok()) return t.db->fatal;
  if (!t.failed.ok()) {
    return t.failed.WithContext(
        "an earlier write in this transaction failed, so it can only abort");
  }
  return Status::Ok();
}

// Records a failed tree operation (NotFound changes nothing) and passes it on.
Status NoteFailure(Txn& t, Status s) {
  if (!s.ok() && !s.IsNotFound()) t.failed = s;
  return s;
}

}  // namespace

Status WriteTxn::Put(std::string_view tree, std::string_view key, std::string_view value) {
  TESSERA_RETURN_IF_ERROR(WritableTxn(*impl_));
  TESSERA_RETURN_IF_ERROR(CheckKey(key));
  TESSERA_RETURN_IF_ERROR(CheckValue(value));
  TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, impl_->Tree(tree, true));
  if (!tree.empty()) impl_->trees.find(tree)->second.dirty = true;
  TESSERA_RETURN_IF_ERROR(NoteFailure(*impl_, btree::Put(*impl_, info, key, value)));
  impl_->LogOp(logop::kPut, tree, key, value);
  return Status::Ok();
}

Status WriteTxn::Delete(std::string_view tree, std::string_view key) {
  TESSERA_RETURN_IF_ERROR(WritableTxn(*impl_));
  TESSERA_RETURN_IF_ERROR(CheckKey(key));
  TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, impl_->Tree(tree, false));
  TESSERA_RETURN_IF_ERROR(NoteFailure(*impl_, btree::Delete(*impl_, info, key)));
  if (!tree.empty()) impl_->trees.find(tree)->second.dirty = true;
  impl_->LogOp(logop::kDelete, tree, key);
  return Status::Ok();
}

Status WriteTxn::CreateTree(std::string_view tree) {
  TESSERA_RETURN_IF_ERROR(WritableTxn(*impl_));
  if (tree.empty()) return Status::InvalidArgument("tree name must not be empty");
  TESSERA_RETURN_IF_ERROR(impl_->Tree(tree, true).status());
  impl_->LogOp(logop::kCreateTree, tree);
  return Status::Ok();
}

Status WriteTxn::DropTree(std::string_view tree) {
  TESSERA_RETURN_IF_ERROR(WritableTxn(*impl_));
  if (tree.empty()) return Status::InvalidArgument("the main tree cannot be dropped");
  TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, impl_->Tree(tree, false));
  TESSERA_RETURN_IF_ERROR(NoteFailure(*impl_, btree::Drop(*impl_, info)));
  auto& st = impl_->trees.find(tree)->second;
  st.exists = false;
  st.dirty = true;
  impl_->LogOp(logop::kDropTree, tree);
  return Status::Ok();
}

void WriteTxn::Abort() {
  Txn& t = *impl_;
  if (t.finished) return;
  Db::Impl* db = t.db;
  // Give back the free pages this transaction took.
  db->reusable.insert(t.taken.begin(), t.taken.end());
  t.finished = true;
  ++t.mod_count;
  t.lock.unlock();
}

namespace {

// Writes this transaction's freelist record (what it took from and gave back to the free set), or
// a full dump of the free set when the log has grown long; see format.h.
Status WriteFreelist(Txn& t, std::vector<uint64_t>* chain_out, std::vector<uint64_t>* now_freed) {
  Db::Impl* db = t.db;
  const uint32_t ps = db->page_size;
  const uint64_t per_page = (ps - kHeaderSize - kFreelistBodyHeader) / kFreeRunSize;
  const uint64_t free_est = db->reusable.size() + db->pending_count + t.freed.size() +
                            t.freed_young.size() + t.txn_reusable.size() +
                            db->freelist_chain.size();
  const uint64_t dump_pages = free_est / per_page + 1;
  const bool dump = t.freelist_dump || db->freelist_chain.empty() ||
                    db->freelist_chain.size() >= 4 * dump_pages + 64;
  std::vector<uint64_t> record;
  std::vector<std::pair<uint64_t, uint64_t>> entries;  // (freeing txn or kRunRemoved, page)
  std::vector<uint64_t> freed_scratch;
  auto gather = [&] {
    entries.clear();
    now_freed->clear();
    now_freed->insert(now_freed->end(), t.freed.begin(), t.freed.end());
    now_freed->insert(now_freed->end(), t.freed_young.begin(), t.freed_young.end());
    now_freed->insert(now_freed->end(), t.txn_reusable.begin(), t.txn_reusable.end());
    if (dump) {
      now_freed->insert(now_freed->end(), db->freelist_chain.begin(), db->freelist_chain.end());
      db->reusable.for_each([&entries](uint64_t p) { entries.emplace_back(0, p); });
      for (const auto* pend : {&db->pending, &db->pending_young}) {
        for (const auto& [txn, batch] : *pend) {
          for (uint64_t p : batch.pages) entries.emplace_back(txn, p);
        }
      }
      for (uint64_t p : *now_freed) entries.emplace_back(t.txnid, p);
      // Entries of the reusable set (txn 0) come first and already in order: sort only the rest.
      auto rest =
          std::find_if(entries.begin(), entries.end(), [](const auto& e) { return e.first != 0; });
      std::sort(rest, entries.end());
    } else {
      // Two groups, in the order a sort by (txn, page) gives: this txn's frees, then the pages it
      // took (kRunRemoved is the largest txn). Each group is sorted on its own: plain page
      // numbers sort faster than pairs, and the taken pages are usually ascending already.
      freed_scratch.assign(now_freed->begin(), now_freed->end());
      std::sort(freed_scratch.begin(), freed_scratch.end());
      for (uint64_t p : freed_scratch) entries.emplace_back(t.txnid, p);
      const size_t mark = entries.size();
      for (uint64_t p : t.taken) entries.emplace_back(format::kRunRemoved, p);
      if (!std::is_sorted(entries.begin() + static_cast<ptrdiff_t>(mark), entries.end())) {
        std::sort(entries.begin() + static_cast<ptrdiff_t>(mark), entries.end());
      }
    }
    uint64_t runs = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i == 0 || entries[i].first != entries[i - 1].first ||
          entries[i].second != entries[i - 1].second + 1) {
        ++runs;
      }
    }
    return runs;
  };
  for (int round = 0;; ++round) {
    TESSERA_ASSERT(round < 1000, "freelist sizing does not converge");
    uint64_t runs = gather();
    uint64_t need = std::max<uint64_t>(1, (runs + per_page - 1) / per_page);
    if (record.size() >= need) break;
    for (uint64_t k = record.size(); k < need + (round > 0 ? 1 : 0); ++k) {
      TESSERA_ASSIGN_OR_RETURN(uint64_t p, btree::AllocPages(t, 1));
      record.push_back(p);
    }
  }
  // Fill the record's pages with runs.
  size_t e = 0;
  for (uint64_t pg : record) {
    uint8_t* page = db->Page(pg);
    std::memset(page, 0, ps);
    PageView v{page};
    v.set_pgno(pg);
    v.set_txnid(t.txnid);
    v.set_type(kFreelist);
    v.set_flags(dump ? format::kFreelistDump : 0);
    v.set_upper(ps);
    uint8_t* body = page + kHeaderSize;
    uint32_t nruns = 0;
    uint8_t* out = body + kFreelistBodyHeader;
    while (e < entries.size() && nruns < per_page) {
      uint64_t txn = entries[e].first, first = entries[e].second, count = 1;
      while (e + count < entries.size() && entries[e + count].first == txn &&
             entries[e + count].second == first + count) {
        ++count;
      }
      Store(out, txn);
      Store(out + 8, first);
      Store(out + 16, count);
      out += kFreeRunSize;
      ++nruns;
      e += count;
    }
    Store(body + 20, nruns);
  }
  TESSERA_ASSERT(e == entries.size(), "freelist record too short");
  // Link: the record's last page points at the previous log head (or ends the chain for a dump);
  // checksums from the tail so each link carries its successor's crc.
  uint64_t next = dump ? kInvalidPage : t.meta.freelist_head;
  uint64_t next_txn = dump ? 0 : t.meta.freelist_txnid;
  uint32_t next_crc = dump ? 0 : t.meta.freelist_crc;
  for (size_t c = record.size(); c-- > 0;) {
    uint8_t* page = db->Page(record[c]);
    uint8_t* body = page + kHeaderSize;
    Store(body, next);
    Store(body + 8, next_txn);
    Store(body + 16, next_crc);
    uint32_t crc = db->PageCrc(page, 1);
    PageView{page}.set_crc(crc);
    next = record[c];
    next_txn = t.txnid;
    next_crc = crc;
  }
  t.meta.freelist_head = next;
  t.meta.freelist_txnid = next_txn;
  t.meta.freelist_crc = next_crc;
  t.meta.free_pages = db->reusable.size() + db->pending_count + now_freed->size();
  chain_out->assign(record.begin(), record.end());
  if (!dump) {
    chain_out->insert(chain_out->end(), db->freelist_chain.begin(), db->freelist_chain.end());
  }
  return Status::Ok();
}

Status CommitTxn(Txn& t, bool sync) {
  Db::Impl* db = t.db;
  TESSERA_RETURN_IF_ERROR(WritableTxn(t));
  const uint64_t flushes_before = db->flushes.load(std::memory_order_relaxed);
  // 1. Named trees: checksum their new pages, then record them in the catalog.
  for (auto& [name, st] : t.trees) {
    if (!st.dirty) continue;
    if (st.exists) {
      btree::Finalize(t, &st.info);
      TESSERA_RETURN_IF_ERROR(btree::Put(t, &t.meta.catalog, name, InfoBytes(st.info)));
    } else {
      Status s = btree::Delete(t, &t.meta.catalog, name);
      if (!s.ok() && !s.IsNotFound()) return s;
    }
  }
  // 2. The freelist (allocates its own pages, so it comes after every tree change).
  std::vector<uint64_t> chain, now_freed;
  bool freelist_changed =
      t.freelist_changed || !t.freed.empty() || !t.freed_young.empty() || !t.txn_reusable.empty();
  if (freelist_changed) TESSERA_RETURN_IF_ERROR(WriteFreelist(t, &chain, &now_freed));
  // 3. Checksums bottom-up.
  btree::Finalize(t, &t.meta.catalog);
  btree::Finalize(t, &t.meta.main);
  // 4. The meta, into the slot that does not hold the durable meta.
  Meta m = t.meta;
  m.txnid = t.txnid;
  m.commit_seq = db->meta.commit_seq + 1;
  m.durable_txn = db->durable_txn;
  m.crc = MetaCrc(m);
  const uint32_t slot = 1 - db->durable_slot;
  // nosync commits keep freed pages from reuse until a flush; flush once too many wait.
  uint64_t backlog = db->pending_old_count + t.freed.size();
  const bool reclaim = !db->replaying && backlog > std::max<uint64_t>(16384, m.last_page / 2);
  const bool via_log = sync && !reclaim && db->log && t.log_ok && db->logged_upto == t.txnid - 1 &&
                       db->log->Fits(t.log_ops.size());
  // What the slot held, put back if a flush fails below: the OS may still write the page back,
  // and the commit the caller was told failed must not appear at the next open. A commit through
  // the log writes the slot only once its record is stored: a read-only handle opened meanwhile
  // (it reads the metas from the file) must not take a commit that then fails for its snapshot.
  Meta slot_before;
  if (!via_log) {
    std::memcpy(&slot_before, db->Page(slot), sizeof slot_before);
    std::memcpy(db->Page(slot), &m, sizeof m);  // the rest of a meta page stays zero
  }
  if (via_log) {
    // Every commit since the last flush is in the log: this one joins it, and the data file's
    // pages can wait for a later flush.
    Status s = db->log->Append(m.db_id, db->durable_txn, m.txnid, t.log_ops);
    if (!s.ok()) {
      db->fatal = Status::IoError(
                      "commit log write failed; the database refuses writes until "
                      "reopened: " +
                      s.message())
                      .WithCCode(TESSERA_FATAL);
      return db->fatal;
    }
    std::memcpy(db->Page(slot), &m, sizeof m);
    db->logged_upto = m.txnid;
    db->log_syncs.fetch_add(1, std::memory_order_relaxed);
  } else if (sync || reclaim) {
    Status s = db->FlushDurable(m.txnid, slot);
    if (!s.ok()) {
      // Unless the failed flush wrote the new meta already, the commit stays absent.
      std::memcpy(db->Page(slot), &slot_before, sizeof slot_before);
      return s;
    }
  }
  // 5. Publish.
  if (freelist_changed) {
    db->freelist_chain = std::move(chain);
    // now_freed = freed, freed_young, txn_reusable, and (after a dump) the old log's pages.
    Db::Impl::FreedBatch young{t.young_wmin, t.freed_young};
    young.pages.insert(young.pages.end(), t.txn_reusable.begin(), t.txn_reusable.end());
    if (!t.txn_reusable.empty()) young.wmin = std::min(young.wmin, t.txnid);
    Db::Impl::FreedBatch old{t.freed_wmin, t.freed};
    // A log page written since the last flush is young like any other: the durable meta cannot
    // reach it. Counting it as old made every nosync commit's record wait for a flush, so a
    // small database of single-put commits grew by a page a commit and flushed for it.
    for (size_t i = t.freed.size() + young.pages.size(); i < now_freed.size(); ++i) {
      const uint64_t p = now_freed[i];
      const uint64_t w = PageView{db->Page(p)}.txnid();
      auto& b = w > db->durable_txn ? young : old;
      b.pages.push_back(p);
      b.wmin = std::min(b.wmin, w);
    }
    db->pending_count += old.pages.size() + young.pages.size();
    db->pending_old_count += old.pages.size();
    if (!old.pages.empty()) db->pending[t.txnid] = std::move(old);
    if (!young.pages.empty()) db->pending_young[t.txnid] = std::move(young);
  }
  db->meta = m;
  db->meta_slot = slot;
  db->Publish(m);
  db->commits.fetch_add(1, std::memory_order_relaxed);
  db->flushed_lately = db->flushes.load(std::memory_order_relaxed) != flushes_before;
  t.finished = true;
  ++t.mod_count;
  t.lock.unlock();
  return Status::Ok();
}

}  // namespace

Status WriteTxn::Commit(const WriteOptions& options) {
  Status s = CommitTxn(*impl_, options.sync);
  if (!s.ok() && !impl_->finished) Abort();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Db

Db::Db(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

// A clean close moves at most this much of the file's end (a second or so here): a big file
// with much free space shrinks over several closes, or with an explicit Shrink.
constexpr uint64_t kCloseShrinkBytes = uint64_t{256} << 20;

Db::~Db() {
  if (!impl_) return;
  // A caller that pins snapshots again after a restart (retain_freed_after) needs their page
  // numbers to stay.
  if (!impl_->opts.read_only && !impl_->dead && impl_->fatal.ok() && impl_->opts.shrink_on_close &&
      impl_->opts.retain_freed_after == 0) {
    bool worth;
    {
      std::lock_guard<std::mutex> l(impl_->write_mu);
      const uint64_t free = impl_->reusable.size() + impl_->pending_count;
      worth = free * impl_->page_size >= (uint64_t{8} << 20) && free >= impl_->meta.last_page / 4;
    }
    // A failure leaves a consistent database (each step is a commit); the flush below says more.
    if (worth) (void)Shrink(kCloseShrinkBytes);
  }
  if (!impl_->opts.read_only && !impl_->dead && impl_->fatal.ok()) {
    std::lock_guard<std::mutex> l(impl_->write_mu);
    // A clean close makes nosync and logged commits durable and gives back the space grown ahead
    // of need.
    Db::Impl& d = *impl_;
    if (d.region->Flush().ok()) {
      (void)d.TrimToLastPage();
      // Then a meta that records everything as durable goes to the other slot: the next open
      // need not walk the pages written since the last flush, and damage in them is reported
      // as damage instead of being taken for a torn commit. A torn write of it leaves the meta
      // just flushed in place.
      if (d.commits.load() > 0 && d.meta.durable_txn < d.meta.txnid) {
        Meta c = d.meta;
        c.txnid = d.meta.txnid + 1;
        c.durable_txn = d.meta.txnid;
        c.crc = MetaCrc(c);
        std::memcpy(d.Page(1 - d.meta_slot), &c, sizeof c);
        (void)d.region->Flush();
      }
      // Every commit is in the file now, so its log has nothing left to give; left in place it
      // would be taken for the file's at the next open even after the file was replaced by an
      // older copy of itself (its stale records then replayed onto that copy, or refused as a
      // gap). A cleanly closed database is its one file.
      if (d.log) d.log->Remove();
    }
  }
}

uint32_t Db::page_size() const { return impl_->page_size; }
const std::string& Db::path() const { return impl_->path; }

Result<std::unique_ptr<Db>> Db::Open(const std::string& path, const Options& options) {
  const uint32_t ps_opt = options.page_size;
  if (ps_opt < vmem::kMinPageSize || ps_opt > vmem::kMaxPageSize || (ps_opt & (ps_opt - 1)) != 0) {
    return Status::InvalidArgument("page size " + std::to_string(ps_opt) +
                                   " must be a power of two from 4096 to 65536")
        .WithCCode(TESSERA_BAD_PAGE_SIZE);
  }
  if (options.max_readers == 0 || options.max_readers > 4096) {
    // (A huge count threw std::bad_alloc out of Open.)
    return Status::InvalidArgument("max_readers " + std::to_string(options.max_readers) +
                                   " is not 1 to 4096");
  }
  if (options.group_commit_spin_us > 1000000) {
    return Status::InvalidArgument("group_commit_spin_us " +
                                   std::to_string(options.group_commit_spin_us) +
                                   " is over a second (1000000)");
  }
  if (options.format_version != 0 && (options.format_version < format::kMinFormatVersion ||
                                      options.format_version > format::kFormatVersion)) {
    return Status::InvalidArgument("format_version " + std::to_string(options.format_version) +
                                   " is not one this build writes (1 to " +
                                   std::to_string(format::kFormatVersion) + ", 0 for the newest)");
  }
  struct stat st;
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) return ErrnoStatus(errno, "stat " + path);
  if (!exists && (!options.create_if_missing || options.read_only)) {
    return Status::NotFound("database file '" + path + "' does not exist");
  }
  bool fresh = !exists || st.st_size == 0;
  if (!fresh && !options.read_only && st.st_size <= 2 * vmem::kMaxPageSize) {
    // A creation interrupted before its first meta reached the file leaves only zeros: no data
    // can be lost by starting that file again.
    std::string bytes(static_cast<size_t>(st.st_size), '\0');
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open " + path);
    // Under the writer's lock: zeros may also be a file another opener has just grown and is
    // writing its first metas into (truncating it under that opener's mapping crashed it).
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK) {
        return Status::Busy(path + " is already open for writing (by this or another process)")
            .WithCCode(TESSERA_BUSY);
      }
      return ErrnoStatus(e, "flock " + path);
    }
    bool zeros = ::pread(fd, bytes.data(), bytes.size(), 0) == st.st_size &&
                 bytes.find_first_not_of('\0') == std::string::npos;
    if (zeros && ::ftruncate(fd, 0) != 0) {
      ::close(fd);
      return ErrnoStatus(errno, "truncate " + path);
    }
    ::close(fd);
    fresh = zeros;
  }
  if (fresh && options.read_only) {
    return Status::Corruption("database file '" + path + "' is empty: not a Tessera database");
  }
  uint32_t ps = ps_opt;
  if (!fresh) {
    auto detected = DetectPageSize(path);
    if (!detected.ok()) return detected.status();
    ps = *detected;
    if (static_cast<uint64_t>(st.st_size) % ps != 0) {
      return Status::Corruption("'" + path + "' is " + std::to_string(st.st_size) +
                                " bytes, not a whole number of its " + std::to_string(ps) +
                                "-byte pages: truncated, or not a Tessera database");
    }
  }

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->opts = options;
  impl->page_size = ps;
  vmem::RegionOptions ro;
  ro.page_size = ps;
  ro.reserve_bytes = options.reserve_bytes;
  ro.read_only = options.read_only;
  ro.create = true;
  ro.simulate_power_cut = options.simulate_power_cut;
  auto region = vmem::Region::Open(path, ro);
  if (!region.ok()) return region.status().WithContext("opening database '" + path + "'");
  impl->region = std::move(region).value();
  const uint64_t cap = impl->region->capacity_pages();
  impl->verified_pages = cap;
  impl->verified.reset(new std::atomic<uint64_t>[cap / 64 + 1]());
  impl->run_verified.reset(new std::atomic<uint64_t>[cap / 64 + 1]());
  impl->crc_fresh.Reset(cap);
  impl->crc_resealed.Reset(cap);
  impl->readers.reset(new ReaderSlot[options.max_readers]());
  impl->ring.reset(new Impl::RingEntry[Impl::kRing]());

  // The reader table. A read-only Db pins the newest snapshot in it before reading anything of
  // that snapshot, and re-reads the metas to be sure no commit came between (see
  // shared_readers.h); a writer finds the snapshots pinned there before it reuses any page.
  uint64_t pinned = 0;
  Meta pinned_metas[2];  // read-only: the metas as they were when `pinned` was pinned
  bool have_pinned_metas = false;
  uint64_t oldest_pinned = 0;  // writer: the oldest snapshot read-only Dbs pin now
  {
    auto sr = SharedReaders::Open(path, !options.read_only);
    if (!sr.ok()) {
      impl->AddRecoveryNote(
          std::string(options.read_only ? "this read-only Db is" : "read-only Dbs are") +
          " not registered with the writer (" + sr.status().message() +
          "): a live writer may reuse the pages of a read-only Db's snapshot, which then reads "
          "them as Corruption");
    } else if (options.read_only && impl->region->page_count() >= kMetaPages) {
      TESSERA_RETURN_IF_ERROR((*sr)->Claim());
      impl->shared_readers = std::move(sr).value();
      // Both metas are copied, the newest valid one is pinned, and they are copied again: only
      // when the two copies are the same did no commit come between, and Open then chooses
      // from exactly these copies (a later read could find a newer meta than the one pinned).
      for (int attempt = 0;; ++attempt) {
        if (attempt == 10000) {
          return Status::Busy("'" + path + "': its writer committed between every one of " +
                              std::to_string(attempt) + " tries to pin its newest snapshot");
        }
        Meta before[2], after[2];
        for (uint32_t s = 0; s < 2; ++s) std::memcpy(&before[s], impl->Page(s), sizeof(Meta));
        uint64_t newest = 0;
        for (const Meta& m : before) {
          if (MetaLooksValid(m, ps)) newest = std::max(newest, m.txnid);
        }
        impl->shared_readers->Publish(newest);
        for (uint32_t s = 0; s < 2; ++s) std::memcpy(&after[s], impl->Page(s), sizeof(Meta));
        if (std::memcmp(before, after, sizeof before) == 0) {
          pinned = newest;
          std::memcpy(pinned_metas, before, sizeof before);
          have_pinned_metas = true;
          break;
        }
        std::this_thread::yield();
      }
    } else if (!options.read_only) {
      impl->shared_readers = std::move(sr).value();
      std::vector<uint64_t> live;
      impl->shared_readers->AppendLive(&live);
      if (!live.empty()) oldest_pinned = *std::min_element(live.begin(), live.end());
    }
  }

  Meta chosen;
  uint32_t chosen_slot = 0;
  const std::string log_path = CommitLog::PathFor(path);
  if (fresh && impl->region->page_count() != 0) {
    // Another opener created the file between the stat above and this one's lock (and has
    // closed it since): its commits must not be overwritten by a new file's metas.
    return Status::Busy(path + " was created by another opener meanwhile; open it again")
        .WithCCode(TESSERA_BUSY);
  }
  if (fresh) {
    // A log left beside a file that is started again belongs to no commit of the new file.
    if (::unlink(log_path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, "remove stale commit log " + log_path);
    }
    TESSERA_RETURN_IF_ERROR(impl->region->Grow(kMetaPages));
    const uint64_t db_id = NewDbId();
    for (uint32_t s = 0; s < 2; ++s) {
      Meta m;
      m.page_size = ps;
      m.version = options.format_version != 0 ? options.format_version : format::kFormatVersion;
      m.db_id = db_id;
      m.txnid = s;
      m.commit_seq = 0;
      m.durable_txn = 0;
      m.crc = MetaCrc(m);
      std::memcpy(impl->Page(s), &m, sizeof m);
      chosen = m;
      chosen_slot = s;
    }
    TESSERA_RETURN_IF_ERROR(impl->region->Flush());
  } else {
    if (impl->region->page_count() < kMetaPages) {
      return Status::Corruption("'" + path + "' is too small to be a Tessera database");
    }
    Meta m[2];
    std::string problems;
    bool valid[2];
    for (uint32_t s = 0; s < 2; ++s) {
      if (have_pinned_metas) {
        m[s] = pinned_metas[s];
      } else {
        std::memcpy(&m[s], impl->Page(s), sizeof(Meta));
      }
      valid[s] = MetaLooksValid(m[s], ps);
      if (!valid[s]) problems += " meta page " + std::to_string(s) + " is invalid;";
    }
    uint32_t order[2] = {0, 1};
    if (m[1].txnid > m[0].txnid) std::swap(order[0], order[1]);
    bool found = false;
    // A newer meta that looked whole but failed validation: a commit was rejected. (An invalid
    // meta's txnid cannot be trusted: damage there may make an older slot look newer.)
    bool newer_rejected = false;
    for (uint32_t s : order) {
      if (!valid[s]) continue;
      impl->crc_skips_gap = m[s].version >= format::kGapFreeCrcVersion;
      impl->headerless_runs = m[s].version >= format::kHeaderlessRunVersion;
      Status vs = ValidateMeta(impl.get(), m[s]);
      if (vs.ok()) {
        chosen = m[s];
        chosen_slot = s;
        found = true;
        break;
      }
      problems += " meta " + std::to_string(s) + " (txn " + std::to_string(m[s].txnid) +
                  "): " + vs.message() + ";";
      newer_rejected = true;
    }
    if (!found) {
      return Status::Corruption("'" + path + "' has no usable meta page:" + problems);
    }
    if (have_pinned_metas && chosen.txnid != pinned) {
      // Fell back from the pinned newest commit. Its pages may be reused by a live writer before
      // a pin of this older one could count, so only without a writer is it safe to read.
      if (WriterHoldsLock(path)) {
        return Status::Corruption(
            "'" + path + "': the newest commit (txn " + std::to_string(pinned) +
            ") does not validate while a writer has the file open:" + problems);
      }
      impl->shared_readers->Publish(chosen.txnid);
      pinned = chosen.txnid;
    }
    if (!problems.empty() && newer_rejected) {
      impl->AddRecoveryNote("newer commit rejected, opened txn " + std::to_string(chosen.txnid) +
                            ":" + problems);
    } else if (!problems.empty()) {
      // A damaged meta may no longer look newer (its txnid is what was damaged): still say so.
      impl->AddRecoveryNote("opened txn " + std::to_string(chosen.txnid) + ", but" + problems);
    }
    // Load the freelist: after open every free page is reusable (no reader, and the chosen meta
    // is made durable below before anything is overwritten).
    std::map<uint64_t, uint64_t> free;
    TESSERA_RETURN_IF_ERROR(ReplayFreelist(impl.get(), chosen.freelist_head, chosen.freelist_txnid,
                                           chosen.last_page, &free, &impl->freelist_chain));
    if (free.size() != chosen.free_pages) {
      return Status::Corruption("freelist holds " + std::to_string(free.size()) +
                                " pages but the meta records " + std::to_string(chosen.free_pages));
    }
    // Pages freed after the oldest snapshot a read-only Db pins wait like those of a pinned
    // protection snapshot.
    uint64_t keep_after = options.retain_freed_after;
    if (oldest_pinned != 0) {
      keep_after = keep_after == 0 ? oldest_pinned : std::min(keep_after, oldest_pinned);
    }
    for (const auto& f : free) {
      if (keep_after != 0 && f.second > keep_after) {
        // Still part of a snapshot the caller will pin again (protection): not reusable until
        // no reader needs it, as if that reader had never gone away.
        impl->pending[f.second].pages.push_back(f.first);  // wmin 0: any older snapshot
        ++impl->pending_count;
        ++impl->pending_old_count;
      } else {
        impl->reusable.insert(f.first);
      }
    }
    if (!options.read_only) TESSERA_RETURN_IF_ERROR(impl->region->Flush());
  }
  impl->meta = chosen;
  impl->crc_skips_gap = chosen.version >= format::kGapFreeCrcVersion;
  impl->headerless_runs = chosen.version >= format::kHeaderlessRunVersion;
  impl->meta_slot = chosen_slot;
  impl->durable_txn = chosen.txnid;
  impl->durable_slot = chosen_slot;
  impl->logged_upto = chosen.db_id != 0 ? chosen.txnid : Impl::kNotLogged;
  // A file from before db_ids gets one; its commits carry it, and the log starts after the first
  // flush that puts it on disk.
  if (!options.read_only && impl->meta.db_id == 0) {
    impl->meta.db_id = NewDbId();
    impl->meta.crc = MetaCrc(impl->meta);  // descriptors of this snapshot carry a valid meta
  }
  impl->Publish(impl->meta);

  // Commits in the log after the chosen meta were acknowledged as durable: replay them.
  std::vector<CommitLog::Record> replay;
  if (!fresh && chosen.db_id != 0) {
    auto records = CommitLog::ReadAll(log_path, chosen.db_id, chosen.txnid);
    if (!records.ok() && options.read_only) {
      // A live writer may be rewriting the log under a read-only open: report, do not fail.
      impl->AddRecoveryNote(std::string("commit log not read: ") + records.status().message());
      records = std::vector<CommitLog::Record>{};
    }
    if (!records.ok()) return records.status();
    for (auto& r : *records) {
      if (r.txnid > chosen.txnid) replay.push_back(std::move(r));
    }
    if (!replay.empty() && replay.front().txnid != chosen.txnid + 1 && options.read_only) {
      // The writer flushed and restarted its log after this open read the metas.
      impl->AddRecoveryNote(std::string("the commit log continues from txn ") +
                            std::to_string(replay.front().txnid) + ", after this open's txn " +
                            std::to_string(chosen.txnid) + " (a live writer has moved on)");
      replay.clear();
    }
    if (!replay.empty() && replay.front().txnid != chosen.txnid + 1) {
      return Status::Corruption("'" + path + "' opened at txn " + std::to_string(chosen.txnid) +
                                " but its commit log continues only from txn " +
                                std::to_string(replay.front().txnid) + " (commits " +
                                std::to_string(chosen.txnid + 1) + ".." +
                                std::to_string(replay.front().txnid - 1) + " are lost)");
    }
  }
  if (options.read_only) {
    if (!replay.empty()) {
      impl->AddRecoveryNote(std::to_string(replay.size()) + " commits in " + log_path +
                            " after txn " + std::to_string(chosen.txnid) +
                            " are not shown (a read-only open does not replay the log)");
    }
    return std::unique_ptr<Db>(new Db(std::move(impl)));
  }
  if (options.commit_log) impl->log = std::make_unique<CommitLog>(log_path);
  std::unique_ptr<Db> db(new Db(std::move(impl)));
  if (!replay.empty()) {
    Status s = db->impl_->Replay(db.get(), replay);
    if (!s.ok()) {
      // Closing must not flush or checkpoint a half-replayed state: the next open would start
      // after it and skip the commit that failed here.
      db->impl_->dead = true;
      return s;
    }
  }
  return db;
}

Status Db::Impl::Replay(Db* db, const std::vector<CommitLog::Record>& records) {
  // Pages the caller's pinned snapshots need (Options::retain_freed_after, the oldest of them)
  // stay unreused while replaying: every page freed after the floor waits (see BeginWrite).
  replay_reader_floor = opts.retain_freed_after;
  replaying = true;
  for (const auto& r : records) {
    auto where = [&] {
      return "replaying txn " + std::to_string(r.txnid) + " from the commit log at offset " +
             std::to_string(r.offset);
    };
    auto ops = logop::Decode(r.payload);
    if (!ops.ok()) return Status::Corruption(where() + ": " + ops.status().message());
    TESSERA_ASSIGN_OR_RETURN(auto w, db->BeginWrite());
    for (const auto& op : *ops) {
      Status s;
      switch (op.kind) {
        case logop::kPut:
          s = w->Put(op.tree, op.key, op.value);
          break;
        case logop::kDelete:
          s = w->Delete(op.tree, op.key);
          break;
        case logop::kCreateTree:
          s = w->CreateTree(op.tree);
          break;
        case logop::kDropTree:
          s = w->DropTree(op.tree);
          break;
      }
      if (!s.ok()) return s.WithContext(where());
    }
    TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
    TESSERA_ASSERT(meta.txnid == r.txnid, "replayed commit got txn ", meta.txnid, " not ", r.txnid);
  }
  replay_reader_floor = 0;
  replaying = false;
  AddRecoveryNote(std::string("replayed ") + std::to_string(records.size()) + " commits (txn " +
                  std::to_string(records.front().txnid) + ".." +
                  std::to_string(records.back().txnid) + ") from the commit log");
  std::lock_guard<std::mutex> l(write_mu);
  return FlushDurable(meta.txnid, meta_slot);
}

Result<std::unique_ptr<ReadTxn>> Db::BeginRead() const {
  auto t = std::make_unique<ReadTxn::Impl>();
  t->db = impl_.get();
  TESSERA_ASSIGN_OR_RETURN(t->slot, impl_->AcquireReader(&t->meta));
  return std::unique_ptr<ReadTxn>(new ReadTxn(std::move(t)));
}

Result<std::unique_ptr<ReadTxn>> Db::BeginReadAt(const ReadTxn& snap) const {
  const ReadTxn::Impl& s = *snap.impl_;
  if (s.db != impl_.get()) {
    return Status::InvalidArgument("BeginReadAt: the snapshot belongs to another database");
  }
  if (s.write)
    return Status::InvalidArgument("BeginReadAt: a write transaction has no fixed snapshot");
  auto t = std::make_unique<ReadTxn::Impl>();
  t->db = impl_.get();
  t->meta = s.meta;
  // `snap`'s own reader slot holds this txnid while this registers it: no page of the snapshot
  // can be reused in between.
  TESSERA_ASSIGN_OR_RETURN(t->slot, impl_->AcquireReaderAt(t->meta));
  return std::unique_ptr<ReadTxn>(new ReadTxn(std::move(t)));
}

Result<std::unique_ptr<WriteTxn>> Db::BeginWrite() { return impl_->BeginWrite(); }

Result<std::unique_ptr<WriteTxn>> Db::Impl::BeginWrite() {
  if (opts.read_only) {
    return Status::InvalidArgument("database opened read-only").WithCCode(TESSERA_READ_ONLY);
  }
  auto t = std::make_unique<ReadTxn::Impl>();
  t->db = this;
  t->write = true;
  t->lock = std::unique_lock<std::mutex>(write_mu);
  if (dead) return Status::Unavailable("database is closed (simulated power cut)");
  if (!fatal.ok()) return fatal;
  t->meta = meta;
  t->txnid = meta.txnid + 1;
  // Only a commit that every commit since the last flush precedes in the log can join it (see
  // CommitTxn); after a nosync commit none can until the next flush, so recording this txn's
  // operations for the log would be wasted work.
  t->log_ok = log != nullptr && logged_upto == meta.txnid;
  // Pages freed by txn T become reusable once no reader and no durable meta can reach them. A
  // snapshot s reaches a page written by W and freed by T only if W <= s < T: a long-pinned
  // snapshot (protection) holds back the pages it has, not every page freed after it.
  LiveSnapshots(&live_scratch);
  const std::vector<uint64_t>& live = live_scratch;
  const uint64_t oldest = live.empty() ? UINT64_MAX : live.front();
  auto reached = [&live](uint64_t freed_by, const FreedBatch& b) {
    auto it = std::lower_bound(live.begin(), live.end(), b.wmin);
    return it != live.end() && *it < freed_by;
  };
  auto release = [this](std::map<uint64_t, FreedBatch>& from, auto it, bool old) {
    const auto& pages = it->second.pages;
    pending_count -= pages.size();
    if (old) pending_old_count -= pages.size();
    reusable.insert(pages.begin(), pages.end());
    return from.erase(it);
  };
  const uint64_t bound = std::min(durable_txn, oldest);
  while (!pending.empty() && pending.begin()->first <= bound) {
    release(pending, pending.begin(), true);
  }
  while (!pending_young.empty() && pending_young.begin()->first <= oldest) {
    release(pending_young, pending_young.begin(), false);
  }
  // While Open replays the log, the floor stands for snapshots the caller will pin again, which
  // may be newer than the floor: nothing freed after it is released (the rule before intervals).
  // The batches are checked against the real pins at the first write after Open.
  if (replay_reader_floor != 0) return std::unique_ptr<WriteTxn>(new WriteTxn(std::move(t)));
  // New young batches, and those of the last kYoungRecheck commits once more: a short reader
  // that held one back is usually gone by the next commit, and otherwise a long pin would keep
  // that batch until it moves.
  const uint64_t recheck_from = young_checked_upto > kYoungRecheck
                                    ? std::min(young_checked_upto, meta.txnid - kYoungRecheck)
                                    : 0;
  for (auto it = pending_young.upper_bound(recheck_from); it != pending_young.end();) {
    it = reached(it->first, it->second) ? std::next(it) : release(pending_young, it, false);
  }
  young_checked_upto = meta.txnid;
  if (durable_txn > old_checked_upto) {
    for (auto it = pending.upper_bound(old_checked_upto);
         it != pending.end() && it->first <= durable_txn;) {
      it = reached(it->first, it->second) ? std::next(it) : release(pending, it, true);
    }
    old_checked_upto = durable_txn;
  }
  return std::unique_ptr<WriteTxn>(new WriteTxn(std::move(t)));
}

Status Db::Impl::Write(const WriteBatch& batch, bool sync, bool missing_is_not_found) {
  for (const auto& op : batch.ops()) {
    TESSERA_RETURN_IF_ERROR(CheckKey(op.key));
    TESSERA_RETURN_IF_ERROR(CheckValue(op.value));
    TESSERA_RETURN_IF_ERROR(CheckTreeName(op.tree));
  }
  if (opts.read_only) {
    return Status::InvalidArgument("database opened read-only").WithCCode(TESSERA_READ_ONLY);
  }
  Writer w;
  w.batch = &batch;
  w.sync = sync;
  w.missing_is_not_found = missing_is_not_found;
  bool lead;
  {
    std::lock_guard<std::mutex> l(gc_mu);
    gc_queue.push_back(&w);
    gc_queued.store(gc_queue.size(), std::memory_order_relaxed);
    lead = gc_queue.size() == 1;
  }
  if (!lead) {
    if (opts.group_commit_spin_us > 0) {
      PollYielding(spin_off_until, std::chrono::microseconds(opts.group_commit_spin_us), [&] {
        return w.done.load(std::memory_order_acquire) || w.lead.load(std::memory_order_acquire);
      });
    }
    // Taken even when the poll saw the answer: the leader may still hold mu to notify cv.
    std::unique_lock<std::mutex> l(w.mu);
    w.cv.wait(l, [&] { return w.done.load() || w.lead.load(); });
    if (w.done.load()) return w.status;
  }

  // Leader of a sync commit: the flush is the cost, so let the last sync group's writers gather
  // first (they are on their way back), for at most kGather. Never for nosync commits, which
  // cost little more than the wait.
  constexpr std::chrono::microseconds kGather{200};
  const size_t expect =
      std::min(gc_sync_writers.load(std::memory_order_relaxed), opts.group_commit_max_batches);
  if (sync && expect > 1 && gc_queued.load(std::memory_order_relaxed) < expect) {
    PollYielding(spin_off_until, kGather,
                 [&] { return gc_queued.load(std::memory_order_relaxed) >= expect; });
  }
  // Leader: take a group of waiting batches and commit them together.
  std::vector<Writer*> group;
  size_t bytes = 0;
  bool group_sync = false;
  {
    std::lock_guard<std::mutex> l(gc_mu);
    TESSERA_ASSERT(gc_queue.front() == &w, "group commit leader is not first in the queue");
    for (Writer* x : gc_queue) {
      if (!group.empty() && (group.size() >= opts.group_commit_max_batches ||
                             bytes + x->batch->ByteSize() > opts.group_commit_max_bytes)) {
        break;
      }
      group.push_back(x);
      bytes += x->batch->ByteSize();
      group_sync = group_sync || x->sync;
    }
  }
  if (group_sync) gc_sync_writers.store(group.size(), std::memory_order_relaxed);

  auto apply = [this](const std::vector<Writer*>& g, bool s) -> Status {
    TESSERA_ASSIGN_OR_RETURN(auto txn, BeginWrite());
    for (Writer* x : g) {
      x->missing = false;
      for (const auto& op : x->batch->ops()) {
        Status st = op.is_put ? txn->Put(op.tree, op.key, op.value) : txn->Delete(op.tree, op.key);
        if (st.IsNotFound()) {
          x->missing = true;  // deleting a missing key is not an error (unless asked: below)
        } else if (!st.ok()) {
          return st;
        }
      }
    }
    return txn->Commit(WriteOptions{s});
  };
  Status s = apply(group, group_sync);
  if (!s.ok() && group.size() > 1 && fatal.ok() && !dead) {
    // Isolate the failing batch: commit each on its own.
    for (Writer* x : group) x->status = apply({x}, x->sync);
  } else {
    for (Writer* x : group) x->status = s;
  }
  for (Writer* x : group) {
    if (x->status.ok() && x->missing && x->missing_is_not_found) {
      x->status = Status::NotFound("key not found");
    }
    if (x->status.ok()) batches.fetch_add(1, std::memory_order_relaxed);
  }

  Writer* next = nullptr;
  {
    std::lock_guard<std::mutex> l(gc_mu);
    for (size_t i = 0; i < group.size(); ++i) gc_queue.pop_front();
    gc_queued.store(gc_queue.size(), std::memory_order_relaxed);
    if (!gc_queue.empty()) next = gc_queue.front();
  }
  // The next leader first, so the next group starts while this one's writers wake up. Once a
  // writer's mu is released after done is set, that writer may return: it is not touched again.
  if (next != nullptr) {
    std::lock_guard<std::mutex> l(next->mu);
    next->lead = true;
    next->cv.notify_one();
  }
  Status mine = w.status;
  for (Writer* x : group) {
    if (x == &w) continue;
    std::lock_guard<std::mutex> l(x->mu);
    x->done = true;
    x->cv.notify_one();
  }
  return mine;
}

Status Db::Write(const WriteBatch& batch, const WriteOptions& options) {
  return impl_->Write(batch, options.sync);
}

Status Db::Write(const WriteBatch& batch) { return impl_->Write(batch, impl_->opts.sync); }

Status Db::Put(std::string_view key, std::string_view value) {
  WriteBatch b;
  b.Put(key, value);
  return Write(b);
}

Status Db::Delete(std::string_view key) {
  TESSERA_RETURN_IF_ERROR(CheckKey(key));
  // The group commit reports a missing key without reading the value (this read the whole value
  // first: a damaged large value made the delete fail, and a 1 GiB one was copied to be thrown
  // away; and a read-only Db answered NotFound for a missing key before refusing the write).
  WriteBatch b;
  b.Delete(key);
  return impl_->Write(b, impl_->opts.sync, /*missing_is_not_found=*/true);
}

Status Db::Get(std::string_view key, std::string* value) const { return Get({}, key, value); }

Status Db::Get(std::string_view tree, std::string_view key, std::string* value) const {
  if (tree.empty()) {
    // The common lookup, without a ReadTxn::Impl or a whole meta copied from the ring.
    TreeInfo main;
    uint64_t last_page = 0;
    TESSERA_ASSIGN_OR_RETURN(size_t slot, impl_->AcquireMainTree(&main, &last_page));
    struct Release {
      const Db::Impl* db;
      size_t slot;
      ~Release() { db->ReleaseReader(slot); }
    } release{impl_.get(), slot};
    std::string_view v;
    TESSERA_RETURN_IF_ERROR(btree::Get(*impl_, last_page, main, key, &v));
    value->assign(v.data(), v.size());  // before the slot is released: v points into the map
    return Status::Ok();
  }
  // A snapshot on the stack: no allocation on the read path.
  ReadTxn::Impl t;
  t.db = impl_.get();
  TESSERA_ASSIGN_OR_RETURN(t.slot, impl_->AcquireReader(&t.meta));
  const TreeInfo* info = &t.meta.main;
  if (!tree.empty()) {
    TESSERA_ASSIGN_OR_RETURN(info, t.Tree(tree, false));
  }
  std::string_view v;
  TESSERA_RETURN_IF_ERROR(btree::Get(t, *info, key, &v));
  value->assign(v.data(), v.size());
  return Status::Ok();
}

Status Db::Sync() {
  if (impl_->opts.read_only) return Status::Ok();
  // The backlog of dirty pages is written before the write lock is taken, so writers wait only
  // for the flush of what they dirty meanwhile. A failure here is sticky in the region and
  // reported by the flush below.
  (void)impl_->region->Writeback();
  std::lock_guard<std::mutex> l(impl_->write_mu);
  if (!impl_->fatal.ok()) return impl_->fatal;
  TESSERA_RETURN_IF_ERROR(impl_->FlushDurable(impl_->meta.txnid, impl_->meta_slot));
  return Status::Ok();
}

// Three commits, each flushed. The first copies the pages in use at the file's end (and the
// pages on the way to them) into the lowest free pages; once flushed, the pages it left are free
// at the end of the file. The second lowers the high-water mark below them; the third, empty,
// puts the same high-water mark into the other meta slot, so that neither meta a later open may
// choose names a page past the new end. Then the file is cut.
Status Db::Shrink(uint64_t max_bytes) {
  Impl& d = *impl_;
  if (d.opts.read_only) {
    return Status::InvalidArgument("database opened read-only").WithCCode(TESSERA_READ_ONLY);
  }
  {
    std::lock_guard<std::mutex> l(d.write_mu);  // SimulatePowerCut sets `dead` under it
    if (d.dead) return Status::Unavailable("database is closed (simulated power cut)");
  }
  std::lock_guard<std::mutex> one_at_a_time(d.shrink_mu);
  // The space grown ahead of need goes too, whatever the steps below found to do.
  auto cut = [&d]() -> Status {
    std::lock_guard<std::mutex> l(d.write_mu);
    return d.TrimToLastPage();
  };
  // Pages freed since the last flush may be reused only after one.
  TESSERA_RETURN_IF_ERROR(Sync());
  // 1. The move. Its allocations take only free pages below the limit; when the pages on the way
  // to the moved ones need more than the estimate allowed, it starts again with a higher limit.
  for (int attempt = 0;; ++attempt) {
    TESSERA_ASSIGN_OR_RETURN(auto w, BeginWrite());
    ReadTxn::Impl& t = *w->impl_;
    TESSERA_ASSIGN_OR_RETURN(auto names, w->ListTrees());
    std::vector<TreeInfo*> trees{&t.meta.main, &t.meta.catalog};
    for (const auto& name : names) {
      TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, t.Tree(name, false));
      trees.push_back(info);
      t.trees.find(name)->second.dirty = true;
    }
    // Pages in use (free ones a reader still holds count as in use) must fit below the limit,
    // with room for what the move copies besides them: the branch pages on the way to moved
    // pages, the leaves of moved overflow runs, and the freelist record.
    uint64_t extra = 16;
    for (const TreeInfo* info : trees) {
      extra += info->branch_pages + info->depth + (info->overflow_pages > 0 ? info->leaf_pages : 0);
    }
    const uint64_t last = t.meta.last_page;
    const uint64_t in_use = last - format::kMetaPages - d.reusable.size();
    const uint64_t per_page =
        (d.page_size - format::kHeaderSize - format::kFreelistBodyHeader) / format::kFreeRunSize;
    uint64_t limit =
        format::kMetaPages + in_use + extra + (d.reusable.size() + d.pending_count) / per_page;
    const uint64_t max_pages = max_bytes / d.page_size;
    if (last > max_pages) limit = std::max(limit, last - max_pages);
    for (int a = 0; a < attempt; ++a) limit += (last - std::min(limit, last)) / 2;
    if (limit >= last || attempt == 4) {  // nothing to give back
      w.reset();                          // aborts, and lets go of the write lock
      return cut();
    }
    t.alloc_limit = limit;
    Status s;
    for (TreeInfo* info : trees) {
      s = btree::Relocate(t, info, limit);
      if (!s.ok()) break;
    }
    t.alloc_limit = 0;
    if (s.IsNoSpace()) continue;  // the txn aborts; try a higher limit
    TESSERA_RETURN_IF_ERROR(s);
    // Nothing moved (no tree page above the limit, or only large values with no room below) and
    // the freelist record lies below it too: no commit, but the end may be free all the same.
    const bool chain_above = std::any_of(d.freelist_chain.begin(), d.freelist_chain.end(),
                                         [limit](uint64_t p) { return p >= limit; });
    if (t.freed.empty() && t.freed_young.empty() && !chain_above) break;
    t.freelist_changed = true;
    t.freelist_dump = true;  // the old freelist record's pages may lie at the end too
    TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
    TESSERA_RETURN_IF_ERROR(Sync());
    break;
  }
  // 2. The cut in the meta: the free pages at the end leave the free set.
  {
    TESSERA_ASSIGN_OR_RETURN(auto w, BeginWrite());
    ReadTxn::Impl& t = *w->impl_;
    const uint64_t last = t.meta.last_page;
    uint64_t end = last;
    while (end > format::kMetaPages && d.reusable.contains(end - 1)) --end;
    if (end == last) {
      w.reset();
      return cut();
    }
    for (uint64_t p = end; p < last; ++p) {
      d.reusable.erase(p);
      t.taken.push_back(p);  // back into the free set if this commit fails
    }
    t.meta.last_page = end;
    t.freelist_changed = true;
    t.freelist_dump = true;
    TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
  }
  TESSERA_RETURN_IF_ERROR(Sync());
  // 3. The same high-water mark in the other slot.
  {
    TESSERA_ASSIGN_OR_RETURN(auto w, BeginWrite());
    TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
  }
  TESSERA_RETURN_IF_ERROR(Sync());
  return cut();
}

Result<Stats> Db::GetStats() const {
  TESSERA_ASSIGN_OR_RETURN(auto txn, BeginRead());
  Stats s;
  const Meta& m = txn->impl_->meta;
  s.page_size = impl_->page_size;
  s.txnid = m.txnid;
  s.commit_seq = m.commit_seq;
  s.last_page = m.last_page;
  s.free_pages = m.free_pages;
  s.file_size = impl_->region->page_count() * uint64_t{impl_->page_size};
  s.commits = impl_->commits.load();
  s.flushes = impl_->flushes.load();
  s.log_syncs = impl_->log_syncs.load();
  s.batches_written = impl_->batches.load();
  s.meta_slot = impl_->meta_slot;
  s.recovery_note = impl_->recovery_note;
  auto add = [&s](const std::string& name, const TreeInfo& t) {
    s.trees.push_back({name, t.entries, t.depth, t.branch_pages, t.leaf_pages, t.overflow_pages});
  };
  add("", m.main);
  TESSERA_ASSIGN_OR_RETURN(auto names, txn->ListTrees());
  for (const auto& n : names) {
    TESSERA_ASSIGN_OR_RETURN(TreeInfo * ti, txn->impl_->Tree(n, false));
    add(n, *ti);
  }
  return s;
}

Status Db::Backup(const std::string& path) const {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    return Status::InvalidArgument("backup target '" + path + "' already exists");
  }
  Status s = BackupTo(path);
  if (!s.ok()) {
    // Never leave a shorter backup that opens as if it were whole. (The side files' names first:
    // they follow links that reach the file.)
    const std::string log = CommitLog::PathFor(path), readers = SharedReaders::PathFor(path);
    ::unlink(path.c_str());
    ::unlink(log.c_str());
    ::unlink(readers.c_str());
  }
  return s;
}

Status Db::BackupTo(const std::string& path) const {
  TESSERA_ASSIGN_OR_RETURN(auto snap, BeginRead());
  Options o;
  o.page_size = impl_->page_size;
  o.reserve_bytes = impl_->opts.reserve_bytes;
  o.format_version = snap->impl_->meta.version;  // a backup opens wherever the original does
  TESSERA_ASSIGN_OR_RETURN(auto out, Db::Open(path, o));
  TESSERA_ASSIGN_OR_RETURN(auto names, snap->ListTrees());
  names.insert(names.begin(), std::string());
  for (const auto& name : names) {
    TESSERA_ASSIGN_OR_RETURN(auto cur, snap->NewCursor(name));
    TESSERA_ASSIGN_OR_RETURN(auto w, out->BeginWrite());
    if (!name.empty()) TESSERA_RETURN_IF_ERROR(w->CreateTree(name));
    size_t n = 0;
    // A value that cannot be read ends the cursor with an error: never a shorter backup.
    Status s = cur->First();
    for (; s.ok() && cur->Valid(); s = cur->Next()) {
      TESSERA_RETURN_IF_ERROR(w->Put(name, cur->key(), cur->value()));
      if (++n % 100000 == 0) {
        TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
        TESSERA_ASSIGN_OR_RETURN(w, out->BeginWrite());
      }
    }
    TESSERA_RETURN_IF_ERROR(s);
    TESSERA_RETURN_IF_ERROR(w->Commit(WriteOptions{false}));
  }
  return out->Sync();
}

Status ReplayFreelist(const Db::Impl* db, uint64_t head, uint64_t head_txnid, uint64_t last_page,
                      std::map<uint64_t, uint64_t>* free, std::vector<uint64_t>* chain) {
  const uint32_t per_page = (db->page_size - kHeaderSize - kFreelistBodyHeader) / kFreeRunSize;
  std::vector<uint64_t> pages;
  for (uint64_t p = head, txnid = head_txnid; p != kInvalidPage;) {
    TESSERA_RETURN_IF_ERROR(db->CheckPage(p, last_page, kFreelist, txnid));
    pages.push_back(p);
    if (pages.size() > last_page) return Status::Corruption("freelist chain loops");
    const uint8_t* body = db->Page(p) + kHeaderSize;
    p = Load<uint64_t>(body);
    txnid = Load<uint64_t>(body + 8);
  }
  if (chain) chain->insert(chain->end(), pages.begin(), pages.end());
  // Records oldest first; within a record removals, then additions.
  size_t end = pages.size();
  while (end > 0) {
    size_t begin = end - 1;
    uint64_t rec_txn = PageView{db->Page(pages[begin])}.txnid();
    while (begin > 0 && PageView{db->Page(pages[begin - 1])}.txnid() == rec_txn) --begin;
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = begin; i < end; ++i) {
        const uint8_t* body = db->Page(pages[i]) + kHeaderSize;
        uint32_t nruns = Load<uint32_t>(body + 20);
        if (nruns > per_page) {
          return Status::Corruption(Pg(pages[i]) + ": freelist page lists too many runs");
        }
        for (uint32_t r = 0; r < nruns; ++r) {
          const uint8_t* run = body + kFreelistBodyHeader + r * kFreeRunSize;
          uint64_t ftxn = Load<uint64_t>(run), first = Load<uint64_t>(run + 8),
                   count = Load<uint64_t>(run + 16);
          bool removal = ftxn == format::kRunRemoved;
          if (removal != (pass == 0)) continue;
          if (first < kMetaPages || count > last_page || first + count > last_page) {
            return Status::Corruption(Pg(pages[i]) + ": freelist run out of range");
          }
          for (uint64_t k = 0; k < count; ++k) {
            bool ok = removal ? free->erase(first + k) == 1 : free->emplace(first + k, ftxn).second;
            if (!ok) {
              return Status::Corruption(Pg(pages[i]) + ": freelist " +
                                        (removal ? "removes page " : "adds page ") +
                                        std::to_string(first + k) +
                                        (removal ? " that is not free" : " that is already free"));
            }
          }
        }
      }
    }
    end = begin;
  }
  return Status::Ok();
}

Status Db::SimulatePowerCut(uint64_t seed, double keep_fraction) {
  std::lock_guard<std::mutex> l(impl_->write_mu);
  impl_->dead = true;
  return impl_->region->SimulatePowerCut(seed, keep_fraction);
}

}  // namespace tessera::engine
