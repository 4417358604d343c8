// `tessera ec encode` and `tessera ec decode`: erasure-code a file into shard files and rebuild it.
// The format and the streaming live in tessera/erasure/shard_file.h; this file parses flags, shows
// progress and turns a Status into a message and an exit code.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "tessera/common/errors.h"
#include "tessera/erasure/codec.h"
#include "tessera/erasure/shard_file.h"

namespace tessera::cli {
namespace {

// Files at least this large show progress unless --quiet; smaller ones finish before it matters.
constexpr uint64_t kProgressMinBytes = uint64_t{64} << 20;
// A progress line is redrawn at most this often on a terminal.
constexpr auto kProgressInterval = std::chrono::milliseconds(250);

struct EncodeArgs {
  std::string scheme = "rs";
  int k = 4;
  int m = 2;
  uint32_t chunk_size = 0;
  bool progress = false;
  bool quiet = false;
  std::string file;
};

struct DecodeArgs {
  std::string out;
  bool progress = false;
  bool quiet = false;
  std::vector<std::string> shards;
};

// Progress on stderr: redrawn in place on a terminal, one line per tenth otherwise (logs).
class ProgressPrinter {
 public:
  ProgressPrinter(std::string what, bool forced, bool quiet)
      : what_(std::move(what)), forced_(forced), quiet_(quiet), tty_(::isatty(2) != 0) {}

  void Update(uint64_t done, uint64_t total) {
    if (quiet_ || (!forced_ && std::max(done, total) < kProgressMinBytes)) return;
    const int pct = total > 0 ? static_cast<int>(done * 100 / total) : -1;
    const auto now = std::chrono::steady_clock::now();
    if (tty_) {
      if (done != total && now - last_ < kProgressInterval) return;
      last_ = now;
      std::fprintf(stderr, "\r%s", Line(done, total, pct).c_str());
      shown_ = true;
    } else {
      const int tenth = pct < 0 ? static_cast<int>(done >> 30) : pct / 10;
      if (tenth == last_tenth_ && done != total) return;
      last_tenth_ = tenth;
      std::fprintf(stderr, "%s\n", Line(done, total, pct).c_str());
    }
  }

  ~ProgressPrinter() {
    if (shown_) std::fprintf(stderr, "\n");
  }

 private:
  std::string Line(uint64_t done, uint64_t total, int pct) const {
    char buf[160];
    constexpr double kMiB = 1024.0 * 1024.0;
    if (pct >= 0) {
      std::snprintf(buf, sizeof(buf), "%s: %.1f of %.1f MiB (%d%%)", what_.c_str(),
                    static_cast<double>(done) / kMiB, static_cast<double>(total) / kMiB, pct);
    } else {
      std::snprintf(buf, sizeof(buf), "%s: %.1f MiB", what_.c_str(),
                    static_cast<double>(done) / kMiB);
    }
    return buf;
  }

