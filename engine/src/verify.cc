// Verify (a full walk of one snapshot) and the page-level protection support: page images,
// changed pages between snapshots, and restore from images.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "btree.h"
#include "db_impl.h"

namespace tessera::engine {

using format::BranchCell;
using format::kBranch;
using format::kHeaderSize;
using format::kInvalidPage;
using format::kLeaf;
using format::kMetaPages;
using format::kOverflow;
using format::LeafCell;

namespace {

std::string Pg(uint64_t p) { return "page " + std::to_string(p); }

// Free pages of a snapshot as (page, freeing txn) pairs, from its freelist log.
Status ReadFreelist(const ReadTxn::Impl& t, std::vector<std::pair<uint64_t, uint64_t>>* free,
                    std::vector<uint64_t>* chain) {
  std::map<uint64_t, uint64_t> m;
  TESSERA_RETURN_IF_ERROR(ReplayFreelist(t.db, t.meta.freelist_head, t.meta.freelist_txnid,
                                         t.meta.last_page, &m, chain));
  free->assign(m.begin(), m.end());
  return Status::Ok();
}

struct Walker {
  const ReadTxn::Impl& t;
  VerifyReport& rep;
  std::vector<uint8_t> seen;
  std::vector<std::pair<std::string, TreeInfo>> named;

  void Problem(std::string s) {
    rep.ok = false;
    if (rep.problems.size() < 1000) rep.problems.push_back(std::move(s));
  }

  bool Mark(uint64_t p, uint64_t n, const std::string& what) {
    if (p < kMetaPages || p + n > t.meta.last_page || p + n < p) {
      Problem(what + ": " + Pg(p) + " is outside the database");
      return false;
    }
    bool ok = true;
    for (uint64_t k = 0; k < n; ++k) {
      if (seen[p + k]++) {
        Problem(Pg(p + k) + " is referenced more than once (" + what + ")");
        ok = false;
      }
    }
    return ok;
  }

  // Checks page p fully (checksum computed fresh, not from the verified cache).
  const uint8_t* Check(uint64_t p, uint64_t txnid, uint32_t crc, int type,
                       const std::string& what) {
    if (p < kMetaPages || p >= t.meta.last_page) {
      Problem(what + ": " + Pg(p) + " is outside the database");
      return nullptr;
    }
    const Db::Impl* db = t.db;
    uint8_t* page = db->Page(p);
    PageView v{page};
    uint64_t n = v.type() == kOverflow ? v.overflow_pages() : 1;
    if (n == 0 || p + n > t.meta.last_page) {
      Problem(what + ": " + Pg(p) + " has a bad overflow length");
      return nullptr;
    }
    ++rep.pages_checked;
    uint32_t computed = db->PageCrc(page, n);
    if (computed != v.crc()) {
      Problem(what + ": " + Pg(p) + " checksum mismatch");
      return nullptr;
    }
    if (v.crc() != crc) Problem(what + ": " + Pg(p) + " checksum differs from its parent's record");
    if (v.pgno() != p) Problem(what + ": " + Pg(p) + " claims number " + std::to_string(v.pgno()));
    if (v.txnid() != txnid) {
      Problem(what + ": " + Pg(p) + " txn " + std::to_string(v.txnid()) + ", parent expects " +
              std::to_string(txnid));
    }
    if (v.txnid() > t.meta.txnid) Problem(what + ": " + Pg(p) + " is newer than the snapshot");
    if (type >= 0 && v.type() != type) Problem(what + ": " + Pg(p) + " has the wrong type");
    Mark(p, n, what);
    return page;
  }

  // A version 3 run: in range, its checksum computed fresh, each page referenced once.
  void CheckRun(LeafCell lc, uint64_t leaf_txnid, const std::string& what, TreeInfo* count) {
    const uint64_t p = lc.ovf_pgno();
    const uint64_t n = t.db->RunPagesFor(lc.vlen());
    if (Status s = t.db->RunInFile(lc, t.meta.last_page); !s.ok()) {
      Problem(what + ": " + s.message());
      return;
    }
    ++rep.pages_checked;
    if (Status s = t.db->RunMatches(lc); !s.ok()) Problem(what + ": " + s.message());
    // Copy-on-write: the run was written no later than the leaf that refers to it.
    if (lc.ovf_txnid() == 0 || lc.ovf_txnid() > leaf_txnid) {
      Problem(what + ": overflow run at " + Pg(p) + " names txn " + std::to_string(lc.ovf_txnid()) +
              ", its leaf txn " + std::to_string(leaf_txnid));
    }
    count->overflow_pages += n;
    Mark(p, n, what);
  }

