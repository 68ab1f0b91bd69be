// CPU capabilities that decide which LibTorch/oneDNN kernels run.
#pragma once

#include <string>

namespace transferd::core {

struct CpuFeatures {
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool onednn = false;     // LibTorch built with oneDNN (MKL-DNN)
  int logical_cpus = 0;    // CPUs this process may run on (affinity mask)
  std::string model_name;  // /proc/cpuinfo "model name", may be empty
};

// Reads CPUID, the affinity mask and /proc/cpuinfo once.
const CpuFeatures& GetCpuFeatures();

// "avx2 avx512f amx_bf16 ..." for logs.
std::string DescribeCpuFeatures(const CpuFeatures& f);

}  // namespace transferd::core
