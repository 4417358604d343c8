#include "shared_readers.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "tessera/common/assert.h"

namespace tessera::engine {

namespace {

uint64_t Load(uint64_t* p) { return std::atomic_ref<uint64_t>(*p).load(std::memory_order_seq_cst); }
void Store(uint64_t* p, uint64_t v) {
  std::atomic_ref<uint64_t>(*p).store(v, std::memory_order_seq_cst);
}

// A number for each SharedReaders a process makes, so that two read-only Dbs of one process
// have distinct owners.
std::atomic<uint32_t> g_next_local{1};

}  // namespace

Result<std::unique_ptr<SharedReaders>> SharedReaders::Open(const std::string& db_path,
                                                           bool writer) {
  static_assert(std::atomic_ref<uint64_t>::is_always_lock_free,
                "the reader table needs lock-free 64-bit atomics in shared memory");
  const std::string path = PathFor(db_path);
  bool writable = true;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 && writer && (errno == EACCES || errno == EROFS || errno == EPERM)) {
    writable = false;
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return ErrnoStatus(errno, "open reader table " + path);
  auto fail = [fd, &path](int err, const char* what) {
    ::close(fd);
    return ErrnoStatus(err, std::string(what) + " reader table " + path);
  };
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(errno, "stat");
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument("reader table " + path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) < kBytes) {
    // Two processes may both create it: each only ever grows it to the same size, of zeros.
    if (!writable) {
      ::close(fd);
      return Status::InvalidArgument("reader table " + path + " is short and not writable");
    }
    if (::ftruncate(fd, static_cast<off_t>(kBytes)) != 0) return fail(errno, "size");
  }
  void* m =
      ::mmap(nullptr, kBytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return fail(errno, "map");
  return std::unique_ptr<SharedReaders>(
      new SharedReaders(static_cast<uint64_t*>(m), fd, writable, path));
}

SharedReaders::~SharedReaders() {
  if (mine_ < kSlots) Clear(mine_);  // the slot is still ours: we hold its lock
  ::munmap(slots_, kBytes);
  ::close(fd_);  // drops the lock on our slot's byte, after the slot was cleared
}

namespace {
// A lock of `type` on byte i of the table.
struct flock ByteLock(size_t i, short type) {
  struct flock l = {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = static_cast<off_t>(i);
  l.l_len = 1;
  return l;
}
}  // namespace

bool SharedReaders::Lock(size_t i) const {
  struct flock l = ByteLock(i, F_WRLCK);
  return ::fcntl(fd_, F_OFD_SETLK, &l) == 0;
}

bool SharedReaders::Orphaned(size_t i) const {
  // A read lock conflicts with the owner's write lock; a failed probe counts as owned.
  struct flock l = ByteLock(i, F_RDLCK);
  if (::fcntl(fd_, F_OFD_GETLK, &l) != 0) return false;
  return l.l_type == F_UNLCK;
}

void SharedReaders::Clear(size_t i) {
  Store(txnid(i), 0);
  Store(owner(i), 0);
}

Status SharedReaders::Claim() {
  TESSERA_ASSERT(mine_ == kSlots, "reader table slot claimed twice");
  TESSERA_ASSERT(writable_, "claiming a slot of a read-only reader table");
  const uint64_t me = (static_cast<uint64_t>(::getpid()) << 32) |
                      g_next_local.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kSlots; ++i) {
    // The byte's lock is the slot: whoever gets it owns the slot, and a slot left set by a
    // process that died (nobody holds its byte) is taken over.
    if (!Lock(i)) continue;
    Store(txnid(i), 0);
    Store(owner(i), me);
    mine_ = i;
    return Status::Ok();
  }
  return Status::Busy("all " + std::to_string(kSlots) + " slots of reader table " + path_ +
                      " are taken (read-only Dbs open on the file)");
}

void SharedReaders::Publish(uint64_t txn) {
  TESSERA_ASSERT(mine_ < kSlots, "publishing a snapshot without a reader table slot");
  Store(txnid(mine_), txn);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void SharedReaders::AppendLive(std::vector<uint64_t>* live) const {
  // Pairs with Publish's fence: the meta the writer wrote before this is seen by a reader that
  // published after it, or this sees the reader's slot.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (size_t i = 0; i < kSlots; ++i) {
    const uint64_t t = Load(txnid(i));
    // A pin whose byte nobody locks was left by a process that died: it counts for nothing (and
    // the next claimer of the slot overwrites it). The probe is made afresh at every call: a
    // claimer that locks the byte after it publishes, fences and checks the metas as any other.
    if (t != 0 && !Orphaned(i)) live->push_back(t);
  }
}

}  // namespace tessera::engine
