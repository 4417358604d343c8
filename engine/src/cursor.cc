// Cursors: a stack of (page, slot) from the root to a leaf of one snapshot's tree.
#include <string>
#include <vector>

#include "btree.h"
#include "db_impl.h"

namespace tessera::engine {

using format::BranchCell;
using format::kBranch;
using format::kInvalidPage;
using format::kLeaf;
using format::LeafCell;

struct Cursor::Impl {
  const ReadTxn::Impl* txn = nullptr;
  std::string tree_name;
  bool catalog = false;
  uint64_t mod_count = 0;
  struct Level {
    uint8_t* page;
    unsigned idx;
  };
  std::vector<Level> stack;
  bool valid = false;
  std::string prefix;
  std::string_view value;
  // The leaf after the current one (in the direction of the last descent) and how much of it has
  // been prefetched so far; see PrefetchNextLeaf.
  const uint8_t* pf_page = nullptr;
  uint32_t pf_off = 0;
  bool pf_forward = true;

  Status Invalidated() const {
    if (txn->finished) return Status::InvalidArgument("cursor used after its transaction ended");
    if (txn->write && txn->mod_count != mod_count) {
      return Status::InvalidArgument(
          "cursor invalidated by a write in its transaction; position it again");
    }
    return Status::Ok();
  }

  Result<TreeInfo> Root() {
    if (txn->finished) return Status::InvalidArgument("cursor used after its transaction ended");
    mod_count = txn->mod_count;
    if (catalog) return txn->meta.catalog;
    TESSERA_ASSIGN_OR_RETURN(TreeInfo * info, txn->Tree(tree_name, false));
    return *info;
  }

  // Descends from `page` (expected txnid) to a leaf, taking the first (or last) child each time.
  Status DescendEdge(uint64_t pg, uint64_t txnid, bool last) {
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(uint8_t * page, btree::ReadPage(*txn, pg, -1, txnid));
      PageView v{page};
      if (v.count() == 0) return Status::Corruption("empty tree page " + std::to_string(pg));
      unsigned idx = last ? v.count() - 1u : 0u;
      stack.push_back({page, idx});
      if (v.type() == kLeaf) {
        PrefetchNextLeaf(!last);
        return Status::Ok();
      }
      if (v.type() != kBranch || stack.size() > 64) {
        return Status::Corruption("page " + std::to_string(pg) + " is not a tree node");
      }
      BranchCell bc{v.cell(idx)};
      pg = bc.child();
      txnid = bc.child_txnid();
    }
  }

  // A scan reads a leaf's cells in key order, which is not their order in the page, and the
  // next leaf lives anywhere in the file: without help every cell and every leaf is a cache miss.
  // On entering a leaf, start fetching the leaf after it (the parent's next child): its first
  // lines now, a few more with every step through this leaf (ContinuePrefetch), so the whole page
  // is in cache when the scan reaches it. Asking for all of a page at once did much worse (a scan
  // of 1M entries ran at 16M entries/s that way, 27M spread out): most of a burst of 64
  // prefetches was lost. Prefetches never fault, and a bad number is only skipped.
  static constexpr uint32_t kPrefetchFirst = 8;  // lines of the next leaf on entering a leaf
  static constexpr uint32_t kPrefetchStep = 4;   // further lines with each step inside it
  void PrefetchNextLeaf(bool forward) {
    pf_page = nullptr;
    if (stack.size() < 2) return;
    const Level& parent = stack[stack.size() - 2];
    PageView pv{parent.page};
    unsigned next = forward ? parent.idx + 1 : parent.idx - 1;  // wraps below 0: skipped
    if (next >= pv.count()) return;
    uint64_t pg = BranchCell{pv.cell(next)}.child();
    if (pg >= txn->meta.last_page) return;
    pf_page = txn->db->Page(pg);
    pf_off = 0;
    pf_forward = forward;
    ContinuePrefetch(kPrefetchFirst);
  }
  void ContinuePrefetch(uint32_t lines) {
    const uint32_t ps = txn->db->page_size;
    for (uint32_t k = 0; k < lines && pf_off < ps; ++k, pf_off += 64) {
      __builtin_prefetch(pf_page + pf_off);
    }
  }

  // Sets `valid` and `value` from the current position, honouring the prefix.
  Status Settle() {
    valid = !stack.empty();
    if (!valid) return Status::Ok();
    Level& l = stack.back();
    PageView v{l.page};
    if (l.idx >= v.count()) {
      valid = false;
      return Status::Ok();
    }
    LeafCell lc{v.cell(l.idx)};
    if (!prefix.empty() && lc.key().substr(0, prefix.size()) != prefix) {
      valid = false;
      return Status::Ok();
    }
    if (!lc.overflow()) {  // the common case, without CellValue's call and Result
      value = {reinterpret_cast<const char*>(lc.val()), lc.vlen()};
      return Status::Ok();
    }
    auto val = btree::CellValue(*txn, lc);
    if (!val.ok()) {
      valid = false;
      return val.status();
    }
    value = *val;
    return Status::Ok();
  }

