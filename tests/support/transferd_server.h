// The real transferd binary on a free loopback port with its own temporary
// data directory, started and waited for (health SERVING) by the test.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/support/subprocess.h"

namespace transferd::testing {

class TransferdServer {
 public:
  struct Options {
    std::vector<std::string> args;  // extra flags
    std::vector<std::string> env;   // extra "K=V" environment entries
    std::string data_dir;           // empty: a fresh temporary directory
    std::chrono::seconds ready_timeout{60};
    // Wait for SERVING in the constructor (else only start the process).
    bool wait_ready = true;
    // --listen address; empty: 127.0.0.1 on a free port. address() is where
    // clients connect (0.0.0.0 becomes 127.0.0.1).
    std::string listen;
    // How the readiness probe connects (TLS settings); address is ignored.
    client::ClientOptions client;
  };
  static Options WithArgs(std::vector<std::string> args) {
    Options o;
    o.args = std::move(args);
    return o;
  }
  static Options WithDataDir(std::string data_dir) {
    Options o;
    o.data_dir = std::move(data_dir);
    return o;
  }

  // Starts the server and waits until it reports SERVING; check ok().
  explicit TransferdServer(Options options);
  TransferdServer() : TransferdServer(Options{}) {}
  ~TransferdServer();

  // True once the server reported SERVING.
  bool ok() const { return ready_; }
  const std::string& address() const { return address_; }
  const std::string& data_dir() const { return data_dir_; }
  // Everything the server logged so far.
  std::string Log() const;
  Subprocess& process() { return *process_; }

  // Sends `signo` and waits up to `timeout` for the exit.
  std::optional<ExitStatus> Stop(int signo, std::chrono::milliseconds timeout);

 private:
  std::unique_ptr<TempDir> temp_;
  std::string data_dir_;
  std::string log_path_;
  std::string address_;
  std::unique_ptr<Subprocess> process_;
  bool ready_ = false;
};

// Paths of the binaries under test (set by CMake).
std::string TransferdBinary();
std::string TransferctlBinary();

}  // namespace transferd::testing
