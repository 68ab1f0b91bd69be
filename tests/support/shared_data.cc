#include "tests/support/shared_data.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace transferd::testing {

namespace fs = std::filesystem;

std::optional<fs::path> TestDataDir() {
  const char* dir = std::getenv("TRANSFERD_TEST_DATA");
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  for (const char* sub : {"train", "validation"}) {
    if (!fs::is_directory(fs::path(dir) / sub)) {
      ADD_FAILURE() << "TRANSFERD_TEST_DATA=" << dir << " has no " << sub
                    << "/ folder";
      return std::nullopt;
    }
  }
  return fs::path(dir);
}

std::optional<fs::path> TestWeightsFile(const std::string& file) {
  const char* dir = std::getenv("TRANSFERD_TEST_WEIGHTS");
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  const fs::path path = fs::path(dir) / file;
  if (!fs::is_regular_file(path)) {
    ADD_FAILURE() << "TRANSFERD_TEST_WEIGHTS=" << dir << " has no " << file;
    return std::nullopt;
  }
  return path;
}

}  // namespace transferd::testing
