// The C API, from C++: every function and its documented errors.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "subprocess.h"
#include "tessera/engine/tessera.h"

namespace {

TEST(EngineCApiTest, RoundTripAndErrors) {
  tessera::testing::TempDir dir;
  std::string path = dir.File("db");
  tessera_db* db = nullptr;
  EXPECT_EQ(tessera_db_open(nullptr, nullptr, &db), TESSERA_NULL_HANDLE);
  EXPECT_EQ(tessera_db_open(path.c_str(), "page_size=4096;bogus=1", &db), TESSERA_BAD_OPTIONS);
  EXPECT_EQ(tessera_db_open(path.c_str(), "page_size=1000", &db), TESSERA_BAD_PAGE_SIZE);
  EXPECT_EQ(tessera_db_open(path.c_str(), "create=0", &db), TESSERA_NOTFOUND);
  EXPECT_EQ(tessera_db_open(path.c_str(), "format_version=4", &db), TESSERA_BAD_OPTIONS);
  // Numbers are digits only, and must fit.
  for (const char* bad : {"page_size= 4096", "page_size=+4096", "map_size=-1",
                          "map_size=99999999999999999999", "max_readers=4097"}) {
    EXPECT_EQ(tessera_db_open(path.c_str(), bad, &db), TESSERA_BAD_OPTIONS) << bad;
  }
  tessera_db* v1 = nullptr;  // the first format is still written on request, and reads back
  ASSERT_EQ(tessera_db_open(dir.File("v1").c_str(), "format_version=1;sync=0", &v1), TESSERA_OK);
  tessera_txn* t1 = nullptr;
  ASSERT_EQ(tessera_txn_begin(v1, 0, &t1), TESSERA_OK);
  EXPECT_EQ(tessera_put(t1, "k", 1, "v", 1), TESSERA_OK);
  EXPECT_EQ(tessera_txn_commit(t1), TESSERA_OK);
  ASSERT_EQ(tessera_txn_begin(v1, 1, &t1), TESSERA_OK);
  const void* v1val = nullptr;
  size_t v1len = 0;
  EXPECT_EQ(tessera_get(t1, "k", 1, &v1val, &v1len), TESSERA_OK);
  EXPECT_EQ(std::string(static_cast<const char*>(v1val), v1len), "v");
  tessera_txn_abort(t1);
  tessera_db_close(v1);
  ASSERT_EQ(tessera_db_open(path.c_str(), "page_size=8192;sync=0", &db), TESSERA_OK);
  tessera_db* second = nullptr;
  EXPECT_EQ(tessera_db_open(path.c_str(), nullptr, &second), TESSERA_BUSY);

  tessera_txn* w = nullptr;
  ASSERT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_OK);
  EXPECT_EQ(tessera_put(w, "a", 1, "1", 1), TESSERA_OK);
  EXPECT_EQ(tessera_put(w, "b", 1, "2", 1), TESSERA_OK);
  EXPECT_EQ(tessera_put(w, "", 0, "x", 1), TESSERA_KEY_TOO_LARGE);
  std::string longkey(2000, 'k');
  EXPECT_EQ(tessera_put(w, longkey.data(), longkey.size(), "x", 1), TESSERA_KEY_TOO_LARGE);
  EXPECT_EQ(tessera_put(nullptr, "a", 1, "1", 1), TESSERA_NULL_HANDLE);
  const void* v;
  size_t vl;
  ASSERT_EQ(tessera_get(w, "a", 1, &v, &vl), TESSERA_OK);
  EXPECT_EQ(std::string(static_cast<const char*>(v), vl), "1");
  EXPECT_EQ(tessera_del(w, "zz", 2), TESSERA_NOTFOUND);
  ASSERT_EQ(tessera_txn_commit(w), TESSERA_OK);

  tessera_txn* r = nullptr;
  ASSERT_EQ(tessera_txn_begin(db, 1, &r), TESSERA_OK);
  EXPECT_EQ(tessera_put(r, "c", 1, "3", 1), TESSERA_READ_ONLY);
  EXPECT_EQ(tessera_get(r, "missing", 7, &v, &vl), TESSERA_NOTFOUND);
  // A key put refuses is refused by get too, as the header says.
  EXPECT_EQ(tessera_get(r, "", 0, &v, &vl), TESSERA_KEY_TOO_LARGE);
  EXPECT_EQ(tessera_get(r, longkey.data(), longkey.size(), &v, &vl), TESSERA_KEY_TOO_LARGE);
  tessera_cursor* c = nullptr;
  ASSERT_EQ(tessera_cursor_open(r, &c), TESSERA_OK);
  const void* k;
  size_t kl;
  ASSERT_EQ(tessera_cursor_first(c, &k, &kl, &v, &vl), TESSERA_OK);
  EXPECT_EQ(std::string(static_cast<const char*>(k), kl), "a");
  ASSERT_EQ(tessera_cursor_next(c, &k, &kl, &v, &vl), TESSERA_OK);
  EXPECT_EQ(std::string(static_cast<const char*>(k), kl), "b");
  EXPECT_EQ(tessera_cursor_next(c, &k, &kl, &v, &vl), TESSERA_NOTFOUND);
  ASSERT_EQ(tessera_cursor_seek(c, "aa", 2, &k, &kl, &v, &vl), TESSERA_OK);
  EXPECT_EQ(std::string(static_cast<const char*>(k), kl), "b");
  EXPECT_EQ(tessera_cursor_seek(c, "c", 1, &k, &kl, &v, &vl), TESSERA_NOTFOUND);
  EXPECT_EQ(tessera_cursor_first(nullptr, &k, &kl, &v, &vl), TESSERA_NULL_HANDLE);
  tessera_cursor_close(c);
  EXPECT_EQ(tessera_txn_commit(r), TESSERA_OK);

