#include "btree.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace tessera::engine::btree {

using format::BranchCell;
using format::kBranch;
using format::kBranchCellHeader;
using format::kCellOverflow;
using format::kHeaderSize;
using format::kInvalidPage;
using format::kLeaf;
using format::kLeafCellHeader;
using format::kOverflow;
using format::kOverflowRefSize;
using format::LeafCell;
using format::Store;

namespace {

struct Step {
  uint64_t pgno;
  unsigned idx;
};

// The pages from a tree's root down to a leaf, on the stack: a Put or Delete allocates nothing
// for it. A path deeper than kMaxDepth (a crafted file whose pages form a cycle) is Corruption.
class Path {
 public:
  static constexpr size_t kMaxDepth = 64;
  void clear() { n_ = 0; }
  bool full() const { return n_ == kMaxDepth; }
  void push_back(Step s) {
    TESSERA_ASSERT(n_ < kMaxDepth, "tree path deeper than ", kMaxDepth);
    steps_[n_++] = s;
  }
  Step& back() { return steps_[n_ - 1]; }
  Step& operator[](size_t i) { return steps_[i]; }
  size_t size() const { return n_; }

 private:
  Step steps_[kMaxDepth];
  size_t n_ = 0;
};

uint32_t CellSize(const PageView& v, unsigned i) {
  return v.type() == kLeaf ? LeafCell{v.cell(i)}.size() : BranchCell{v.cell(i)}.size();
}

uint32_t UsedBytes(const PageView& v) {
  uint32_t used = 0;
  for (unsigned i = 0; i < v.count(); ++i) used += CellSize(v, i) + 2;
  return used;
}

void InitPage(uint8_t* page, uint32_t page_size, uint64_t pgno, uint64_t txnid, uint8_t type) {
  std::memset(page, 0, kHeaderSize);
  PageView v{page};
  v.set_pgno(pgno);
  v.set_txnid(txnid);
  v.set_type(type);
  v.set_upper(page_size);
}

// Rewrites the page with its cells packed at the end, reclaiming holes left by removals.
void Compact(PageView v, uint32_t page_size) {
  std::vector<uint8_t> tmp(v.p, v.p + page_size);
  PageView old{tmp.data()};
  uint32_t upper = page_size;
  for (unsigned i = 0; i < old.count(); ++i) {
    uint32_t sz = CellSize(old, i);
    upper -= sz;
    std::memcpy(v.p + upper, old.cell(i), sz);
    v.set_slot(i, static_cast<uint16_t>(upper));
  }
  v.set_upper(upper);
}

// Inserts a cell at slot idx if it fits (compacting if that makes it fit).
bool InsertCell(PageView v, unsigned idx, const uint8_t* cell, uint32_t size, uint32_t page_size) {
  if (v.free_space() < size + 2) {
    if (UsedBytes(v) + size + 2 > page_size - kHeaderSize) return false;
    Compact(v, page_size);
  }
  uint32_t upper = v.upper() - size;
  std::memcpy(v.p + upper, cell, size);
  unsigned n = v.count();
  std::memmove(v.p + kHeaderSize + 2 * (idx + 1), v.p + kHeaderSize + 2 * idx, 2 * (n - idx));
  v.set_slot(idx, static_cast<uint16_t>(upper));
  v.set_count(static_cast<uint16_t>(n + 1));
  v.set_upper(upper);
  return true;
}

void RemoveCell(PageView v, unsigned idx) {
  unsigned n = v.count();
  uint32_t off = v.slot(idx);
  uint32_t sz = CellSize(v, idx);
  std::memmove(v.p + kHeaderSize + 2 * idx, v.p + kHeaderSize + 2 * (idx + 1), 2 * (n - idx - 1));
  v.set_count(static_cast<uint16_t>(n - 1));
  if (off == v.upper()) v.set_upper(off + sz);
}

std::string MakeBranchCell(uint64_t child, uint64_t child_txnid, uint32_t child_crc,
                           std::string_view key) {
  std::string c(kBranchCellHeader + key.size(), '\0');
  auto* p = reinterpret_cast<uint8_t*>(c.data());
  Store(p, child);
  Store(p + 8, child_txnid);
  Store(p + 16, child_crc);
  Store(p + 20, static_cast<uint16_t>(key.size()));
  if (!key.empty()) std::memcpy(p + kBranchCellHeader, key.data(), key.size());  // {} has no data
  return c;
}

void SetBranchChild(uint8_t* cell, uint64_t child, uint64_t txnid) {
  Store(cell, child);
  Store(cell + 8, txnid);
  Store(cell + 16, uint32_t{0});  // filled in by Finalize at commit
}

uint32_t UsableBytes(uint32_t page_size) { return page_size - kHeaderSize; }

// Copies page (or overflow run of npages) *pgno to np, allocated by this transaction, frees the
// original and points *pgno at the copy. A headerless run (`headerless_run`, written by
// `run_txnid` as its leaf reference says) is copied byte for byte.
uint8_t* CopyTo(Txn& txn, uint64_t* pgno, uint64_t np, uint64_t npages, bool headerless_run = false,
                uint64_t run_txnid = 0) {
  Db::Impl* db = txn.db;
  uint8_t* page = db->Page(*pgno);
  PageView v{page};
  uint8_t* dst = db->Page(np);
  if (headerless_run) {
    std::memcpy(dst, page, npages * db->page_size);
    db->MarkRunWritten(np, npages);  // the bytes CheckRun verified, now written by this process
    FreePages(txn, *pgno, npages, run_txnid);
    *pgno = np;
    return dst;
  }
  if (db->crc_skips_gap && npages == 1 && (v.type() == kLeaf || v.type() == kBranch) &&
      v.lower() <= v.upper() && v.upper() <= db->page_size) {
    // Only the header with the slots and the cell heap: the gap between them is never read, nor
    // checksummed in this format, and a leaf is typically a third empty. (In a version 1 file the
    // whole page is copied: its checksum would read the destination's cold gap instead.)
    std::memcpy(dst, page, v.lower());
    std::memcpy(dst + v.upper(), page + v.upper(), db->page_size - v.upper());
  } else {
    std::memcpy(dst, page, npages * db->page_size);
  }
  PageView nv{dst};
  nv.set_pgno(np);
  nv.set_txnid(txn.txnid);
  FreePages(txn, *pgno, npages, v.txnid());
  *pgno = np;
  return dst;
}

// Makes page *pgno writable for this transaction; may move it (copy-on-write).
Result<uint8_t*> Touch(Txn& txn, uint64_t* pgno) {
  PageView v{txn.db->Page(*pgno)};
  if (v.txnid() == txn.txnid) {
    Db::Impl* db = txn.db;
    if (db->crc_fresh.Test(*pgno)) {  // about to change: the checksum computed before is stale
      db->crc_fresh.Clear(*pgno);
      db->crc_resealed.Set(*pgno);  // and Finalize computes the next one
    }
    return v.p;
  }
  uint64_t npages = v.type() == kOverflow ? v.overflow_pages() : 1;
  TESSERA_ASSIGN_OR_RETURN(uint64_t np, AllocPages(txn, npages));
  return CopyTo(txn, pgno, np, npages);
}

// Computes the checksum of the leaf the last Put or Delete changed into its header and marks it
// (Db::Impl::crc_fresh): called once a write leads to another leaf, so the last one is done with
// for now and still in the cache. A page that no longer is that leaf was freed, which forgot it.
void SealPendingLeaf(Txn& txn) {
  const uint64_t p = txn.crc_pending_leaf;
  txn.crc_pending_leaf = 0;
  Db::Impl* db = txn.db;
  PageView v{db->Page(p)};
  TESSERA_ASSERT(v.pgno() == p && v.txnid() == txn.txnid && v.type() == kLeaf, "page ", p,
                 " is no longer the leaf this transaction last changed");
  v.set_crc(db->PageCrc(v.p, 1));
  db->crc_fresh.Set(p);
}

// Descends to the leaf for `key`, making every page on the path writable.
Status DescendForWrite(Txn& txn, TreeInfo* tree, std::string_view key, Path* path, bool* found) {
  path->clear();
  TESSERA_RETURN_IF_ERROR(ReadPage(txn, tree->root, -1, tree->root_txnid).status());
  uint64_t pg = tree->root;
  TESSERA_ASSIGN_OR_RETURN(uint8_t * page, Touch(txn, &pg));
  tree->root = pg;
  tree->root_txnid = txn.txnid;
  for (;;) {
    if (path->full()) {
      return Status::Corruption("tree below page " + std::to_string(tree->root) +
                                " is deeper than " + std::to_string(Path::kMaxDepth) + " levels");
    }
    PageView v{page};
    if (v.type() == kLeaf) {
      unsigned idx = LeafLowerBound(v, key, found);
      path->push_back({pg, idx});
      // The caller changes this leaf next; the one the last write changed is done with.
      if (txn.crc_pending_leaf != pg) {
        if (txn.crc_pending_leaf != 0) SealPendingLeaf(txn);
        txn.crc_pending_leaf = txn.db->crc_resealed.Test(pg) ? 0 : pg;
      }
      return Status::Ok();
    }
    unsigned idx = BranchSearch(v, key);
    path->push_back({pg, idx});
    uint8_t* cell = v.cell(idx);
    BranchCell bc{cell};
    uint64_t child = bc.child();
    TESSERA_RETURN_IF_ERROR(ReadPage(txn, child, -1, bc.child_txnid()).status());
    TESSERA_ASSIGN_OR_RETURN(page, Touch(txn, &child));
    SetBranchChild(cell, child, txn.txnid);
    pg = child;
  }
}

// Inserts `cell` at path level `level`, slot idx, splitting pages up the path as needed.
Status InsertAt(Txn& txn, TreeInfo* tree, Path& path, size_t level, unsigned idx,
                const uint8_t* cell, uint32_t size) {
  Db::Impl* db = txn.db;
  const uint32_t ps = db->page_size;
  uint8_t* page = db->Page(path[level].pgno);
  PageView v{page};
  if (InsertCell(v, idx, cell, size, ps)) return Status::Ok();

  // Split. Gather the cells (old ones from a copy, plus the new one) in order.
  const bool leaf = v.type() == kLeaf;
  std::vector<uint8_t> tmp(page, page + ps);
  PageView old{tmp.data()};
  struct C {
    const uint8_t* p;
    uint32_t size;
  };
  std::vector<C> cells;
  cells.reserve(old.count() + 1);
  for (unsigned i = 0; i < old.count(); ++i) {
    if (i == idx) cells.push_back({cell, size});
    cells.push_back({old.cell(i), CellSize(old, i)});
  }
  if (idx == old.count()) cells.push_back({cell, size});
  const size_t n = cells.size();
  const uint32_t usable = UsableBytes(ps);

  // Choose s: left = cells[0, s), right = cells[s, n). For branches cell s loses its key (it
  // becomes the right page's "minus infinity" cell) and the key moves up.
  std::vector<uint64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + cells[i].size + 2;
  auto right_bytes = [&](size_t s) {
    uint64_t r = prefix[n] - prefix[s];
    if (!leaf) r -= BranchCell{cells[s].p}.klen();
    return r;
  };
  size_t best = 0;
  uint64_t best_score = UINT64_MAX;
  const bool append = leaf && idx == old.count();
  for (size_t s = 1; s < n; ++s) {
    uint64_t l = prefix[s], r = right_bytes(s);
    if (l > usable || r > usable) continue;
    uint64_t score = append ? (n - s) : (l > r ? l - r : r - l);
    if (score < best_score) {
      best_score = score;
      best = s;
    }
  }
  TESSERA_ASSERT(best > 0, "no valid split point for ", n, " cells on page ", path[level].pgno);
  const size_t s = best;

  // Separator: for leaves the shortest prefix of the right's first key that is greater than the
  // left's last key; for branches the key of cell s.
  std::string sep;
  if (leaf) {
    std::string_view lk = LeafCell{cells[s - 1].p}.key();
    std::string_view rk = LeafCell{cells[s].p}.key();
    size_t len = 1;
    while (len < rk.size() && rk.substr(0, len) <= lk) ++len;
    sep.assign(rk.substr(0, len));
  } else {
    sep.assign(BranchCell{cells[s].p}.key());
  }

  TESSERA_ASSIGN_OR_RETURN(uint64_t right_pg, AllocPages(txn, 1));
  page = db->Page(path[level].pgno);
  uint8_t* right = db->Page(right_pg);
  const uint64_t left_pg = path[level].pgno;
  InitPage(page, ps, left_pg, txn.txnid, leaf ? kLeaf : kBranch);
  InitPage(right, ps, right_pg, txn.txnid, leaf ? kLeaf : kBranch);
  for (size_t i = 0; i < s; ++i) {
    bool ok = InsertCell(PageView{page}, static_cast<unsigned>(i), cells[i].p, cells[i].size, ps);
    TESSERA_ASSERT(ok, "split left overflow");
  }
  for (size_t i = s; i < n; ++i) {
    unsigned at = static_cast<unsigned>(i - s);
    bool ok;
    if (!leaf && i == s) {
      BranchCell bc{cells[i].p};
      std::string c = MakeBranchCell(bc.child(), bc.child_txnid(), bc.child_crc(), {});
      ok = InsertCell(PageView{right}, at, reinterpret_cast<const uint8_t*>(c.data()),
                      static_cast<uint32_t>(c.size()), ps);
    } else {
      ok = InsertCell(PageView{right}, at, cells[i].p, cells[i].size, ps);
    }
    TESSERA_ASSERT(ok, "split right overflow");
  }
  if (leaf) {
    ++tree->leaf_pages;
  } else {
    ++tree->branch_pages;
  }

  std::string up = MakeBranchCell(right_pg, txn.txnid, 0, sep);
  if (level == 0) {
    TESSERA_ASSIGN_OR_RETURN(uint64_t root, AllocPages(txn, 1));
    uint8_t* rp = db->Page(root);
    InitPage(rp, ps, root, txn.txnid, kBranch);
    std::string first = MakeBranchCell(left_pg, txn.txnid, 0, {});
    InsertCell(PageView{rp}, 0, reinterpret_cast<const uint8_t*>(first.data()),
               static_cast<uint32_t>(first.size()), ps);
    InsertCell(PageView{rp}, 1, reinterpret_cast<const uint8_t*>(up.data()),
               static_cast<uint32_t>(up.size()), ps);
    tree->root = root;
    tree->root_txnid = txn.txnid;
    ++tree->depth;
    ++tree->branch_pages;
    return Status::Ok();
  }
  return InsertAt(txn, tree, path, level - 1, path[level - 1].idx + 1,
                  reinterpret_cast<const uint8_t*>(up.data()), static_cast<uint32_t>(up.size()));
}

// The length of the overflow run `lc` refers to, which is about to be freed without being read
// (a damaged value can still be replaced): the length Put gave it, from the value's length, which
// the leaf's checksum covers. Corruption unless the run lies inside the file, was written no
// later than this txn, and (with a header) its header agrees: freeing pages in use would let
// other values be overwritten.
Result<uint64_t> RunToFree(const Txn& txn, LeafCell lc) {
  const uint64_t p = lc.ovf_pgno();
  const uint64_t n = txn.db->RunPagesFor(lc.vlen());
  TESSERA_RETURN_IF_ERROR(txn.db->RunInFile(lc, txn.meta.last_page));
  const std::string run = "overflow run at page " + std::to_string(p) + " (a value of " +
                          std::to_string(lc.vlen()) + " bytes)";
  if (lc.ovf_txnid() == 0 || lc.ovf_txnid() > txn.txnid) {
    return Status::Corruption(run + " names txn " + std::to_string(lc.ovf_txnid()));
  }
  if (!txn.db->headerless_runs) {
    const uint64_t recorded = PageView{txn.db->Page(p)}.overflow_pages();
    if (recorded != n) {
      return Status::Corruption(run + ": its header records " + std::to_string(recorded) +
                                " pages, the value needs " + std::to_string(n));
    }
  }
  return n;
}

// Frees the overflow run of a leaf cell, if any.
Status FreeCellOverflow(Txn& txn, TreeInfo* tree, LeafCell lc) {
  if (!lc.overflow()) return Status::Ok();
  TESSERA_ASSIGN_OR_RETURN(uint64_t n, RunToFree(txn, lc));
  FreePages(txn, lc.ovf_pgno(), n, lc.ovf_txnid());
  tree->overflow_pages -= n;
  return Status::Ok();
}

// After a removal at path[level], fixes empty or underfull pages up the path.
Status Rebalance(Txn& txn, TreeInfo* tree, Path& path, size_t level) {
  Db::Impl* db = txn.db;
  const uint32_t ps = db->page_size;
  uint8_t* page = db->Page(path[level].pgno);
  PageView v{page};
  const bool leaf = v.type() == kLeaf;
  if (level == 0) {
    if (leaf && v.count() == 0) {
      FreePages(txn, path[0].pgno, 1, txn.txnid);
      --tree->leaf_pages;
      tree->root = kInvalidPage;
      tree->root_txnid = 0;
      tree->depth = 0;
    } else if (!leaf && v.count() == 1) {
      BranchCell bc{v.cell(0)};
      tree->root = bc.child();
      tree->root_txnid = bc.child_txnid();
      tree->root_crc = bc.child_crc();
      FreePages(txn, path[0].pgno, 1, txn.txnid);
      --tree->branch_pages;
      --tree->depth;
    }
    return Status::Ok();
  }
  uint8_t* parent = db->Page(path[level - 1].pgno);
  PageView pv{parent};
  const unsigned pidx = path[level - 1].idx;
  if (v.count() == 0) {
    FreePages(txn, path[level].pgno, 1, txn.txnid);
    if (leaf) {
      --tree->leaf_pages;
    } else {
      --tree->branch_pages;
    }
    RemoveCell(pv, pidx);
    return Rebalance(txn, tree, path, level - 1);
  }
  if (UsedBytes(v) >= UsableBytes(ps) / 4 || pv.count() < 2) return Status::Ok();

  // Merge with a sibling when both fit in one page: the right one into the left one.
  unsigned li = pidx + 1 < pv.count() ? pidx : pidx - 1;
  unsigned ri = li + 1;
  BranchCell lcell{pv.cell(li)}, rcell{pv.cell(ri)};
  uint64_t lpg = lcell.child(), rpg = rcell.child();
  TESSERA_RETURN_IF_ERROR(ReadPage(txn, lpg, v.type(), lcell.child_txnid()).status());
  TESSERA_RETURN_IF_ERROR(ReadPage(txn, rpg, v.type(), rcell.child_txnid()).status());
  PageView lv{db->Page(lpg)}, rv{db->Page(rpg)};
  std::string sep(rcell.key());
  uint32_t extra = leaf ? 0 : static_cast<uint32_t>(sep.size());
  if (UsedBytes(lv) + UsedBytes(rv) + extra > UsableBytes(ps)) return Status::Ok();
  TESSERA_ASSIGN_OR_RETURN(uint8_t * lp, Touch(txn, &lpg));
  SetBranchChild(pv.cell(li), lpg, txn.txnid);
  PageView lw{lp};
  PageView r{db->Page(rpg)};
  for (unsigned i = 0; i < r.count(); ++i) {
    bool ok;
    if (!leaf && i == 0) {
      BranchCell bc{r.cell(0)};
      std::string c = MakeBranchCell(bc.child(), bc.child_txnid(), bc.child_crc(), sep);
      ok = InsertCell(lw, lw.count(), reinterpret_cast<const uint8_t*>(c.data()),
                      static_cast<uint32_t>(c.size()), ps);
    } else {
      ok = InsertCell(lw, lw.count(), r.cell(i), CellSize(r, i), ps);
    }
    TESSERA_ASSERT(ok, "merge overflow on page ", lpg);
  }
  FreePages(txn, rpg, 1, r.txnid());
  if (leaf) {
    --tree->leaf_pages;
  } else {
    --tree->branch_pages;
  }
  RemoveCell(pv, ri);
  return Rebalance(txn, tree, path, level - 1);
}

uint32_t FinalizePage(Txn& txn, TreeInfo* tree, uint64_t pgno) {
  Db::Impl* db = txn.db;
  uint8_t* page = db->Page(pgno);
  PageView v{page};
  if (v.type() == kBranch) {
    for (unsigned i = 0; i < v.count(); ++i) {
      uint8_t* c = v.cell(i);
      BranchCell bc{c};
      if (bc.child_txnid() == txn.txnid) Store(c + 16, FinalizePage(txn, tree, bc.child()));
    }
  } else if (tree->overflow_pages == 0 && db->crc_fresh.Test(pgno)) {
    return v.crc();                       // computed when the txn last changed it (SealPendingLeaf)
  } else if (tree->overflow_pages > 0) {  // a tree without overflow values has no refs to fix
    for (unsigned i = 0; i < v.count(); ++i) {
      LeafCell lc{v.cell(i)};
      if (lc.overflow() && lc.ovf_txnid() == txn.txnid) {
        uint8_t* ov = db->Page(lc.ovf_pgno());
        uint32_t crc;
        if (db->headerless_runs) {
          crc = Db::Impl::RunCrc(ov, lc.vlen());
        } else {
          crc = db->PageCrc(ov, PageView{ov}.overflow_pages());
          PageView{ov}.set_crc(crc);
        }
        Store(const_cast<uint8_t*>(lc.val()) + 16, crc);
      }
    }
  }
  uint32_t crc = db->PageCrc(page, 1);
  v.set_crc(crc);
  return crc;
}

Status DropPage(Txn& txn, uint64_t pgno, uint64_t txnid, int depth = 0) {
  if (depth > 64) return Status::Corruption("tree too deep below page " + std::to_string(pgno));
  TESSERA_ASSIGN_OR_RETURN(uint8_t * page, ReadPage(txn, pgno, -1, txnid));
  PageView v{page};
  if (v.type() == kBranch) {
    for (unsigned i = 0; i < v.count(); ++i) {
      BranchCell bc{v.cell(i)};
      TESSERA_RETURN_IF_ERROR(DropPage(txn, bc.child(), bc.child_txnid(), depth + 1));
    }
  } else {
    for (unsigned i = 0; i < v.count(); ++i) {
      LeafCell lc{v.cell(i)};
      if (!lc.overflow()) continue;
      TESSERA_ASSIGN_OR_RETURN(uint64_t n, RunToFree(txn, lc));
      FreePages(txn, lc.ovf_pgno(), n, lc.ovf_txnid());
    }
  }
  FreePages(txn, pgno, 1, txnid);
  return Status::Ok();
}

// Moves the subtree at *pgno (written by *pg_txnid) out of [limit, ...): every page of it at or
// above `limit`, and every overflow run starting there, is copied to a page allocated now (the
// lowest free one), and so is each page on the way to a moved page, since its child reference
// changes. `levels` counts the levels below this page (0: a leaf), so leaves below `limit` of a
// tree without overflow values are never read.
Status RelocatePage(Txn& txn, TreeInfo* tree, uint64_t* pgno, uint64_t* pg_txnid, uint32_t levels,
                    uint64_t limit) {
  TESSERA_ASSIGN_OR_RETURN(uint8_t * page,
                           ReadPage(txn, *pgno, levels == 0 ? kLeaf : kBranch, *pg_txnid));
  auto writable = [&]() -> Status {
    if (PageView{page}.txnid() == txn.txnid) return Status::Ok();
    TESSERA_ASSIGN_OR_RETURN(page, Touch(txn, pgno));
    *pg_txnid = txn.txnid;
    return Status::Ok();
  };
  if (*pgno >= limit) TESSERA_RETURN_IF_ERROR(writable());
  const unsigned count = PageView{page}.count();
  if (levels > 0) {
    for (unsigned i = 0; i < count; ++i) {
      BranchCell bc{PageView{page}.cell(i)};
      uint64_t child = bc.child(), child_txnid = bc.child_txnid();
      if (child < limit && levels == 1 && tree->overflow_pages == 0) continue;
      TESSERA_RETURN_IF_ERROR(RelocatePage(txn, tree, &child, &child_txnid, levels - 1, limit));
      if (child == bc.child()) continue;
      TESSERA_RETURN_IF_ERROR(writable());
      SetBranchChild(PageView{page}.cell(i), child, child_txnid);
    }
    return Status::Ok();
  }
  for (unsigned i = 0; i < count && tree->overflow_pages > 0; ++i) {
    LeafCell lc{PageView{page}.cell(i)};
    if (!lc.overflow()) continue;
    // The run's length follows from the value's (as Put sized it): runs below the limit are not
    // read, so a bounded Shrink does not read every large value in the file.
    uint64_t ovf = lc.ovf_pgno();
    if (ovf + txn.db->RunPagesFor(lc.vlen()) <= limit) continue;
    TESSERA_RETURN_IF_ERROR(txn.db->CheckRun(lc, txn.meta.last_page).status());
    const uint64_t n = txn.db->RunPages(lc);
    // Allocated before the leaf is made writable: a run with no room below the limit stays where
    // it is (the file is cut above it), and nothing has changed.
    auto np = AllocPages(txn, n);
    if (!np.ok() && np.status().IsNoSpace() && n > 1) continue;
    if (!np.ok()) return np.status();
    TESSERA_RETURN_IF_ERROR(writable());
    CopyTo(txn, &ovf, *np, n, txn.db->headerless_runs, lc.ovf_txnid());
    uint8_t* ref = const_cast<uint8_t*>(LeafCell{PageView{page}.cell(i)}.val());
    Store(ref, ovf);
    Store(ref + 8, txn.txnid);  // Finalize fills in the run's checksum
  }
  return Status::Ok();
}

}  // namespace

