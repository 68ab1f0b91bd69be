// transferctl datasets: ls, upload (with its layout detection, split policy
// and progress meter), show and rm.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/util/time_util.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/output.h"
#include "client/labels_csv.h"

namespace transferd::client::commands {
namespace {

// A list response: as JSON with --json, else as `table` prints it.
template <class Response>
int PrintList(const Globals& g, const absl::StatusOr<Response>& response,
              const std::function<void(const Response&)>& table) {
  if (!response.ok()) return Fail(response.status());
  if (g.json) {
    PrintJson(*response);
  } else {
    table(*response);
  }
  return kOk;
}

int DatasetsList(const Globals& g) {
  auto client = Connect(g);
  return PrintList<v1::ListDatasetsResponse>(
      g, client->ListDatasets(v1::ListDatasetsRequest()),
      [](const v1::ListDatasetsResponse& r) {
        std::cout << absl::StrFormat("%-32s %-24s %8s %10s\n", "NAME",
                                     "DISPLAY NAME", "FILES", "CLASSES");
        for (const auto& d : r.datasets()) {
          std::cout << absl::StrFormat("%-32s %-24s %8d %10d\n", d.name(),
                                       d.display_name(), d.files(),
                                       d.classes_size());
        }
      });
}

constexpr char kUploadHelp[] =
    "Examples:\n"
    "  transferctl datasets upload ./cats_and_dogs_small --id cats-and-dogs\n"
    "      train/ validation/ test/ split folders, labels from the folders "
    "or\n"
    "      file names inside them (detected, printed before sending)\n"
    "  transferctl datasets upload ./kaggle/train --id dogs-vs-cats "
    "--split keras-book --seed 1\n"
    "      the Kaggle cat.N.jpg / dog.N.jpg folder, split 1000/500/500 per "
    "class\n"
    "  transferctl datasets upload ./photos --labels folder "
    "--split ratios:0.8,0.1,0.1\n"
    "      class folders, a stratified 80/10/10 split\n"
    "  transferctl datasets upload ./landmarks/train --id landmarks \\\n"
    "      --labels csv:train.csv,names=category.csv --split ratios:0.9,0.1,0\n"
    "      labels from a CSV (id -> class id) and class names from a second "
    "one;\n"
    "      ids match files anywhere under the folder, with or without "
    "extension\n"
    "  transferctl datasets upload ./landmarks/test --id landmarks-test "
    "--labels none\n"
    "      an unlabelled test folder, for PREDICT jobs only\n"
    "  transferctl --json datasets upload ./photos --id photos > photos.json\n"
    "Files and folders whose names start with '.' are skipped. Ctrl-C "
    "cancels;\nthe server keeps nothing of a cancelled or failed upload, so "
    "it can be rerun.";

struct UploadArgs {
  std::string dir;
  std::string id;
  std::string name;
  std::string labels = "auto";
  std::string split = "auto";
  uint64_t seed = 0;
  // --labels csv:...: column choices, and --strict.
  std::string id_column, label_column, names_id_column, names_column;
  bool strict = false;
  int64_t cancel_after_files = 0;
  std::string server_path;
};

// --split: auto | folders | ratios:T,V,E | counts:T,V,E | keras-book.
// nullopt is auto: the server picks split folders when the paths carry
// them, else everything goes to train.
absl::StatusOr<std::optional<v1::SplitPolicy>> ParseSplit(
    const std::string& text, uint64_t seed) {
  if (text == "auto") return std::nullopt;
  v1::SplitPolicy policy;
  if (text == "folders") {
    policy.mutable_folders();
    return policy;
  }
  if (text == "keras-book") {
    v1::SplitPolicy::PerClassCounts* c = policy.mutable_per_class_counts();
    c->set_train(1000);
    c->set_validation(500);
    c->set_test(500);
    c->set_seed(seed);
    return policy;
  }
  absl::string_view rest = text;
  const bool ratios = absl::ConsumePrefix(&rest, "ratios:");
  const bool up_to = !ratios && absl::ConsumePrefix(&rest, "counts-up-to:");
  if (!ratios && !up_to && !absl::ConsumePrefix(&rest, "counts:")) {
    return absl::InvalidArgumentError(
        "expected auto, folders, ratios:T,V,E, counts:T,V,E, "
        "counts-up-to:T,V,E or keras-book");
  }
  const std::vector<std::string> parts = absl::StrSplit(rest, ',');
  if (parts.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(ratios ? "ratios" : "counts",
                     " takes three numbers, train,validation,test"));
  }
  if (ratios) {
    double v[3];
    for (int i = 0; i < 3; ++i) {
      if (!absl::SimpleAtod(parts[i], &v[i]) || !(v[i] >= 0 && v[i] <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ratio \"", parts[i], "\" is not a number in [0, 1]"));
      }
    }
    // The server's rule, checked here so a large folder is not sent first.
    if (std::abs(v[0] + v[1] + v[2] - 1) > 1e-6) {
      return absl::InvalidArgumentError("ratios must sum to 1");
    }
    v1::SplitPolicy::Ratios* r = policy.mutable_ratios();
    r->set_train(v[0]);
    r->set_validation(v[1]);
    r->set_test(v[2]);
    r->set_seed(seed);
    return policy;
  }
  int32_t n[3];
  for (int i = 0; i < 3; ++i) {
    if (!absl::SimpleAtoi(parts[i], &n[i]) || n[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "count \"", parts[i], "\" is not a non-negative integer"));
    }
  }
  v1::SplitPolicy::PerClassCounts* c = policy.mutable_per_class_counts();
  c->set_train(n[0]);
  c->set_validation(n[1]);
  c->set_test(n[2]);
  c->set_up_to(up_to);
  c->set_seed(seed);
  return policy;
}

