// On-disk format of a Tessera engine file. Every multi-byte field is little-endian (the engine
// refuses to build on big-endian hosts) and read with memcpy, so no field needs alignment.
//
// File: a sequence of pages of `page_size` bytes. Pages 0 and 1 are meta pages; every other page
// in use is a branch, leaf or freelist page, and starts with a PageHeader, or a page of an
// overflow run (a value too large for a leaf). Before version 3 a run starts with a PageHeader of
// type kOverflow (its `upper` holds the run's length in pages); from version 3 on it has no header:
// the value's bytes start at the run's first byte and its zero-padded tail fills the last page,
// so the run is ceil(vlen / page_size) pages (one for an empty value), and only the leaf's
// reference (page, txnid, CRC32C of the vlen value bytes) describes it.
//
// Invariants (checked by Verify and, where cheap, asserted on every access):
//  - PageHeader.crc is CRC32C of bytes [4, page_size) of the page (of all npages pages for an
//    overflow run), computed when the writing transaction commits. In a version 2 file a branch
//    or leaf page's crc covers bytes [4, lower) followed by [upper, page_size) instead: the gap
//    between the slots and the cell heap holds leftovers that nothing reads, so a commit neither
//    copies nor checksums it. A file keeps the version it was created with (Meta.version).
//  - A version 3 run's checksum lives only in the leaf's reference (there is no header).
//  - PageHeader.pgno equals the page's own number; PageHeader.txnid is the transaction that
//    wrote it, never larger than the txnid of any page that points to it (copy-on-write).
//  - A branch cell (child pgno, child txnid, child crc, key) names its child's txnid and checksum
//    (as does an overflow reference, and the meta for each root and the freelist head), so the
//    pages form a Merkle tree: a stale child (an old version the OS never overwrote before a power
//    cut) is detected by walking down from the meta, and only pages newer than the meta's
//    durable_txn need that walk.
//  - Branch keys: cell 0's key is empty and means "minus infinity"; keys of cells 1..n-1 are
//    strictly increasing, and every key under child i is >= key i and < key i+1.
//  - Leaf keys are strictly increasing within a page and across the leaves of a tree.
//  - Slot offsets point into [kHeaderSize + 2*count, page_size); cells do not overlap.
//  - A meta page's crc is CRC32C of the Meta struct with crc zeroed. The meta with the larger
//    txnid whose crc holds and whose pages newer than its `durable_txn` validate is the current
//    one; the other meta is the fallback and its pages are never overwritten while it is.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the engine file format is little-endian");

