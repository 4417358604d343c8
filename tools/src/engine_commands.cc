// `tessera inspect FILE` and `tessera verify FILE`: look at an engine file without changing it.
// `tessera shrink FILE`: give the free space at its end back to the file system.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "cli.h"
#include "tessera/engine/db.h"

namespace tessera::cli {
namespace {

Result<std::unique_ptr<engine::Db>> OpenReadOnly(const std::string& path) {
  engine::Options o;
  o.read_only = true;
  o.create_if_missing = false;
  return engine::Db::Open(path, o);
}

int Inspect(const std::string& path) {
  auto db = OpenReadOnly(path);
  if (!db.ok()) {
    std::fprintf(stderr, "tessera inspect: %s\n", db.status().ToString().c_str());
    return kExitFailure;
  }
  auto st = (*db)->GetStats();
  if (!st.ok()) {
    std::fprintf(stderr, "tessera inspect: %s\n", st.status().ToString().c_str());
    return kExitFailure;
  }
  std::printf("file         %s\n", path.c_str());
  std::printf("page size    %u\n", st->page_size);
  std::printf("txn id       %llu\n", static_cast<unsigned long long>(st->txnid));
  std::printf("commit seq   %llu\n", static_cast<unsigned long long>(st->commit_seq));
  std::printf("meta slot    %u\n", st->meta_slot);
  std::printf("pages        %llu in use or free (%llu free)\n",
              static_cast<unsigned long long>(st->last_page),
              static_cast<unsigned long long>(st->free_pages));
  std::printf("file size    %llu bytes\n", static_cast<unsigned long long>(st->file_size));
  if (!st->recovery_note.empty()) std::printf("recovery     %s\n", st->recovery_note.c_str());
  uint64_t branch = 0, leaf = 0, overflow = 0;
  std::printf("\n%-24s %12s %6s %10s %10s %10s\n", "tree", "entries", "depth", "branch", "leaf",
              "overflow");
  for (const auto& t : st->trees) {
    std::printf("%-24s %12llu %6u %10llu %10llu %10llu\n",
                t.name.empty() ? "(main)" : t.name.c_str(),
                static_cast<unsigned long long>(t.entries), t.depth,
                static_cast<unsigned long long>(t.branch_pages),
                static_cast<unsigned long long>(t.leaf_pages),
                static_cast<unsigned long long>(t.overflow_pages));
    branch += t.branch_pages;
    leaf += t.leaf_pages;
    overflow += t.overflow_pages;
  }
  uint64_t tree_pages = branch + leaf + overflow;
  uint64_t other = st->last_page - 2 - st->free_pages - tree_pages;
  std::printf(
      "\npage types   meta 2, branch %llu, leaf %llu, overflow %llu, free %llu, "
      "freelist+catalog %llu\n",
      static_cast<unsigned long long>(branch), static_cast<unsigned long long>(leaf),
      static_cast<unsigned long long>(overflow), static_cast<unsigned long long>(st->free_pages),
      static_cast<unsigned long long>(other));
  return kExitOk;
}

// Whether Open's note says it fell back from the newest commit or found a meta page invalid:
// the file is not as its last writer left it (or that writer crashed mid-commit).
bool MetaTrouble(const std::string& note) {
  return note.find("newer commit rejected") != std::string::npos ||
         note.find(" is invalid") != std::string::npos;
}

int Verify(const std::string& path) {
  auto db = OpenReadOnly(path);
  if (!db.ok()) {
    std::printf("verify: FAILED\n  cannot open: %s\n", db.status().ToString().c_str());
    return kExitFailure;
  }
  auto rep = (*db)->Verify();
  std::printf("%s", rep.ToString().c_str());
  // What the open fell back from, or commits in the log a read-only open does not apply.
  auto st = (*db)->GetStats();
  if (st.ok() && !st->recovery_note.empty()) std::printf("note: %s\n", st->recovery_note.c_str());
  if (st.ok() && MetaTrouble(st->recovery_note)) {
    std::printf(
        "verify: FAILED: a meta page is damaged or the newest commit was rejected (a crash "
        "mid-commit, or damage); the pages above are those of the commit opened instead, which "
        "a read-write open uses (its first commit overwrites the damaged meta)\n");
    return kExitFailure;
  }
  return rep.ok ? kExitOk : kExitFailure;
}

int Shrink(const std::string& path, bool force) {
  // A protected worker's parity holders and pins name this file's page numbers: moving its pages
  // would make a later rebuild restore the wrong bytes.
  std::error_code ec;
  // Through symlinks: a link elsewhere to a protected worker's file is that file.
  const std::filesystem::path real = std::filesystem::weakly_canonical(path, ec);
  if (std::filesystem::exists((ec ? std::filesystem::path(path) : real).parent_path() / "protected",
                              ec)) {
    std::fprintf(stderr,
                 "tessera shrink: %s belongs to a protected worker (a 'protected' file lies "
                 "beside it); its page numbers must not change\n",
                 path.c_str());
    return kExitFailure;
  }
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "tessera shrink: %s\n", st.ToString().c_str());
    return kExitFailure;
  };
  if (!force) {
    // A read-write open would make a fallback permanent: look first.
    engine::Options ro;
    ro.read_only = true;
    auto look = engine::Db::Open(path, ro);
    if (!look.ok()) return fail(look.status());
    auto st = (*look)->GetStats();
    if (st.ok() && MetaTrouble(st->recovery_note)) {
      std::fprintf(stderr,
                   "tessera shrink: %s: %s\nshrinking would make that fallback permanent; "
                   "check it with 'tessera verify', then give --force to go ahead\n",
                   path.c_str(), st->recovery_note.c_str());
      return kExitFailure;
    }
  }
  engine::Options o;
  o.create_if_missing = false;
  o.shrink_on_close = false;
  auto db = engine::Db::Open(path, o);
  if (!db.ok()) return fail(db.status());
  auto before = (*db)->GetStats();
  if (!before.ok()) return fail(before.status());
  if (Status s = (*db)->Shrink(); !s.ok()) return fail(s);
  auto after = (*db)->GetStats();
  if (!after.ok()) return fail(after.status());
  std::printf("%s: %llu -> %llu bytes (%llu free pages left inside)\n", path.c_str(),
              static_cast<unsigned long long>(before->file_size),
              static_cast<unsigned long long>(after->file_size),
              static_cast<unsigned long long>(after->free_pages));
  return kExitOk;
}

}  // namespace

