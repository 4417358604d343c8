// PageSet: an ordered set of page numbers kept as a bitmap; the engine's reusable free pages.
//
// The writer takes the lowest free page for every page it copies and gives pages back in batches
// at commit, a few thousand per commit under bulk writes. A balanced tree paid an allocation,
// a free and a rebalance for each; a bitmap pays a bit flip, and "lowest" is a scan from a hint.
//
// Invariants:
//  - Page p is in the set iff bit p of words_ is set; count_ is the number of set bits.
//  - Every word below low_ is zero (low_ is a lower bound on the lowest member's word).
//  - words_ only grows (up to the highest page ever inserted), so iteration and the search for
//    the lowest member cost at most one pass over the file's pages / 64.
//
// Thread safety: none; the engine guards its PageSet with the write lock.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tessera/common/assert.h"

namespace tessera::engine {

class PageSet {
 public:
  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }

  bool contains(uint64_t p) const {
    const size_t w = p >> 6;
    return w < words_.size() && ((words_[w] >> (p & 63)) & 1) != 0;
  }

  // Adds p, which must not be a member (a page freed twice is a bug in the caller).
  void insert(uint64_t p) {
    const size_t w = p >> 6;
    if (w >= words_.size()) words_.resize(w + 1 + w / 8, 0);
    const uint64_t bit = uint64_t{1} << (p & 63);
    TESSERA_ASSERT((words_[w] & bit) == 0, "page ", p, " is already in the free set");
    words_[w] |= bit;
    ++count_;
    if (w < low_) low_ = w;
  }
  template <typename It>
  void insert(It first, It last) {
    for (; first != last; ++first) insert(*first);
  }

  // Removes p, which must be a member.
  void erase(uint64_t p) {
    TESSERA_ASSERT(contains(p), "page ", p, " is not in the free set");
    words_[p >> 6] &= ~(uint64_t{1} << (p & 63));
    --count_;
  }

  // Removes and returns the lowest member; the set must not be empty.
  uint64_t take_lowest() {
    TESSERA_ASSERT(count_ > 0, "take_lowest on an empty page set");
    while (words_[low_] == 0) ++low_;
    const uint64_t word = words_[low_];
    const uint64_t p = (uint64_t{low_} << 6) | static_cast<uint64_t>(std::countr_zero(word));
    words_[low_] = word & (word - 1);
    --count_;
    return p;
  }

  // Finds n consecutive members among the lowest `max_members` members, all below `below`,
  // removes them and returns the first in *first; false (set unchanged) when there is no such run.
  bool take_run(uint64_t n, uint64_t max_members, uint64_t* first, uint64_t below = UINT64_MAX) {
    uint64_t start = 0, len = 0, seen = 0;
    bool found = false;
    ForEachUntil([&](uint64_t p) {
      if (++seen > max_members || p >= below) return false;
      if (len > 0 && p == start + len) {
        ++len;
      } else {
        start = p;
        len = 1;
      }
      found = len == n;
      return !found;
    });
    if (!found) return false;
    for (uint64_t k = 0; k < n; ++k)
      words_[(start + k) >> 6] &= ~(uint64_t{1} << ((start + k) & 63));
    count_ -= n;
    *first = start;
    return true;
  }

  // Calls f(p) for every member in ascending order.
  template <typename F>
  void for_each(F f) const {
    const_cast<PageSet*>(this)->ForEachUntil([&](uint64_t p) {
      f(p);
      return true;
    });
  }

 private:
  // Calls f(p) in ascending order while it returns true.
  template <typename F>
  void ForEachUntil(F f) {
    if (count_ == 0) return;
    for (size_t w = low_; w < words_.size(); ++w) {
      for (uint64_t word = words_[w]; word != 0; word &= word - 1) {
        if (!f((uint64_t{w} << 6) | static_cast<uint64_t>(std::countr_zero(word)))) return;
      }
    }
  }

  std::vector<uint64_t> words_;
  size_t count_ = 0;
  size_t low_ = 0;
};

}  // namespace tessera::engine
