#include "server/core/device.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
// Only a CUDA LibTorch has these (CMake defines TRANSFERD_WITH_CUDA for it;
// docs/building.md, "A CUDA build", says how to compile this branch).
#if TRANSFERD_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/core/util/cpu_features.h"

namespace transferd::core {
namespace {

// OpenBLAS (Debian's libopenblas0-pthread, behind LibTorch's matrix
// products) keeps its own worker pool whose threads spin between calls; next
// to LibTorch's intra-op threads and the loader's they took a third of the
// CPU during training and made the heads' matrix products and optimizer steps
// about twice as slow. Convolutions go through oneDNN and use the intra-op
// threads; the remaining products (dense heads) are small, so OpenBLAS runs
// in the calling thread unless OPENBLAS_NUM_THREADS says otherwise.
void SingleThreadedBlas() {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  using SetThreads = void (*)(int);
  if (void* symbol = dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) {
    reinterpret_cast<SetThreads>(symbol)(1);
  }
}

int64_t HostMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<int64_t>(pages) * page_size;
}

absl::StatusOr<ComputeDevice> CudaDevice(int index) {
  const int count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device cuda:", index,
        " requested but LibTorch sees no CUDA device (this LibTorch is ",
        torch::cuda::is_available() ? "CUDA-enabled" : "a CPU-only build",
        "); use --device cpu or build against a CUDA LibTorch"));
  }
  if (index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device cuda:", index, " requested but only ", count,
                     " CUDA device(s) are visible"));
  }
  ComputeDevice d;
  d.kind = ComputeDevice::Kind::kCuda;
  d.index = index;
  d.name = absl::StrCat("cuda:", index);
  d.description = absl::StrCat("CUDA device ", index);
#if TRANSFERD_WITH_CUDA
  const cudaDeviceProp* props = at::cuda::getDeviceProperties(index);
  d.description = props->name;
  d.capability = absl::StrCat(props->major, ".", props->minor);
  d.memory_bytes = static_cast<int64_t>(props->totalGlobalMem);
  // The caching allocator is set up by the first tensor on the device; its
  // statistics (DeviceAllocatedBytes) throw before that.
  (void)torch::empty({1}, torch::TensorOptions().device(torch::kCUDA, index));
#endif
  return d;
}

}  // namespace

bool HasNativeBf16(const ComputeDevice& device, const CpuFeatures& cpu) {
  if (device.kind == ComputeDevice::Kind::kCpu) {
    return cpu.avx512_bf16 || cpu.amx_bf16;
  }
  int major = 0;
  absl::string_view capability = device.capability;
  const size_t dot = capability.find('.');
  return absl::SimpleAtoi(capability.substr(0, dot), &major) && major >= 8;
}

absl::StatusOr<std::string> ResolvePrecision(const std::string& requested,
                                             bool native_bf16) {
  if (requested == "auto") return std::string(native_bf16 ? "bf16" : "fp32");
  if (requested == "fp32" || requested == "bf16") return requested;
  return absl::InvalidArgumentError(absl::StrCat(
      "precision \"", requested, "\": expected auto, fp32 or bf16"));
}

int64_t DeviceAllocatedBytes(const ComputeDevice& device) {
  if (device.kind != ComputeDevice::Kind::kCuda) return -1;
#if TRANSFERD_WITH_CUDA
  // Index 0 of the stat arrays is the aggregate over the small and large
  // pools (StatType::AGGREGATE in every LibTorch since 1.x).
  try {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index)
        .allocated_bytes[0]
        .current;
  } catch (const std::exception&) {
    return -1;  // the allocator is not initialised: nothing to count
  }
#else
  return -1;
#endif
}

absl::StatusOr<ComputeDevice> SelectDevice(const DeviceOptions& options) {
  if (options.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "threads must be >= 0 (0 = all CPUs), got ", options.threads));
  }
  absl::StatusOr<ComputeDevice> device;
  absl::string_view spec = options.device;
  if (spec == "auto") {
    if (torch::cuda::is_available()) {
      device = CudaDevice(0);
    } else {
      device = ComputeDevice{};
    }
  } else if (spec == "cpu") {
    device = ComputeDevice{};
  } else if (spec == "cuda") {
    device = CudaDevice(0);
  } else if (absl::ConsumePrefix(&spec, "cuda:")) {
    int index = -1;
    if (!absl::SimpleAtoi(spec, &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device \"", options.device, "\": expected cuda:N with N >= 0"));
    }
    device = CudaDevice(index);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", options.device,
                     "\": expected one of auto, cpu, cuda, cuda:N"));
  }
  if (!device.ok()) return device.status();

  const CpuFeatures& cpu = GetCpuFeatures();
  const int threads = options.threads > 0 ? options.threads : cpu.logical_cpus;
  at::set_num_threads(threads > 0 ? threads : 1);
  SingleThreadedBlas();
  device->threads = at::get_num_threads();
  device->native_bf16 = HasNativeBf16(*device, cpu);
  absl::StatusOr<std::string> precision =
      ResolvePrecision(options.precision, device->native_bf16);
  if (!precision.ok()) return precision.status();
  device->precision = *std::move(precision);
  if (device->kind == ComputeDevice::Kind::kCpu) {
    device->name = "cpu";
    device->description = cpu.model_name.empty() ? "CPU" : cpu.model_name;
    device->memory_bytes = HostMemoryBytes();
  }
  return device;
}

}  // namespace transferd::core
