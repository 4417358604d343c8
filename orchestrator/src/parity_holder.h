// A parity holder: row j of a stripe group's parity, plus every data slot's tail and generation
// record, kept in LMDB (DIR/parity.mdb). Served by the manager (xor) and by parity workers.
//
// Invariants (asserted where they are established, also in release builds):
//  - parity page p == Σ_i c_ji · image_i(p), image_i being the page image of the generation the
//    holder records for slot i (gen 0: all zeros). A generation changes only in CommitGeneration,
//    which applies the staged deltas, records the new generation and drops the covered tail in
//    ONE LMDB transaction, and only if the record still names the delta's base generation.
//  - a slot's epoch here only increases; a call carrying a lower epoch is refused (STALE_EPOCH)
//    before it changes anything, so a zombie from an old epoch cannot store a write.
//  - tail entries are keyed by (slot, seq) and idempotent: storing the same seq twice keeps one.
//
// Thread safety: every method may be called from any thread; LMDB serialises the writers and
// readers see consistent snapshots.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "convert.h"
#include "tessera/common/status.h"

namespace tessera::orchestrator {

inline constexpr uint32_t kProtectionPageSize = 4096;  // the workers' engine page size

class ParityHolder {
 public:
  // Opens (creating) DIR/parity.mdb for row `row` of a (k, m) code. A holder that recorded
  // another shape refuses to open: its parity would be meaningless.
  static Result<std::unique_ptr<ParityHolder>> Open(const std::string& dir,
                                                    const std::string& scheme, int k, int m,
                                                    int row, const std::string& node);
  ~ParityHolder();

  // ParityService, as the Thrift handlers call it (errors thrown as TesseraError).
  int64_t AppendTail(int slot, int64_t epoch, const std::vector<gen::TailEntry>& entries,
                     bool sync);
  void StageDelta(int slot, int64_t epoch, int64_t from_gen, int64_t to_gen,
                  const std::vector<gen::PageDelta>& pages);
  gen::GenRecord CommitGeneration(int slot, int64_t epoch, int64_t from_gen, int64_t to_gen,
                                  const std::string& descriptor, int64_t covered_seq,
                                  int64_t last_page, bool prepare_only = false);
  gen::GenRecord CommitPrepared(int slot, int64_t to_gen);
  gen::GenRecord GetRecord(int slot, int64_t epoch);
  std::vector<gen::TailEntry> ReadTail(int slot, int64_t epoch, int64_t after_seq, int max_entries);
  gen::ParityPages ReadParity(int64_t first_pgno, int count);
  // The same, with the pages where they lie in the map: valid while the view lives (it holds
  // the read transaction, which must end on the thread that made the view; the caller keeps the
  // holder alive as long, in `holder` when it may otherwise go: ServeReadParity).
  struct ParityView {
    std::vector<gen::GenRecord> records;
    std::string present;                // one byte per page: 1 when in `pages`, 0 none stored
    std::vector<const uint8_t*> pages;  // kProtectionPageSize bytes each, in order
    // Declared before `txn`, so destroyed after it: the read transaction ends before the last
    // reference to the holder (and its environment) can go.
    std::shared_ptr<ParityHolder> holder;
    std::shared_ptr<void> txn;
  };
  ParityView ReadParityView(int64_t first_pgno, int count);

  int row() const { return row_; }

 private:
  ParityHolder() = default;
  void CheckSlot(int slot) const;
  gen::GenRecord Apply(class HolderTxn& t, int slot, gen::GenRecord r, const std::string& stage_id,
                       int64_t from_gen, int64_t to_gen, const std::string& descriptor,
                       int64_t covered_seq, int64_t last_page);
  uint8_t Coefficient(int slot) const;

  std::string node_;
  std::string scheme_;
  int k_ = 0, m_ = 0, row_ = 0;
  std::vector<uint8_t> coeff_;  // c_j,i for each data slot i
  MDB_env* env_ = nullptr;
  MDB_dbi config_ = 0, parity_ = 0, records_ = 0, tail_ = 0, stage_ = 0;
};

}  // namespace tessera::orchestrator
