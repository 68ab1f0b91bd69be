// A worker transferd's side of data-parallel training (transferd
// --coordinator ADDR): a Cluster.Join stream to the coordinator that makes
// this server a member, and for each rank the coordinator assigns:
//   1. the dataset's files it lacks, fetched by SHA-256 (Cluster.
//      FetchContent), each checked against its hash and the per-file limit
//      and kept in <data-dir>/cache/cluster-content/ (a later run on the
//      same data fetches nothing);
//   2. a "ready" report, then the run's c10d process group (rank 0 is the
//      coordinator, which hosts the TCPStore);
//   3. the engine's Trainer as that rank (weights from rank 0), and a final
//      report (Cluster.ReportRank) with what it fetched.
// One rank at a time; an assignment that arrives while a rank runs is
// refused in a report. The stream breaking (the coordinator gone) leaves a
// running rank to end on its own (its collectives fail within the
// timeout) and reconnects with a backoff.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace transferd::core {
class Engine;
}  // namespace transferd::core

namespace transferd::cluster {

struct WorkerOptions {
  std::string coordinator;  // host:port
  std::string name;         // unique among the coordinator's workers
  // A file whose first line is the bearer token (a "worker" or admin
  // token of the coordinator); empty: none.
  std::string token_file;
  // TLS to the coordinator, as --follow's: on when `tls` or any file is set.
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  // The address of this host the other ranks reach it at (Gloo); empty:
  // what the host name resolves to.
  std::string advertise_address;
  std::chrono::milliseconds min_backoff{250};
  std::chrono::milliseconds max_backoff{4000};
};

class Worker {
 public:
  // Reads the token file and starts joining; INVALID_ARGUMENT when the token
  // file has no token. `engine` must be started as a worker.
  static absl::StatusOr<std::unique_ptr<Worker>> Start(WorkerOptions options,
                                                       core::Engine& engine);
  ~Worker();  // Stop()
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Leaves the cluster and ends a running rank (its Trainer is cancelled).
  // Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace transferd::cluster
