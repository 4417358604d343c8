// The `tessera` command: one binary, many subcommands.
//
// Each module contributes its subcommands through a Register* function that adds them to the CLI11
// app and sets `action` when the subcommand is chosen. Exit codes: 0 success, 1 the command ran
// and failed (or found a problem, e.g. verify), 2 bad usage (unknown command, bad flag).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace tessera::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Context {
  std::string log_level;        // --log-level, empty = TESSERA_LOG or info
  std::function<int()> action;  // set by the chosen subcommand's callback
};

// Runs the command line; returns the process exit code. Never throws.
int Run(int argc, char** argv);

// Subcommand registration, one per module (see the *_commands.cc files).
void RegisterInfoCommands(CLI::App& app, Context& ctx);
void RegisterEcCommands(CLI::App& app, Context& ctx);
void RegisterEngineCommands(CLI::App& app, Context& ctx);
void RegisterClusterCommands(CLI::App& app, Context& ctx);
void RegisterDemoCommand(CLI::App& app, Context& ctx);

// Closest name in `candidates` to `word` by edit distance, or "" when nothing is close.
std::string Suggest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace tessera::cli
