// Erasure-coding whole files into shard files and rebuilding them: what `tessera ec` runs.
//
// Format. EncodeFile(FILE) writes FILE.0 … FILE.<k+m-1>. Each is a kShardHeaderSize-byte header
// followed by the payload. The file is cut into stripes of k · chunk_size bytes (the last one
// padded with zeros); data shard i holds bytes [i · chunk, (i+1) · chunk) of every stripe and
// parity shard j the j-th parity chunk of every stripe, so both directions stream one stripe at a
// time and a file larger than memory needs only (k + m) · chunk_size bytes of buffer.
//
// Header, little-endian:
//   0  8  magic "TSRAEC1\n"
//   8  1  format version (1)      9 1 scheme (0 xor, 1 rs, 2 rs-cauchy)
//  10  1  k                      11 1 m              12 1 shard index        13 3 zero
//  16  4  chunk_size             20 4 zero
//  24  8  original file length   32 8 payload length (= stripes · chunk_size)
//  40  8  file id: random per encode, so shards of different encodings never mix
//  48  4  CRC32C of the payload  52 4 CRC32C of header bytes 0..51
//
// Invariants a parsed header satisfies: valid magic, version and header CRC; a scheme/k/m that
// Codec::Create accepts; index < k + m; 1 <= chunk_size <= kMaxChunkSize; payload length equals
// max(1, ceil(length / (k · chunk_size))) · chunk_size.
//
// Decoding treats a shard as erased when it is missing, unreadable, has a bad header or is too
// short, or its payload CRC fails; it refuses shards whose headers disagree (different encodings,
// or two files claiming one index) and needs k intact shards. Output goes to a temporary file that
// is renamed over `out` only when complete, so a failed decode never leaves a partial file there.
//
// Thread safety: the functions share no state; concurrent calls on different files are safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/erasure/codec.h"

namespace tessera::erasure {

inline constexpr size_t kShardHeaderSize = 56;
inline constexpr uint32_t kDefaultChunkSize = uint32_t{1} << 20;
inline constexpr uint32_t kMaxChunkSize = uint32_t{64} << 20;

struct ShardHeader {
  Scheme scheme = Scheme::kRs;
  int k = 0;
  int m = 0;
  int index = 0;
  uint32_t chunk_size = 0;
  uint64_t length = 0;          // of the original file
  uint64_t payload_length = 0;  // of this shard, header excluded
  uint64_t file_id = 0;
  uint32_t payload_crc = 0;  // CRC32C (Castagnoli) of the payload
};

// Standard CRC32C of `data`, continuing from `crc` (0 for a fresh start), via ISA-L.
uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

void SerializeShardHeader(const ShardHeader& h, std::span<uint8_t, kShardHeaderSize> out);
// Corruption when the magic, version, header CRC or any invariant above fails.
Result<ShardHeader> ParseShardHeader(std::span<const uint8_t> bytes);

// Called with (bytes done, bytes total) after each stripe; total is 0 when the input's size was not
// known in advance (a pipe).
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct EncodeFileOptions {
  Scheme scheme = Scheme::kRs;
  int k = 4;
  int m = 2;
  uint32_t chunk_size = 0;  // 0: min(kDefaultChunkSize, ceil(length / k))
  ProgressFn progress;
};

// Writes path.0 … path.<k+m-1> next to `path`, replacing any that exist. Returns their paths.
Result<std::vector<std::string>> EncodeFile(const std::string& path,
                                            const EncodeFileOptions& options);

struct DecodeFileReport {
  struct Skipped {
    std::string path;
    std::string reason;
  };
  ShardHeader header;            // of the shards used (index is that of the first)
  std::vector<int> erased;       // shard indices rebuilt or missing
  std::vector<Skipped> skipped;  // files not used, with why
  uint64_t length = 0;           // bytes written to `out`
};

// Rebuilds the original file from `shard_paths` (any subset, any order) into `out`.
Result<DecodeFileReport> DecodeFile(const std::vector<std::string>& shard_paths,
                                    const std::string& out, const ProgressFn& progress = {});

}  // namespace tessera::erasure
