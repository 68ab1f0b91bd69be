// Child processes for integration tests: spawn a binary, signal it, wait for
// it with a timeout (pidfd + poll: no sleeping), or run it to completion
// capturing stdout and stderr.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace transferd::testing {

struct ExitStatus {
  bool exited = false;  // exited normally (else killed by a signal)
  int code = -1;        // exit code when exited
  int signal = 0;       // terminating signal otherwise
};

class Subprocess {
 public:
  // Starts argv[0] with the current environment plus `env` ("K=V"), with
  // stdout and stderr appended to `log_path`. Aborts the test binary if the
  // process cannot be started.
  static Subprocess Spawn(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env,
                          const std::string& log_path);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&&) = delete;
  // Kills (SIGKILL) and reaps the process if it is still running.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  void Signal(int signo) const;
  bool Running();
  // Waits up to `timeout` for the process to end; nullopt on timeout.
  std::optional<ExitStatus> Wait(std::chrono::milliseconds timeout);

 private:
  Subprocess(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}

  pid_t pid_;
  int pidfd_;
  std::optional<ExitStatus> status_;
};

struct RunResult {
  ExitStatus status;
  std::string out;
  std::string err;
};

// Runs a command to completion (killing it after `timeout`), capturing its
// output. `env` entries ("K=V") are added to the environment; entries "K="
// with an empty value remove K.
RunResult Run(const std::vector<std::string>& argv,
              const std::vector<std::string>& env = {},
              std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A loopback TCP port that was free a moment ago, never one this process
// was given before.
int FreeLoopbackPort();

// A fresh directory under $TMPDIR (or /tmp), removed by ~TempDir.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace transferd::testing