uint32_t MaxInlineCell(uint32_t page_size) { return UsableBytes(page_size) / 4 - 2; }

namespace {

// Lexicographic byte order, like std::string_view's compare, inlined: keys are short, and the
// binary searches of every lookup compare a handful of them (a call to memcmp each was a fifth
// of a lookup that finds its pages in cache). Eight bytes at a time, as big-endian integers.
inline int CompareKeys(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, b.data() + i, 8);
    if (x != y) return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
  }
  if (i < n && n >= 8) {
    // The last bytes as one word ending at n: the ones it shares with the words above are equal,
    // so its first difference is the keys' (branch keys are cut short, and their tails varied).
    uint64_t x, y;
    std::memcpy(&x, a.data() + n - 8, 8);
    std::memcpy(&y, b.data() + n - 8, 8);
    if (x != y) return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
    i = n;
  }
  for (; i < n; ++i) {
    const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x != y) return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
  }
  return a.size() < b.size() ? -1 : (a.size() > b.size() ? 1 : 0);
}

}  // namespace

unsigned BranchSearch(PageView v, std::string_view key, const Db::Impl* db) {
  unsigned lo = 1, hi = v.count();
  bool fetched = db == nullptr;
  while (lo < hi) {
    if (!fetched && hi - lo <= 2) {
      // The answer is one of the children lo-1 .. hi-1: start fetching their pages' first line
      // while the last comparisons run (the lookup's next step misses the cache on it).
      fetched = true;
      for (unsigned i = lo - 1; i < hi; ++i) {
        const uint8_t* child = db->Page(BranchCell{v.cell(i)}.child());
        __builtin_prefetch(child, 0, 3);
        __builtin_prefetch(child + 64, 0, 3);
      }
    }
    unsigned mid = (lo + hi) / 2;
    if (CompareKeys(BranchCell{v.cell(mid)}.key(), key) <= 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

namespace {

// Starts fetching the cells the first three rounds of a binary search over [lo, hi) can probe
// (seven at most), so that in a cold page their misses overlap instead of following one another.
void PrefetchProbes(PageView v, unsigned lo, unsigned hi, uint32_t at) {
  auto fetch = [&](unsigned a, unsigned b) {
    if (a >= b) return b;
    const unsigned mid = (a + b) / 2;
    __builtin_prefetch(v.cell(mid) + at);
    return mid;
  };
  const unsigned m = fetch(lo, hi);
  if (m == hi) return;
  const unsigned l = fetch(lo, m), r = fetch(m + 1, hi);
  fetch(lo, l);
  fetch(l + 1, m);
  fetch(m + 1, r);
  fetch(r + 1, hi);
}

}  // namespace

unsigned LeafLowerBound(PageView v, std::string_view key, bool* found, bool cold) {
  unsigned lo = 0, hi = v.count();
  bool fetched = !cold;
  if (cold) PrefetchProbes(v, lo, hi, format::kLeafCellHeader);
  while (lo < hi) {
    if (!fetched && hi - lo <= 6) {
      // The last probes land on these cells, each a miss of its own in a cold leaf: fetch them
      // together rather than one after another.
      fetched = true;
      for (unsigned i = lo; i < hi; ++i) __builtin_prefetch(v.cell(i) + format::kLeafCellHeader);
    }
    unsigned mid = (lo + hi) / 2;
    if (CompareKeys(LeafCell{v.cell(mid)}.key(), key) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  *found = lo < v.count() && CompareKeys(LeafCell{v.cell(lo)}.key(), key) == 0;
  return lo;
}

Result<uint8_t*> ReadPage(const Txn& txn, uint64_t pgno, int type, uint64_t expect_txnid) {
  TESSERA_RETURN_IF_ERROR(txn.db->CheckPage(pgno, txn.meta.last_page, type, expect_txnid));
  return txn.db->Page(pgno);
}

Result<std::string_view> CellValue(const Txn& txn, LeafCell lc) {
  if (!lc.overflow()) return std::string_view(reinterpret_cast<const char*>(lc.val()), lc.vlen());
  TESSERA_ASSIGN_OR_RETURN(const uint8_t* v, txn.db->CheckRun(lc, txn.meta.last_page));
  return std::string_view(reinterpret_cast<const char*>(v), lc.vlen());
}

Status Get(const Txn& txn, const TreeInfo& tree, std::string_view key, std::string_view* value) {
  return Get(*txn.db, txn.meta.last_page, tree, key, value);
}

Status Get(const Db::Impl& db, uint64_t last_page, const TreeInfo& tree, std::string_view key,
           std::string_view* value) {
  if (tree.root == kInvalidPage) return Status::NotFound("key not found");
  uint64_t pg = tree.root, expect = tree.root_txnid;
  for (uint32_t depth = 0;; ++depth) {
    if (!db.QuickChecked(pg, last_page, expect)) {
      TESSERA_RETURN_IF_ERROR(db.CheckPage(pg, last_page, -1, expect));
    }
    PageView v{db.Page(pg)};
    if (v.type() == kLeaf) {
      bool found;
      unsigned idx = LeafLowerBound(v, key, &found, /*cold=*/true);
      if (!found) return Status::NotFound("key not found");
      if (value == nullptr) return Status::Ok();  // presence only: the value is not read
      // CellValue by hand, as the cursor does: its Result cost a lookup 54 instructions.
      const LeafCell lc{v.cell(idx)};
      const uint8_t* bytes = lc.val();
      if (lc.overflow()) {
        TESSERA_ASSIGN_OR_RETURN(bytes, db.CheckRun(lc, last_page));
      }
      *value = std::string_view(reinterpret_cast<const char*>(bytes), lc.vlen());
      return Status::Ok();
    }
    if (v.type() != kBranch || v.count() == 0 || depth > 64) {
      return Status::Corruption("page " + std::to_string(pg) + " is not a valid tree node");
    }
    // Only the leaves are likely to be cold: prefetch at the level above them.
    BranchCell bc{v.cell(BranchSearch(v, key, depth + 2 == tree.depth ? &db : nullptr))};
    pg = bc.child();
    expect = bc.child_txnid();
  }
}

Status Put(Txn& txn, TreeInfo* tree, std::string_view key, std::string_view value) {
  Db::Impl* db = txn.db;
  const uint32_t ps = db->page_size;
  // Build the cell: inline value, or an overflow run.
  const uint32_t inline_size = kLeafCellHeader + static_cast<uint32_t>(key.size() + value.size());
  const bool overflow = key.size() + value.size() + kLeafCellHeader > MaxInlineCell(ps);
  // The cell is built on the stack when it is small (the common case), else on the heap.
  const size_t cell_size = overflow ? kLeafCellHeader + key.size() + kOverflowRefSize : inline_size;
  uint8_t stack_cell[512];
  std::unique_ptr<uint8_t[]> heap_cell;
  uint8_t* c = stack_cell;
  if (cell_size > sizeof stack_cell) {
    heap_cell = std::make_unique<uint8_t[]>(cell_size);
    c = heap_cell.get();
  }
  Store(c, static_cast<uint16_t>(key.size()));
  c[2] = overflow ? kCellOverflow : 0;
  Store(c + 3, static_cast<uint32_t>(value.size()));
  // Copied as bytes to bytes: std::copy_n from char to uint8_t compiled to a byte-at-a-time loop,
  // which was half of Put's own time.
  std::copy_n(reinterpret_cast<const uint8_t*>(key.data()), key.size(), c + kLeafCellHeader);
  if (overflow) {
    const uint64_t header = db->headerless_runs ? 0 : kHeaderSize;
    const uint64_t npages = db->RunPagesFor(value.size());
    TESSERA_ASSIGN_OR_RETURN(uint64_t ov, AllocPages(txn, npages));
    uint8_t* op = db->Page(ov);
    if (!db->headerless_runs) {
      InitPage(op, ps, ov, txn.txnid, kOverflow);
      PageView{op}.set_upper(static_cast<uint32_t>(npages));
    }
    if (!value.empty()) std::memcpy(op + header, value.data(), value.size());
    // The padding is zeroed: a page image (protection) then depends only on the value.
    std::memset(op + header + value.size(), 0, npages * ps - header - value.size());
    // Read back in this txn before Finalize records its checksum: known good, like any page
    // this process wrote.
    if (db->headerless_runs) db->MarkRunWritten(ov, npages);
    Store(c + kLeafCellHeader + key.size(), ov);
    Store(c + kLeafCellHeader + key.size() + 8, txn.txnid);
    Store(c + kLeafCellHeader + key.size() + 16, uint32_t{0});
    tree->overflow_pages += npages;
  } else {
    std::copy_n(reinterpret_cast<const uint8_t*>(value.data()), value.size(),
                c + kLeafCellHeader + key.size());
  }
  ++txn.mod_count;

  if (tree->root == kInvalidPage) {
    TESSERA_ASSIGN_OR_RETURN(uint64_t root, AllocPages(txn, 1));
    uint8_t* rp = db->Page(root);
    InitPage(rp, ps, root, txn.txnid, kLeaf);
    InsertCell(PageView{rp}, 0, c, static_cast<uint32_t>(cell_size), ps);
    tree->root = root;
    tree->root_txnid = txn.txnid;
    tree->depth = 1;
    tree->leaf_pages = 1;
    tree->entries = 1;
    return Status::Ok();
  }
  Path path;
  bool found = false;
  TESSERA_RETURN_IF_ERROR(DescendForWrite(txn, tree, key, &path, &found));
  if (found) {
    PageView leaf{db->Page(path.back().pgno)};
    LeafCell old{leaf.cell(path.back().idx)};
    // Overwrite in place when the new cell has exactly the old one's size (common for
    // fixed-size values): no slot shuffling, no fragmentation.
    if (old.size() == cell_size && !old.overflow() && !overflow) {
      std::memcpy(const_cast<uint8_t*>(old.c), c, cell_size);
      return Status::Ok();
    }
    TESSERA_RETURN_IF_ERROR(FreeCellOverflow(txn, tree, old));
    RemoveCell(leaf, path.back().idx);
  } else {
    ++tree->entries;
  }
  return InsertAt(txn, tree, path, path.size() - 1, path.back().idx, c,
                  static_cast<uint32_t>(cell_size));
}

Status Delete(Txn& txn, TreeInfo* tree, std::string_view key) {
  // NotFound leaves pages untouched. The value is not read: a damaged one can still be deleted,
  // and a large one is not checked to be thrown away.
  TESSERA_RETURN_IF_ERROR(Get(txn, *tree, key, nullptr));
  Path path;
  bool found = false;
  TESSERA_RETURN_IF_ERROR(DescendForWrite(txn, tree, key, &path, &found));
  TESSERA_ASSERT(found, "key vanished between lookup and delete");
  PageView leaf{txn.db->Page(path.back().pgno)};
  TESSERA_RETURN_IF_ERROR(FreeCellOverflow(txn, tree, LeafCell{leaf.cell(path.back().idx)}));
  RemoveCell(leaf, path.back().idx);
  --tree->entries;
  ++txn.mod_count;
  return Rebalance(txn, tree, path, path.size() - 1);
}

Status Drop(Txn& txn, TreeInfo* tree) {
  if (tree->root != kInvalidPage) {
    TESSERA_RETURN_IF_ERROR(DropPage(txn, tree->root, tree->root_txnid));
  }
  *tree = TreeInfo{};
  ++txn.mod_count;
  return Status::Ok();
}

Status Relocate(Txn& txn, TreeInfo* tree, uint64_t limit) {
  if (tree->root == kInvalidPage || tree->depth == 0) return Status::Ok();
  TESSERA_RETURN_IF_ERROR(
      RelocatePage(txn, tree, &tree->root, &tree->root_txnid, tree->depth - 1, limit));
  ++txn.mod_count;
  return Status::Ok();
}

void Finalize(Txn& txn, TreeInfo* tree) {
  txn.crc_pending_leaf = 0;  // not done with yet: the walk computes it
  if (tree->root == kInvalidPage || tree->root_txnid != txn.txnid) return;
  tree->root_crc = FinalizePage(txn, tree, tree->root);
}

// Bytes faulted in for writing ahead of the file's last page (AllocPages).
constexpr uint64_t kPrefaultBytes = uint64_t{2} << 20;

Result<uint64_t> AllocPages(Txn& txn, uint64_t n) {
  Db::Impl* db = txn.db;
  uint64_t p = kInvalidPage;
  auto& r = db->reusable;
  if (txn.alloc_limit != 0) {
    // Shrink moving pages down: a page or run below the limit, or none.
    if (n == 1 && !txn.txn_reusable.empty() && txn.txn_reusable.back() < txn.alloc_limit) {
      p = txn.txn_reusable.back();
      txn.txn_reusable.pop_back();
    } else if (n < txn.alloc_run_failed && r.take_run(n, 65536, &p, txn.alloc_limit)) {
      for (uint64_t k = 0; k < n; ++k) txn.taken.push_back(p + k);
      txn.freelist_changed = true;
    } else {
      if (n > 1) txn.alloc_run_failed = std::min(txn.alloc_run_failed, n);
      return Status::NoSpace("no run of " + std::to_string(n) + " free pages below page " +
                             std::to_string(txn.alloc_limit));
    }
  } else if (n == 1) {
    if (!txn.txn_reusable.empty()) {
      p = txn.txn_reusable.back();
      txn.txn_reusable.pop_back();
    } else if (!r.empty()) {
      p = r.take_lowest();
      txn.taken.push_back(p);
      txn.freelist_changed = true;
    }
  } else if (r.size() >= n) {
    // A run of n consecutive free pages among the lowest ones; past a bounded search the run
    // comes from the end of the file instead.
    uint64_t start;
    if (r.take_run(n, 4096, &start)) {
      p = start;
      for (uint64_t k = 0; k < n; ++k) txn.taken.push_back(start + k);
      txn.freelist_changed = true;
    }
  }
  if (p == kInvalidPage) {
    p = txn.meta.last_page;
    uint64_t need = p + n;
    uint64_t& ahead = db->prefaulted_upto;
    ahead = std::min(ahead, db->region->page_count());  // the file may have been cut since
    if (db->region->page_count() < need) {
      uint64_t cur = db->region->page_count();
      uint64_t chunk = std::clamp<uint64_t>(cur / 8, 256, 16384);
      uint64_t target = std::min(std::max(need, cur + chunk), db->region->capacity_pages());
      if (target < need) {
        return Status::NoSpace("database is full: " + std::to_string(need) +
                               " pages needed, the reservation holds " +
                               std::to_string(db->region->capacity_pages()));
      }
      TESSERA_RETURN_IF_ERROR(db->region->Grow(target));
    }
    // The file grows page by page at its end, and the first store to each new page faults; a
    // window ahead is faulted in with one call instead (fillrandom of 1M keys: 37k faults ->
    // 8k). Only a hint: a failure leaves the faults to the stores. Not while commits flush the
    // data file (Db::Impl::flushed_lately): each flush would write the window's new pages as
    // zeros and make their next store fault anyway.
    if (need > ahead && !db->flushed_lately) {
      const uint64_t from = std::max(p, ahead);
      const uint64_t window = std::max<uint64_t>(kPrefaultBytes / db->page_size, 1);
      const uint64_t to = std::min(db->region->page_count(), need + window);
      if (to > from) (void)db->region->Advise({from, to - from}, vmem::Advice::kWillWrite);
      ahead = to;
    }
    txn.meta.last_page = need;
  }
  for (uint64_t k = 0; k < n; ++k) {
    db->SetVerified(p + k);
    db->ClearRunVerified(p + k);  // whatever it was, it is rewritten now
    db->crc_fresh.Clear(p + k);
    db->crc_resealed.Clear(p + k);
  }
  PageView v{db->Page(p)};
  v.set_pgno(p);
  v.set_txnid(txn.txnid);
  return p;
}

void FreePages(Txn& txn, uint64_t pgno, uint64_t n, uint64_t page_txnid) {
  std::vector<uint64_t>* dst = &txn.txn_reusable;
  if (page_txnid != txn.txnid && page_txnid > txn.db->durable_txn) {
    dst = &txn.freed_young;
    txn.young_wmin = std::min(txn.young_wmin, page_txnid);
  } else if (page_txnid != txn.txnid) {
    dst = &txn.freed;
    txn.freed_wmin = std::min(txn.freed_wmin, page_txnid);
  }
  for (uint64_t k = 0; k < n; ++k) {
    dst->push_back(pgno + k);
    txn.db->crc_fresh.Clear(pgno + k);
  }
  if (txn.crc_pending_leaf >= pgno && txn.crc_pending_leaf < pgno + n) txn.crc_pending_leaf = 0;
}

}  // namespace tessera::engine::btree
