#include "shared_readers.h"

#include <fcntl.h>
#include <signal.h>
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

Result<std::unique_ptr<SharedReaders>> SharedReaders::Open(const std::string& db_path) {
  static_assert(std::atomic_ref<uint64_t>::is_always_lock_free,
                "the reader table needs lock-free 64-bit atomics in shared memory");
  const std::string path = PathFor(db_path);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open reader table " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "stat reader table " + path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument("reader table " + path + " is not a regular file");
  }
  // Two processes may both create it: each only ever grows it to the same size, of zeros.
  if (static_cast<uint64_t>(st.st_size) < kBytes &&
      ::ftruncate(fd, static_cast<off_t>(kBytes)) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "size reader table " + path);
  }
  void* m = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (m == MAP_FAILED) return ErrnoStatus(err, "map reader table " + path);
  return std::unique_ptr<SharedReaders>(new SharedReaders(static_cast<uint64_t*>(m), path));
}

SharedReaders::~SharedReaders() {
  if (mine_ < kSlots) {
    Store(txnid(mine_), 0);
    // Only if still ours: a writer that took this process for dead (it was not) freed it.
    uint64_t expect = my_owner_;
    std::atomic_ref<uint64_t>(*owner(mine_)).compare_exchange_strong(expect, 0);
  }
  ::munmap(slots_, kBytes);
}

Status SharedReaders::Claim() {
  TESSERA_ASSERT(mine_ == kSlots, "reader table slot claimed twice");
  my_owner_ = (static_cast<uint64_t>(::getpid()) << 32) |
              g_next_local.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kSlots; ++i) {
    uint64_t expect = 0;
    if (std::atomic_ref<uint64_t>(*owner(i)).compare_exchange_strong(expect, my_owner_)) {
      Store(txnid(i), 0);
      mine_ = i;
      return Status::Ok();
    }
  }
  return Status::Busy("all " + std::to_string(kSlots) + " slots of reader table " + path_ +
                      " are taken (read-only Dbs open on the file)");
}

void SharedReaders::Publish(uint64_t txn) {
  TESSERA_ASSERT(mine_ < kSlots, "publishing a snapshot without a reader table slot");
  Store(txnid(mine_), txn);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void SharedReaders::AppendLive(std::vector<uint64_t>* live, bool check_owners) {
  // Pairs with Publish's fence: the meta the writer wrote before this is seen by a reader that
  // published after it, or this sees the reader's slot.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ >= std::chrono::seconds(1)) check_owners = true;
  if (check_owners) last_check_ = now;
  for (size_t i = 0; i < kSlots; ++i) {
    const uint64_t who = Load(owner(i));
    if (who == 0) continue;
    if (check_owners) {
      const pid_t pid = static_cast<pid_t>(who >> 32);
      if (::kill(pid, 0) != 0 && errno == ESRCH) {
        // Its process is gone: free the slot (unless it changed hands meanwhile).
        Store(txnid(i), 0);
        uint64_t expect = who;
        std::atomic_ref<uint64_t>(*owner(i)).compare_exchange_strong(expect, 0);
        continue;
      }
    }
    const uint64_t t = Load(txnid(i));
    if (t != 0) live->push_back(t);
  }
}

}  // namespace tessera::engine
