#include "tessera/erasure/codec.h"

#include <isa-l/erasure_code.h>
#include <isa-l/raid.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <string>

#include "gf256.h"
#include "tessera/common/errors.h"

namespace tessera::erasure {
namespace {

// ISA-L takes lengths as int; longer shards are processed in pieces of this size. It is a multiple
// of 64 so every piece keeps the buffers' alignment (and with it xor_gen's fast path).
constexpr size_t kKernelChunk = size_t{1} << 30;
// Verify compares recomputed parity against the stored parity this many bytes at a time, which
// bounds its scratch memory to m · kVerifyChunk.
constexpr size_t kVerifyChunk = size_t{64} << 10;
// xor_gen stores with aligned 32-byte instructions and xor_check loads 16-byte aligned; both
// crash on other pointers (measured on ISA-L 2.30), so they are only given aligned ones.
constexpr uintptr_t kXorGenAlign = 32;
constexpr uintptr_t kXorCheckAlign = 16;
// Every ISA-L table entry is 32 bytes per (source, output) coefficient.
constexpr size_t kTableBytesPerCoeff = 32;

using PtrArray = std::array<uint8_t*, kMaxShards + 1>;

uint8_t* Mut(const uint8_t* p) { return const_cast<uint8_t*>(p); }

Status BadLength() {
  return Status::InvalidArgument("shard length must be at least 1 byte")
      .WithCCode(TESSERA_BAD_LENGTH);
}

Status NullArg(const std::string& what) {
  return Status::InvalidArgument(what).WithCCode(TESSERA_NULL_HANDLE);
}

template <typename P>
Status CheckCount(std::span<P* const> ptrs, size_t want, const char* what) {
  if (ptrs.data() == nullptr || ptrs.size() != want) {
    return NullArg(std::string(what) + ": expected " + std::to_string(want) +
                   " shard pointers, got " +
                   (ptrs.data() == nullptr ? std::string("none") : std::to_string(ptrs.size())));
  }
  return Status::Ok();
}

template <typename P>
Status CheckPointers(std::span<P* const> ptrs, size_t want, const char* what) {
  TESSERA_RETURN_IF_ERROR(CheckCount(ptrs, want, what));
  for (size_t i = 0; i < ptrs.size(); ++i) {
    if (ptrs[i] == nullptr)
      return NullArg(std::string(what) + ": shard pointer " + std::to_string(i) + " is NULL");
  }
  return Status::Ok();
}

uintptr_t Misalignment(const void* p, uintptr_t align) {
  return reinterpret_cast<uintptr_t>(p) & (align - 1);
}

// ec_encode_data over any length: ISA-L's int length is split into kKernelChunk pieces.
void EncodeKernel(size_t len, int k, int rows, const uint8_t* tables, uint8_t* const* src,
                  uint8_t* const* dst) {
  if (len <= kKernelChunk) {
    ec_encode_data(static_cast<int>(len), k, rows, Mut(tables), const_cast<uint8_t**>(src),
                   const_cast<uint8_t**>(dst));
    return;
  }
  PtrArray s{}, d{};
  for (size_t off = 0; off < len; off += kKernelChunk) {
    const size_t piece = std::min(kKernelChunk, len - off);
    for (int i = 0; i < k; ++i) s[i] = src[i] + off;
    for (int i = 0; i < rows; ++i) d[i] = dst[i] + off;
    ec_encode_data(static_cast<int>(piece), k, rows, Mut(tables), s.data(), d.data());
  }
}

void UpdateKernel(size_t len, int k, int rows, int vec_i, const uint8_t* tables, const uint8_t* src,
                  uint8_t* const* dst) {
  PtrArray d{};
  for (size_t off = 0; off < len; off += kKernelChunk) {
    const size_t piece = std::min(kKernelChunk, len - off);
    for (int i = 0; i < rows; ++i) d[i] = dst[i] + off;
    ec_encode_data_update(static_cast<int>(piece), k, rows, vec_i, Mut(tables), Mut(src + off),
                          d.data());
  }
}

}  // namespace

// The tables that rebuild one erasure pattern: the erased shards (ascending) are computed as
// coefficient rows over `survivors`, the first k shards not erased.
struct Codec::DecodePlan {
  std::vector<int> survivors;
  std::vector<int> erased;
  std::vector<uint8_t> tables;  // ec_init_tables(k, erased.size(), ...)
  size_t bytes() const { return tables.size() + (survivors.size() + erased.size()) * sizeof(int); }
};

std::string_view SchemeName(Scheme scheme) {
  switch (scheme) {
    case Scheme::kXor:
      return "xor";
    case Scheme::kRs:
      return "rs";
    case Scheme::kRsCauchy:
      return "rs-cauchy";
  }
  return "unknown";
}

Result<Scheme> ParseScheme(std::string_view name) {
  for (Scheme s : {Scheme::kXor, Scheme::kRs, Scheme::kRsCauchy}) {
    if (name == SchemeName(s)) return s;
  }
  return Status::InvalidArgument("unknown erasure-code scheme '" + std::string(name) +
                                 "' (expected xor, rs or rs-cauchy)")
      .WithCCode(TESSERA_BAD_SCHEME);
}

size_t Codec::PatternHash::operator()(const PatternKey& key) const {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (uint64_t w : key) h = (h ^ w) * 0xBF58476D1CE4E5B9ull + (h >> 29);
  return static_cast<size_t>(h);
}

Codec::Codec(Scheme scheme, int k, int m) : scheme_(scheme), k_(k), m_(m) {}
Codec::~Codec() = default;

Result<std::unique_ptr<Codec>> Codec::Create(std::string_view scheme, int k, int m) {
  TESSERA_ASSIGN_OR_RETURN(Scheme s, ParseScheme(scheme));
  return Create(s, k, m);
}

Result<std::unique_ptr<Codec>> Codec::Create(Scheme scheme, int k, int m) {
  if (scheme != Scheme::kXor && scheme != Scheme::kRs && scheme != Scheme::kRsCauchy) {
    return Status::InvalidArgument("unknown erasure-code scheme " +
                                   std::to_string(static_cast<int>(scheme)))
        .WithCCode(TESSERA_BAD_SCHEME);
  }
  if (k < kMinDataShards || m < kMinParityShards || k > kMaxShards - m) {
    return Status::InvalidArgument(
               "k=" + std::to_string(k) + ", m=" + std::to_string(m) +
               " out of range: need k >= 1, m >= 1 and k + m <= " + std::to_string(kMaxShards))
        .WithCCode(TESSERA_BAD_SHARD_COUNT);
  }
  if (scheme == Scheme::kXor && m != 1) {
    return Status::InvalidArgument("xor has exactly one parity shard; got m=" + std::to_string(m))
        .WithCCode(TESSERA_BAD_SHARD_COUNT);
  }
  std::unique_ptr<Codec> c(new Codec(scheme, k, m));
  const int n = k + m;
  c->matrix_.assign(static_cast<size_t>(n) * k, 0);
  auto& mat = c->matrix_;
  switch (scheme) {
    case Scheme::kXor:
      for (int i = 0; i < k; ++i) mat[i * k + i] = 1;
      for (int i = 0; i < k; ++i) mat[k * k + i] = 1;
      break;
    case Scheme::kRs: {
      // Backblaze's construction: V[r][c] = r^c, then V · inverse(top k×k of V).
      std::vector<uint8_t> v(static_cast<size_t>(n) * k), top_inv(static_cast<size_t>(k) * k);
      for (int r = 0; r < n; ++r) {
        for (int col = 0; col < k; ++col) v[r * k + col] = gf::Pow(static_cast<uint8_t>(r), col);
      }
      // The top block is a Vandermonde matrix on distinct points 0..k-1: always invertible.
      TESSERA_ASSERT(gf::Invert(std::span(v).first(static_cast<size_t>(k) * k), top_inv, k),
                     "Vandermonde top block singular for k=", k);
      gf::MatMul(v, top_inv, mat, n, k, k);
      break;
    }
    case Scheme::kRsCauchy:
      gf_gen_cauchy1_matrix(mat.data(), n, k);
      break;
  }
  for (int r = 0; r < k; ++r) {
    for (int col = 0; col < k; ++col) {
      TESSERA_ASSERT(mat[r * k + col] == (r == col ? 1 : 0), "encode matrix is not systematic");
    }
  }
  c->encode_tables_.resize(kTableBytesPerCoeff * k * m);
  ec_init_tables(k, m, mat.data() + static_cast<size_t>(k) * k, c->encode_tables_.data());
  if (scheme == Scheme::kXor) {
    std::vector<uint8_t> ones(n, 1);
    c->ones_tables_.resize(kTableBytesPerCoeff * n);
    ec_init_tables(n, 1, ones.data(), c->ones_tables_.data());
  }
  return c;
}

void Codec::XorInto(std::span<uint8_t* const> srcs, uint8_t* dest, size_t len) const {
  const int nsrc = static_cast<int>(srcs.size());
  if (nsrc == 1) {
    // xor_gen rejects fewer than two sources (returns 1); XOR of one source is a copy.
    std::memcpy(dest, srcs[0], len);
    return;
  }
  const uintptr_t mis = Misalignment(dest, kXorGenAlign);
  bool same = true;
  for (uint8_t* s : srcs) same = same && Misalignment(s, kXorGenAlign) == mis;
  if (!same) {
    // Mutually misaligned buffers cannot all be aligned by skipping a head; ISA-L's GF kernel with
    // all-one coefficients is the vectorised XOR that takes any alignment.
    EncodeKernel(len, nsrc, 1, ones_tables_.data(), srcs.data(), &dest);
    return;
  }
  // All share one misalignment: XOR the few head bytes here, then hand xor_gen aligned pointers.
  const size_t head = std::min<size_t>(len, (kXorGenAlign - mis) & (kXorGenAlign - 1));
  for (size_t i = 0; i < head; ++i) {
    uint8_t x = 0;
    for (uint8_t* s : srcs) x ^= s[i];
    dest[i] = x;
  }
  std::array<void*, kMaxShards + 1>
      arr;  // left uninitialised: only the first nsrc + 1 entries are read
  for (size_t off = head; off < len; off += kKernelChunk) {
    const size_t piece = std::min(kKernelChunk, len - off);
    for (int i = 0; i < nsrc; ++i) arr[i] = srcs[i] + off;
    arr[nsrc] = dest + off;
    const int rc = xor_gen(nsrc + 1, static_cast<int>(piece), arr.data());
    TESSERA_ASSERT(rc == 0, "xor_gen failed on aligned buffers: ", rc);
  }
}

Status Codec::Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                     size_t len) const {
  if (len == 0) return BadLength();
  TESSERA_RETURN_IF_ERROR(CheckPointers(data, k_, "encode data"));
  TESSERA_RETURN_IF_ERROR(CheckPointers(parity, m_, "encode parity"));
  if (scheme_ == Scheme::kXor) {
    XorInto(std::span(const_cast<uint8_t* const*>(data.data()), data.size()), parity[0], len);
    return Status::Ok();
  }
  EncodeKernel(len, k_, m_, encode_tables_.data(), const_cast<uint8_t* const*>(data.data()),
               parity.data());
  return Status::Ok();
}

