#include "server/core/device.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

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
  return d;
}

}  // namespace

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
  if (options.precision == "auto") {
    const bool native_bf16 = device->kind == ComputeDevice::Kind::kCuda ||
                             cpu.avx512_bf16 || cpu.amx_bf16;
    device->precision = native_bf16 ? "bf16" : "fp32";
  } else if (options.precision == "fp32" || options.precision == "bf16") {
    device->precision = options.precision;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "precision \"", options.precision, "\": expected auto, fp32 or bf16"));
  }
  if (device->kind == ComputeDevice::Kind::kCpu) {
    device->name = "cpu";
    device->description = cpu.model_name.empty() ? "CPU" : cpu.model_name;
    device->memory_bytes = HostMemoryBytes();
  }
  return device;
}

}  // namespace transferd::core
