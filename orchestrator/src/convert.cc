#include "convert.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tessera::orchestrator {

int ShardOf(std::string_view key, int num_shards) {
  return static_cast<int>(XXH3_64bits(key.data(), key.size()) % static_cast<uint64_t>(num_shards));
}

Result<std::string> ReadTokenFile(const std::string& path) {
  if (path.empty()) return std::string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Status::InvalidArgument("token file '" + path + "' is a directory");
  }
  std::ifstream f(path);
  if (!f) return Status::NotFound("cannot read token file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) return Status::InvalidArgument("token file '" + path + "' is empty");
  return t;
}

std::string StatusJson(const ClusterStatus& s) {
  nlohmann::json j;
  j["manager"] = s.manager_address;
  j["managers"] = s.managers;
  j["raft_term"] = s.raft_term;
  j["raft_commit"] = s.raft_commit;
  j["expected_workers"] = s.expected_workers;
  j["state"] = s.map.state;
  j["formed"] = s.map.formed;
  j["map_version"] = s.map.version;
  j["num_shards"] = s.map.num_shards;
  j["nodes"] = nlohmann::json::array();
  for (const auto& n : s.nodes) {
    j["nodes"].push_back({{"node_id", n.node_id},
                          {"address", n.address},
                          {"role", n.role},
                          {"up", n.up},
                          {"last_heartbeat_ms_ago", n.last_heartbeat_ms_ago},
                          {"incarnation", n.incarnation},
                          {"shards", n.shards_owned}});
    if (!n.progress.empty()) {
      auto pj = nlohmann::json::parse(n.progress, nullptr, false);
      if (!pj.is_discarded()) j["nodes"].back()["progress"] = pj;
    }
  }
  const auto& p = s.map.protection;
  nlohmann::json pj;
  pj["scheme"] = p.scheme;
  if (p.scheme != "none") {
    pj["k"] = p.k;
    pj["m"] = p.m;
    pj["slots"] = nlohmann::json::array();
    for (size_t i = 0; i < p.slot_nodes.size(); ++i) {
      pj["slots"].push_back({{"slot", i},
                             {"node", p.slot_nodes[i]},
                             {"address", i < p.slot_addresses.size() ? p.slot_addresses[i] : ""},
                             {"epoch", i < p.slot_epochs.size() ? p.slot_epochs[i] : 0}});
    }
    pj["holders"] = nlohmann::json::array();
    for (size_t i = 0; i < p.holder_nodes.size(); ++i) {
      pj["holders"].push_back(
          {{"holder", i},
           {"node", p.holder_nodes[i]},
           {"address", i < p.holder_addresses.size() ? p.holder_addresses[i] : ""}});
    }
    pj["frozen"] = p.frozen;
    pj["rebuilding"] = p.rebuilding;
  }
  j["protection"] = pj;
  j["shards"] = nlohmann::json::array();
  for (const auto& sh : s.map.shards) {
    j["shards"].push_back(
        {{"shard", sh.shard}, {"owner", sh.owner}, {"address", sh.address}, {"epoch", sh.epoch}});
  }
  return j.dump(2);
}

namespace {
// The generated and the plain Protection have the same fields.
template <typename From, typename To>
void CopyProtection(const From& p, To* out) {
  out->scheme = p.scheme;
  out->k = p.k;
  out->m = p.m;
  out->slot_nodes = p.slot_nodes;
  out->slot_addresses = p.slot_addresses;
  out->slot_epochs = p.slot_epochs;
  out->holder_nodes = p.holder_nodes;
  out->holder_addresses = p.holder_addresses;
  out->frozen = p.frozen;
  out->rebuilding = p.rebuilding;
}
}  // namespace

ShardMap FromGen(const gen::ShardMap& m) {
  ShardMap out;
  out.version = m.version;
  out.num_shards = m.num_shards;
  out.formed = m.formed;
  out.state = m.state;
  for (const auto& s : m.shards) out.shards.push_back({s.shard, s.owner, s.address, s.epoch});
  CopyProtection(m.protection, &out.protection);
  if (out.protection.scheme.empty()) out.protection.scheme = "none";
  return out;
}

gen::ShardMap ToGen(const ShardMap& m) {
  gen::ShardMap out;
  out.version = m.version;
  out.num_shards = m.num_shards;
  out.formed = m.formed;
  out.state = m.state;
  for (const auto& s : m.shards) {
    gen::ShardInfo g;
    g.shard = s.shard;
    g.owner = s.owner;
    g.address = s.address;
    g.epoch = s.epoch;
    out.shards.push_back(g);
  }
  CopyProtection(m.protection, &out.protection);
  return out;
}

