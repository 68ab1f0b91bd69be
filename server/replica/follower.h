// The half of a serving replica that talks to the primary (transferd
// --follow): a Models.WatchAliases stream on the primary, and for every
// snapshot (a change, or the heartbeat every few seconds) a sync: each model
// an alias names that the replica lacks is pulled with Models.ExportModel,
// its bytes hashed as they arrive and checked against the SHA-256 the
// primary sends with the last chunk, then imported into the local registry
// (which checks the archive again); core::Replica then warms the models and
// moves the local aliases. A pull that fails or is refused is retried at
// once (kPullTries in all), then after a pause doubling from 5 s to 5 min.
//
// The primary is lost when the stream breaks (a killed primary closes its
// connections) or when nothing, not even a heartbeat, arrives for three
// heartbeats (a network that drops packets). The replica then keeps serving
// what it has, reports the loss (GetServerInfo's replica, the
// transferd_replica_* metrics) and reconnects with a backoff of up to a few
// seconds; the first snapshot after that catches it up.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace transferd::core {
class Engine;
}  // namespace transferd::core

namespace transferd::replica {

struct FollowerOptions {
  std::string primary;  // host:port
  // A file whose first line is the bearer token sent to the primary (a
  // viewer token is enough); empty: none.
  std::string token_file;
  // TLS to the primary: on when `tls` or any file is set. CA bundle (empty:
  // the system's roots), and a client certificate and key for mutual TLS.
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;  // overrides the name checked
  // Fault injection for tests: the first N pulls have one byte changed
  // on arrival, as a broken link would (the hash check must refuse them).
  int test_corrupt_pulls = 0;
  // Reconnect backoff, doubling from min to max.
  std::chrono::milliseconds min_backoff{250};
  std::chrono::milliseconds max_backoff{4000};
};

class Follower {
 public:
  // Reads the token file and starts following; INVALID_ARGUMENT when the
  // token file cannot be read. `engine` must be ready with a replica().
  static absl::StatusOr<std::unique_ptr<Follower>> Start(
      FollowerOptions options, core::Engine& engine);
  ~Follower();  // Stop()
  Follower(const Follower&) = delete;
  Follower& operator=(const Follower&) = delete;

  // Ends the watch and any pull or warm-up under way, and joins. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit Follower(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace transferd::replica