  Status Step(bool forward) {
    if (!valid) return Status::Ok();
    TESSERA_RETURN_IF_ERROR(Invalidated());
    // Move within the leaf when possible; otherwise climb to the first ancestor that can move.
    while (!stack.empty()) {
      Level& l = stack.back();
      PageView v{l.page};
      if (forward ? l.idx + 1 < v.count() : l.idx > 0) {
        l.idx = forward ? l.idx + 1 : l.idx - 1;
        if (v.type() == kLeaf) {
          if (pf_page != nullptr && pf_forward == forward) ContinuePrefetch(kPrefetchStep);
          return Settle();
        }
        BranchCell bc{v.cell(l.idx)};
        TESSERA_RETURN_IF_ERROR(DescendEdge(bc.child(), bc.child_txnid(), !forward));
        return Settle();
      }
      stack.pop_back();
    }
    valid = false;
    return Status::Ok();
  }

  Status Edge(bool last) {
    stack.clear();
    valid = false;
    TESSERA_ASSIGN_OR_RETURN(TreeInfo t, Root());
    if (t.root == kInvalidPage) return Status::Ok();
    Status s = DescendEdge(t.root, t.root_txnid, last);
    if (!s.ok()) {
      stack.clear();
      return s;
    }
    return Settle();
  }

  // Positions at the first key >= key.
  Status Seek(std::string_view key) {
    stack.clear();
    valid = false;
    TESSERA_ASSIGN_OR_RETURN(TreeInfo t, Root());
    if (t.root == kInvalidPage) return Status::Ok();
    uint64_t pg = t.root, txnid = t.root_txnid;
    for (;;) {
      TESSERA_ASSIGN_OR_RETURN(uint8_t * page, btree::ReadPage(*txn, pg, -1, txnid));
      PageView v{page};
      if (v.type() == kLeaf) {
        bool found;
        unsigned idx = btree::LeafLowerBound(v, key, &found);
        stack.push_back({page, idx});
        PrefetchNextLeaf(true);
        if (idx < v.count()) return Settle();
        // Past the end of this leaf: the answer is the first key of the next leaf.
        stack.back().idx = v.count() - 1;
        valid = v.count() > 0;
        if (!valid) return Status::Ok();
        return Step(true);
      }
      if (v.type() != kBranch || v.count() == 0 || stack.size() > 64) {
        return Status::Corruption("page " + std::to_string(pg) + " is not a tree node");
      }
      unsigned idx = btree::BranchSearch(v, key);
      stack.push_back({page, idx});
      BranchCell bc{v.cell(idx)};
      pg = bc.child();
      txnid = bc.child_txnid();
    }
  }
};

Cursor::Cursor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cursor::~Cursor() = default;

Status Cursor::Seek(std::string_view key) {
  impl_->prefix.clear();
  return impl_->Seek(key);
}

Status Cursor::SeekPrefix(std::string_view prefix) {
  impl_->prefix.assign(prefix);
  return impl_->Seek(prefix);
}

Status Cursor::SeekForPrev(std::string_view key) {
  impl_->prefix.clear();
  TESSERA_RETURN_IF_ERROR(impl_->Seek(key));
  if (impl_->valid) {
    if (this->key() == key) return Status::Ok();
    return impl_->Step(false);
  }
  return impl_->Edge(true);
}

Status Cursor::First() {
  impl_->prefix.clear();
  return impl_->Edge(false);
}

Status Cursor::Last() {
  impl_->prefix.clear();
  return impl_->Edge(true);
}

Status Cursor::Next() { return impl_->Step(true); }
Status Cursor::Prev() { return impl_->Step(false); }
bool Cursor::Valid() const { return impl_->valid; }

std::string_view Cursor::key() const {
  const auto& l = impl_->stack.back();
  return LeafCell{PageView{l.page}.cell(l.idx)}.key();
}

std::string_view Cursor::value() const { return impl_->value; }

Result<std::unique_ptr<Cursor>> ReadTxn::NewCursor(std::string_view tree) const {
  if (impl_->finished) return Status::InvalidArgument("transaction already finished");
  TESSERA_RETURN_IF_ERROR(impl_->Tree(tree, false).status());
  auto c = std::make_unique<Cursor::Impl>();
  c->txn = impl_.get();
  c->tree_name.assign(tree);
  c->mod_count = impl_->mod_count;
  return std::make_unique<Cursor>(std::move(c));
}

Result<std::unique_ptr<Cursor>> NewCatalogCursor(const ReadTxn::Impl& txn) {
  auto c = std::make_unique<Cursor::Impl>();
  c->txn = &txn;
  c->catalog = true;
  c->mod_count = txn.mod_count;
  return std::make_unique<Cursor>(std::move(c));
}

}  // namespace tessera::engine
