// Pieces of the trainer that tests look at directly: the per-epoch example
// order (the same as data::Loader's), the checksummed container used for
// checkpoints and cached features, and ROC AUC.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace transferd::core::train {

// splitmix64, as data::Loader mixes (seed, epoch).
uint64_t MixSeed(uint64_t x);

// The order in which data::Loader (shuffle on, same seed) visits `n`
// examples in `epoch`; identity when !shuffle.
std::vector<int64_t> EpochOrder(size_t n, uint64_t seed, int64_t epoch,
                                bool shuffle = true);

// The torch seed set at the start of `epoch` (dropout masks).
uint64_t EpochTorchSeed(uint64_t seed, int64_t epoch);

// A file of named sections (name -> bytes) followed by a trailer holding the
// payload length and its SHA-256, so that a torn or truncated file is
// detected. Written atomically: temporary file beside it, fsync, rename,
// fsync of the folder. Returns the bytes written.
absl::StatusOr<int64_t> WriteSectionFile(
    const std::filesystem::path& path,
    const std::vector<std::pair<std::string, std::string>>& sections);
// DATA_LOSS naming the file when it is truncated, torn or malformed;
// NOT_FOUND when it does not exist.
absl::StatusOr<std::map<std::string, std::string>> ReadSectionFile(
    const std::filesystem::path& path);

// Area under the ROC curve of `scores` for the positive labels (label 1),
// ties counted half (Mann-Whitney); -1 when one class is absent.
double RocAuc(const std::vector<double>& scores,
              const std::vector<int64_t>& labels);

// Per-class weights of the training loss for `mode` ("balanced":
// proportional to 1 / n_c, "balanced-sqrt": to 1 / sqrt(n_c)) given the
// training examples per class, scaled so that their mean over the examples
// is 1; a class without examples weighs 0. Empty for "none".
std::vector<double> ClassLossWeights(const std::string& mode,
                                     const std::vector<int64_t>& counts);

}  // namespace transferd::core::train
