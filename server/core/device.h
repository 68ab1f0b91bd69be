// The compute device, chosen once at start from configuration. Everything
// that allocates tensors asks the engine for this device; nothing else in
// the code names "cpu" or "cuda", so a CUDA build of LibTorch runs the same
// code on a GPU.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/util/cpu_features.h"

namespace transferd::core {

struct DeviceOptions {
  // "auto" (first CUDA device if LibTorch sees one, else cpu), "cpu",
  // "cuda" (= cuda:0) or "cuda:N".
  std::string device = "auto";
  // Intra-op CPU threads; 0 = one per CPU in the affinity mask.
  int threads = 0;
  // Default compute precision for jobs and models that leave it unset:
  // "auto" (bf16 where the device computes bf16 natively, HasNativeBf16;
  // else fp32), "fp32" or "bf16". bench/ and the ImageNet probe test show
  // bf16 autocast leaves accuracy unchanged.
  std::string precision = "auto";
};

struct ComputeDevice {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = -1;            // CUDA ordinal, -1 for cpu
  std::string name;          // "cpu" or "cuda:N"
  std::string description;   // CPU model name or the GPU's ("NVIDIA A100...")
  std::string capability;    // CUDA compute capability ("8.0"); "" for cpu
  bool native_bf16 = false;  // bf16 arithmetic in hardware (HasNativeBf16)
  int threads = 0;           // intra-op threads in force
  int64_t memory_bytes = 0;  // host memory (cpu), device memory (CUDA); 0: ?
  std::string precision;     // resolved default: "fp32" or "bf16"
};

// Whether `device` computes bf16 natively: a CUDA device of compute
// capability 8.0 or newer (Ampere and later; T4 is 7.5 and V100 7.0, which
// emulate bf16 slowly), or a CPU with AVX512-BF16 or AMX-BF16 (`cpu`).
bool HasNativeBf16(const ComputeDevice& device, const CpuFeatures& cpu);

// The default precision for `requested` ("auto", "fp32" or "bf16"): "auto"
// is bf16 where `native_bf16`, else fp32. INVALID_ARGUMENT for other values.
absl::StatusOr<std::string> ResolvePrecision(const std::string& requested,
                                             bool native_bf16);

// Parses `options.device` and checks it against what LibTorch can use.
// INVALID_ARGUMENT for a malformed spec, FAILED_PRECONDITION when CUDA is
// asked for but unavailable. Applies `options.threads` to LibTorch.
absl::StatusOr<ComputeDevice> SelectDevice(const DeviceOptions& options);

// Bytes the device's allocator holds for live tensors now (CUDA's caching
// allocator); -1 where not measured (cpu, or a LibTorch without CUDA).
int64_t DeviceAllocatedBytes(const ComputeDevice& device);

}  // namespace transferd::core
