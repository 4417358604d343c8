// Test support: run real programs as child processes.
//
// RunCommand runs a program to completion and captures its output; Process starts one in the
// background so a test can SIGKILL it. Thread safety: one object per thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace tessera::testing {

struct CommandResult {
  int exit_code = -1;  // exit status, or -signal when killed by a signal
  std::string out;     // everything written to stdout
  std::string err;     // everything written to stderr
};

// Runs argv[0] with the given arguments (no shell), optional stdin text and extra environment
// entries ("K=V"), and waits for it. Aborts the test process only if fork itself fails.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_text = "",
                         const std::vector<std::string>& env = {});

// A background child whose stdout and stderr go to a log file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::vector<std::string>& env = {});
  ~Process();  // SIGKILLs the child if it is still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  // Sends `sig`; for SIGKILL, also waits until the child is gone (and reaped).
  void Kill(int sig);
  // Waits for exit up to `timeout`; returns the exit code (or -signal), or -1000 on timeout.
  int Wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
};

// A loopback TCP port that was free a moment ago, for a child to listen on: below the ephemeral
// range and never handed out twice by one process.
int FreePort();

// A fresh directory under $TMPDIR (or /tmp), removed with its contents by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path);

// Every *.log file in `dir`, each under a "==== name" line; with `tail`, only the last `tail`
// bytes of each (a failing test's message stays readable).
std::string LogsIn(const std::string& dir, size_t tail = 0);

// Manager flags the cluster tests share: 16 shards and fast heartbeats (a down node is noticed
// within a second).
inline std::vector<std::string> FastManagerFlags() {
  return {"--shards", "16", "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1000"};
}

}  // namespace tessera::testing