Status Codec::Decode(std::span<uint8_t* const> shards, std::span<const int> erased,
                     size_t len) const {
  if (len == 0) return BadLength();
  TESSERA_RETURN_IF_ERROR(CheckCount(shards, n(), "decode shards"));
  if (erased.data() == nullptr && !erased.empty()) return NullArg("decode: erased list is NULL");
  PatternKey key{};
  for (int e : erased) {
    if (e < 0 || e >= n()) {
      return Status::InvalidArgument("erased shard index " + std::to_string(e) + " outside [0, " +
                                     std::to_string(n()) + ")")
          .WithCCode(TESSERA_BAD_SHARD_INDEX);
    }
    uint64_t& word = key[e / 64];
    const uint64_t bit = uint64_t{1} << (e % 64);
    if (word & bit) {
      return Status::InvalidArgument("shard " + std::to_string(e) + " listed twice as erased")
          .WithCCode(TESSERA_DUPLICATE_ERASURE);
    }
    word |= bit;
  }
  if (erased.size() > static_cast<size_t>(m_)) {
    return Status::InvalidArgument(std::to_string(erased.size()) + " shards erased but the " +
                                   std::string(SchemeName(scheme_)) + " " + std::to_string(k_) +
                                   "+" + std::to_string(m_) + " code rebuilds at most " +
                                   std::to_string(m_))
        .WithCCode(TESSERA_TOO_MANY_ERASURES);
  }
  // Survivors must be there; an erased shard may be NULL: it is then not rebuilt (a caller that
  // needs one lost shard of two skips half the arithmetic).
  for (int i = 0; i < n(); ++i) {
    if (shards[i] == nullptr && ((key[i / 64] >> (i % 64)) & 1) == 0) {
      return NullArg("decode shards: shard pointer " + std::to_string(i) +
                     " is NULL and not erased");
    }
  }
  if (erased.empty()) return Status::Ok();

  if (scheme_ == Scheme::kXor) {
    // One lost shard is the XOR of the other k; no tables to look up.
    if (shards[erased[0]] == nullptr) return Status::Ok();
    PtrArray src;
    int ns = 0;
    for (int i = 0; i < n(); ++i) {
      if (i != erased[0]) src[ns++] = shards[i];
    }
    XorInto(std::span(src.data(), ns), shards[erased[0]], len);
    return Status::Ok();
  }

  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<const DecodePlan> plan, PlanFor(key));
  PtrArray src, dst;  // hot path: no 4 KiB zero-fill; only k and ne entries are read
  for (int i = 0; i < k_; ++i) src[i] = shards[plan->survivors[i]];
  const int ne = static_cast<int>(plan->erased.size());
  for (int i = 0; i < ne; ++i) dst[i] = shards[plan->erased[i]];
  // The plan's tables hold one row per erased shard: each run of wanted rows is one kernel call.
  const size_t row_bytes = kTableBytesPerCoeff * static_cast<size_t>(k_);
  for (int i = 0; i < ne;) {
    if (dst[i] == nullptr) {
      ++i;
      continue;
    }
    int j = i + 1;
    while (j < ne && dst[j] != nullptr) ++j;
    EncodeKernel(len, k_, j - i, plan->tables.data() + row_bytes * i, src.data(), dst.data() + i);
    i = j;
  }
  return Status::Ok();
}

