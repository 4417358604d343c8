#include "tessera/common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

namespace tessera {

Status InitLogging(std::string_view flag_level) {
  std::string level(flag_level);
  std::string source = "--log-level";
  if (level.empty()) {
    const char* env = std::getenv("TESSERA_LOG");
    if (env != nullptr && *env != '\0') {
      level = env;
      source = "TESSERA_LOG";
    } else {
      level = "info";
    }
  }
  auto parsed = spdlog::level::from_str(level);
  // from_str maps anything unknown to "off"; only accept "off" when it was asked for.
  if (parsed == spdlog::level::off && level != "off") {
    return Status::InvalidArgument(source + ": unknown log level '" + level +
                                   "' (use trace, debug, info, warn, error, critical or off)");
  }
  auto logger = spdlog::stderr_color_mt("tessera");
  spdlog::set_default_logger(logger);
  spdlog::set_level(parsed);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%P] %v");
  return Status::Ok();
}

}  // namespace tessera