  ASSERT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_OK);
  EXPECT_EQ(tessera_del(w, "a", 1), TESSERA_OK);
  tessera_txn_abort(w);
  ASSERT_EQ(tessera_txn_begin(db, 1, &r), TESSERA_OK);
  EXPECT_EQ(tessera_get(r, "a", 1, &v, &vl), TESSERA_OK);  // the abort kept it
  tessera_txn_abort(r);
  tessera_db_close(db);
  tessera_db_close(nullptr);
  tessera_txn_abort(nullptr);
  tessera_cursor_close(nullptr);

  // Writers that poll for their group commit; a poll over a second is a bad option.
  EXPECT_EQ(tessera_db_open(path.c_str(), "group_commit_spin_us=1000001", &db),
            TESSERA_BAD_OPTIONS);
  ASSERT_EQ(tessera_db_open(path.c_str(), "group_commit_spin_us=300;sync=1", &db), TESSERA_OK);
  ASSERT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_OK);
  EXPECT_EQ(tessera_put(w, "c", 1, "3", 1), TESSERA_OK);
  EXPECT_EQ(tessera_txn_commit(w), TESSERA_OK);
  tessera_db_close(db);

  ASSERT_EQ(tessera_db_open(path.c_str(), "read_only=1", &db), TESSERA_OK);
  EXPECT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_READ_ONLY);
  tessera_db_close(db);
  EXPECT_STREQ(tessera_strerror(TESSERA_READ_ONLY),
               "write attempted through a read-only handle or transaction");
}

// A file cut short (not a whole number of pages) and an empty file opened read-only are
// TESSERA_CORRUPTION, the code an embedder checks before restoring from a backup, not
// TESSERA_INVALID_ARGUMENT.
TEST(EngineCApiTest, TruncatedAndEmptyFilesAreCorruption) {
  tessera::testing::TempDir dir;
  std::string path = dir.File("db");
  tessera_db* db = nullptr;
  ASSERT_EQ(tessera_db_open(path.c_str(), "sync=0", &db), TESSERA_OK);
  tessera_txn* w = nullptr;
  ASSERT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_OK);
  ASSERT_EQ(tessera_put(w, "k", 1, "v", 1), TESSERA_OK);
  ASSERT_EQ(tessera_txn_commit(w), TESSERA_OK);
  tessera_db_close(db);
  ASSERT_EQ(::truncate(path.c_str(), 5000), 0);
  for (const char* opts : {"", "read_only=1"}) {
    db = nullptr;
    EXPECT_EQ(tessera_db_open(path.c_str(), opts, &db), TESSERA_CORRUPTION) << opts;
    EXPECT_EQ(db, nullptr);
  }
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  EXPECT_EQ(tessera_db_open(path.c_str(), "read_only=1", &db), TESSERA_CORRUPTION);
}

// A close shrinks a file that is mostly free unless shrink_on_close=0.
TEST(EngineCApiTest, CloseShrinksAMostlyFreeFileUnlessToldNot) {
  tessera::testing::TempDir dir;
  tessera_db* db = nullptr;
  EXPECT_EQ(tessera_db_open(dir.File("x").c_str(), "shrink_on_close=maybe", &db),
            TESSERA_BAD_OPTIONS);
  uint64_t bytes[2];
  for (int shrink : {1, 0}) {
    std::string path = dir.File("db" + std::to_string(shrink));
    std::string opts = "sync=0;shrink_on_close=" + std::to_string(shrink);
    ASSERT_EQ(tessera_db_open(path.c_str(), opts.c_str(), &db), TESSERA_OK);
    std::string val(4000, 'v');  // a page of its own each
    for (int pass = 0; pass < 2; ++pass) {
      tessera_txn* w = nullptr;
      ASSERT_EQ(tessera_txn_begin(db, 0, &w), TESSERA_OK);
      for (int i = 0; i < 3000; ++i) {
        std::string k = "k" + std::to_string(i);
        if (pass == 0) {
          ASSERT_EQ(tessera_put(w, k.data(), k.size(), val.data(), val.size()), TESSERA_OK);
        } else if (i % 30 != 0) {
          ASSERT_EQ(tessera_del(w, k.data(), k.size()), TESSERA_OK);
        }
      }
      ASSERT_EQ(tessera_txn_commit(w), TESSERA_OK);
    }
    tessera_db_close(db);
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    bytes[shrink] = static_cast<uint64_t>(st.st_size);
    ASSERT_EQ(tessera_db_open(path.c_str(), "read_only=1", &db), TESSERA_OK);
    tessera_txn* r = nullptr;
    ASSERT_EQ(tessera_txn_begin(db, 1, &r), TESSERA_OK);
    for (int i = 0; i < 3000; ++i) {
      std::string k = "k" + std::to_string(i);
      const void* v = nullptr;
      size_t vl = 0;
      ASSERT_EQ(tessera_get(r, k.data(), k.size(), &v, &vl),
                i % 30 == 0 ? TESSERA_OK : TESSERA_NOTFOUND)
          << k;
      if (i % 30 == 0) {
        EXPECT_EQ(std::string(static_cast<const char*>(v), vl), val);
      }
    }
    tessera_txn_abort(r);
    tessera_db_close(db);
  }
  EXPECT_GT(bytes[0], uint64_t{3000} * 4096);       // every value's page still there, free
  EXPECT_LT(bytes[1], uint64_t{3000} * 4096 / 10);  // 100 values are left
}

}  // namespace