// Decimal units sized to `reference` bytes, so progress reads "12.3/40.0 MB"
// for a large folder and "30.2/45.1 kB" for a small one.
struct ByteUnit {
  double divisor;
  const char* name;
};
ByteUnit UnitFor(double reference) {
  if (reference >= 1e9) return {1e9, "GB"};
  if (reference >= 1e6) return {1e6, "MB"};
  return {1e3, "kB"};
}

// Upload progress on stderr: a bar redrawn in place (at most ~10 times a
// second) on a terminal, else a plain line per 10% so logs stay readable.
class UploadMeter {
 public:
  explicit UploadMeter(bool tty) : tty_(tty) {}

  void Update(const transferd::client::UploadProgress& p) {
    const bool done = p.files_sent >= p.files_total;
    // By bytes, which track time better than files; by files for a folder
    // of empty files.
    double fraction = 1.0;
    if (!done && p.bytes_total > 0) {
      fraction =
          std::min(1.0, static_cast<double>(p.bytes_sent) / p.bytes_total);
    } else if (!done) {
      fraction = static_cast<double>(p.files_sent) / p.files_total;
    }
    // What crosses the wire: files the server already held are not sent.
    const double rate = p.elapsed_seconds > 0
                            ? (p.bytes_sent - p.bytes_held) / p.elapsed_seconds
                            : 0;
    const ByteUnit size = UnitFor(static_cast<double>(p.bytes_total));
    const ByteUnit speed = UnitFor(rate);
    if (tty_) {
      const auto now = std::chrono::steady_clock::now();
      if (!done && drawn_ &&
          now - last_draw_ < std::chrono::milliseconds(100)) {
        return;
      }
      last_draw_ = now;
      drawn_ = true;
      const int width = 20;
      const int filled = static_cast<int>(fraction * width);
      const double eta = rate > 0 ? (p.bytes_total - p.bytes_sent) / rate : -1;
      const std::string held =
          p.files_held > 0 ? absl::StrFormat(" (%d held)", p.files_held) : "";
      // \033[K clears what a longer previous line left behind.
      std::fputs(
          absl::StrFormat(
              "\r[%s%s] %3d%%  %d/%d files%s  %.1f/%.1f %s  %.1f %s/s  "
              "ETA %s\033[K",
              std::string(filled, '#'), std::string(width - filled, '.'),
              static_cast<int>(fraction * 100), p.files_sent, p.files_total,
              held, p.bytes_sent / size.divisor, p.bytes_total / size.divisor,
              size.name, rate / speed.divisor, speed.name,
              done ? "0:00" : Duration(eta))
              .c_str(),
          stderr);
      std::fflush(stderr);
      return;
    }
    const int percent = static_cast<int>(fraction * 100);
    if (percent < next_percent_) return;
    next_percent_ = (percent / 10 + 1) * 10;
    std::fputs(absl::StrFormat(
                   "upload %3d%%: %d/%d files (%d already on the server), "
                   "%.1f/%.1f %s, %.1f %s/s\n",
                   percent, p.files_sent, p.files_total, p.files_held,
                   p.bytes_sent / size.divisor, p.bytes_total / size.divisor,
                   size.name, rate / speed.divisor, speed.name)
                   .c_str(),
               stderr);
  }