NodeInfo FromGen(const gen::NodeInfo& n) {
  return {n.node_id, n.address,     n.role,         n.last_heartbeat_ms_ago,
          n.up,      n.incarnation, n.shards_owned, n.progress};
}

ClusterStatus FromGen(const gen::ClusterStatus& s) {
  ClusterStatus out;
  for (const auto& n : s.nodes) out.nodes.push_back(FromGen(n));
  out.map = FromGen(s.shard_map);
  out.expected_workers = s.expected_workers;
  out.manager_address = s.manager_address;
  out.managers = s.managers;
  out.raft_term = s.raft_term;
  out.raft_commit = s.raft_commit;
  return out;
}

void KeepLargeBuffersInHeap() {
  // 32 MiB is the largest mmap threshold glibc accepts; the trim threshold keeps a few such
  // buffers per arena rather than returning them to the kernel after every call.
  static const bool done = [] {
    (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 128 << 20);
    return true;
  }();
  (void)done;
}

std::string FailpointArg(const char* name) {
  const char* fp = std::getenv("TESSERA_FAILPOINT");
  std::string f = fp ? fp : "", prefix = std::string(name) + ":";
  return f.rfind(prefix, 0) == 0 ? f.substr(prefix.size()) : std::string();
}

Status WriteFileDurably(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create " + tmp);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());  // nothing half-written is left behind
    return ErrnoStatus(err, "write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "rename " + tmp);
  }
  // The rename itself must survive a power cut: flush the directory too.
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

bool RunPages(std::string_view present, const uint8_t* pages, size_t size, size_t count,
              size_t page_size, std::vector<const uint8_t*>* out) {
  out->assign(count, nullptr);
  if (present.size() != count) return false;
  size_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!present[i]) continue;
    if (size - at < page_size) return false;
    (*out)[i] = pages + at;
    at += page_size;
  }
  return at == size;
}

std::string ConcatPages(std::span<const uint8_t* const> pages, size_t page_size) {
  std::string all;
  all.reserve(pages.size() * page_size);
  for (const uint8_t* p : pages) all.append(reinterpret_cast<const char*>(p), page_size);
  return all;
}

bool RunPages(const gen::PageRun& run, size_t count, size_t page_size,
              std::vector<const uint8_t*>* out) {
  return RunPages(run.present, reinterpret_cast<const uint8_t*>(run.pages.data()), run.pages.size(),
                  count, page_size, out);
}

bool UnpackRun(const gen::PageRun& run, size_t count, size_t page_size, uint8_t* out) {
  std::vector<const uint8_t*> pages;
  if (!RunPages(run, count, page_size, &pages)) return false;
  for (size_t i = 0; i < count; ++i) {
    if (pages[i] != nullptr) std::memcpy(out + i * page_size, pages[i], page_size);
  }
  return true;
}

void Throw(gen::ErrorCode::type code, const std::string& message, const std::string& node) {
  gen::TesseraError e;
  e.code = code;
  e.message = message;
  e.node = node;
  throw e;
}

Status FromError(const gen::TesseraError& e) {
  std::string msg = e.message + (e.node.empty() ? "" : " (node " + e.node + ")");
  switch (e.code) {
    case gen::ErrorCode::INVALID_ARGUMENT:
      return Status::InvalidArgument(msg);
    case gen::ErrorCode::UNAUTHENTICATED:
      return Status::InvalidArgument("unauthenticated: " + msg);
    case gen::ErrorCode::BUSY:
      return Status::Busy(msg);
    case gen::ErrorCode::NOT_FOUND:
      return Status::NotFound(msg);
    case gen::ErrorCode::NOT_LEADER:
    case gen::ErrorCode::UNAVAILABLE:
    case gen::ErrorCode::NOT_OWNER:
    case gen::ErrorCode::STALE_EPOCH:
      return Status::Unavailable(msg);
    default:
      return Status::Internal(msg);
  }
}

Result<DataDirLock> DataDirLock::Acquire(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create data directory '" + dir + "': " + ec.message());
  std::string path = dir + "/lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return Status::Busy("data directory '" + dir + "' is in use by another tessera process");
  }
  return DataDirLock(fd);
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace tessera::orchestrator
