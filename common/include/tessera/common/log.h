// Logging setup for Tessera's processes (the `tessera` command, manager and workers).
//
// The libraries (vmem, engine, erasure) never log on their own: they return Status. Processes log
// through spdlog; the level comes from --log-level, else the TESSERA_LOG environment variable,
// else "info". Thread safety: call InitLogging once at start-up, before other threads exist.
#pragma once

#include <string_view>

#include "tessera/common/status.h"

namespace tessera {

// Accepts trace, debug, info, warn, error, critical, off. An empty `flag_level` falls back to
// TESSERA_LOG, then "info". Returns InvalidArgument naming the bad level and the valid ones.
Status InitLogging(std::string_view flag_level);

}  // namespace tessera
