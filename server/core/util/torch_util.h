// LibTorch helpers shared by the trainer and the predictor. Includes
// LibTorch: for .cc files only.
#pragma once

#include <algorithm>

#include <ATen/autocast_mode.h>
#include <torch/types.h>

#include "server/core/device.h"

namespace transferd::core {

inline torch::Device ToTorchDevice(const ComputeDevice& d) {
  if (d.kind == ComputeDevice::Kind::kCuda) {
    return torch::Device(torch::kCUDA,
                         static_cast<c10::DeviceIndex>(std::max(d.index, 0)));
  }
  return torch::Device(torch::kCPU);
}

// For the scope, bf16 autocast exactly when `on`, on the device's autocast
// key: off turns autocast off whatever the thread had (a Predict batch that a
// training step runs at its yield point must not inherit the step's
// autocast).
class AutocastScope {
 public:
  AutocastScope(bool on, const torch::Device& device)
      : on_(on), cuda_(device.is_cuda()) {
    if (cuda_) {
      prev_enabled_ = at::autocast::is_enabled();
      prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
      if (on_) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(on_);
    } else {
      prev_enabled_ = at::autocast::is_cpu_enabled();
      prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
      if (on_) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(on_);
    }
    if (on_) at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (on_ && at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    if (cuda_) {
      at::autocast::set_enabled(prev_enabled_);
      at::autocast::set_autocast_gpu_dtype(prev_dtype_);
    } else {
      at::autocast::set_cpu_enabled(prev_enabled_);
      at::autocast::set_autocast_cpu_dtype(prev_dtype_);
    }
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_, cuda_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

}  // namespace transferd::core
