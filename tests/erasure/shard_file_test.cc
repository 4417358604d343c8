// The shard-file format and the `tessera ec encode|decode` tool, run as the real binary: round
// trips over several stripes, missing / corrupted / truncated / foreign shards, progress, and usage
// errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "subprocess.h"
#include "tessera/common/errors.h"
#include "tessera/erasure/shard_file.h"

namespace tessera::erasure {
namespace {

using testing::CommandResult;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;

const std::string kBin = TESSERA_BIN;

uint64_t Seed() {
  const char* env = std::getenv("TESSERA_SEED");
  static const uint64_t s =
      env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("erasure shard_file_test seed: %llu (replay with TESSERA_SEED=%llu)\n",
              static_cast<unsigned long long>(s), static_cast<unsigned long long>(s));
  return s;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(f.good()) << path;
}

void FlipByte(const std::string& path, size_t offset) {
  std::string d = ReadFile(path);
  ASSERT_LT(offset, d.size());
  d[offset] = static_cast<char>(d[offset] ^ 0x01);
  WriteFile(path, d);
}

std::vector<std::string> Shards(const std::string& base, int n) {
  std::vector<std::string> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(base + "." + std::to_string(i));
  return v;
}

CommandResult Encode(const std::string& file, const std::string& scheme, int k, int m,
                     const std::string& chunk = "") {
  std::vector<std::string> argv = {
      kBin, "ec", "encode", "--scheme", scheme, "--k", std::to_string(k), "--m", std::to_string(m)};
  if (!chunk.empty()) {
    argv.push_back("--chunk-size");
    argv.push_back(chunk);
  }
  argv.push_back(file);
  return RunCommand(argv);
}

CommandResult Decode(const std::string& out, const std::vector<std::string>& shards) {
  std::vector<std::string> argv = {kBin, "ec", "decode", "--out", out};
  argv.insert(argv.end(), shards.begin(), shards.end());
  return RunCommand(argv);
}

TEST(ShardFileTest, Crc32cMatchesTheStandardCheckValue) {
  const std::string s = "123456789";
  auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  EXPECT_EQ(Crc32c(bytes), 0xE3069283u);
  EXPECT_EQ(Crc32c(bytes.subspan(4), Crc32c(bytes.first(4))), 0xE3069283u);
}

TEST(ShardFileTest, HeaderRoundTripsAndRejectsDamage) {
  ShardHeader h;
  h.scheme = Scheme::kRsCauchy;
  h.k = 6;
  h.m = 3;
  h.index = 8;
  h.chunk_size = 1000;
  h.length = 12345;
  h.payload_length = 3000;  // ceil(12345 / 6000) = 3 stripes of 1000
  h.file_id = 0x1122334455667788ull;
  h.payload_crc = 0xCAFEF00D;
  std::array<uint8_t, kShardHeaderSize> buf{};
  SerializeShardHeader(h, buf);
  auto p = ParseShardHeader(buf);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->scheme, h.scheme);
  EXPECT_EQ(p->k, 6);
  EXPECT_EQ(p->m, 3);
  EXPECT_EQ(p->index, 8);
  EXPECT_EQ(p->chunk_size, 1000u);
  EXPECT_EQ(p->length, 12345u);
  EXPECT_EQ(p->payload_length, 3000u);
  EXPECT_EQ(p->file_id, h.file_id);
  EXPECT_EQ(p->payload_crc, 0xCAFEF00Du);

