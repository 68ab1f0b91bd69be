// Where the ranks of a data-parallel run meet (collective.h), without
// LibTorch: also read by the server's configuration (torchrun's
// environment).
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

namespace transferd::core::train {

// Where and how the ranks of a run meet: rank 0 hosts a TCPStore on
// master_port, every rank connects to master_addr:master_port.
struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  // The address this rank's Gloo connections use and tell the others (an
  // address of this host they can reach). Empty: GLOO_SOCKET_IFNAME's
  // interface, 127.0.0.1 when the master is on loopback, else the address
  // the host name resolves to.
  std::string local_addr;
  // Names this run's keys in the store, so a store could serve several runs.
  std::string run_id = "transferd";
  // Bounds the rendezvous and every collective: a rank that vanished fails
  // the others' next collective within this time (sooner when its
  // connections close).
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

// torchrun's (and Kubeflow PyTorchJob's) environment: MASTER_ADDR,
// MASTER_PORT, WORLD_SIZE, RANK. NOT_FOUND when WORLD_SIZE is unset;
// INVALID_ARGUMENT naming the variable that is missing or malformed.
absl::StatusOr<RendezvousOptions> RendezvousFromEnv();

}  // namespace transferd::core::train
