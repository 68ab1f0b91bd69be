// How an uploaded file list becomes a labelled, split dataset: the safety
// rules for client paths (metadata only: storage paths are server-made), the
// label sources (Kaggle file names, class folders), and the split policies
// (split folders, stratified ratios, per-class counts), all deterministic for a
// seed and independent of the order files arrive in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace transferd::common {

// INVALID_ARGUMENT naming the rule for an empty path, an absolute path, a
// ".." component, a NUL byte, a backslash, more than 255 bytes, or bytes
// that are not UTF-8 (paths become labels, JSON and protobuf strings).
absl::Status ValidateClientPath(std::string_view path);

// Well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF).
bool IsValidUtf8(std::string_view text);

// kNone: an unlabelled set (a contest's test folder) for PREDICT jobs.
enum class LabelSource { kAuto, kFilename, kFolder, kExplicit, kNone };
enum class Split { kNone, kTrain, kValidation, kTest };
const char* SplitName(Split split);

// "dir/cat.123.jpg" -> "cat": the base name up to its first '.'; the name
// must have one more '.' (the extension) after the label.
absl::StatusOr<std::string> LabelFromFilename(std::string_view path);
// "train/cats/x.jpg" -> "cats": the innermost directory.
absl::StatusOr<std::string> LabelFromFolder(std::string_view path);
// The split a top-level folder names ("train", "validation" or "val",
// "test"); nullopt for any other path.
std::optional<Split> SplitFromFolder(std::string_view path);
// kFolder when every path has a directory part below its split folder (if
// any: "train/cats/x.jpg" but not "train/cat.1.jpg"), else kFilename.
LabelSource DetectLabelSource(const std::vector<std::string>& paths);

struct SplitPolicy {
  enum class Kind { kFolders, kRatios, kPerClassCounts, kAllTrain };
  Kind kind = Kind::kAllTrain;
  double train = 0, validation = 0,
         test = 0;  // kRatios: fractions summing to 1
  int64_t train_count = 0, validation_count = 0,
          test_count = 0;  // kPerClassCounts
  // kPerClassCounts: a class with fewer files than the counts' sum is split
  // in the counts' proportions (at least one training file) instead of
  // being an error.
  bool up_to = false;
  uint64_t seed = 0;

  // The Keras book's 1000 / 500 / 500 files per class.
  static SplitPolicy KerasBook(uint64_t seed = 0);
};

// One split per path (kNone: not kept; per-class counts beyond the sum, or
// paths outside the split folders). Stratified: each class is split on its
// own, after sorting its paths, with a shuffle seeded by (seed, label).
// Ratios keep at least one training file per class when train > 0.
// INVALID_ARGUMENT for ratios that do not sum to 1, negative counts, or a
// class with fewer files than the counts ask for (naming it).
absl::StatusOr<std::vector<Split>> AssignSplits(
    const std::vector<std::string>& paths,
    const std::vector<std::string>& labels, const SplitPolicy& policy);

}  // namespace transferd::common
