// Runs the fuzz target on seeded, structured inputs so every `make test` exercises it: real
// database files with random bytes overwritten, truncated, extended, and (the hard case) pages
// whose checksums are recomputed after damage, so the layout checks behind the checksums are
// what must hold. Prints its seed; replay with TESSERA_SEED=<seed>.
#include <gtest/gtest.h>
#include <isa-l/crc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "subprocess.h"
#include "tessera/engine/db.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string MakeDatabase(uint64_t seed) {
  tessera::testing::TempDir dir;
  std::string path = dir.File("db");
  std::mt19937_64 rng(seed);
  {
    auto db = std::move(tessera::engine::Db::Open(path)).value();
    for (int c = 0; c < 4; ++c) {
      tessera::engine::WriteBatch b;
      for (int i = 0; i < 300; ++i) {
        std::string k = "key" + std::to_string(rng() % 1000);
        if (rng() % 5 == 0) {
          b.Delete(k);
        } else {
          b.Put(rng() % 4 == 0 ? "named" : "", k,
                std::string(rng() % 300 + (rng() % 30 == 0 ? 5000 : 0), 'x'));
        }
      }
      EXPECT_TRUE(db->Write(b).ok());
    }
  }
  return tessera::testing::ReadFile(path);
}

void Recrc(std::string& file, size_t page) {
  if ((page + 1) * 4096 > file.size() || page < 2) return;
  auto* p = reinterpret_cast<uint8_t*>(file.data()) + page * 4096;
  uint32_t crc = crc32_iscsi(p + 4, 4096 - 4, 0);
  std::memcpy(p, &crc, 4);
}

TEST(EngineFuzzRegression, DamagedFilesNeverCrash) {
  const char* s = std::getenv("TESSERA_SEED");
  uint64_t seed = s ? std::strtoull(s, nullptr, 10) : std::random_device{}();
  std::printf("engine fuzz regression seed: %llu (replay with TESSERA_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::string base = MakeDatabase(seed);
  ASSERT_GT(base.size(), 8192u);
  for (int round = 0; round < 400; ++round) {
    std::string f = base;
    size_t pages = f.size() / 4096;
    switch (round % 5) {
      case 0:  // random bytes anywhere
        for (int i = 0; i < 1 + static_cast<int>(rng() % 20); ++i)
          f[rng() % f.size()] = static_cast<char>(rng());
        break;
      case 1:  // truncation
        f.resize(rng() % f.size());
        break;
      case 2: {  // a damaged page with a fixed-up checksum: layout checks must catch it
        size_t page = 2 + rng() % (pages - 2);
        for (int i = 0; i < 1 + static_cast<int>(rng() % 8); ++i) {
          f[page * 4096 + 4 + rng() % 60] = static_cast<char>(rng());  // header and slots
        }
        Recrc(f, page);
        break;
      }
      case 3: {  // cells rewritten, checksum fixed up
        size_t page = 2 + rng() % (pages - 2);
        for (int i = 0; i < 16; ++i)
          f[page * 4096 + 32 + rng() % (4096 - 32)] = static_cast<char>(rng());
        Recrc(f, page);
        break;
      }
      default:  // a whole page replaced by another page's bytes
        if (pages > 3) {
          size_t a = 2 + rng() % (pages - 2), b = 2 + rng() % (pages - 2);
          f.replace(a * 4096, 4096, base.substr(b * 4096, 4096));
        }
        break;
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(f.data()), f.size());
  }
  std::string empty;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(empty.data()), 0);
}

}  // namespace