  for (size_t i = 0; i < kShardHeaderSize; ++i) {  // any flipped bit is caught
    auto bad = buf;
    bad[i] ^= 0x10;
    auto r = ParseShardHeader(bad);
    EXPECT_FALSE(r.ok()) << "byte " << i;
    if (!r.ok()) {
      EXPECT_TRUE(r.status().IsCorruption());
    }
  }
  EXPECT_FALSE(ParseShardHeader(std::span(buf).first(20)).ok());
  // Internally inconsistent headers are refused even with a valid checksum.
  for (auto mutate : std::vector<void (*)(ShardHeader&)>{
           [](ShardHeader& x) { x.index = 9; }, [](ShardHeader& x) { x.payload_length = 2000; },
           [](ShardHeader& x) { x.chunk_size = 0; }, [](ShardHeader& x) { x.m = 0; }}) {
    ShardHeader y = h;
    mutate(y);
    SerializeShardHeader(y, buf);
    EXPECT_FALSE(ParseShardHeader(buf).ok());
  }
}

TEST(EcToolTest, RoundTripsEverySchemeAndSize) {
  const uint64_t seed = Seed();
  TempDir dir;
  struct Case {
    std::string scheme;
    int k, m;
    size_t size;
    std::string chunk;
  };
  for (const Case& c :
       {Case{"rs", 4, 2, 0, ""}, Case{"rs", 4, 2, 1, ""}, Case{"rs", 4, 2, 1000, ""},
        Case{"rs", 4, 2, (1u << 20) + 3, "65536"},  // 5 stripes, last one partial
        Case{"rs", 10, 4, 100003, "1000"}, Case{"xor", 3, 1, 70001, "4096"},
        Case{"rs-cauchy", 6, 3, 50000, "777"}, Case{"rs", 1, 1, 999, ""}}) {
    SCOPED_TRACE(c.scheme + " " + std::to_string(c.k) + "+" + std::to_string(c.m) + " size " +
                 std::to_string(c.size));
    const std::string file = dir.File("in-" + c.scheme + std::to_string(c.size));
    const std::string data = RandomBytes(c.size, seed + c.size);
    WriteFile(file, data);
    auto e = Encode(file, c.scheme, c.k, c.m, c.chunk);
    ASSERT_EQ(e.exit_code, 0) << e.err;
    const auto shards = Shards(file, c.k + c.m);
    for (const auto& s : shards) ASSERT_TRUE(std::filesystem::exists(s)) << s;
    EXPECT_FALSE(std::filesystem::exists(file + "." + std::to_string(c.k + c.m)));

    // All shards present.
    auto d = Decode(file + ".out", shards);
    ASSERT_EQ(d.exit_code, 0) << d.err;
    EXPECT_EQ(ReadFile(file + ".out"), data);

    // Lose the first m shards (data), keep the rest.
    std::vector<std::string> rest(shards.begin() + c.m, shards.end());
    auto d2 = Decode(file + ".out2", rest);
    ASSERT_EQ(d2.exit_code, 0) << d2.err;
    EXPECT_EQ(ReadFile(file + ".out2"), data);
  }
}

class EcToolDamageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = RandomBytes(300000, Seed() + 77);
    file_ = dir_.File("data.bin");
    WriteFile(file_, data_);
    auto e = Encode(file_, "rs", 4, 2, "10000");  // 8 stripes
    ASSERT_EQ(e.exit_code, 0) << e.err;
    shards_ = Shards(file_, 6);
    out_ = dir_.File("out.bin");
  }

  TempDir dir_;
  std::string data_, file_, out_;
  std::vector<std::string> shards_;
};

TEST_F(EcToolDamageTest, CorruptedPayloadsAreTreatedAsErased) {
  FlipByte(shards_[1], kShardHeaderSize + 12345);
  FlipByte(shards_[4], kShardHeaderSize + 79999);  // last payload byte
  auto d = Decode(out_, shards_);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(ReadFile(out_), data_);
  EXPECT_NE(d.err.find(shards_[1] + " as erased: payload checksum mismatch"), std::string::npos)
      << d.err;
  EXPECT_NE(d.err.find(shards_[4] + " as erased"), std::string::npos) << d.err;
  EXPECT_NE(d.out.find("missing or damaged shards: 1,4"), std::string::npos) << d.out;
}

TEST_F(EcToolDamageTest, CorruptedHeaderTruncatedAndMissingShards) {
  FlipByte(shards_[0], 10);  // k in the header
  std::filesystem::resize_file(shards_[3], kShardHeaderSize + 5000);
  auto d = Decode(out_, shards_);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(ReadFile(out_), data_);
  EXPECT_NE(d.err.find("header checksum mismatch"), std::string::npos) << d.err;
  EXPECT_NE(d.err.find("expected 80056"), std::string::npos) << d.err;

  // A path that does not exist is just one more erased shard.
  std::vector<std::string> some = {shards_[1], shards_[2], shards_[4], dir_.File("nope.5")};
  auto d2 = Decode(out_ + "2", some);
  EXPECT_EQ(d2.exit_code, 1);
  EXPECT_NE(d2.err.find("only 3 of the 6 shards are intact but 4 are needed"), std::string::npos)
      << d2.err;
  EXPECT_FALSE(std::filesystem::exists(out_ + "2"));
}

