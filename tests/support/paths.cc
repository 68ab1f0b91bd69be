// Repository and binary locations for tests, found at run time.
#include "tests/support/paths.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace transferd::testing {
namespace {

namespace fs = std::filesystem;

fs::path SelfDir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : self.parent_path();
}

}  // namespace

std::string SourceDir() {
  if (const char* env = std::getenv("TRANSFERD_SOURCE_DIR");
      env != nullptr && *env != '\0') {
    return env;
  }
  for (fs::path dir = SelfDir(); !dir.empty(); dir = dir.parent_path()) {
    if (fs::is_directory(dir / "proto" / "transferd" / "v1")) return dir;
    if (dir == dir.root_path()) break;
  }
  std::fprintf(stderr,
               "tests: cannot find the repository; set TRANSFERD_SOURCE_DIR "
               "(ctest does)\n");
  std::abort();
}

std::string SourcePath(std::string_view relative) {
  return (fs::path(SourceDir()) / relative).string();
}

std::string BinaryPath(std::string_view name) {
  return (SelfDir() / name).string();
}

std::string Python3() { return "/usr/bin/python3"; }

}  // namespace transferd::testing
