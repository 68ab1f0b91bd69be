// The read-only data beside the project (../shared), reached through the
// environment variables .ci/run sets. A test that needs it skips when its
// variable is unset and fails loudly when the variable is set but the files
// are missing.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace transferd::testing {

// $TRANSFERD_TEST_DATA (the cats_and_dogs folder), or nullopt when unset.
// Adds a test failure when set but train/ or validation/ is missing.
std::optional<std::filesystem::path> TestDataDir();

// $TRANSFERD_TEST_WEIGHTS (the keras weights folder), or nullopt when unset.
// Adds a test failure when set but `file` is missing inside it.
std::optional<std::filesystem::path> TestWeightsFile(const std::string& file);

}  // namespace transferd::testing