Result<std::shared_ptr<const Codec::DecodePlan>> Codec::PlanFor(const PatternKey& key) const {
  {
    std::shared_lock lock(cache_mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  // Built outside the lock: inverting a k×k matrix must not stall decodes of cached patterns.
  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<const DecodePlan> plan, BuildPlan(key));
  std::unique_lock lock(cache_mu_);
  auto [it, inserted] = cache_.try_emplace(key, plan);
  if (!inserted) return it->second;  // another thread built it first; keep one copy
  cache_bytes_ += plan->bytes();
  // Evict other patterns until under the bound; a plan in use elsewhere lives on through its
  // shared_ptr, so eviction never pulls tables from under a running decode.
  for (auto e = cache_.begin(); cache_bytes_ > kDecodeCacheBytesMax && e != cache_.end();) {
    if (e->first == key) {
      ++e;
      continue;
    }
    cache_bytes_ -= e->second->bytes();
    e = cache_.erase(e);
  }
  return plan;
}

Result<std::shared_ptr<const Codec::DecodePlan>> Codec::BuildPlan(const PatternKey& key) const {
  auto plan = std::make_shared<DecodePlan>();
  for (int i = 0; i < n(); ++i) {
    const bool is_erased = (key[i / 64] >> (i % 64)) & 1;
    if (is_erased) {
      plan->erased.push_back(i);
    } else if (static_cast<int>(plan->survivors.size()) < k_) {
      plan->survivors.push_back(i);
    }
  }
  TESSERA_ASSERT(static_cast<int>(plan->survivors.size()) == k_, "too few survivors for pattern");
  const size_t kk = static_cast<size_t>(k_) * k_;
  std::vector<uint8_t> sub(kk), inv(kk);
  for (int r = 0; r < k_; ++r) {
    std::memcpy(&sub[r * k_], &matrix_[static_cast<size_t>(plan->survivors[r]) * k_], k_);
  }
  if (!gf::Invert(sub, inv, k_)) {
    // Cannot happen for an MDS matrix; reported rather than asserted because the Cauchy matrix
    // comes from ISA-L, whose guarantees we do not control.
    return Status::Internal("decode matrix for this erasure pattern is singular");
  }
  // survivors = S · data, so data = inv · survivors, and any shard row e of the encode matrix
  // gives shard e = matrix[e] · inv · survivors. For a data shard matrix[e] is a unit row.
  const int ne = static_cast<int>(plan->erased.size());
  std::vector<uint8_t> coeffs(static_cast<size_t>(ne) * k_);
  for (int j = 0; j < ne; ++j) {
    gf::MatMul(std::span(matrix_).subspan(static_cast<size_t>(plan->erased[j]) * k_, k_), inv,
               std::span(coeffs).subspan(static_cast<size_t>(j) * k_, k_), 1, k_, k_);
  }
  plan->tables.resize(kTableBytesPerCoeff * k_ * ne);
  ec_init_tables(k_, ne, coeffs.data(), plan->tables.data());
  return std::shared_ptr<const DecodePlan>(std::move(plan));
}

Result<bool> Codec::Verify(std::span<const uint8_t* const> shards, size_t len) const {
  if (len == 0) return BadLength();
  TESSERA_RETURN_IF_ERROR(CheckPointers(shards, n(), "verify shards"));
  uint8_t* const* all = const_cast<uint8_t* const*>(shards.data());
  if (scheme_ == Scheme::kXor) {
    bool aligned = true;
    for (const uint8_t* s : shards) aligned = aligned && Misalignment(s, kXorCheckAlign) == 0;
    if (aligned && n() > 2) {  // xor_check, like xor_gen, wants at least three vectors
      std::array<void*, kMaxShards + 1> arr{};
      for (size_t off = 0; off < len; off += kKernelChunk) {
        const size_t piece = std::min(kKernelChunk, len - off);
        for (int i = 0; i < n(); ++i) arr[i] = all[i] + off;
        if (xor_check(n(), static_cast<int>(piece), arr.data()) != 0) return false;
      }
      return true;
    }
  }
  // Recompute parity a chunk at a time and compare (for xor: XOR of all n shards must be zero,
  // computed here as data XOR into scratch, then compared with the stored parity).
  const size_t chunk = std::min(len, kVerifyChunk);
  std::vector<uint8_t> scratch(chunk * m_);
  PtrArray src{}, dst{};
  for (int j = 0; j < m_; ++j) dst[j] = scratch.data() + j * chunk;
  const uint8_t* tables = scheme_ == Scheme::kXor ? ones_tables_.data() : encode_tables_.data();
  for (size_t off = 0; off < len; off += chunk) {
    const size_t piece = std::min(chunk, len - off);
    for (int i = 0; i < k_; ++i) src[i] = all[i] + off;
    EncodeKernel(piece, k_, m_, tables, src.data(), dst.data());
    for (int j = 0; j < m_; ++j) {
      if (std::memcmp(dst[j], all[k_ + j] + off, piece) != 0) return false;
    }
  }
  return true;
}

Status Codec::Update(std::span<uint8_t* const> parity, int data_index, const uint8_t* old_data,
                     const uint8_t* new_data, size_t len) const {
  if (len == 0) return BadLength();
  TESSERA_RETURN_IF_ERROR(CheckPointers(parity, m_, "update parity"));
  if (old_data == nullptr || new_data == nullptr) return NullArg("update: old or new data is NULL");
  if (data_index < 0 || data_index >= k_) {
    return Status::InvalidArgument("update: data shard index " + std::to_string(data_index) +
                                   " outside [0, " + std::to_string(k_) + ")")
        .WithCCode(TESSERA_BAD_SHARD_INDEX);
  }
  // In GF(2^8) subtraction is XOR, so c·(new − old) = c·old ⊕ c·new: two accumulating passes of
  // ISA-L's update kernel, with no scratch buffer for the difference.
  const uint8_t* tables = scheme_ == Scheme::kXor ? ones_tables_.data() : encode_tables_.data();
  UpdateKernel(len, k_, m_, data_index, tables, old_data, parity.data());
  UpdateKernel(len, k_, m_, data_index, tables, new_data, parity.data());
  return Status::Ok();
}

CodecStats Codec::stats() const {
  CodecStats s;
  s.decode_cache_hits = hits_.load(std::memory_order_relaxed);
  s.decode_cache_misses = misses_.load(std::memory_order_relaxed);
  std::shared_lock lock(cache_mu_);
  s.cached_patterns = cache_.size();
  return s;
}

}  // namespace tessera::erasure
