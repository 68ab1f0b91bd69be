// What this binary is: version and build identification.
#pragma once

#include <string>

namespace transferd::core {

struct BuildInfo {
  std::string version;     // project version, e.g. "0.1.0"
  std::string revision;    // git describe at configure time, or "unknown"
  std::string build_type;  // CMake build type
  std::string compiler;    // compiler id and version
  std::string torch_version;
  bool torch_cuda = false;  // LibTorch built with CUDA
  // The allocator behind this process's malloc, found at run time:
  // "tcmalloc 2.10" when tcmalloc is linked (the default for transferd and
  // the benches, CMake's TRANSFERD_TCMALLOC), else "glibc malloc 2.36".
  std::string allocator;
};

// The build information of the running binary (computed once).
const BuildInfo& GetBuildInfo();

}  // namespace transferd::core
