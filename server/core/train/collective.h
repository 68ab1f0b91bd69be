// The ranks of one data-parallel training run and the collectives they share
// (torch c10d: Gloo on CPU, NCCL on CUDA where LibTorch has it).
//
// Every rank runs the same Trainer::Run with its own Collective; the trainer
// calls the collectives in the same order on every rank. A world of size 1
// (SoloCollective) is the single-process job: the same code path, each
// collective returning at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "server/core/train/rendezvous.h"

namespace transferd::core::train {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "solo", "gloo" or "nccl".
  virtual std::string backend() const = 0;
  // Each tensor (contiguous, on the run's device) becomes the sum of its
  // values on all ranks. UNAVAILABLE when a peer is gone or the timeout
  // passed; the group is then unusable.
  virtual absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // Each tensor becomes rank `root`'s.
  virtual absl::Status Broadcast(std::vector<torch::Tensor>& tensors,
                                 int root) = 0;
  // Seconds spent in collectives (waiting included) since the start.
  double seconds() const { return seconds_; }

 protected:
  double seconds_ = 0;
};

// One process alone: rank 0 of a world of size 1.
std::shared_ptr<Collective> SoloCollective();

// Joins the run's process group (blocks until every rank has joined, up to
// the timeout). Gloo for CPU devices; NCCL for CUDA when LibTorch was built
// with it, else Gloo. UNAVAILABLE when the rendezvous fails; UNIMPLEMENTED
// when this build has no c10d.
absl::StatusOr<std::shared_ptr<Collective>> JoinProcessGroup(
    const RendezvousOptions& options, const torch::Device& device);

// Whether this build can join process groups (c10d with Gloo).
bool HasDistributedBackend();

}  // namespace transferd::core::train
