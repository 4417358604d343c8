// Page-level protection support: pinned snapshots, page images, changed pages, restore.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

using Images = std::vector<std::string>;

Images AllImages(Db& db, const ReadTxn& snap) {
  Images out(snap.Descriptor().last_page);
  std::string buf(db.page_size(), '\0');
  for (uint64_t p = 0; p < out.size(); ++p) {
    EXPECT_TRUE(db.PageImage(snap, p, reinterpret_cast<uint8_t*>(buf.data())).ok());
    out[p] = buf;
    // The copy-free view shows the same image: null exactly for the all-zero ones (a page in
    // use has a header, so it is never all zeros).
    auto view = db.PageImageView(snap, p);
    EXPECT_TRUE(view.ok());
    if (!view.ok()) continue;
    if (*view == nullptr) {
      EXPECT_EQ(buf, std::string(db.page_size(), '\0')) << "page " << p;
    } else {
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(*view), db.page_size()), buf)
          << "page " << p;
      EXPECT_NE(buf, std::string(db.page_size(), '\0')) << "page " << p;
    }
  }
  auto past = db.PageImageView(snap, out.size());
  EXPECT_TRUE(past.ok() && *past == nullptr) << "a page past the snapshot's end has an image";
  return out;
}

// Restores `path` from `imgs`; the callback fails at page `fail_at`, if one is given.
Status RestoreFrom(const std::string& path, const SnapshotDescriptor& d, const Images& imgs,
                   uint64_t fail_at = UINT64_MAX) {
  return Db::Restore(path, d, [&](uint64_t p, uint8_t* buf) {
    if (p == fail_at) return Status::Unavailable("source went away at page " + std::to_string(p));
    std::memcpy(buf, imgs[p].data(), imgs[p].size());
    return Status::Ok();
  });
}

std::map<std::string, std::string> Contents(Db& db) {
  std::map<std::string, std::string> m;
  auto r = std::move(db.BeginRead()).value();
  auto c = std::move(r->NewCursor()).value();
  for (Status s = c->First(); c->Valid(); s = c->Next()) m[std::string(c->key())] = c->value();
  return m;
}

TEST(EngineProtectionTest, ChangedPagesCoverEveryImageDifference) {
  testing::TempDir dir;
  auto db = std::move(Db::Open(dir.File("db"))).value();
  std::mt19937_64 rng(42);
  WriteBatch b;
  for (int i = 0; i < 5000; ++i) b.Put("k" + std::to_string(i), std::string(80, 'a'));
  ASSERT_TRUE(db->Write(b).ok());
  auto older = std::move(db->BeginRead()).value();  // pinned while writes go on
  Images before = AllImages(*db, *older);
  for (int c = 0; c < 20; ++c) {
    WriteBatch w;
    for (int i = 0; i < 50; ++i) {
      std::string k = "k" + std::to_string(rng() % 6000);
      if (rng() % 4 == 0) {
        w.Delete(k);
      } else {
        w.Put(k, std::string(rng() % 300, 'b'));
      }
    }
    ASSERT_TRUE(db->Write(w).ok());
  }
  auto newer = std::move(db->BeginRead()).value();
  // The older snapshot's images did not change while it was pinned.
  EXPECT_EQ(AllImages(*db, *older), before);
  Images after = AllImages(*db, *newer);
  auto changed = db->ChangedPages(*older, *newer);
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  size_t differing = 0;
  for (uint64_t p = 0; p < after.size(); ++p) {
    std::string old_img = p < before.size() ? before[p] : std::string(db->page_size(), '\0');
    if (old_img != after[p]) {
      ++differing;
      EXPECT_TRUE(std::binary_search(changed->begin(), changed->end(), p))
          << "page " << p << " differs but is not reported";
    }
  }
  EXPECT_GT(differing, 0u);
  // Cost follows the change: far fewer pages reported than the file holds.
  EXPECT_LT(changed->size(), after.size() / 2) << changed->size() << " of " << after.size();
}