namespace tessera::engine::format {

inline constexpr uint64_t kMagic = 0x3141524553534554ULL;  // "TESSERA1"
inline constexpr uint32_t kFormatVersion = 3;              // what new files are created with
inline constexpr uint32_t kMinFormatVersion = 1;           // the oldest version this build opens
// From this version on a branch or leaf page's checksum skips the gap (see the invariants above).
inline constexpr uint32_t kGapFreeCrcVersion = 2;
// From this version on an overflow run has no page header (see above).
inline constexpr uint32_t kHeaderlessRunVersion = 3;
inline constexpr uint32_t kHeaderSize = 32;
inline constexpr uint64_t kMetaPages = 2;
inline constexpr uint64_t kInvalidPage = 0;  // page 0 is a meta page, never a tree page

enum PageType : uint8_t {
  kBranch = 1,
  kLeaf = 2,
  kOverflow = 3,
  kFreelist = 4,
};

// Leaf cell flags.
inline constexpr uint8_t kCellOverflow = 1;  // value lives in an overflow run

template <typename T>
inline T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void Store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// Page header layout (32 bytes):
//   0 crc u32 | 4 type u8 | 5 flags u8 | 6 count u16 | 8 pgno u64 | 16 txnid u64 |
//   24 upper u32 (start of cell heap; for overflow: number of pages) | 28 aux u32 (unused: 0)
struct PageView {
  uint8_t* p;
  uint32_t crc() const { return Load<uint32_t>(p); }
  void set_crc(uint32_t v) { Store(p, v); }
  uint8_t type() const { return p[4]; }
  void set_type(uint8_t t) { p[4] = t; }
  uint8_t flags() const { return p[5]; }
  void set_flags(uint8_t f) { p[5] = f; }
  uint16_t count() const { return Load<uint16_t>(p + 6); }
  void set_count(uint16_t c) { Store(p + 6, c); }
  uint64_t pgno() const { return Load<uint64_t>(p + 8); }
  void set_pgno(uint64_t v) { Store(p + 8, v); }
  uint64_t txnid() const { return Load<uint64_t>(p + 16); }
  void set_txnid(uint64_t v) { Store(p + 16, v); }
  uint32_t upper() const { return Load<uint32_t>(p + 24); }
  void set_upper(uint32_t v) { Store(p + 24, v); }
  uint32_t overflow_pages() const { return upper(); }
  uint16_t slot(unsigned i) const { return Load<uint16_t>(p + kHeaderSize + 2 * i); }
  void set_slot(unsigned i, uint16_t off) { Store(p + kHeaderSize + 2 * i, off); }
  uint32_t lower() const { return kHeaderSize + 2u * count(); }
  uint32_t free_space() const { return upper() - lower(); }
  uint8_t* cell(unsigned i) const { return p + slot(i); }
};

// Leaf cell: klen u16 | flags u8 | vlen u32 | key | value (inline) or an overflow reference
// (pgno u64 | txnid u64 | crc u32).
inline constexpr uint32_t kLeafCellHeader = 7;
inline constexpr uint32_t kOverflowRefSize = 20;
// Branch cell: child pgno u64 | child txnid u64 | child crc u32 | klen u16 | key.
inline constexpr uint32_t kBranchCellHeader = 22;

struct LeafCell {
  const uint8_t* c;
  uint16_t klen() const { return Load<uint16_t>(c); }
  uint8_t flags() const { return c[2]; }
  uint32_t vlen() const { return Load<uint32_t>(c + 3); }
  std::string_view key() const {
    return {reinterpret_cast<const char*>(c + kLeafCellHeader), klen()};
  }
  const uint8_t* val() const { return c + kLeafCellHeader + klen(); }
  bool overflow() const { return (flags() & kCellOverflow) != 0; }
  uint64_t ovf_pgno() const { return Load<uint64_t>(val()); }
  uint64_t ovf_txnid() const { return Load<uint64_t>(val() + 8); }
  uint32_t ovf_crc() const { return Load<uint32_t>(val() + 16); }
  uint32_t size() const {
    return kLeafCellHeader + klen() + (overflow() ? kOverflowRefSize : vlen());
  }
};

// Pages of a headerless (version 3) overflow run holding `vlen` bytes.
inline uint64_t HeaderlessRunPages(uint64_t vlen, uint32_t page_size) {
  return vlen == 0 ? 1 : (vlen + page_size - 1) / page_size;
}

struct BranchCell {
  const uint8_t* c;
  uint64_t child() const { return Load<uint64_t>(c); }
  uint64_t child_txnid() const { return Load<uint64_t>(c + 8); }
  uint32_t child_crc() const { return Load<uint32_t>(c + 16); }
  uint16_t klen() const { return Load<uint16_t>(c + 20); }
  std::string_view key() const {
    return {reinterpret_cast<const char*>(c + kBranchCellHeader), klen()};
  }
  uint32_t size() const { return kBranchCellHeader + klen(); }
};

// Where a tree lives and what it holds; stored in the meta (main tree, catalog) and as the value
// of each named tree's catalog entry. root == kInvalidPage means the tree is empty.
struct TreeInfo {
  uint64_t root = kInvalidPage;
  uint64_t root_txnid = 0;
  uint64_t entries = 0;
  uint64_t branch_pages = 0;
  uint64_t leaf_pages = 0;
  uint64_t overflow_pages = 0;
  uint32_t depth = 0;
  uint32_t root_crc = 0;
  bool operator==(const TreeInfo&) const = default;
};
static_assert(sizeof(TreeInfo) == 56);

// Meta page content (at offset 0 of pages 0 and 1).
struct Meta {
  uint64_t magic = kMagic;
  uint32_t version = kFormatVersion;
  uint32_t page_size = 0;
  uint64_t txnid = 0;
  uint64_t commit_seq = 0;
  // The txnid of the meta in the other slot, which was flushed to disk before this meta was
  // written; pages with txnid <= durable_txn reachable from this meta are known durable.
  uint64_t durable_txn = 0;
  uint64_t last_page = kMetaPages;  // pages [0, last_page) are in use or free; beyond is unused
  TreeInfo main;
  TreeInfo catalog;
  uint64_t freelist_head = kInvalidPage;  // first freelist page, kInvalidPage when none
  uint64_t freelist_txnid = 0;
  uint64_t free_pages = 0;  // pages listed in the freelist
  uint32_t freelist_crc = 0;
  uint32_t pad0 = 0;
  // Random, chosen when the file is created (0 in files made before it existed): ties the commit
  // log beside the file to it.
  uint64_t db_id = 0;
  uint64_t reserved[2] = {};
  uint32_t crc = 0;
  uint32_t pad = 0;
};
static_assert(sizeof(Meta) == 224);

// The freelist is a log: each commit that changes the free set prepends a record (one or more
// freelist pages) listing the pages it took out of the free set and the pages it freed; every so
// often a commit writes a full dump instead and frees the old log. Replaying the log from the
// oldest record gives the free set.
// Freelist page body: next pgno u64 | next txnid u64 | next crc u32 | run count u32 | runs, each
// (freeing txnid u64, first pgno u64, page count u64). Freeing txnid 0: freed long ago;
// kRunRemoved: the pages left the free set (a record's removals apply before its additions; a
// record is the run of consecutive chain pages with one txnid).
inline constexpr uint32_t kFreelistBodyHeader = 24;
inline constexpr uint32_t kFreeRunSize = 24;
inline constexpr uint64_t kRunRemoved = ~uint64_t{0};
// A page whose header flags carry kFreelistDump starts a full dump: older pages are not read.
inline constexpr uint8_t kFreelistDump = 1;

}  // namespace tessera::engine::format
