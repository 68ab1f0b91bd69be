#include "server/core/util/build_info.h"

#include <dlfcn.h>

#include <ATen/Context.h>
#include <gnu/libc-version.h>
#include <torch/version.h>

#include "build_info_values.h"

namespace transferd::core {
namespace {

std::string CompilerId() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

// tcmalloc exports tc_version(); found in the process's global symbols when
// it is linked (or preloaded), whichever binary asks.
std::string AllocatorName() {
  using TcVersion = const char* (*)(int*, int*, const char**);
  if (void* symbol = dlsym(RTLD_DEFAULT, "tc_version")) {
    int major = 0;
    int minor = 0;
    const char* patch = nullptr;
    reinterpret_cast<TcVersion>(symbol)(&major, &minor, &patch);
    return "tcmalloc " + std::to_string(major) + "." + std::to_string(minor) +
           (patch != nullptr ? patch : "");
  }
  return std::string("glibc malloc ") + gnu_get_libc_version();
}

}  // namespace

const BuildInfo& GetBuildInfo() {
  static const BuildInfo* const info = [] {
    auto* b = new BuildInfo;
    b->version = TRANSFERD_VERSION;
    b->revision = TRANSFERD_REVISION;
    b->build_type = TRANSFERD_BUILD_TYPE;
    b->compiler = CompilerId();
    b->torch_version = TORCH_VERSION;
    b->torch_cuda = at::hasCUDA();
    b->allocator = AllocatorName();
    return b;
  }();
  return *info;
}

}  // namespace transferd::core
