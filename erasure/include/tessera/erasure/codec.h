// Codec: XOR and Reed-Solomon erasure codes over ISA-L's vectorised kernels.
//
// A codec of shape (k, m) turns k data shards into m parity shards of the same length, such that
// any k of the k + m shards rebuild the others. Shard i < k is data shard i; shard k + j is parity
// j.
//
// Schemes:
//   kXor       m = 1, parity = XOR of the data (ISA-L xor_gen / xor_check).
//   kRs        GF(2^8), polynomial 0x11D. The encode matrix is Backblaze's: the (k+m)×k Vandermonde
//              matrix V[r][c] = r^c (r as a field element, 0^0 = 1) times the inverse of its top
//              k×k block, so parity is byte-compatible with JavaReedSolomon and
//              klauspost/reedsolomon.
//   kRsCauchy  GF(2^8) with ISA-L's Cauchy matrix (gf_gen_cauchy1_matrix).
//
// Invariants of a Codec: 1 <= k, 1 <= m, k + m <= kMaxShards, m == 1 for kXor; the encode matrix
// has the identity as its top k rows and every k×k submatrix of it is invertible (MDS), so every
// pattern of up to m erasures is decodable. The matrix and encode tables never change after Create.
//
// Buffers: callers own every shard buffer; each holds at least `len` bytes, any len >= 1, any
// alignment (32-byte aligned buffers take ISA-L's fastest XOR path). Encode and Update never
// allocate; Decode allocates only the first time it meets an erasure pattern, to build and cache
// that pattern's tables; Verify allocates a bounded scratch buffer.
//
// Thread safety: a Codec is immutable apart from its decode-table cache, which is guarded by a
// shared mutex, so one Codec may be used by any number of threads at once (as long as they do not
// write the same shard buffers).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tessera/common/status.h"

namespace tessera::erasure {

// Limits, as the issue names them: k >= 1, m >= 1, k + m <= 255 (GF(2^8) has 255 non-zero
// evaluation points beyond 0, and ISA-L's tables are indexed by a byte).
inline constexpr int kMinDataShards = 1;
inline constexpr int kMinParityShards = 1;
inline constexpr int kMaxShards = 255;
// Patterns whose decode tables stay cached, bounded by bytes so a wide code cannot grow the cache
// without limit. Past the bound an arbitrary pattern is evicted (rebuilt if it comes back).
inline constexpr size_t kDecodeCacheBytesMax = size_t{64} << 20;

enum class Scheme : uint8_t { kXor = 0, kRs = 1, kRsCauchy = 2 };

// "xor", "rs", "rs-cauchy".
std::string_view SchemeName(Scheme scheme);
// Inverse of SchemeName; InvalidArgument refined with TESSERA_BAD_SCHEME otherwise.
Result<Scheme> ParseScheme(std::string_view name);

struct CodecStats {
  uint64_t decode_cache_hits = 0;
  uint64_t decode_cache_misses = 0;
  size_t cached_patterns = 0;
};

class Codec {
 public:
  // Errors: InvalidArgument refined with TESSERA_BAD_SHARD_COUNT when k or m is out of range
  // (including m != 1 for kXor), TESSERA_BAD_SCHEME for an unknown scheme name.
  static Result<std::unique_ptr<Codec>> Create(Scheme scheme, int k, int m);
  static Result<std::unique_ptr<Codec>> Create(std::string_view scheme, int k, int m);

  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  Scheme scheme() const { return scheme_; }
  int k() const { return k_; }
  int m() const { return m_; }
  int n() const { return k_ + m_; }

  // The (k+m)×k encode matrix, row-major; rows k.. are the parity coefficients.
  std::span<const uint8_t> matrix() const { return matrix_; }

  // Writes the m parity shards from the k data shards.
  // Errors: TESSERA_NULL_HANDLE for a null pointer or a span of the wrong size, TESSERA_BAD_LENGTH
  // for len 0.
  Status Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                size_t len) const;

  // `shards` holds all k + m shards; the ones listed in `erased` (any order, data or parity) are
  // rebuilt in place from the others, which must be intact. An empty `erased` is a no-op. An
  // erased shard whose pointer is NULL is not rebuilt (only the lost shards wanted cost work).
  // Errors: TESSERA_NULL_HANDLE (a NULL survivor), TESSERA_BAD_LENGTH, TESSERA_BAD_SHARD_INDEX
  // (index outside [0, k+m)), TESSERA_DUPLICATE_ERASURE, TESSERA_TOO_MANY_ERASURES (more than m).
  Status Decode(std::span<uint8_t* const> shards, std::span<const int> erased, size_t len) const;

  // true when the parity shards equal a fresh encode of the data shards.
  // Errors as for Encode.
  Result<bool> Verify(std::span<const uint8_t* const> shards, size_t len) const;

  // Data shard `data_index` changes from `old_data` to `new_data`: parity += c · (new − old), which
  // leaves `parity` equal to a fresh Encode of the new data. For kXor this is a plain XOR.
  // Errors: TESSERA_NULL_HANDLE, TESSERA_BAD_LENGTH, TESSERA_BAD_SHARD_INDEX (not a data shard).
  Status Update(std::span<uint8_t* const> parity, int data_index, const uint8_t* old_data,
                const uint8_t* new_data, size_t len) const;

  CodecStats stats() const;

 private:
  struct DecodePlan;
  // Erased shards as a bitmask over the (at most 255) shard indices: the cache key.
  using PatternKey = std::array<uint64_t, 4>;
  struct PatternHash {
    size_t operator()(const PatternKey& key) const;
  };

  Codec(Scheme scheme, int k, int m);

  Result<std::shared_ptr<const DecodePlan>> PlanFor(const PatternKey& key) const;
  Result<std::shared_ptr<const DecodePlan>> BuildPlan(const PatternKey& key) const;
  void XorInto(std::span<uint8_t* const> srcs, uint8_t* dest, size_t len) const;

  Scheme scheme_;
  int k_;
  int m_;
  std::vector<uint8_t> matrix_;         // (k+m)×k, top k rows the identity
  std::vector<uint8_t> encode_tables_;  // ec_init_tables of the parity rows: 32·k·m bytes
  // For kXor: ec_init_tables of an all-ones row over k + 1 sources, the fallback for buffers that
  // xor_gen cannot take (unequal alignment) and the Update path.
  std::vector<uint8_t> ones_tables_;

  mutable std::shared_mutex cache_mu_;
  mutable std::unordered_map<PatternKey, std::shared_ptr<const DecodePlan>, PatternHash> cache_;
  mutable size_t cache_bytes_ = 0;  // guarded by cache_mu_
  mutable std::atomic<uint64_t> hits_{0};
  mutable std::atomic<uint64_t> misses_{0};
};

}  // namespace tessera::erasure
