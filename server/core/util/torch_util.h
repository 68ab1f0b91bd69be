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

// bf16 autocast for the scope, on the device's autocast key.
class AutocastScope {
 public:
  AutocastScope(bool on, const torch::Device& device)
      : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
    if (cuda_) {
      prev_enabled_ = at::autocast::is_enabled();
      prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      prev_enabled_ = at::autocast::is_cpu_enabled();
      prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
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