  std::string what_;
  bool forced_;
  bool quiet_;
  bool tty_;
  bool shown_ = false;
  int last_tenth_ = -1;
  std::chrono::steady_clock::time_point last_{};
};

// Bad scheme or shard counts are usage errors (exit 2); anything else is a failure (exit 1).
int Fail(const char* cmd, const Status& s) {
  std::fprintf(stderr, "tessera ec %s: %s\n", cmd, s.message().c_str());
  const int c = ToCError(s);
  if (c == TESSERA_BAD_SCHEME || c == TESSERA_BAD_SHARD_COUNT) {
    std::fprintf(stderr, "Run 'tessera ec %s --help' for usage.\n", cmd);
    return kExitUsage;
  }
  return kExitFailure;
}

int RunEncode(const EncodeArgs& a) {
  auto scheme = erasure::ParseScheme(a.scheme);
  if (!scheme.ok()) return Fail("encode", scheme.status());
  // Validate the shape before touching any file, so a typo fails fast and clearly.
  if (auto c = erasure::Codec::Create(*scheme, a.k, a.m); !c.ok())
    return Fail("encode", c.status());
  ProgressPrinter progress("encoding " + a.file, a.progress, a.quiet);
  erasure::EncodeFileOptions opts;
  opts.scheme = *scheme;
  opts.k = a.k;
  opts.m = a.m;
  opts.chunk_size = a.chunk_size;
  opts.progress = [&progress](uint64_t done, uint64_t total) { progress.Update(done, total); };
  auto paths = erasure::EncodeFile(a.file, opts);
  if (!paths.ok()) return Fail("encode", paths.status());
  if (!a.quiet) {
    std::printf("%s: wrote %zu shards (%s %d+%d): %s … %s\n", a.file.c_str(), paths->size(),
                a.scheme.c_str(), a.k, a.m, paths->front().c_str(), paths->back().c_str());
  }
  return kExitOk;
}

int RunDecode(const DecodeArgs& a) {
  ProgressPrinter progress("decoding " + a.out, a.progress, a.quiet);
  auto report = erasure::DecodeFile(a.shards, a.out, [&progress](uint64_t done, uint64_t total) {
    progress.Update(done, total);
  });
  if (!report.ok()) return Fail("decode", report.status());
  for (const auto& s : report->skipped) {
    std::fprintf(stderr, "tessera ec decode: treating %s as erased: %s\n", s.path.c_str(),
                 s.reason.c_str());
  }
  if (!a.quiet) {
    const auto& h = report->header;
    std::string erased;
    for (int e : report->erased) erased += (erased.empty() ? "" : ",") + std::to_string(e);
    std::printf("%s: rebuilt %llu bytes (%s %d+%d); missing or damaged shards: %s\n", a.out.c_str(),
                static_cast<unsigned long long>(report->length),
                std::string(erasure::SchemeName(h.scheme)).c_str(), h.k, h.m,
                erased.empty() ? "none" : erased.c_str());
  }
  return kExitOk;
}

}  // namespace

void RegisterEcCommands(CLI::App& app, Context& ctx) {
  auto* ec = app.add_subcommand("ec", "Erasure-code a file into shard files, or rebuild it");
  ec->require_subcommand(1);

  auto enc_args = std::make_shared<EncodeArgs>();
  auto* enc = ec->add_subcommand(
      "encode", "Write FILE.0 … FILE.<k+m-1>: k data shards and m parity shards with checksums");
  enc->add_option("--scheme", enc_args->scheme, "xor, rs or rs-cauchy")->capture_default_str();
  enc->add_option("-k,--k", enc_args->k, "Number of data shards")->capture_default_str();
  enc->add_option("-m,--m", enc_args->m, "Number of parity shards (xor: 1)")->capture_default_str();
  enc->add_option("--chunk-size", enc_args->chunk_size,
                  "Bytes per shard per stripe (default: min(1 MiB, file size / k))");
  enc->add_flag("--progress", enc_args->progress, "Always show progress on stderr");
  enc->add_flag("-q,--quiet", enc_args->quiet, "No progress and no summary");
  enc->add_option("FILE", enc_args->file, "File to encode")->required();
  enc->callback([&ctx, enc_args] { ctx.action = [enc_args] { return RunEncode(*enc_args); }; });

  auto dec_args = std::make_shared<DecodeArgs>();
  auto* dec = ec->add_subcommand(
      "decode", "Rebuild a file from any k intact shard files (damaged ones count as erased)");
  dec->add_option("-o,--out", dec_args->out, "Where to write the rebuilt file")->required();
  dec->add_flag("--progress", dec_args->progress, "Always show progress on stderr");
  dec->add_flag("-q,--quiet", dec_args->quiet, "No progress and no summary");
  dec->add_option("SHARDS", dec_args->shards, "Shard files, e.g. FILE.*")->required();
  dec->callback([&ctx, dec_args] { ctx.action = [dec_args] { return RunDecode(*dec_args); }; });
}

}  // namespace tessera::cli
