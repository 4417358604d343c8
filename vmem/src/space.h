// Disk-space reservation for a growing file: the part of Region::Grow that talks to the
// filesystem, kept separate so tests can drive the fallback path on any filesystem.
//
// Thread safety: plain functions over a file descriptor; the caller serialises calls on one file.
#pragma once

#include <cstdint>
#include <string_view>

#include "tessera/common/status.h"

namespace tessera::vmem::internal {

enum class SpaceMethod {
  kAuto,        // fallocate, falling back to kWriteZeros when the filesystem lacks it
  kWriteZeros,  // ftruncate, then write zeros over the new range so every block is allocated
};

// Extends the file behind `fd` from `old_size` to `new_size` bytes with every new block allocated,
// so a later store through a shared mapping cannot fail for lack of space. On error the file is
// cut back to `old_size` and the error is returned: NoSpace for a full disk or a file-size limit
// (RLIMIT_FSIZE), IoError otherwise. `what` names the file in messages.
Status ReserveSpace(int fd, uint64_t old_size, uint64_t new_size, std::string_view what,
                    SpaceMethod method = SpaceMethod::kAuto);

}  // namespace tessera::vmem::internal
