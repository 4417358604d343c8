// The `tessera` binary's command-line contract: version, help, and exit code 2 with a helpful
// message for anything it does not understand. Runs the real binary.
#include <gtest/gtest.h>

#include "subprocess.h"
#include "tessera/common/version.h"

namespace tessera {
namespace {

using testing::RunCommand;

const std::string kBin = TESSERA_BIN;

TEST(CliTest, VersionFlag) {
  auto r = RunCommand({kBin, "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find(std::string("tessera ") + TESSERA_VERSION), std::string::npos) << r.out;
}

TEST(CliTest, HelpListsCommandsAndExitsZero) {
  auto r = RunCommand({kBin, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("demo"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("version"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--log-level"), std::string::npos) << r.out;
}

TEST(CliTest, UnknownCommandExitsTwoWithSuggestion) {
  auto r = RunCommand({kBin, "dmeo"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'dmeo'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Did you mean 'demo'?"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tessera --help"), std::string::npos) << r.err;
}

TEST(CliTest, UnknownCommandAfterGlobalOption) {
  auto r = RunCommand({kBin, "--log-level", "warn", "frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
}

TEST(CliTest, BadFlagExitsTwo) {
  auto r = RunCommand({kBin, "version", "--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tessera version --help"), std::string::npos) << r.err;
}

// Nothing listening at --manager (no manager running, a mistyped port): said after 3 s, where the
// requests used to retry for the whole --deadline-ms.
TEST(CliTest, NoManagerListeningIsSaidAtOnce) {
  testing::TempDir d;
  const std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  testing::Process status({kBin, "status", "--manager", addr, "--deadline-ms", "600000"},
                          d.File("status.log"));
  EXPECT_EQ(status.Wait(std::chrono::seconds(60)), 1) << "still retrying after 60 s";
  const std::string log = testing::ReadFile(d.File("status.log"));
  EXPECT_NE(log.find("no manager is listening at " + addr + " (connection refused for 3000 ms)"),
            std::string::npos)
      << log;
}

// A usage error in a nested command names that command, whose --help has the missing option
// (`tessera ec --help` lists only `encode` and `decode`).
TEST(CliTest, AUsageErrorInANestedCommandNamesIt) {
  auto r = RunCommand({kBin, "ec", "decode"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tessera ec decode: --out is required"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Run 'tessera ec decode --help'"), std::string::npos) << r.err;
  r = RunCommand({kBin, "ec"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("Run 'tessera ec --help'"), std::string::npos) << r.err;
  // A mistyped nested command gets the suggestion a mistyped command does.
  r = RunCommand({kBin, "--log-level", "warn", "ec", "decod", "x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tessera ec: unknown command 'decod'. Did you mean 'decode'?"),
            std::string::npos)
      << r.err;
}

// Counts and ports out of range are usage errors, not a load that never ends (-1 used to wrap to
// 2^64 - 1 keys) or an abort.
TEST(CliTest, OutOfRangeCountsAndPortsExitTwo) {
  for (const char* bad : {"-1", "0", "18446744073709551615", "many"}) {
    SCOPED_TRACE(bad);
    auto r = RunCommand({kBin, "load", "--count", bad, "--manager", "127.0.0.1:1"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--count"), std::string::npos) << r.err;
    r = RunCommand({kBin, "demo", "--keys", bad});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--keys"), std::string::npos) << r.err;
  }
  auto r = RunCommand({kBin, "demo", "--managers", "3", "47400", "47401", "65535"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("past 65535"), std::string::npos) << r.err;
}

TEST(CliTest, NoCommandExitsTwoAndShowsUsage) {
  auto r = RunCommand({kBin});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no command given"), std::string::npos) << r.err;
}

TEST(CliTest, BadLogLevelExitsTwo) {
  auto r = RunCommand({kBin, "--log-level", "loud", "version"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown log level 'loud'"), std::string::npos) << r.err;
  auto e = RunCommand({kBin, "version"}, "", {"TESSERA_LOG=shouty"});
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_NE(e.err.find("TESSERA_LOG"), std::string::npos) << e.err;
}

TEST(CliTest, VersionCommandReportsModules) {
  auto r = RunCommand({kBin, "version"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* m : {"common", "vmem", "erasure", "engine", "cluster"}) {
    EXPECT_NE(r.out.find(m), std::string::npos) << m << "\n" << r.out;
  }
}

}  // namespace
}  // namespace tessera