void RegisterEngineCommands(CLI::App& app, Context& ctx) {
  auto path = std::make_shared<std::string>();
  auto* inspect = app.add_subcommand(
      "inspect", "Show an engine file's meta, trees and page-type histogram (read-only)");
  inspect->add_option("FILE", *path, "Database file")->required()->check(CLI::ExistingFile);
  inspect->callback([&ctx, path] { ctx.action = [path] { return Inspect(*path); }; });

  auto vpath = std::make_shared<std::string>();
  auto* verify = app.add_subcommand(
      "verify",
      "Check every page of an engine file: checksums, key order, reachability; exit 1 "
      "on any problem");
  verify->add_option("FILE", *vpath, "Database file")->required()->check(CLI::ExistingFile);
  verify->callback([&ctx, vpath] { ctx.action = [vpath] { return Verify(*vpath); }; });

  auto spath = std::make_shared<std::string>();
  auto* shrink = app.add_subcommand(
      "shrink",
      "Move the pages in use at the end of an engine file down into free pages and truncate it "
      "(needs the file closed by every writer; not for a protected worker's data file)");
  shrink->add_option("FILE", *spath, "Database file")->required()->check(CLI::ExistingFile);
  auto force = std::make_shared<bool>(false);
  shrink->add_flag("--force", *force,
                   "Shrink even when the newest commit is damaged or a meta page is invalid "
                   "(the open falls back to the commit before, for good)");
  shrink->callback(
      [&ctx, spath, force] { ctx.action = [spath, force] { return Shrink(*spath, *force); }; });
}

}  // namespace tessera::cli