  // Returns the number of entries under the node; keys must lie in [lo, hi) (hi empty = none).
  uint64_t Node(uint64_t p, uint64_t txnid, uint32_t crc, const std::string& lo,
                const std::string* hi, uint32_t depth, uint32_t want_depth, TreeInfo* count,
                const std::string& what, bool catalog) {
    const uint8_t* page = Check(p, txnid, crc, -1, what);
    if (!page) return 0;
    PageView v{const_cast<uint8_t*>(page)};
    const uint32_t ps = t.db->page_size;
    if (v.upper() > ps || v.lower() > v.upper()) {
      Problem(what + ": " + Pg(p) + " has a bad layout");
      return 0;
    }
    for (unsigned i = 0; i < v.count(); ++i) {
      if (v.slot(i) < v.upper() || v.slot(i) >= ps) {  // cells live in [upper, page size)
        Problem(what + ": " + Pg(p) + " slot " + std::to_string(i) + " out of range");
        return 0;
      }
    }
    if (v.count() == 0) Problem(what + ": " + Pg(p) + " is empty");
    if (v.type() == kLeaf) {
      ++count->leaf_pages;
      if (depth != want_depth) Problem(what + ": leaf " + Pg(p) + " at the wrong depth");
      std::string prev;
      for (unsigned i = 0; i < v.count(); ++i) {
        LeafCell lc{v.cell(i)};
        if (v.slot(i) + uint64_t{lc.size()} > ps) {
          Problem(what + ": " + Pg(p) + " cell " + std::to_string(i) + " runs off the page");
          return i;
        }
        std::string k(lc.key());
        if ((i > 0 && k <= prev) || k < lo || (hi && k >= *hi)) {
          Problem(what + ": " + Pg(p) + " key order violated at cell " + std::to_string(i));
        }
        prev = k;
        if (lc.overflow() && t.db->headerless_runs) {
          CheckRun(lc, v.txnid(), what, count);
        } else if (lc.overflow()) {
          const uint8_t* ov = Check(lc.ovf_pgno(), lc.ovf_txnid(), lc.ovf_crc(), kOverflow, what);
          if (ov) {
            uint64_t n = PageView{const_cast<uint8_t*>(ov)}.overflow_pages();
            count->overflow_pages += n;
            if (lc.vlen() > n * ps - kHeaderSize) Problem(what + ": overflow value too long");
          }
        } else if (catalog) {
          if (lc.vlen() != sizeof(TreeInfo)) {
            Problem("catalog entry '" + k + "' has a bad size");
          } else {
            TreeInfo ti;
            std::memcpy(&ti, lc.val(), sizeof ti);
            named.emplace_back(k, ti);
          }
        }
      }
      rep.entries += v.count();
      return v.count();
    }
    if (v.type() != kBranch) {
      Problem(what + ": " + Pg(p) + " has unexpected type " + std::to_string(v.type()));
      return 0;
    }
    ++count->branch_pages;
    if (depth > 64) {
      Problem(what + ": tree too deep");
      return 0;
    }
    uint64_t total = 0;
    for (unsigned i = 0; i < v.count(); ++i) {
      BranchCell bc{v.cell(i)};
      std::string k_lo = i == 0 ? lo : std::string(bc.key());
      if (i > 0 && (k_lo < lo || (hi && k_lo >= *hi))) {
        Problem(what + ": " + Pg(p) + " separator out of order at cell " + std::to_string(i));
      }
      std::string next;
      const std::string* k_hi = hi;
      if (i + 1 < v.count()) {
        next = std::string(BranchCell{v.cell(i + 1)}.key());
        k_hi = &next;
      }
      total += Node(bc.child(), bc.child_txnid(), bc.child_crc(), k_lo, k_hi, depth + 1, want_depth,
                    count, what, catalog);
    }
    return total;
  }

