// `tessera inspect`, `verify` and `shrink` on real files, through the real binary.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

using testing::RunCommand;

TEST(EngineCliTest, InspectAndVerifyHealthyFile) {
  testing::TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = std::move(Db::Open(path)).value();
    WriteBatch b;
    for (int i = 0; i < 2000; ++i) b.Put("k" + std::to_string(i), std::string(100, 'v'));
    b.Put("users", "alice", "1");
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto r = RunCommand({TESSERA_BIN, "inspect", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("page size    4096"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("users"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("page types"), std::string::npos) << r.out;
  auto v = RunCommand({TESSERA_BIN, "verify", path});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("verify: ok"), std::string::npos) << v.out;
}

TEST(EngineCliTest, VerifyReportsDamageAndExitsOne) {
  testing::TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = std::move(Db::Open(path)).value();
    WriteBatch b;
    for (int i = 0; i < 2000; ++i) b.Put("k" + std::to_string(i), std::string(100, 'v'));
    ASSERT_TRUE(db->Write(b).ok());
    ASSERT_TRUE(db->Put("later", "x").ok());
  }
  int fd = ::open(path.c_str(), O_RDWR);
  char junk[64] = {1, 2, 3};
  // The last bytes of a page: cells of a tree page (its checksum may skip the free middle).
  ASSERT_EQ(::pwrite(fd, junk, sizeof junk, 6 * 4096 - 64), 64);
  ::close(fd);
  auto v = RunCommand({TESSERA_BIN, "verify", path});
  EXPECT_EQ(v.exit_code, 1) << v.out;
  EXPECT_NE(v.out.find("verify: FAILED"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("page 5"), std::string::npos) << v.out;
}

// A damaged meta page (here the txnid of one, which then no longer even looks newer) is a
// failure for verify, whichever commit it opens instead, and shrink will not make the fallback
// permanent unless told to.
TEST(EngineCliTest, ADamagedMetaFailsVerifyAndHoldsBackShrink) {
  for (int slot : {0, 1}) {
    SCOPED_TRACE("meta page " + std::to_string(slot));
    testing::TempDir dir;
    std::string path = dir.File("db");
    {
      auto db = std::move(Db::Open(path)).value();
      for (int i = 0; i < 5; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
    }
    int fd = ::open(path.c_str(), O_RDWR);
    char b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, slot * 4096 + 16), 1);  // a byte of its txnid
    b = static_cast<char>(b ^ 0x40);
    ASSERT_EQ(::pwrite(fd, &b, 1, slot * 4096 + 16), 1);
    ::close(fd);
    auto v = RunCommand({TESSERA_BIN, "verify", path});
    EXPECT_EQ(v.exit_code, 1) << v.out;
    EXPECT_NE(v.out.find("meta page " + std::to_string(slot) + " is invalid"), std::string::npos)
        << v.out;
    auto s = RunCommand({TESSERA_BIN, "shrink", path});
    EXPECT_EQ(s.exit_code, 1) << s.out << s.err;
    EXPECT_NE(s.err.find("--force"), std::string::npos) << s.err;
    s = RunCommand({TESSERA_BIN, "shrink", "--force", path});
    EXPECT_EQ(s.exit_code, 0) << s.out << s.err;
    {
      auto db = std::move(Db::Open(path)).value();  // its first commit rewrites the damaged meta
      ASSERT_TRUE(db->Put("after", "x").ok());
    }
    v = RunCommand({TESSERA_BIN, "verify", path});
    EXPECT_EQ(v.exit_code, 0) << v.out;
  }
}

TEST(EngineCliTest, ShrinkGivesBackTheFreeEnd) {
  testing::TempDir dir;
  std::string path = dir.File("db");
  Options o;
  o.shrink_on_close = false;
  {
    auto db = std::move(Db::Open(path, o)).value();
    WriteBatch fill, del;
    for (int i = 0; i < 3000; ++i) {
      fill.Put("k" + std::to_string(i), std::string(3000, 'v'));
      if (i % 10 != 0) del.Delete("k" + std::to_string(i));
    }
    ASSERT_TRUE(db->Write(fill).ok());
    ASSERT_TRUE(db->Write(del).ok());
  }
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  const off_t before = st.st_size;
  auto r = RunCommand({TESSERA_BIN, "shrink", path});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(std::to_string(before) + " -> "), std::string::npos) << r.out;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LT(st.st_size, before / 4);
  auto v = RunCommand({TESSERA_BIN, "verify", path});
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_NE(v.out.find("300 entries"), std::string::npos) << v.out;
  // Busy while a writer has it open; refused beside a protected worker's marker.
  {
    auto db = std::move(Db::Open(path, o)).value();
    auto busy = RunCommand({TESSERA_BIN, "shrink", path});
    EXPECT_EQ(busy.exit_code, 1);
    EXPECT_NE(busy.err.find("tessera shrink:"), std::string::npos) << busy.err;
  }
  int fd = ::open(dir.File("protected").c_str(), O_CREAT | O_WRONLY, 0644);
  ::close(fd);
  auto prot = RunCommand({TESSERA_BIN, "shrink", path});
  EXPECT_EQ(prot.exit_code, 1);
  EXPECT_NE(prot.err.find("protected worker"), std::string::npos) << prot.err;
  // Also through a symlink from elsewhere.
  testing::TempDir other;
  ASSERT_EQ(::symlink(path.c_str(), other.File("link.db").c_str()), 0);
  prot = RunCommand({TESSERA_BIN, "shrink", other.File("link.db")});
  EXPECT_EQ(prot.exit_code, 1);
  EXPECT_NE(prot.err.find("protected worker"), std::string::npos) << prot.err;
}

TEST(EngineCliTest, NonDatabaseAndMissingFiles) {
  testing::TempDir dir;
  std::string junk = dir.File("junk");
  int fd = ::open(junk.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_EQ(::write(fd, "hello", 5), 5);
  ::close(fd);
  auto v = RunCommand({TESSERA_BIN, "verify", junk});
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_NE(v.out.find("not a Tessera database"), std::string::npos) << v.out;
  auto i = RunCommand({TESSERA_BIN, "inspect", junk});
  EXPECT_EQ(i.exit_code, 1);
  auto m = RunCommand({TESSERA_BIN, "inspect", dir.File("missing")});
  EXPECT_EQ(m.exit_code, 2);
  EXPECT_NE(m.err.find("missing"), std::string::npos) << m.err;
}

}  // namespace
}  // namespace tessera::engine