TEST(EngineProtectionTest, RestoreFromImagesEqualsTheSnapshot) {
  testing::TempDir dir;
  auto db = std::move(Db::Open(dir.File("db"))).value();
  WriteBatch b;
  for (int i = 0; i < 3000; ++i) b.Put("key" + std::to_string(i), std::string(i % 500, 'x'));
  b.Put("tree", "k", "named");
  ASSERT_TRUE(db->Write(b).ok());
  auto want = Contents(*db);
  auto snap = std::move(db->BeginRead()).value();
  WriteBatch later;
  later.Put("after", "snapshot");
  ASSERT_TRUE(db->Write(later).ok());
  Images imgs = AllImages(*db, *snap);
  SnapshotDescriptor d = snap->Descriptor();
  EXPECT_EQ(d.commit_seq, snap->commit_seq());
  std::string path = dir.File("restored");
  Status s = RestoreFrom(path, d, imgs);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto r = std::move(Db::Open(path)).value();
  EXPECT_EQ(Contents(*r), want);
  std::string v;
  EXPECT_TRUE(r->Get("tree", "k", &v).ok());
  EXPECT_EQ(v, "named");
  EXPECT_TRUE(r->Verify().ok) << r->Verify().ToString();
  EXPECT_TRUE(r->Put("more", "writes").ok());
  // A descriptor whose meta was tampered with is refused.
  d.meta_bytes[20] ^= 1;
  EXPECT_TRUE(Db::Restore(dir.File("bad"), d, [](uint64_t, uint8_t*) {
                return Status::Ok();
              }).IsInvalidArgument());
}

// Big enough for Restore's background flushes (every 16 MiB) to run several times while pages
// are still produced; an error from the image callback part way stops it cleanly.
TEST(EngineProtectionTest, RestoreOfManyMiBEqualsTheSnapshotAndStopsOnACallbackError) {
  testing::TempDir dir;
  auto db = std::move(Db::Open(dir.File("db"))).value();
  for (int c = 0; c < 12; ++c) {
    WriteBatch b;
    for (int i = 0; i < 3000; ++i) {
      b.Put("key" + std::to_string(c * 3000 + i), std::string(1000, static_cast<char>('a' + c)));
    }
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto want = Contents(*db);
  auto snap = std::move(db->BeginRead()).value();
  Images imgs = AllImages(*db, *snap);
  ASSERT_GT(imgs.size() * db->page_size(), size_t{40} << 20);
  SnapshotDescriptor d = snap->Descriptor();
  std::string path = dir.File("restored");
  Status s = RestoreFrom(path, d, imgs);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto r = std::move(Db::Open(path)).value();
  EXPECT_EQ(Contents(*r), want);
  EXPECT_TRUE(r->Verify().ok) << r->Verify().ToString();

  const uint64_t fail_at = imgs.size() * 3 / 4;
  std::string broken = dir.File("broken");
  s = RestoreFrom(broken, d, imgs, fail_at);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_NE(s.message().find("page " + std::to_string(fail_at)), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(broken)) << "a failed restore leaves no file behind";
}

}  // namespace
}  // namespace tessera::engine