  // Ends the bar's line so what follows starts on a fresh one.
  void Close() {
    if (tty_ && drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  const bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_;
  int next_percent_ = 10;
};

// Set by the first Ctrl-C of an upload: the upload stops before its next
// chunk. The handler then restores the default, so a second Ctrl-C kills.
std::atomic<bool> g_cancel_upload{false};
void OnUploadInterrupt(int) {
  g_cancel_upload.store(true);
  std::signal(SIGINT, SIG_DFL);
}

std::string LabelSourceText(v1::LabelSource source) {
  switch (source) {
    case v1::LABEL_SOURCE_FILENAME:
      return "file names";
    case v1::LABEL_SOURCE_FOLDER:
      return "class folders";
    case v1::LABEL_SOURCE_EXPLICIT:
      return "explicit (one per file, e.g. from a CSV file)";
    case v1::LABEL_SOURCE_NONE:
      return "none (unlabelled: for PREDICT jobs)";
    default:
      return "detected by the server";
  }
}

// "REJECT_REASON_UNSUPPORTED_FORMAT" -> "UNSUPPORTED_FORMAT".
std::string ReasonText(v1::RejectReason reason) {
  std::string name = v1::RejectReason_Name(reason);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "REJECT_REASON_");
  return view.empty() ? absl::StrCat("reason ", static_cast<int>(reason))
                      : std::string(view);
}

// Classes listed by name; beyond, a summary by size.
constexpr int kListedClasses = 10;

// "train: 1200 files (cat 600, dog 600)", or for many classes the spread
// and the largest and smallest; for validation and test, the classes that
// have no file there.
void PrintSplit(const v1::Dataset& d, const v1::SplitSummary& s) {
  std::vector<std::pair<int64_t, std::string>> by_size;
  for (const v1::ClassCount& c : s.classes()) {
    if (c.files() > 0) by_size.emplace_back(c.files(), c.label());
  }
  if (d.classes_size() <= kListedClasses) {
    std::vector<std::string> counts;
    for (const v1::ClassCount& c : s.classes()) {
      counts.push_back(absl::StrFormat("%s %d", c.label(), c.files()));
    }
    std::cout << absl::StrFormat("split       %s: %d files (%s)\n",
                                 SplitName(s.split()), s.files(),
                                 absl::StrJoin(counts, ", "));
  } else {
    // Largest first; equal sizes by name.
    std::stable_sort(
        by_size.begin(), by_size.end(),
        [](const auto& a, const auto& b) { return a.first > b.first; });
    auto names = [&](auto begin, auto end) {
      std::vector<std::string> out;
      for (auto it = begin; it != end; ++it)
        out.push_back(absl::StrFormat("%s %d", it->second, it->first));
      return absl::StrJoin(out, ", ");
    };
    const size_t shown = std::min<size_t>(5, by_size.size());
    std::cout << absl::StrFormat(
        "split       %s: %d files over %d classes, %d to %d per class\n"
        "            largest: %s\n            smallest: %s\n",
        SplitName(s.split()), s.files(), by_size.size(),
        by_size.empty() ? 0 : by_size.back().first,
        by_size.empty() ? 0 : by_size.front().first,
        names(by_size.begin(), by_size.begin() + shown),
        names(by_size.end() - shown, by_size.end()));
  }
  if (s.split() == v1::SPLIT_TRAIN) return;
  std::vector<std::string> missing;
  for (const v1::ClassCount& c : s.classes()) {
    if (c.files() == 0) missing.push_back(c.label());
  }
  if (missing.empty()) return;
  const size_t listed = std::min<size_t>(missing.size(), 10);
  std::cout << absl::StrFormat(
      "            %d class%s without %s images: %s%s\n", missing.size(),
      missing.size() == 1 ? "" : "es", SplitName(s.split()),
      absl::StrJoin(missing.begin(), missing.begin() + listed, ", "),
      missing.size() > listed ? ", ..." : "");
}

// Rejected files listed before "... and N more".
constexpr int kMaxRejectLines = 50;

// The dataset summary shared by `upload` and `show`. `kept` counts the
// files accepted (upload) or stored (show).
void PrintDataset(
    const v1::Dataset& d, const char* kept_word, int64_t kept,
    int64_t duplicates, int64_t rejected_total,
    const google::protobuf::RepeatedPtrField<v1::RejectedFile>& rejects) {
  std::string title = d.name();
  if (!d.display_name().empty()) {
    absl::StrAppend(&title, " (\"", d.display_name(), "\")");
  }
  std::cout << absl::StrFormat("dataset     %s\n", title);
  if (d.has_create_time()) {
    std::cout << absl::StrFormat(
        "created     %s\n",
        google::protobuf::util::TimeUtil::ToString(d.create_time()));
  }
  std::cout << absl::StrFormat("labels      %s\n",
                               LabelSourceText(d.label_source()));
  if (d.classes_size() <= kListedClasses) {
    std::cout << absl::StrFormat("classes     %d: %s\n", d.classes_size(),
                                 absl::StrJoin(d.classes(), ", "));
  } else {
    std::cout << absl::StrFormat(
        "classes     %d: %s, ... (all: transferctl --json datasets show)\n",
        d.classes_size(),
        absl::StrJoin(d.classes().begin(), d.classes().begin() + kListedClasses,
                      ", "));
  }
  for (const v1::SplitSummary& s : d.splits()) PrintSplit(d, s);
  rejected_total = std::max<int64_t>(rejected_total, rejects.size());
  std::cout << absl::StrFormat(
      "files       %d %s, %d duplicate%s, %d rejected\n", kept, kept_word,
      duplicates, duplicates == 1 ? "" : "s", rejected_total);
  std::cout << absl::StrFormat("stored      %d files, %s\n", d.files(),
                               HumanBytes(d.bytes()));
  const v1::ImageSizeStats& im = d.image_size();
  if (im.max_width() > 0) {
    std::cout << absl::StrFormat(
        "images      %dx%d to %dx%d pixels, mean %.1fx%.1f\n", im.min_width(),
        im.min_height(), im.max_width(), im.max_height(), im.mean_width(),
        im.mean_height());
  }
  const int shown = std::min(rejects.size(), kMaxRejectLines);
  for (int i = 0; i < shown; ++i) {
    const v1::RejectedFile& r = rejects[i];
    std::cout << absl::StrFormat(
        "rejected    %s: %s%s\n", r.path(), ReasonText(r.reason()),
        r.message().empty() ? "" : absl::StrCat(" (", r.message(), ")"));
  }
  if (rejected_total > shown) {
    std::cout << absl::StrFormat("            ... and %d more\n",
                                 rejected_total - shown);
  }
}

// The folder's own name, the way people refer to it.
std::string FolderName(const std::string& dir) {
  std::string name =
      std::filesystem::absolute(dir).lexically_normal().filename().string();
  if (name.empty()) {
    name = std::filesystem::absolute(dir)
               .lexically_normal()
               .parent_path()
               .filename()
               .string();
  }
  return name;
}

// What `args` ask to upload; `detected` is the label source of the layout
// printed before.
transferd::client::UploadOptions UploadOptionsFor(
    const UploadArgs& args, v1::LabelSource detected,
    const std::optional<v1::SplitPolicy>& split) {
  transferd::client::UploadOptions options;
  options.directory = args.dir;
  options.dataset_id = args.id;
  options.display_name = args.name;
  if (options.display_name.empty()) options.display_name = FolderName(args.dir);
  if (args.labels == "filename") {
    options.label_source = v1::LABEL_SOURCE_FILENAME;
  } else if (args.labels == "folder") {
    options.label_source = v1::LABEL_SOURCE_FOLDER;
  } else if (args.labels == "none") {
    options.label_source = v1::LABEL_SOURCE_NONE;
  } else if (absl::StartsWith(args.labels, "csv:")) {
    options.label_source = v1::LABEL_SOURCE_EXPLICIT;
  } else {
    // auto: the layout printed above, sent explicitly so that what the user
    // read is what the server applies (the server's own detection follows a
    // stricter every-path rule and could differ on a mixed folder).
    options.label_source = detected;
  }
  options.split_policy = split;
  options.cancel = &g_cancel_upload;
  return options;
}

// Sends the upload, its progress on stderr; the first Ctrl-C cancels it.
absl::StatusOr<v1::UploadDatasetResponse> Upload(
    Client& client, const transferd::client::UploadOptions& options,
    int64_t cancel_after_files) {
  UploadMeter meter(isatty(STDERR_FILENO) == 1);
  g_cancel_upload.store(false);
  std::signal(SIGINT, OnUploadInterrupt);
  auto response = client.UploadDataset(
      options, [&](const transferd::client::UploadProgress& p) {
        meter.Update(p);
        // --cancel-after-files: the Ctrl-C of tests and benchmarks.
        if (cancel_after_files > 0 &&
            p.files_sent - p.files_held >= cancel_after_files) {
          g_cancel_upload.store(true);
        }
        // Everything is sent; what is left is the server's work, which a
        // Ctrl-C now ends at once (closing the call cancels it).
        if (p.files_sent == p.files_total) std::signal(SIGINT, SIG_DFL);
      });
  std::signal(SIGINT, SIG_DFL);
  meter.Close();
  return response;
}

// Problems printed before "... and N more".
constexpr size_t kMaxCsvProblemLines = 20;

// --labels csv:FILE[,names=FILE]: the label of each file to send, its
// problems on stderr. With --strict any problem stops the upload before
// anything is sent.
absl::StatusOr<std::map<std::string, std::string>> CsvLabelsFor(
    const Globals& g, const UploadArgs& args) {
  transferd::client::CsvLabelOptions o;
  if (!transferd::client::ParseCsvLabelSpec(args.labels, o)) {
    return absl::InvalidArgumentError(
        "--labels: expected csv:FILE or csv:FILE,names=FILE");
  }
  o.id_column = args.id_column;
  o.label_column = args.label_column;
  o.names_id_column = args.names_id_column;
  o.names_column = args.names_column;
  absl::StatusOr<std::vector<std::string>> paths =
      transferd::client::UploadPaths(args.dir);
  if (!paths.ok()) return paths.status();
  absl::StatusOr<transferd::client::CsvLabels> labels =
      transferd::client::LabelsFromCsv(o, *paths);
  if (!labels.ok()) return labels.status();
  const std::string summary = absl::StrFormat(
      "from %s: %d rows, %d classes, %d of %d files labelled", o.labels_file,
      labels->rows, labels->classes, labels->label_of.size(), paths->size());
  if (g.json) {
    std::fprintf(stderr, "labels: %s\n", summary.c_str());
  } else {
    std::cout << "labels      " << summary << "\n" << std::flush;
  }
  const auto& problems = labels->problems;
  for (size_t i = 0; i < problems.size() && i < kMaxCsvProblemLines; ++i) {
    std::fprintf(stderr, "%s: %s\n", args.strict ? "error" : "warning",
                 problems[i].Text().c_str());
  }
  if (problems.size() > kMaxCsvProblemLines) {
    std::fprintf(stderr, "... and %zu more\n",
                 problems.size() - kMaxCsvProblemLines);
  }
  if (args.strict && !problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        problems.size(), " problem", problems.size() == 1 ? "" : "s",
        " in the labels (--strict); nothing was sent"));
  }
  if (labels->label_of.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no file under ", args.dir, " is labelled by ",
                     o.labels_file, "; nothing was sent"));
  }
  return std::move(labels->label_of);
}

