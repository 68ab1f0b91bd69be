#include "common/dataset_layout.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace transferd::common {
namespace {

std::string_view BaseName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// FNV-1a: a stable per-label seed component.
uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

const char* SplitName(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kValidation:
      return "validation";
    case Split::kTest:
      return "test";
    default:
      return "none";
  }
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > text.size() - 1) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

absl::Status ValidateClientPath(std::string_view path) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("path rejected: ", why));
  };
  if (path.empty()) return bad("empty");
  if (path.size() > 255) return bad("longer than 255 bytes");
  if (path.find('\0') != std::string_view::npos)
    return bad("contains a NUL byte");
  if (path.find('\\') != std::string_view::npos)
    return bad("contains a backslash");
  if (path.front() == '/') return bad("absolute");
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(path.data(), path.size()), '/')) {
    if (part == "..") return bad("contains a \"..\" component");
  }
  if (path.back() == '/') return bad("names a folder, not a file");
  if (!IsValidUtf8(path)) return bad("not valid UTF-8");
  return absl::OkStatus();
}

absl::StatusOr<std::string> LabelFromFilename(std::string_view path) {
  const std::string_view name = BaseName(path);
  const size_t first = name.find('.');
  if (first == 0 || first == std::string_view::npos ||
      name.find('.', first + 1) == std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("no label in the file name \"", std::string(name),
                     "\" (expected LABEL.ID.EXT, like cat.123.jpg)"));
  }
  return std::string(name.substr(0, first));
}

absl::StatusOr<std::string> LabelFromFolder(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos || slash == 0) {
    return absl::InvalidArgumentError(absl::StrCat("no class folder in \"",
                                                   std::string(path),
                                                   "\" (expected CLASS/FILE)"));
  }
  const std::string_view dir = path.substr(0, slash);
  const size_t parent = dir.rfind('/');
  return std::string(parent == std::string_view::npos ? dir
                                                      : dir.substr(parent + 1));
}

std::optional<Split> SplitFromFolder(std::string_view path) {
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view top = path.substr(0, slash);
  if (top == "train") return Split::kTrain;
  if (top == "validation" || top == "val") return Split::kValidation;
  if (top == "test") return Split::kTest;
  return std::nullopt;
}

LabelSource DetectLabelSource(const std::vector<std::string>& paths) {
  for (const std::string& p : paths) {
    // "train/cat.1.jpg": the split folder is not a class folder.
    std::string_view rest = p;
    if (SplitFromFolder(p).has_value()) rest.remove_prefix(p.find('/') + 1);
    if (rest.find('/') == std::string_view::npos) return LabelSource::kFilename;
  }
  return paths.empty() ? LabelSource::kFilename : LabelSource::kFolder;
}

SplitPolicy SplitPolicy::KerasBook(uint64_t seed) {
  SplitPolicy p;
  p.kind = Kind::kPerClassCounts;
  p.train_count = 1000;
  p.validation_count = 500;
  p.test_count = 500;
  p.seed = seed;
  return p;
}

absl::StatusOr<std::vector<Split>> AssignSplits(
    const std::vector<std::string>& paths,
    const std::vector<std::string>& labels, const SplitPolicy& policy) {
  if (paths.size() != labels.size()) {
    return absl::InvalidArgumentError("paths and labels differ in length");
  }
  std::vector<Split> out(paths.size(), Split::kNone);
  using Kind = SplitPolicy::Kind;
  if (policy.kind == Kind::kAllTrain) {
    std::fill(out.begin(), out.end(), Split::kTrain);
    return out;
  }
  if (policy.kind == Kind::kFolders) {
    for (size_t i = 0; i < paths.size(); ++i) {
      out[i] = SplitFromFolder(paths[i]).value_or(Split::kNone);
    }
    return out;
  }
  if (policy.kind == Kind::kRatios) {
    if (policy.train < 0 || policy.validation < 0 || policy.test < 0 ||
        std::abs(policy.train + policy.validation + policy.test - 1.0) > 1e-6) {
      return absl::InvalidArgumentError(absl::StrCat(
          "split ratios must be >= 0 and sum to 1; got ", policy.train, " + ",
          policy.validation, " + ", policy.test));
    }
  } else if (policy.train_count < 0 || policy.validation_count < 0 ||
             policy.test_count < 0) {
    return absl::InvalidArgumentError("per-class split counts must be >= 0");
  }

  std::map<std::string, std::vector<size_t>> by_class;
  for (size_t i = 0; i < paths.size(); ++i) by_class[labels[i]].push_back(i);
  for (auto& [label, members] : by_class) {
    std::sort(members.begin(), members.end(),
              [&](size_t a, size_t b) { return paths[a] < paths[b]; });
    std::mt19937_64 rng(policy.seed ^ Fnv1a(label));
    std::shuffle(members.begin(), members.end(), rng);
    const int64_t n = static_cast<int64_t>(members.size());
    int64_t n_train, n_val, n_test;
    if (policy.kind == Kind::kRatios) {
      n_train = std::llround(n * policy.train);
      // A class keeps a training file, however small: a long tail of
      // one-image classes must still be learnable.
      if (policy.train > 0) n_train = std::max<int64_t>(n_train, 1);
      n_val =
          std::min(n - n_train,
                   static_cast<int64_t>(std::llround(n * policy.validation)));
      n_test = n - n_train - n_val;
    } else {
      n_train = policy.train_count;
      n_val = policy.validation_count;
      n_test = policy.test_count;
      const int64_t asked = n_train + n_val + n_test;
      if (asked > n && policy.up_to && asked > 0) {
        // As many as exist: the counts' proportions over the files there
        // are, at least one for training when training asks for any.
        const double scale =
            static_cast<double>(n) / static_cast<double>(asked);
        n_train = std::llround(static_cast<double>(policy.train_count) * scale);
        if (policy.train_count > 0) n_train = std::max<int64_t>(n_train, 1);
        n_train = std::min(n_train, n);
        n_val = std::min(
            n - n_train,
            static_cast<int64_t>(std::llround(
                static_cast<double>(policy.validation_count) * scale)));
        n_test = std::min(n - n_train - n_val, policy.test_count);
      } else if (asked > n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "class \"", label, "\" has ", n, " files but the split asks for ",
            n_train, " + ", n_val, " + ", n_test));
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      Split s = Split::kNone;
      if (k < n_train)
        s = Split::kTrain;
      else if (k < n_train + n_val)
        s = Split::kValidation;
      else if (k < n_train + n_val + n_test)
        s = Split::kTest;
      out[members[k]] = s;
    }
  }
  return out;
}

}  // namespace transferd::common
