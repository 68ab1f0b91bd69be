// RMSprop whose update runs as one pass over each parameter.
//
// torch::optim::RMSprop (without momentum or centring) walks a parameter's
// memory about six times per step: square_avg *= rho; square_avg += (1 - rho)
// g^2; a new tensor sqrt(square_avg); += eps; p += -lr g / avg. On a CPU that
// traffic is most of the head's update (a Flatten head over MobileNet's 7x7x256
// features has 3.2M weights). FusedRMSprop computes the same formula in one
// loop (reading p, g and square_avg once and writing p and square_avg once).
// It is an RMSprop: same options, same per-parameter state, same
// serialisation, so its checkpoints load into torch::optim::RMSprop and back.
// Where the one-pass loop does not apply (momentum, centred, weight decay, a
// tensor that is not a dense contiguous float32 CPU tensor) the step is
// RMSprop's own. Results equal RMSprop's up to float rounding (ATen's kernels
// may contract multiply-adds into FMA; this loop does not), tested.
#pragma once

#include <utility>
#include <vector>

#include <torch/optim/rmsprop.h>

namespace transferd::core::train {

class FusedRMSprop : public torch::optim::RMSprop {
 public:
  FusedRMSprop(std::vector<torch::Tensor> params,
               torch::optim::RMSpropOptions options)
      : torch::optim::RMSprop(std::move(params), options) {}

  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace transferd::core::train