// What an upload or an import stored, as JSON or for people.
int PrintUploaded(const Globals& g,
                  const absl::StatusOr<v1::UploadDatasetResponse>& response) {
  if (!response.ok()) return Fail(response.status());
  if (g.json) {
    PrintJson(*response);
    return kOk;
  }
  PrintDataset(response->dataset(), "accepted", response->accepted_files(),
               response->duplicate_files(),
               std::max<int64_t>(response->rejected_size(),
                                 response->dataset().rejected_files()),
               response->rejected());
  return kOk;
}

// --from-server-path: the server reads its own volume.
int DatasetsImport(const Globals& g, const UploadArgs& args) {
  if (absl::StartsWith(args.labels, "csv:")) {
    std::fprintf(stderr,
                 "transferctl: --labels csv: needs the files here; with "
                 "--from-server-path use auto, filename, folder or none\n");
    return kUsage;
  }
  auto split = ParseSplit(args.split, args.seed);
  if (!split.ok()) {
    std::fprintf(stderr, "transferctl: --split: %s\n",
                 std::string(split.status().message()).c_str());
    return kUsage;
  }
  transferd::client::UploadOptions options =
      UploadOptionsFor(args, v1::LABEL_SOURCE_UNSPECIFIED, *split);
  options.server_path = args.server_path;
  if (args.name.empty()) options.display_name = args.server_path;
  auto client = Connect(g);
  auto response = client->UploadDataset(options, nullptr);
  return PrintUploaded(g, response);
}