TEST_F(EcToolDamageTest, TooManyLossesFailWithoutLeavingOutput) {
  FlipByte(shards_[5], kShardHeaderSize);
  std::vector<std::string> three = {shards_[0], shards_[2], shards_[4], shards_[5]};
  auto d = Decode(out_, three);
  EXPECT_EQ(d.exit_code, 1);
  EXPECT_NE(d.err.find("only 3 of the 6 shards are intact"), std::string::npos) << d.err;
  EXPECT_NE(d.err.find("shard 1 missing"), std::string::npos) << d.err;
  EXPECT_NE(d.err.find("payload checksum mismatch"), std::string::npos) << d.err;
  EXPECT_FALSE(std::filesystem::exists(out_));
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
}

TEST_F(EcToolDamageTest, ShardsOfDifferentEncodingsAreRefused) {
  const std::string other = dir_.File("other.bin");
  WriteFile(other, data_);  // same content, separate encode: different file id
  ASSERT_EQ(Encode(other, "rs", 4, 2, "10000").exit_code, 0);
  auto d = Decode(out_, {shards_[0], shards_[1], shards_[2], other + ".3"});
  EXPECT_EQ(d.exit_code, 1);
  EXPECT_NE(d.err.find("shard headers disagree"), std::string::npos) << d.err;
  EXPECT_FALSE(std::filesystem::exists(out_));

  std::filesystem::copy_file(shards_[2], dir_.File("copy-of-2"));
  auto d2 = Decode(out_, {shards_[0], shards_[2], dir_.File("copy-of-2"), shards_[3]});
  EXPECT_EQ(d2.exit_code, 1);
  EXPECT_NE(d2.err.find("both claim shard index 2"), std::string::npos) << d2.err;
}

TEST_F(EcToolDamageTest, NonShardInputsAreSkippedAndNothingUsableFails) {
  auto d = Decode(out_, {file_});
  EXPECT_EQ(d.exit_code, 1);
  EXPECT_NE(d.err.find("none of the 1 files is a readable tessera shard"), std::string::npos)
      << d.err;
  auto d2 = Decode(out_, {file_, shards_[0], shards_[1], shards_[2], shards_[5]});
  ASSERT_EQ(d2.exit_code, 0) << d2.err;
  EXPECT_NE(d2.err.find("not a tessera shard"), std::string::npos) << d2.err;
  EXPECT_EQ(ReadFile(out_), data_);
}

TEST(EcToolTest, ProgressIsShownOnRequestAndHiddenWhenQuiet) {
  TempDir dir;
  const std::string file = dir.File("p.bin");
  WriteFile(file, RandomBytes(200000, 5));
  auto e = RunCommand({kBin, "ec", "encode", "--progress", "--chunk-size", "1000", file});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.err.find("encoding " + file + ": "), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("(100%)"), std::string::npos) << e.err;
  EXPECT_NE(e.out.find("wrote 6 shards (rs 4+2)"), std::string::npos) << e.out;
  auto d = RunCommand({kBin, "ec", "decode", "--progress", "--out", file + ".o", file + ".0",
                       file + ".1", file + ".2", file + ".3"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(d.err.find("(100%)"), std::string::npos) << d.err;
  auto q = RunCommand({kBin, "ec", "encode", "--quiet", file});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(q.err, "");
  EXPECT_EQ(q.out, "");
}

TEST(EcToolTest, BadArgumentsGetClearErrors) {
  TempDir dir;
  const std::string file = dir.File("f");
  WriteFile(file, "hello");
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"encode", "--k", "0", file}, 2, "k=0, m=2 out of range"},
           {{"encode", "--k", "250", "--m", "6", file}, 2, "k + m <= 255"},
           {{"encode", "--scheme", "xor", "--m", "2", file}, 2, "xor has exactly one parity"},
           {{"encode", "--scheme", "lrc", file}, 2, "unknown erasure-code scheme 'lrc'"},
           {{"encode", "--k", "four", file}, 2, "--k"},
           {{"encode", dir.File("missing")}, 1, "No such file or directory"},
           {{"encode", dir.path()}, 1, "is a directory"},
           {{"decode", file + ".0"}, 2, "--out"},
           {{"decode", "--out", dir.File("o")}, 2, "SHARDS"},
       }) {
    std::vector<std::string> argv = {kBin, "ec"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, c.code) << c.args[0] << " " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(file + ".0"));
}

}  // namespace
}  // namespace tessera::erasure
