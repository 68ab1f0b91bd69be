// The compute device, chosen once at start from configuration. Everything
// that allocates tensors asks the engine for this device; nothing else in
// the code names "cpu" or "cuda", so a CUDA build of LibTorch runs the same
// code on a GPU.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace transferd::core {

struct DeviceOptions {
  // "auto" (first CUDA device if LibTorch sees one, else cpu), "cpu",
  // "cuda" (= cuda:0) or "cuda:N".
  std::string device = "auto";
  // Intra-op CPU threads; 0 = one per CPU in the affinity mask.
  int threads = 0;
  // Default compute precision for jobs and models that leave it unset:
  // "auto" (bf16 where the device computes bf16 natively: CUDA, or a CPU with
  // AVX512-BF16/AMX; else fp32), "fp32" or "bf16". bench/ and the ImageNet
  // probe test show bf16 autocast leaves accuracy unchanged.
  std::string precision = "auto";
};

struct ComputeDevice {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = -1;            // CUDA ordinal, -1 for cpu
  std::string name;          // "cpu" or "cuda:N"
  std::string description;   // CPU model name or "CUDA device N"
  int threads = 0;           // intra-op threads in force
  int64_t memory_bytes = 0;  // host memory for cpu; 0 when unknown
  std::string precision;     // resolved default: "fp32" or "bf16"
};

// Parses `options.device` and checks it against what LibTorch can use.
// INVALID_ARGUMENT for a malformed spec, FAILED_PRECONDITION when CUDA is
// asked for but unavailable. Applies `options.threads` to LibTorch.
absl::StatusOr<ComputeDevice> SelectDevice(const DeviceOptions& options);

}  // namespace transferd::core