int DatasetsUpload(const Globals& g, const UploadArgs& args) {
  if (args.dir.empty() == args.server_path.empty()) {
    std::fprintf(stderr,
                 "transferctl: give a folder to upload or "
                 "--from-server-path PATH (one of them)\n");
    return kUsage;
  }
  if (!args.server_path.empty()) return DatasetsImport(g, args);
  // What the folder looks like, before anything is sent: a wrong guess is
  // cheaper to spot now than after a long upload.
  auto layout = transferd::client::DetectLayout(args.dir);
  if (!layout.ok()) return Fail(layout.status());
  const std::string described = transferd::client::DescribeLayout(*layout);
  if (g.json) {
    std::fprintf(stderr, "layout: %s\n", described.c_str());
  } else {
    std::cout << "layout      " << described << "\n" << std::flush;
  }

  auto split = ParseSplit(args.split, args.seed);
  if (!split.ok()) {  // the option validator already checked the syntax
    std::fprintf(stderr, "transferctl: --split: %s\n",
                 std::string(split.status().message()).c_str());
    return kUsage;
  }
  transferd::client::UploadOptions options =
      UploadOptionsFor(args, layout->label_source, *split);
  if (options.label_source == v1::LABEL_SOURCE_EXPLICIT) {
    absl::StatusOr<std::map<std::string, std::string>> labels =
        CsvLabelsFor(g, args);
    if (!labels.ok()) return Fail(labels.status());
    options.explicit_labels = *std::move(labels);
  }

  auto client = Connect(g);
  auto response = Upload(*client, options, args.cancel_after_files);
  return PrintUploaded(g, response);
}

