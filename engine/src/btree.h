// B+tree operations on pages of one transaction. Internal to the engine.
//
// Reads work on any transaction; the mutating functions require a write transaction and make
// every page they change writable first (copy-on-write: a page written by an earlier transaction
// is copied to a newly allocated page, and the old one is freed by this transaction).
#pragma once

#include <string_view>

#include "db_impl.h"

namespace tessera::engine::btree {

using Txn = ReadTxn::Impl;

// Key comparisons are plain lexicographic byte order.
// With `db`, starts fetching the candidate children's first lines near the end of the search.
unsigned BranchSearch(PageView v, std::string_view key, const Db::Impl* db = nullptr);
// `cold`: the leaf is likely out of cache (a point lookup); fetch the last probes' cells at once.
unsigned LeafLowerBound(PageView v, std::string_view key, bool* found, bool cold = false);

// Reads page `pgno` of the transaction's snapshot, checking it (see Db::Impl::CheckPage).
Result<uint8_t*> ReadPage(const Txn& txn, uint64_t pgno, int type, uint64_t expect_txnid);

// The value bytes of a leaf cell, following an overflow reference when there is one.
Result<std::string_view> CellValue(const Txn& txn, format::LeafCell cell);

// NotFound, or Ok with *value set; a null `value` asks only whether the key is there (a large
// value is then neither followed nor checked).
Status Get(const Txn& txn, const TreeInfo& tree, std::string_view key, std::string_view* value);
// Get in the snapshot whose high-water mark is last_page, which the caller keeps pinned.
Status Get(const Db::Impl& db, uint64_t last_page, const TreeInfo& tree, std::string_view key,
           std::string_view* value);
Status Put(Txn& txn, TreeInfo* tree, std::string_view key, std::string_view value);
// NotFound when absent.
Status Delete(Txn& txn, TreeInfo* tree, std::string_view key);
// Frees every page of the tree.
Status Drop(Txn& txn, TreeInfo* tree);

// Moves every page of the tree at or above page `limit` (and every overflow run starting there)
// to the lowest free pages, with the pages on the way to them (Db::Shrink).
Status Relocate(Txn& txn, TreeInfo* tree, uint64_t limit);

// Commit helpers: post-order checksums of this transaction's pages reachable from the tree;
// fills tree->root_crc.
void Finalize(Txn& txn, TreeInfo* tree);

// Page allocation in a write transaction.
Result<uint64_t> AllocPages(Txn& txn, uint64_t n);
void FreePages(Txn& txn, uint64_t pgno, uint64_t n, uint64_t page_txnid);

// Largest cell stored inline in a leaf; larger values go to overflow pages.
uint32_t MaxInlineCell(uint32_t page_size);

}  // namespace tessera::engine::btree
