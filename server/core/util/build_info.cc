#include "server/core/util/build_info.h"

#include <ATen/Context.h>
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
    return b;
  }();
  return *info;
}

}  // namespace transferd::core
