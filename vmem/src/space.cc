#include "space.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

namespace tessera::vmem::internal {
namespace {

// Zeros are written in chunks: big enough to keep the syscall count low, small enough not to
// matter as a temporary allocation.
constexpr uint64_t kZeroChunk = uint64_t{1} << 20;

Status WriteZeros(int fd, uint64_t from, uint64_t to, std::string_view what) {
  if (ftruncate(fd, static_cast<off_t>(to)) != 0) {
    return ErrnoStatus(errno, std::string("ftruncate ") + std::string(what));
  }
  // ftruncate alone leaves a hole; writing zeros makes the filesystem allocate the blocks now,
  // which is where a full disk is reported.
  std::vector<char> zeros(std::min(kZeroChunk, to - from), 0);
  uint64_t off = from;
  while (off < to) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), to - off));
    ssize_t w = pwrite(fd, zeros.data(), n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, std::string("writing zeros to ") + std::string(what));
    }
    off += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

}  // namespace

Status ReserveSpace(int fd, uint64_t old_size, uint64_t new_size, std::string_view what,
                    SpaceMethod method) {
  if (new_size <= old_size) return Status::Ok();
  Status st;
  bool fallback = method == SpaceMethod::kWriteZeros;
  if (!fallback) {
    int rc;
    do {
      rc = fallocate(fd, 0, static_cast<off_t>(old_size), static_cast<off_t>(new_size - old_size));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      // Filesystems without fallocate (some network and FUSE filesystems) say EOPNOTSUPP; the
      // zero-writing path gives the same guarantee, only slower.
      if (errno == EOPNOTSUPP) {
        fallback = true;
      } else {
        st = ErrnoStatus(errno, std::string("fallocate ") + std::string(what));
      }
    }
  }
  if (fallback) st = WriteZeros(fd, old_size, new_size, what);
  if (!st.ok()) {
    // A failed fallocate or write may have allocated part of the range or moved the file size;
    // cutting back keeps the invariant that the file is exactly as long as the mapped pages.
    // The cut only shrinks the file, so it cannot itself run into the space limit.
    (void)!ftruncate(fd, static_cast<off_t>(old_size));
  }
  return st;
}

}  // namespace tessera::vmem::internal
