// Where a database's side files (its commit log, its reader table) live: beside the database
// file itself, named after its path with symbolic links resolved, so that every path that
// reaches the file (a link to it, or to a directory above it) finds the same side files. Named
// after the path as given, a Db opened through a link kept its log and its readers' pins where
// an open by the real path never looked: acknowledged sync commits were not replayed after a
// crash, and a writer reused pages a read-only Db was reading. Hard links still reach different
// names (the docs say to open a database by one path).
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

namespace tessera::engine {

inline std::string SideFileBase(const std::string& db_path) {
  std::error_code ec;
  // weakly_canonical also serves a file not created yet: the existing part of the path (its
  // directories) is resolved.
  std::filesystem::path p = std::filesystem::weakly_canonical(db_path, ec);
  return ec || p.empty() ? db_path : p.string();
}

}  // namespace tessera::engine