namespace tessera::engine {
namespace {

// Writes `n` batches of random overwrites and deletes: frees and reuses many pages.
void Churn(Db& db, std::mt19937_64& rng, int n, bool sync = false) {
  for (int c = 0; c < n; ++c) {
    WriteBatch w;
    for (int i = 0; i < 100; ++i) {
      std::string k = "k" + std::to_string(rng() % 6000);
      if (rng() % 5 == 0) {
        w.Delete(k);
      } else {
        w.Put(k, std::string(rng() % 300, static_cast<char>('a' + rng() % 26)));
      }
    }
    ASSERT_TRUE(db.Write(w, WriteOptions{sync}).ok());
  }
}

TEST(EngineProtectionTest, PinnedSnapshotSurvivesARestart) {
  testing::TempDir dir;
  std::mt19937_64 rng(7);
  SnapshotDescriptor desc;
  Images pinned_images;
  {
    auto db = std::move(Db::Open(dir.File("db"))).value();
    Churn(*db, rng, 30);
    auto pin = std::move(db->BeginRead()).value();
    desc = pin->Descriptor();
    pinned_images = AllImages(*db, *pin);
    Churn(*db, rng, 60);  // frees pages of the pinned snapshot; the pin keeps them
    // The process ends with the pin still held (as a crash would).
  }
  Options o;
  o.retain_freed_after = desc.txnid;
  auto db = std::move(Db::Open(dir.File("db"), o)).value();
  auto snap = db->OpenSnapshot(desc);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Churn(*db, rng, 60);  // writes after the re-pin must not take the snapshot's pages
  EXPECT_EQ(AllImages(*db, **snap), pinned_images);
  EXPECT_TRUE(db->VerifySnapshot(**snap).ok);
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

// Two pins at different txns, then logged commits and a crash: replaying the log at open frees
// pages of both pins, and Options::retain_freed_after names only the older one. The newer pin's
// pages (written after the older pin) must wait for it as well.
TEST(EngineProtectionTest, TwoPinsSurviveACrashAndTheLogReplay) {
  testing::TempDir dir;
  std::mt19937_64 rng(9);
  Options cut;
  cut.simulate_power_cut = true;
  SnapshotDescriptor d1, d2;
  Images images1, images2;
  {
    auto db = std::move(Db::Open(dir.File("db"), cut)).value();
    Churn(*db, rng, 30);
    auto pin1 = std::move(db->BeginRead()).value();
    Churn(*db, rng, 30);
    auto pin2 = std::move(db->BeginRead()).value();
    ASSERT_TRUE(db->Sync().ok());  // pins are recorded only once durable (as protection does)
    Churn(*db, rng, 60, true);     // sync commits: in the commit log, not in the data file
    d1 = pin1->Descriptor();
    d2 = pin2->Descriptor();
    images1 = AllImages(*db, *pin1);
    images2 = AllImages(*db, *pin2);
    ASSERT_TRUE(db->SimulatePowerCut(1, 0.0).ok());
  }
  Options o;
  o.retain_freed_after = d1.txnid;
  auto db = std::move(Db::Open(dir.File("db"), o)).value();
  auto st = db->GetStats();
  ASSERT_TRUE(st.ok());
  ASSERT_GE(st->txnid, d2.txnid + 60) << "the 60 logged commits were not replayed";
  auto snap1 = db->OpenSnapshot(d1);
  ASSERT_TRUE(snap1.ok()) << snap1.status().ToString();
  auto snap2 = db->OpenSnapshot(d2);
  ASSERT_TRUE(snap2.ok()) << snap2.status().ToString();
  EXPECT_EQ(AllImages(*db, **snap1), images1);
  EXPECT_EQ(AllImages(*db, **snap2), images2);
  Churn(*db, rng, 60);
  EXPECT_EQ(AllImages(*db, **snap2), images2);
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

TEST(EngineProtectionTest, SnapshotWhosePagesWereReusedIsRefused) {
  testing::TempDir dir;
  std::mt19937_64 rng(8);
  SnapshotDescriptor desc;
  {
    auto db = std::move(Db::Open(dir.File("db"))).value();
    Churn(*db, rng, 30);
    desc = std::move(db->BeginRead()).value()->Descriptor();  // not kept pinned
    Churn(*db, rng, 200);
  }
  auto db = std::move(Db::Open(dir.File("db"))).value();
  auto snap = db->OpenSnapshot(desc);
  ASSERT_FALSE(snap.ok());
  EXPECT_TRUE(snap.status().IsCorruption()) << snap.status().ToString();

  SnapshotDescriptor bad = desc;
  bad.meta_bytes[20] ^= 1;
  EXPECT_TRUE(db->OpenSnapshot(bad).status().IsInvalidArgument());
  SnapshotDescriptor future = std::move(db->BeginRead()).value()->Descriptor();
  ASSERT_TRUE(db->Put("x", "y").ok());
  EXPECT_TRUE(db->OpenSnapshot(future).ok());  // an older txnid than now: fine
}

}  // namespace
}  // namespace tessera::engine