int DatasetsShow(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  auto dataset = client->GetDataset(transferd::client::DatasetName(name));
  if (!dataset.ok()) return Fail(dataset.status());
  if (g.json) {
    PrintJson(*dataset);
    return kOk;
  }
  PrintDataset(*dataset, "stored", dataset->files(), dataset->duplicate_files(),
               dataset->rejected_files(), dataset->rejects());
  return kOk;
}

int DatasetsRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  const std::string full = transferd::client::DatasetName(name);
  return PrintDeleted(g, client->DeleteDataset(full), full);
}

void AddUploadCommand(CLI::App* datasets, const Globals& g, int& rc) {
  auto upload_args = std::make_shared<UploadArgs>();
  CLI::App* upload = datasets->add_subcommand(
      "upload", "Upload a folder of JPEG/PNG images as a dataset");
  upload->add_option("DIR", upload_args->dir, "Folder to upload (recursively)")
      ->check(CLI::ExistingDirectory);
  upload->add_option("--from-server-path", upload_args->server_path,
                     "Import this folder of the server's --import-root "
                     "instead of sending a local one (admin role; same "
                     "checks, labels and splits)");
  upload->add_option("--id", upload_args->id,
                     "Dataset id, lowercase [a-z0-9-] (default: the server "
                     "chooses)");
  upload->add_option("--name", upload_args->name,
                     "Display name (default: the folder's name)");
  upload
      ->add_option("--labels", upload_args->labels,
                   "Where labels come from: auto (detected, printed "
                   "first), filename (cat.0.jpg -> cat), folder "
                   "(train/cats/x.jpg -> cats), csv:FILE[,names=FILE] "
                   "(a CSV of id,label rows; ids match files by path or "
                   "name, with or without extension; names=FILE maps "
                   "label ids to class names) or none (unlabelled, for "
                   "PREDICT jobs)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            transferd::client::CsvLabelOptions o;
            if (text == "auto" || text == "filename" || text == "folder" ||
                text == "none" || transferd::client::ParseCsvLabelSpec(text, o))
              return "";
            return "expected auto, filename, folder, none or "
                   "csv:FILE[,names=FILE]";
          },
          "LABELS"))
      ->capture_default_str();
  upload->add_option("--csv-id-column", upload_args->id_column,
                     "With --labels csv: the image id column (default id)");
  upload->add_option("--csv-label-column", upload_args->label_column,
                     "With --labels csv: the label column (default: the "
                     "first column other than the id)");
  upload->add_option("--names-id-column", upload_args->names_id_column,
                     "With names=FILE: its label id column (default: the "
                     "label column's name, else the first column)");
  upload->add_option("--names-column", upload_args->names_column,
                     "With names=FILE: its class name column (default: the "
                     "first other column)");
  upload
      ->add_option("--cancel-after-files", upload_args->cancel_after_files,
                   "Cancel as a Ctrl-C would once this many files have been "
                   "sent (tests and benchmarks of resumed uploads)")
      ->group("");  // hidden
  upload->add_flag("--strict", upload_args->strict,
                   "With --labels csv: any problem in the CSV files (bad "
                   "row, duplicate or unknown id, unlabelled file) stops "
                   "the upload before anything is sent");
  upload
      ->add_option("--split", upload_args->split,
                   "auto, folders (train/ validation|val/ test/), "
                   "ratios:T,V,E (fractions summing to 1; every class keeps "
                   "a training file), counts:T,V,E (files per class), "
                   "counts-up-to:T,V,E (as many as exist: a smaller class "
                   "is split in proportion) or keras-book "
                   "(counts:1000,500,500)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            auto parsed = ParseSplit(text, 0);
            return parsed.ok() ? "" : std::string(parsed.status().message());
          },
          "SPLIT"))
      ->capture_default_str();
  upload
      ->add_option("--seed", upload_args->seed,
                   "Shuffle seed of ratios, counts and keras-book splits")
      ->capture_default_str();
  upload->footer(kUploadHelp);
  upload->callback(
      [&g, &rc, upload_args] { rc = DatasetsUpload(g, *upload_args); });
}

}  // namespace

