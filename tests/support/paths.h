// Where tests find the repository's files and the built binaries, without
// absolute paths compiled in (they would enter ccache's key, and a clone at
// another path would rebuild every test).
#pragma once

#include <string>
#include <string_view>

namespace transferd::testing {

// The repository root: $TRANSFERD_SOURCE_DIR (ctest sets it), else the
// nearest folder above the test binary that holds proto/transferd/v1.
// Aborts the test binary with a message when neither is found.
std::string SourceDir();
// SourceDir() + "/" + relative.
std::string SourcePath(std::string_view relative);
// A binary built beside the running test (build/bin/NAME).
std::string BinaryPath(std::string_view name);
// Debian's python3 (python3-torch, -torchvision, -h5py live there).
std::string Python3();

}  // namespace transferd::testing