  void Tree(const std::string& name, const TreeInfo& info, bool catalog) {
    std::string what = catalog ? "catalog" : name.empty() ? "main tree" : "tree '" + name + "'";
    if (info.root == kInvalidPage) {
      if (info.entries != 0) Problem(what + ": empty tree records entries");
      return;
    }
    TreeInfo count;
    uint64_t n = Node(info.root, info.root_txnid, info.root_crc, std::string(), nullptr, 1,
                      info.depth, &count, what, catalog);
    if (n != info.entries) {
      Problem(what + ": holds " + std::to_string(n) + " entries, records " +
              std::to_string(info.entries));
    }
    if (count.leaf_pages != info.leaf_pages || count.branch_pages != info.branch_pages ||
        count.overflow_pages != info.overflow_pages) {
      Problem(what + ": page counts differ from its record");
    }
  }
};

}  // namespace

VerifyReport Db::Verify() const {
  auto snap = BeginRead();
  if (!snap.ok()) {
    VerifyReport rep;
    rep.ok = false;
    rep.problems.push_back(snap.status().ToString());
    return rep;
  }
  return VerifySnapshot(**snap);
}

Result<std::unique_ptr<ReadTxn>> Db::OpenSnapshot(const SnapshotDescriptor& desc) const {
  Meta m;
  if (desc.meta_bytes.size() != sizeof m || desc.page_size != impl_->page_size) {
    return Status::InvalidArgument("snapshot descriptor does not fit this database (page size " +
                                   std::to_string(desc.page_size) + ")");
  }
  std::memcpy(&m, desc.meta_bytes.data(), sizeof m);
  Meta c = m;
  c.crc = 0;
  if (m.magic != format::kMagic || m.page_size != impl_->page_size || m.txnid != desc.txnid ||
      m.last_page != desc.last_page ||
      Crc32c(reinterpret_cast<const uint8_t*>(&c), sizeof c) != m.crc) {
    return Status::InvalidArgument("snapshot descriptor is inconsistent or corrupt");
  }
  const uint64_t now = impl_->current_txn.load(std::memory_order_acquire);
  if (m.txnid > now) {
    return Status::InvalidArgument("snapshot txn " + std::to_string(m.txnid) +
                                   " is newer than the database (txn " + std::to_string(now) + ")");
  }
  if (m.last_page > impl_->region->page_count()) {
    return Status::Corruption("snapshot txn " + std::to_string(m.txnid) + " needs " +
                              std::to_string(m.last_page) + " pages; the file is shorter");
  }
  auto t = std::make_unique<ReadTxn::Impl>();
  t->db = impl_.get();
  t->meta = m;
  TESSERA_ASSIGN_OR_RETURN(t->slot, impl_->AcquireReaderAt(m));
  std::unique_ptr<ReadTxn> snap(new ReadTxn(std::move(t)));
  VerifyReport rep = VerifySnapshot(*snap);
  if (!rep.ok) {
    return Status::Corruption("snapshot txn " + std::to_string(m.txnid) +
                              " can no longer be read: " +
                              (rep.problems.empty() ? std::string("?") : rep.problems.front()));
  }
  return snap;
}

VerifyReport Db::VerifySnapshot(const ReadTxn& snap) const {
  VerifyReport rep;
  const ReadTxn::Impl& t = *snap.impl_;
  Walker w{t, rep, std::vector<uint8_t>(t.meta.last_page, 0), {}};
  w.Tree("", t.meta.main, false);
  w.Tree("", t.meta.catalog, true);
  for (const auto& [name, info] : w.named) w.Tree(name, info, false);
  std::vector<std::pair<uint64_t, uint64_t>> free;
  std::vector<uint64_t> chain;
  Status s = ReadFreelist(t, &free, &chain);
  if (!s.ok()) {
    w.Problem("freelist: " + s.message());
  } else {
    for (uint64_t p : chain) w.Mark(p, 1, "freelist chain");
    for (const auto& f : free) w.Mark(f.first, 1, "free page");
    if (free.size() != t.meta.free_pages) w.Problem("freelist count differs from the meta");
  }
  uint64_t leaked = 0;
  for (uint64_t p = kMetaPages; p < t.meta.last_page; ++p) {
    if (!w.seen[p] && leaked++ < 20) w.Problem(Pg(p) + " is neither in use nor free (leaked)");
  }
  if (leaked > 20) w.Problem(std::to_string(leaked) + " pages leaked in all");
  return rep;
}

Status Db::PageImage(const ReadTxn& snap, uint64_t pgno, uint8_t* out) const {
  TESSERA_ASSIGN_OR_RETURN(const uint8_t* page, PageImageView(snap, pgno));
  if (page == nullptr) {
    std::memset(out, 0, impl_->page_size);
  } else {
    std::memcpy(out, page, impl_->page_size);
  }
  return Status::Ok();
}

Result<const uint8_t*> Db::PageImageView(const ReadTxn& snap, uint64_t pgno) const {
  const ReadTxn::Impl& t = *snap.impl_;
  if (pgno < kMetaPages || pgno >= t.meta.last_page) return static_cast<const uint8_t*>(nullptr);
  if (!t.free_loaded) {
    std::vector<std::pair<uint64_t, uint64_t>> free;
    TESSERA_RETURN_IF_ERROR(ReadFreelist(t, &free, nullptr));
    t.free_sorted.clear();
    for (const auto& f : free) t.free_sorted.push_back(f.first);
    std::sort(t.free_sorted.begin(), t.free_sorted.end());
    t.free_loaded = true;
  }
  if (std::binary_search(t.free_sorted.begin(), t.free_sorted.end(), pgno)) {
    return static_cast<const uint8_t*>(nullptr);
  }
  return static_cast<const uint8_t*>(impl_->Page(pgno));
}

namespace {

// Pages of the tree at `p` written after txn `since` (children older than that are unchanged).
Status CollectNewer(const ReadTxn::Impl& t, uint64_t p, uint64_t txnid, uint64_t since,
                    bool catalog, std::vector<uint64_t>* out, int depth = 0) {
  if (p == kInvalidPage || txnid <= since) return Status::Ok();
  if (depth > 64) return Status::Corruption("tree too deep");
  TESSERA_ASSIGN_OR_RETURN(uint8_t * page, btree::ReadPage(t, p, -1, txnid));
  out->push_back(p);
  PageView v{page};
  for (unsigned i = 0; i < v.count(); ++i) {
    if (v.type() == kBranch) {
      BranchCell bc{v.cell(i)};
      TESSERA_RETURN_IF_ERROR(
          CollectNewer(t, bc.child(), bc.child_txnid(), since, catalog, out, depth + 1));
    } else {
      LeafCell lc{v.cell(i)};
      if (lc.overflow() && lc.ovf_txnid() > since) {
        TESSERA_RETURN_IF_ERROR(t.db->CheckRun(lc, t.meta.last_page).status());
        const uint64_t n = t.db->RunPages(lc);
        for (uint64_t k = 0; k < n; ++k) out->push_back(lc.ovf_pgno() + k);
      } else if (catalog && !lc.overflow() && lc.vlen() == sizeof(TreeInfo)) {
        TreeInfo ti;
        std::memcpy(&ti, lc.val(), sizeof ti);
        TESSERA_RETURN_IF_ERROR(CollectNewer(t, ti.root, ti.root_txnid, since, false, out));
      }
    }
  }
  return Status::Ok();
}

bool IsZeroPage(const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  return true;
}

}  // namespace

Result<std::vector<uint64_t>> Db::ChangedPages(const ReadTxn& older, const ReadTxn& newer) const {
  const ReadTxn::Impl& o = *older.impl_;
  const ReadTxn::Impl& n = *newer.impl_;
  if (o.meta.txnid > n.meta.txnid) {
    return Status::InvalidArgument("ChangedPages: the older snapshot is newer than the newer one");
  }
  std::vector<uint64_t> out;
  const uint64_t since = o.meta.txnid;
  TESSERA_RETURN_IF_ERROR(
      CollectNewer(n, n.meta.main.root, n.meta.main.root_txnid, since, false, &out));
  TESSERA_RETURN_IF_ERROR(
      CollectNewer(n, n.meta.catalog.root, n.meta.catalog.root_txnid, since, true, &out));
  // Pages freed after `older` (in use then, free now), and freelist pages written since.
  std::vector<std::pair<uint64_t, uint64_t>> free;
  std::vector<uint64_t> chain;
  TESSERA_RETURN_IF_ERROR(ReadFreelist(n, &free, &chain));
  for (uint64_t p : chain) {
    if (PageView{impl_->Page(p)}.txnid() > since) out.push_back(p);
  }
  for (const auto& [p, ftxn] : free) {
    if (ftxn > since && p < o.meta.last_page) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Status Db::Restore(const std::string& path, const SnapshotDescriptor& desc,
                   const std::function<Status(uint64_t pgno, uint8_t* buf)>& image) {
  Meta m;
  if (desc.meta_bytes.size() != sizeof m) {
    return Status::InvalidArgument("snapshot descriptor has a meta of " +
                                   std::to_string(desc.meta_bytes.size()) + " bytes");
  }
  std::memcpy(&m, desc.meta_bytes.data(), sizeof m);
  Meta c = m;
  c.crc = 0;
  if (m.magic != format::kMagic || m.page_size != desc.page_size || m.txnid != desc.txnid ||
      m.last_page != desc.last_page ||
      Crc32c(reinterpret_cast<const uint8_t*>(&c), sizeof c) != m.crc) {
    return Status::InvalidArgument("snapshot descriptor is inconsistent or corrupt");
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create " + path);
  // A commit log left beside the path by an earlier file must not be replayed onto this one
  // (removed only once the create proved no database lives at `path`).
  const std::string log_path = CommitLog::PathFor(path);
  if (::unlink(log_path.c_str()) != 0 && errno != ENOENT) {
    Status s = ErrnoStatus(errno, "remove stale commit log " + log_path);
    ::close(fd);
    ::unlink(path.c_str());
    return s;
  }
  const uint32_t ps = m.page_size;
  std::vector<uint8_t> buf(ps);
  // Writes pages p..p+n-1 from buf, starting at buf's page `at`.
  auto write_run = [&](uint64_t p, uint64_t n, uint64_t at) -> Status {
    return PwriteAll(fd, buf.data() + at * ps, static_cast<size_t>(ps) * n, p * ps,
                     "write " + path);
  };
  Status s;
  // The restored file is a file of its own: a fresh db_id keeps any commit log of the source (or
  // of an earlier file at this path) from ever being replayed onto it.
  m.db_id = NewDbId();
  c = m;
  c.crc = 0;
  m.crc = Crc32c(reinterpret_cast<const uint8_t*>(&c), sizeof c);
  std::memset(buf.data(), 0, ps);
  std::memcpy(buf.data(), &m, sizeof m);
  s = write_run(0, 1, 0);
  std::memset(buf.data(), 0, ps);
  if (s.ok()) s = write_run(1, 1, 0);
  // The whole file is reserved first, so a full disk is an error now rather than a fault when a
  // page is first written through the map later; all-zero pages (free in the snapshot) then
  // need no write at all. Without fallocate (some filesystems) they are written as zeros.
  const uint64_t size = m.last_page * ps;
  bool holes = false;
  if (s.ok() && size > 0) {
    if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) == 0) {
      holes = true;
    } else if (errno != EOPNOTSUPP) {
      s = ErrnoStatus(errno, "reserve " + std::to_string(size) + " bytes for " + path);
    }
  }
  // Pages are written in runs of up to 256 (one pwrite each), not one call per page. A second
  // thread makes what was written durable every kSyncEvery bytes while the pages go on being
  // produced: a flush costs time in proportion to the data it flushes (on this project's virtual
  // disks about as long as producing the pages), so a single fdatasync at the end would add that
  // time to the restore instead of overlapping it.
  constexpr uint64_t kRun = 256;
  constexpr uint64_t kSyncEvery = uint64_t{16} << 20;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t written = 0;  // bytes handed to the kernel (guarded by mu)
  bool ended = false;    // guarded by mu
  Status synced;         // the syncer's first error (guarded by mu)
  std::thread syncer([&] {
    uint64_t done = 0;
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      cv.wait(l, [&] { return ended || written - done >= kSyncEvery; });
      if (ended) return;
      const uint64_t upto = written;
      l.unlock();
      Status st;
      if (::fdatasync(fd) != 0) st = ErrnoStatus(errno, "fdatasync " + path);
      l.lock();
      done = upto;
      if (!st.ok()) {
        synced = st;
        return;
      }
    }
  });
  struct Join {  // the syncer is joined however the loop below ends
    std::thread& t;
    std::mutex& mu;
    std::condition_variable& cv;
    bool& ended;
    ~Join() {
      {
        std::lock_guard<std::mutex> l(mu);
        ended = true;
      }
      cv.notify_all();
      t.join();
    }
  };
  {
    Join join{syncer, mu, cv, ended};
    buf.resize(static_cast<size_t>(ps) * kRun);
    for (uint64_t p = kMetaPages; s.ok() && p < m.last_page;) {
      const uint64_t n = std::min(kRun, m.last_page - p);
      for (uint64_t i = 0; s.ok() && i < n; ++i) s = image(p + i, buf.data() + i * ps);
      // Consecutive pages that must be written go out as one run.
      auto skip = [&](uint64_t i) { return holes && IsZeroPage(buf.data() + i * ps, ps); };
      for (uint64_t i = 0; s.ok() && i < n;) {
        if (skip(i)) {
          ++i;
          continue;
        }
        uint64_t j = i + 1;
        while (j < n && !skip(j)) ++j;
        s = write_run(p + i, j - i, i);
        i = j;
      }
      p += n;
      {
        std::lock_guard<std::mutex> l(mu);
        written = p * ps;
        if (!synced.ok()) s = synced;
      }
      cv.notify_all();
    }
  }
  // A flush still running when the last run was written may have failed since: its error must
  // not be lost (the kernel reports a writeback error once, so the final fdatasync may not).
  if (s.ok()) s = synced;
  if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoStatus(errno, "fdatasync " + path);
  ::close(fd);
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

}  // namespace tessera::engine