void AddDatasetsCommands(CLI::App& app, const Globals& g, int& rc) {
  CLI::App* datasets = app.add_subcommand("datasets", "Stored datasets");
  datasets->require_subcommand(1);
  datasets->add_subcommand("ls", "List datasets, newest first")
      ->footer(
          "Example: transferctl datasets ls\n"
          "         transferctl --json datasets ls | jq '.datasets[].name'")
      ->callback([&g, &rc] { rc = DatasetsList(g); });

  AddUploadCommand(datasets, g, rc);

  auto dataset_name = std::make_shared<std::string>();
  CLI::App* show = datasets->add_subcommand(
      "show", "Classes, splits, image sizes and rejects of a dataset");
  show->add_option("NAME", *dataset_name, "ID or datasets/ID")->required();
  show->footer("Example: transferctl datasets show cats-and-dogs");
  show->callback(
      [&g, &rc, dataset_name] { rc = DatasetsShow(g, *dataset_name); });

  CLI::App* rm =
      datasets->add_subcommand("rm", "Delete a dataset and its files");
  rm->add_option("NAME", *dataset_name, "ID or datasets/ID")->required();
  rm->footer("Example: transferctl datasets rm cats-and-dogs");
  rm->callback(
      [&g, &rc, dataset_name] { rc = DatasetsRemove(g, *dataset_name); });
}

}  // namespace transferd::client::commands
