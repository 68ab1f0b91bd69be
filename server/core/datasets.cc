#include "server/core/datasets.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include <nlohmann/json.hpp>
#include <sys/statvfs.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/hash.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/store.h"

namespace transferd::core {
namespace fs = std::filesystem;
using common::LabelSource;
using common::Split;

namespace {

// Client paths are shown back to people: keep them printable and bounded.
// Printable and valid UTF-8 whatever the client sent: NUL as \0, and every
// byte of a path that is not UTF-8 beyond ASCII as \xNN.
std::string DisplayPath(std::string_view path) {
  const std::string_view shown = path.substr(0, 300);
  const bool utf8 = common::IsValidUtf8(shown);
  std::string out;
  for (char c : shown) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\0') {
      out += "\\0";
    } else if (u >= 0x80 && !utf8) {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    } else {
      out += c;
    }
  }
  if (path.size() > 300) out += "...";
  return out;
}

RejectReason ReasonFor(ImageError error) {
  switch (error) {
    case ImageError::kEmpty:
      return RejectReason::kEmpty;
    case ImageError::kUnsupportedFormat:
      return RejectReason::kUnsupportedFormat;
    case ImageError::kTooLarge:
      return RejectReason::kTooLarge;
    case ImageError::kTooManyPixels:
      return RejectReason::kTooManyPixels;
    case ImageError::kCorrupt:
      return RejectReason::kCorrupt;
  }
  return RejectReason::kCorrupt;
}

std::string Mb(int64_t bytes) {
  return absl::StrFormat("%.1f MB", static_cast<double>(bytes) / 1e6);
}

// Writes `bytes` to a new file (no fsync: Commit flushes the whole folder).
absl::Status WriteNewFile(const fs::path& path, std::string_view bytes) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(absl::StrCat("create ", path.string()));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = ErrnoError(absl::StrCat("write ", path.string()));
      ::close(fd);
      return status;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0)
    return ErrnoError(absl::StrCat("close ", path.string()));
  return absl::OkStatus();
}

// syncfs flushes every file written into the upload folder in one call,
// instead of one fsync per file.
absl::Status SyncFilesystemOf(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(absl::StrCat("open ", dir.string()));
  absl::Status status = ::syncfs(fd) == 0
                            ? absl::OkStatus()
                            : ErrnoError(absl::StrCat("syncfs ", dir.string()));
  ::close(fd);
  return status;
}

int64_t FreeDiskBytes(const fs::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0)
    return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

nlohmann::json RejectsToJson(const std::vector<RejectedFile>& rejects) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0;
       i < rejects.size() && i < DatasetCatalog::kMaxStoredRejects; ++i) {
    out.push_back({{"path", rejects[i].path},
                   {"reason", static_cast<int>(rejects[i].reason)},
                   {"message", rejects[i].message}});
  }
  return out;
}

constexpr const char* kDatasetColumns =
    "id, display_name, create_time_ms, label_source, classes, files, bytes, "
    "min_width, max_width, mean_width, min_height, max_height, mean_height, "
    "rejected_files, duplicate_files, rejects";

// A row of `datasets` (selected with kDatasetColumns), without split counts.
DatasetInfo ReadDatasetRow(const Statement& row) {
  DatasetInfo d;
  d.id = row.ColumnText(0);
  d.display_name = row.ColumnText(1);
  d.create_time = FromUnixMillis(row.ColumnInt(2));
  d.label_source = static_cast<LabelSource>(row.ColumnInt(3));
  for (const auto& c : nlohmann::json::parse(row.ColumnText(4))) {
    d.classes.push_back(c.get<std::string>());
  }
  d.files = row.ColumnInt(5);
  d.bytes = row.ColumnInt(6);
  d.image_size.min_width = static_cast<int>(row.ColumnInt(7));
  d.image_size.max_width = static_cast<int>(row.ColumnInt(8));
  d.image_size.mean_width = row.ColumnDouble(9);
  d.image_size.min_height = static_cast<int>(row.ColumnInt(10));
  d.image_size.max_height = static_cast<int>(row.ColumnInt(11));
  d.image_size.mean_height = row.ColumnDouble(12);
  d.rejected_files = row.ColumnInt(13);
  d.duplicate_files = row.ColumnInt(14);
  for (const auto& r : nlohmann::json::parse(row.ColumnText(15))) {
    d.rejects.push_back({r.at("path").get<std::string>(),
                         static_cast<RejectReason>(r.at("reason").get<int>()),
                         r.at("message").get<std::string>()});
  }
  return d;
}

// Fills d.splits from dataset_files.
absl::Status ReadSplitCounts(StoreTxn& txn, DatasetInfo& d) {
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement q,
      txn.Prepare("SELECT split, label, COUNT(*) FROM dataset_files "
                  "WHERE dataset_id = ? GROUP BY split, label "
                  "ORDER BY split, label"));
  q.Bind(1, d.id);
  std::map<int, SplitCounts> splits;
  while (true) {
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    const int split = static_cast<int>(q.ColumnInt(0));
    const int64_t label = q.ColumnInt(1);
    SplitCounts& s = splits[split];
    s.split = static_cast<Split>(split);
    s.per_class.resize(d.classes.size(), 0);
    if (label >= 0 && label < static_cast<int64_t>(s.per_class.size())) {
      s.per_class[label] = q.ColumnInt(2);
    }
    s.files += q.ColumnInt(2);
  }
  for (auto& [_, s] : splits) d.splits.push_back(std::move(s));
  return absl::OkStatus();
}

std::string ExtensionFor(ImageFormat format) {
  return format == ImageFormat::kPng ? ".png" : ".jpg";
}

}  // namespace

const char* RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kBadPath:
      return "bad_path";
    case RejectReason::kUnsupportedFormat:
      return "unsupported_format";
    case RejectReason::kTooManyPixels:
      return "too_many_pixels";
    case RejectReason::kCorrupt:
      return "corrupt";
    case RejectReason::kEmpty:
      return "empty";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kNoLabel:
      return "no_label";
    case RejectReason::kNoSplit:
      return "no_split";
    case RejectReason::kSizeMismatch:
      return "size_mismatch";
  }
  return "unknown";
}

// ---- DatasetUpload ----------------------------------------------------------

DatasetUpload::DatasetUpload(DatasetCatalog& catalog, UploadSpec spec,
                             fs::path dir)
    : catalog_(catalog), spec_(std::move(spec)), dir_(std::move(dir)) {}

DatasetUpload::~DatasetUpload() { Abort(); }

void DatasetUpload::Abort() {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
  dir_.clear();
  catalog_.EndUpload(spec_.id, stored_bytes_);
}

void DatasetUpload::Reject(RejectReason reason, std::string message) {
  Rejected({DisplayPath(file_path_), reason, std::move(message)});
}

void DatasetUpload::Rejected(RejectedFile file) {
  if (catalog_.metrics_ != nullptr) {
    catalog_.metrics_->UploadRejected(RejectReasonName(file.reason));
  }
  rejected_.push_back(std::move(file));
}

absl::Status DatasetUpload::Add(const UploadChunk& chunk) {
  if (dir_.empty()) {
    return absl::FailedPreconditionError("the upload has already ended");
  }
  if (!chunk.sha256.empty()) {
    // A file by reference: its content from the server's own store, then
    // the same path as streamed bytes.
    if (in_file_ || chunk.path.empty() || !chunk.data.empty() || !chunk.last) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a file sent by sha256 is one chunk with its path and last set and "
          "no data (\"",
          DisplayPath(chunk.path), "\")"));
    }
    bool staged = false;
    absl::StatusOr<std::string> bytes =
        catalog_.ReadContent(std::string(chunk.sha256), &staged);
    if (!bytes.ok()) {
      if (!absl::IsNotFound(bytes.status())) return bytes.status();
      return absl::FailedPreconditionError(absl::StrCat(
          "file \"", DisplayPath(chunk.path),
          "\": the server holds no content ", std::string(chunk.sha256),
          " (stage it first: Datasets.StageContent)"));
    }
    if (staged) staged_used_.insert(std::string(chunk.sha256));
    UploadChunk whole = chunk;
    whole.sha256 = {};
    whole.data = *bytes;
    return Add(whole);
  }
  if (!in_file_) {
    TRANSFERD_RETURN_IF_ERROR(BeginFile(chunk));
  } else if (!chunk.path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk for \"", DisplayPath(chunk.path),
                     "\" arrived while \"", DisplayPath(file_path_),
                     "\" was still open (its last chunk must set last)"));
  }
  if (!skip_file_) {
    if (static_cast<int64_t>(file_data_.size() + chunk.data.size()) >
        catalog_.limits_.max_file_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "file \"", DisplayPath(file_path_),
          "\" exceeds the per-file limit of ", catalog_.limits_.max_file_bytes,
          " bytes (--max-file-bytes)"));
    }
    file_data_.append(chunk.data);
  }
  if (catalog_.metrics_ != nullptr) {
    catalog_.metrics_->UploadBytes(static_cast<int64_t>(chunk.data.size()));
  }
  if (chunk.last) return EndFile();
  return absl::OkStatus();
}

absl::Status DatasetUpload::AddServerFolder(const std::string& server_path) {
  const std::string& root_text = catalog_.limits_.import_root;
  if (root_text.empty()) {
    return absl::FailedPreconditionError(
        "imports from the server's volume are off (start the server with "
        "--import-root DIR)");
  }
  if (server_path != ".") {
    if (absl::Status s = common::ValidateClientPath(server_path); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.server_path: ", s.message()));
    }
  }
  std::error_code ec;
  const fs::path root = fs::canonical(root_text, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "import root \"", root_text, "\" is unusable: ", ec.message()));
  }
  // Symbolic links resolved: the folder must still be inside the root.
  const fs::path folder = fs::canonical(root / server_path, ec);
  const std::string rel_check =
      ec ? std::string() : folder.lexically_relative(root).string();
  if (ec || rel_check.empty() || rel_check.rfind("..", 0) == 0) {
    if (ec && ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(
          absl::StrCat("header.server_path: no folder \"", server_path,
                       "\" under the import root"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "header.server_path: \"", server_path, "\" leaves the import root"));
  }
  if (!fs::is_directory(folder, ec)) {
    return absl::NotFoundError(absl::StrCat("header.server_path: \"",
                                            server_path, "\" is not a folder"));
  }
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(
           folder, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
    files.push_back(it->path().lexically_relative(folder).generic_string());
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("listing \"", server_path, "\": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& rel : files) {
    const fs::path path = folder / rel;
    const auto size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec) continue;  // gone meanwhile
    UploadChunk chunk;
    chunk.path = rel;
    chunk.size = size;
    chunk.last = true;
    std::string bytes;
    if (size <= catalog_.limits_.max_file_bytes) {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    chunk.data = bytes;
    TRANSFERD_RETURN_IF_ERROR(Add(chunk));
  }
  return absl::OkStatus();
}

absl::Status DatasetUpload::BeginFile(const UploadChunk& chunk) {
  if (chunk.path.empty()) {
    return absl::InvalidArgumentError(
        "a file's first chunk must carry its path (chunk without a path and no "
        "file open)");
  }
  if (++files_seen_ > catalog_.limits_.max_files) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload exceeds the limit of ", catalog_.limits_.max_files,
                     " files per dataset (--max-dataset-files)"));
  }
  in_file_ = true;
  skip_file_ = false;
  file_path_ = std::string(chunk.path);
  file_label_ = std::string(chunk.label);
  file_declared_ = chunk.size;
  file_data_.clear();
  if (chunk.size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file \"", DisplayPath(file_path_), "\" declares a negative size"));
  }
  if (chunk.size > catalog_.limits_.max_file_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "file \"", DisplayPath(file_path_), "\" declares ", chunk.size,
        " bytes, over the per-file limit of ", catalog_.limits_.max_file_bytes,
        " bytes (--max-file-bytes)"));
  }
  if (absl::Status path = common::ValidateClientPath(chunk.path); !path.ok()) {
    Reject(RejectReason::kBadPath, std::string(path.message()));
    skip_file_ = true;
  } else if (spec_.label_source == LabelSource::kExplicit &&
             chunk.label.empty()) {
    Reject(RejectReason::kNoLabel,
           "explicit labels were requested but this file has none");
    skip_file_ = true;
  } else if (!common::IsValidUtf8(chunk.label)) {
    Reject(RejectReason::kNoLabel, "the label is not valid UTF-8");
    skip_file_ = true;
  }
  return absl::OkStatus();
}

absl::Status DatasetUpload::CheckSpace(int64_t more) const {
  const DatasetLimits& limits = catalog_.limits_;
  if (stored_bytes_ + more > limits.max_dataset_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("dataset quota: storing ", Mb(stored_bytes_ + more),
                     " would exceed the per-dataset limit of ",
                     limits.max_dataset_bytes, " bytes (--max-dataset-bytes)"));
  }
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t committed, catalog_.TotalBytes());
  int64_t reserved;
  {
    std::lock_guard<std::mutex> lock(catalog_.mu_);
    reserved = catalog_.reserved_bytes_;
  }
  if (committed + reserved + more > limits.max_total_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "total dataset quota: ", Mb(committed), " stored and ",
        Mb(reserved + more), " being uploaded would exceed the limit of ",
        limits.max_total_bytes,
        " bytes for all datasets (--max-total-dataset-bytes)"));
  }
  const int64_t free_bytes = FreeDiskBytes(dir_);
  if (free_bytes - more < limits.min_free_disk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("free-disk floor: the data directory has ", Mb(free_bytes),
                     " free and must keep ", limits.min_free_disk_bytes,
                     " bytes free (--min-free-disk-bytes)"));
  }
  return absl::OkStatus();
}

absl::Status DatasetUpload::EndFile() {
  in_file_ = false;
  std::string bytes = std::move(file_data_);
  file_data_ = std::string();
  if (skip_file_) return absl::OkStatus();
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (file_declared_ != 0 && file_declared_ != size) {
    Reject(
        RejectReason::kSizeMismatch,
        absl::StrCat("declared ", file_declared_, " bytes, received ", size));
    return absl::OkStatus();
  }
  ImageLimits limits = catalog_.limits_.image;
  limits.max_bytes = catalog_.limits_.max_file_bytes;
  // A reduced-resolution decode still reads every entropy-coded byte, so it
  // proves the file whole at a fraction of the cost.
  absl::StatusOr<DecodedImage> image =
      DecodeImage(bytes, limits, /*min_side=*/32);
  if (!image.ok()) {
    const std::optional<ImageError> error = ImageErrorOf(image.status());
    Reject(error ? ReasonFor(*error) : RejectReason::kCorrupt,
           std::string(image.status().message()));
    return absl::OkStatus();
  }
  TRANSFERD_ASSIGN_OR_RETURN(const ImageHeader header,
                             ProbeImage(bytes, limits));
  common::Sha256 hash;
  hash.Update(bytes.data(), bytes.size());
  Entry entry;
  entry.path = file_path_;
  entry.explicit_label = file_label_;
  entry.sha256 = hash.HexDigest() + ExtensionFor(header.format);
  entry.bytes = size;
  entry.width = image->original_width;
  entry.height = image->original_height;
  if (stored_.count(entry.sha256) > 0) {
    ++duplicates_;
  } else {
    TRANSFERD_RETURN_IF_ERROR(CheckSpace(size));
    TRANSFERD_RETURN_IF_ERROR(WriteNewFile(dir_ / entry.sha256, bytes));
    stored_.insert(entry.sha256);
    stored_bytes_ += size;
    std::lock_guard<std::mutex> lock(catalog_.mu_);
    catalog_.reserved_bytes_ += size;
  }
  if (catalog_.metrics_ != nullptr) catalog_.metrics_->UploadFileAccepted();
  entries_.push_back(std::move(entry));
  return absl::OkStatus();
}

std::vector<DatasetUpload::Kept> DatasetUpload::LabelEntries(
    LabelSource& source) {
  std::vector<std::string> paths;
  for (const Entry& e : entries_) paths.push_back(e.path);
  if (source == LabelSource::kAuto) source = common::DetectLabelSource(paths);
  std::vector<Kept> labelled;
  for (Entry& e : entries_) {
    absl::StatusOr<std::string> label =
        source == LabelSource::kNone ? absl::StatusOr<std::string>("")
        : source == LabelSource::kExplicit
            ? absl::StatusOr<std::string>(e.explicit_label)
        : source == LabelSource::kFolder ? common::LabelFromFolder(e.path)
                                         : common::LabelFromFilename(e.path);
    if (!label.ok()) {
      Rejected({DisplayPath(e.path), RejectReason::kNoLabel,
                std::string(label.status().message())});
      continue;
    }
    labelled.push_back({std::move(e), *std::move(label), Split::kNone});
  }
  entries_.clear();
  return labelled;
}

absl::StatusOr<std::vector<DatasetUpload::Kept>> DatasetUpload::SplitEntries(
    std::vector<Kept> labelled) {
  std::vector<std::string> paths, labels;
  for (const Kept& k : labelled) {
    paths.push_back(k.entry.path);
    labels.push_back(k.label);
  }
  common::SplitPolicy policy;
  if (spec_.split.has_value()) {
    policy = *spec_.split;
  } else {
    policy.kind = common::SplitPolicy::Kind::kAllTrain;
    for (const std::string& p : paths) {
      if (common::SplitFromFolder(p).has_value()) {
        policy.kind = common::SplitPolicy::Kind::kFolders;
        break;
      }
    }
  }
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<Split> splits,
                             common::AssignSplits(paths, labels, policy));
  std::vector<Kept> kept;
  for (size_t i = 0; i < labelled.size(); ++i) {
    if (splits[i] == Split::kNone) {
      if (policy.kind == common::SplitPolicy::Kind::kFolders) {
        Rejected({DisplayPath(labelled[i].entry.path), RejectReason::kNoSplit,
                  "not under a train/, validation/ (val/) or test/ folder"});
      }
      continue;  // per-class counts: beyond the requested sum, not stored
    }
    labelled[i].split = splits[i];
    kept.push_back(std::move(labelled[i]));
  }
  if (kept.empty()) {
    std::string first;
    for (size_t i = 0; i < rejected_.size() && i < 3; ++i) {
      absl::StrAppend(&first, i ? "; " : "", rejected_[i].path, ": ",
                      rejected_[i].message);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "no file was accepted (", files_seen_, " sent, ", rejected_.size(),
        " rejected", first.empty() ? "" : ": ", first, ")"));
  }
  // Stable order: by split, then client path.
  std::stable_sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) {
    if (a.split != b.split) return a.split < b.split;
    return a.entry.path < b.entry.path;
  });
  return kept;
}

std::map<std::string, int64_t> DatasetUpload::DropUnusedFiles(
    const std::vector<Kept>& kept) {
  std::map<std::string, int64_t> size_of;  // stored file -> bytes
  for (const Kept& k : kept) size_of[k.entry.sha256] = k.entry.bytes;
  for (const std::string& file : stored_) {
    if (size_of.count(file) == 0) {
      std::error_code ec;
      fs::remove(dir_ / file, ec);
    }
  }
  return size_of;
}

namespace {

// The classes (sorted, unique) and image sizes of what Commit keeps.
void SummariseKept(const std::vector<std::string>& labels,
                   const std::vector<std::pair<int, int>>& sizes,
                   DatasetInfo& info) {
  info.classes = labels;
  std::sort(info.classes.begin(), info.classes.end());
  info.classes.erase(std::unique(info.classes.begin(), info.classes.end()),
                     info.classes.end());
  // Unlabelled files (LabelSource::kNone) name no class.
  if (!info.classes.empty() && info.classes.front().empty())
    info.classes.erase(info.classes.begin());
  ImageSizeStats& s = info.image_size;
  s.min_width = s.min_height = std::numeric_limits<int>::max();
  double sum_w = 0, sum_h = 0;
  for (const auto& [width, height] : sizes) {
    s.min_width = std::min(s.min_width, width);
    s.max_width = std::max(s.max_width, width);
    s.min_height = std::min(s.min_height, height);
    s.max_height = std::max(s.max_height, height);
    sum_w += width;
    sum_h += height;
  }
  s.mean_width = sum_w / static_cast<double>(sizes.size());
  s.mean_height = sum_h / static_cast<double>(sizes.size());
}

}  // namespace

absl::Status DatasetUpload::MoveIntoPlace() {
  // Make the files durable, then move the folder into place.
  const fs::path final_dir = catalog_.data_dir_.datasets_dir() / spec_.id;
  TRANSFERD_RETURN_IF_ERROR(SyncFilesystemOf(dir_));
  std::error_code ec;
  fs::remove_all(final_dir, ec);  // an orphan, never a catalogued dataset
  fs::rename(dir_, final_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot move the upload into ",
                                            final_dir.string(), ": ",
                                            ec.message()));
  }
  dir_ = final_dir;  // an abort from here on removes the final folder
  return SyncDirectory(catalog_.data_dir_.datasets_dir());
}

absl::Status DatasetUpload::InsertRows(DatasetInfo& info,
                                       const std::vector<Kept>& kept) {
  std::map<std::string, int64_t> class_index;
  for (size_t i = 0; i < info.classes.size(); ++i) {
    class_index[info.classes[i]] = static_cast<int64_t>(i);
  }
  const std::string classes_json = nlohmann::json(info.classes).dump();
  const std::string rejects_json = RejectsToJson(rejected_).dump();
  return catalog_.store_.Transaction([&](StoreTxn& txn) -> absl::Status {
    {
      TRANSFERD_ASSIGN_OR_RETURN(
          Statement exists, txn.Prepare("SELECT 1 FROM datasets WHERE id = ?"));
      exists.Bind(1, spec_.id);
      TRANSFERD_ASSIGN_OR_RETURN(bool taken, exists.Step());
      if (taken) {
        return absl::AlreadyExistsError(
            absl::StrCat("dataset \"", spec_.id, "\" already exists"));
      }
    }
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement insert, txn.Prepare(absl::StrCat(
                              "INSERT INTO datasets (", kDatasetColumns,
                              ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")));
    const ImageSizeStats& s = info.image_size;
    insert.Bind(1, info.id)
        .Bind(2, info.display_name)
        .Bind(3, UnixMillis(info.create_time))
        .Bind(4, static_cast<int64_t>(info.label_source))
        .Bind(5, classes_json)
        .Bind(6, info.files)
        .Bind(7, info.bytes)
        .Bind(8, static_cast<int64_t>(s.min_width))
        .Bind(9, static_cast<int64_t>(s.max_width))
        .Bind(10, s.mean_width)
        .Bind(11, static_cast<int64_t>(s.min_height))
        .Bind(12, static_cast<int64_t>(s.max_height))
        .Bind(13, s.mean_height)
        .Bind(14, info.rejected_files)
        .Bind(15, info.duplicate_files)
        .Bind(16, rejects_json);
    TRANSFERD_RETURN_IF_ERROR(insert.Run());
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement file,
        txn.Prepare(
            "INSERT INTO dataset_files (dataset_id, idx, client_path, label, "
            "split, file, bytes, width, height) VALUES (?,?,?,?,?,?,?,?,?)"));
    for (size_t i = 0; i < kept.size(); ++i) {
      const Kept& k = kept[i];
      file.Reset()
          .Bind(1, info.id)
          .Bind(2, static_cast<int64_t>(i))
          .Bind(3, k.entry.path)
          .Bind(4, k.label.empty() ? int64_t{-1} : class_index[k.label])
          .Bind(5, static_cast<int64_t>(k.split))
          .Bind(6, k.entry.sha256)
          .Bind(7, k.entry.bytes)
          .Bind(8, static_cast<int64_t>(k.entry.width))
          .Bind(9, static_cast<int64_t>(k.entry.height));
      TRANSFERD_RETURN_IF_ERROR(file.Run());
    }
    return ReadSplitCounts(txn, info);
  });
}

absl::StatusOr<UploadResult> DatasetUpload::Commit() {
  if (dir_.empty())
    return absl::FailedPreconditionError("the upload has already ended");
  if (in_file_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the stream ended inside \"", DisplayPath(file_path_),
                     "\" (its last chunk must set last)"));
  }
  LabelSource source = spec_.label_source;
  std::vector<Kept> labelled = LabelEntries(source);
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<Kept> kept,
                             SplitEntries(std::move(labelled)));
  const std::map<std::string, int64_t> size_of = DropUnusedFiles(kept);

  DatasetInfo info;
  info.id = spec_.id;
  info.display_name =
      spec_.display_name.empty() ? spec_.id : spec_.display_name;
  info.create_time =
      FromUnixMillis(UnixMillis(std::chrono::system_clock::now()));
  info.label_source = source;
  info.files = static_cast<int64_t>(kept.size());
  for (const auto& [_, size] : size_of) info.bytes += size;
  info.rejected_files = static_cast<int64_t>(rejected_.size());
  // Kept entries whose bytes an earlier kept entry already had.
  info.duplicate_files = static_cast<int64_t>(kept.size() - size_of.size());
  std::vector<std::string> labels;
  std::vector<std::pair<int, int>> sizes;
  for (const Kept& k : kept) {
    labels.push_back(k.label);
    sizes.emplace_back(k.entry.width, k.entry.height);
  }
  SummariseKept(labels, sizes, info);
  for (size_t i = 0;
       i < rejected_.size() && i < DatasetCatalog::kMaxStoredRejects; ++i) {
    info.rejects.push_back(rejected_[i]);
  }

  TRANSFERD_RETURN_IF_ERROR(MoveIntoPlace());
  TRANSFERD_RETURN_IF_ERROR(InsertRows(info, kept));
  committed_ = true;
  catalog_.EndUpload(spec_.id, stored_bytes_);
  catalog_.ReleaseStaged(staged_used_);
  dir_.clear();
  LogFields(spdlog::level::info, "dataset stored",
            {{"dataset", info.id},
             {"files", std::to_string(info.files)},
             {"bytes", std::to_string(info.bytes)},
             {"rejected", std::to_string(info.rejected_files)}});

  UploadResult result;
  result.dataset = std::move(info);
  result.rejected = std::move(rejected_);
  result.accepted_files = static_cast<int64_t>(kept.size());
  result.duplicate_files = result.dataset.duplicate_files;
  return result;
}

// ---- DatasetCatalog ---------------------------------------------------------

DatasetCatalog::DatasetCatalog(Store& store, const DataDir& data_dir,
                               DatasetLimits limits)
    : store_(store), data_dir_(data_dir), limits_(limits) {}

DatasetCatalog::~DatasetCatalog() = default;

absl::StatusOr<std::unique_ptr<DatasetCatalog>> DatasetCatalog::Open(
    Store& store, const DataDir& data_dir, DatasetLimits limits) {
  if (limits.max_file_bytes <= 0 || limits.max_files <= 0 ||
      limits.max_dataset_bytes <= 0 || limits.max_total_bytes <= 0 ||
      limits.min_free_disk_bytes < 0) {
    return absl::InvalidArgumentError("dataset limits must be positive");
  }
  std::unique_ptr<DatasetCatalog> catalog(
      new DatasetCatalog(store, data_dir, limits));
  TRANSFERD_RETURN_IF_ERROR(catalog->RemoveOrphans());
  catalog->ScanStaging();
  return catalog;
}

// ---- Staged content ---------------------------------------------------------

namespace {

bool IsSha256Hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

absl::Status CheckSha256(const std::string& s) {
  if (IsSha256Hex(s)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "sha256 \"", s.substr(0, 80), "\" is not 64 lower-case hex digits"));
}

}  // namespace

void DatasetCatalog::ScanStaging() {
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  int64_t total = 0;
  for (const auto& e : fs::directory_iterator(data_dir_.staging_dir(), ec)) {
    const std::string name = e.path().filename().string();
    const auto age = now - e.last_write_time(ec);
    if (ec || !IsSha256Hex(name) || age > kStagedMaxAge) {
      fs::remove(e.path(), ec);  // stale, or a torn temporary
      continue;
    }
    total += static_cast<int64_t>(e.file_size(ec));
  }
  std::lock_guard<std::mutex> lock(mu_);
  staged_bytes_ = total;
}

int64_t DatasetCatalog::staged_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return staged_bytes_;
}

absl::StatusOr<std::vector<bool>> DatasetCatalog::HasContent(
    const std::vector<std::string>& sha256) {
  for (const std::string& s : sha256) TRANSFERD_RETURN_IF_ERROR(CheckSha256(s));
  std::vector<bool> out(sha256.size(), false);
  std::error_code ec;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q, txn.Prepare("SELECT 1 FROM dataset_files WHERE file "
                                     ">= ? AND file < ? LIMIT 1"));
        for (size_t i = 0; i < sha256.size(); ++i) {
          if (fs::exists(data_dir_.staging_dir() / sha256[i], ec)) {
            out[i] = true;
            continue;
          }
          // Stored files are named <sha256>.<ext>.
          q.Reset().Bind(1, sha256[i] + ".").Bind(2, sha256[i] + "/");
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          out[i] = row;
        }
        return absl::OkStatus();
      }));
  return out;
}

absl::Status DatasetCatalog::StageContent(const std::string& sha256,
                                          std::string_view bytes) {
  TRANSFERD_RETURN_IF_ERROR(CheckSha256(sha256));
  const auto size = static_cast<int64_t>(bytes.size());
  if (size > limits_.max_file_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "content ", sha256, " is ", size, " bytes, over the per-file limit of ",
        limits_.max_file_bytes, " bytes (--max-file-bytes)"));
  }
  common::Sha256 hash;
  hash.Update(bytes.data(), bytes.size());
  if (hash.HexDigest() != sha256) {
    return absl::DataLossError(absl::StrCat("the bytes sent as ", sha256,
                                            " hash to ", hash.HexDigest(),
                                            "; nothing was stored for them"));
  }
  const fs::path target = data_dir_.staging_dir() / sha256;
  std::error_code ec;
  if (fs::exists(target, ec)) return absl::OkStatus();
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t committed, TotalBytes());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (committed + reserved_bytes_ + staged_bytes_ + size >
        limits_.max_total_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "total dataset quota: ", Mb(committed), " stored and ",
          Mb(reserved_bytes_ + staged_bytes_ + size),
          " being uploaded would exceed the limit of ", limits_.max_total_bytes,
          " bytes for all datasets (--max-total-dataset-bytes)"));
    }
  }
  const int64_t free_bytes = FreeDiskBytes(data_dir_.staging_dir());
  if (free_bytes - size < limits_.min_free_disk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("free-disk floor: the data directory has ", Mb(free_bytes),
                     " free and must keep ", limits_.min_free_disk_bytes,
                     " bytes free (--min-free-disk-bytes)"));
  }
  TRANSFERD_RETURN_IF_ERROR(WriteFileAtomically(target, bytes));
  std::lock_guard<std::mutex> lock(mu_);
  staged_bytes_ += size;
  return absl::OkStatus();
}

absl::StatusOr<std::string> DatasetCatalog::ReadContent(
    const std::string& sha256, bool* staged) {
  TRANSFERD_RETURN_IF_ERROR(CheckSha256(sha256));
  fs::path path = data_dir_.staging_dir() / sha256;
  std::error_code ec;
  *staged = fs::exists(path, ec);
  if (!*staged) {
    std::string dataset, file;
    TRANSFERD_RETURN_IF_ERROR(
        store_.Transaction([&](StoreTxn& txn) -> absl::Status {
          TRANSFERD_ASSIGN_OR_RETURN(
              Statement q,
              txn.Prepare("SELECT dataset_id, file FROM dataset_files WHERE "
                          "file >= ? AND file < ? LIMIT 1"));
          q.Bind(1, sha256 + ".").Bind(2, sha256 + "/");
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (row) {
            dataset = q.ColumnText(0);
            file = q.ColumnText(1);
          }
          return absl::OkStatus();
        }));
    if (file.empty()) {
      return absl::NotFoundError(absl::StrCat("no content ", sha256));
    }
    path = data_dir_.datasets_dir() / dataset / file;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  }
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void DatasetCatalog::ReleaseStaged(const std::set<std::string>& sha256) {
  int64_t freed = 0;
  for (const std::string& s : sha256) {
    std::error_code ec;
    const fs::path p = data_dir_.staging_dir() / s;
    const auto size = fs::file_size(p, ec);
    if (!ec && fs::remove(p, ec)) freed += static_cast<int64_t>(size);
  }
  std::lock_guard<std::mutex> lock(mu_);
  staged_bytes_ = std::max<int64_t>(0, staged_bytes_ - freed);
}

absl::Status DatasetCatalog::RemoveOrphans() {
  std::set<std::string> known;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(Statement q,
                                   txn.Prepare("SELECT id FROM datasets"));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          known.insert(q.ColumnText(0));
        }
        return absl::OkStatus();
      }));
  TRANSFERD_ASSIGN_OR_RETURN(
      orphans_removed_, RemoveUncatalogued(data_dir_.datasets_dir(), known));
  return absl::OkStatus();
}

absl::Status DatasetCatalog::ValidateId(std::string_view id) {
  return ValidateResourceId("dataset id", id);
}

absl::StatusOr<std::unique_ptr<DatasetUpload>> DatasetCatalog::BeginUpload(
    UploadSpec spec) {
  if (spec.id.empty()) spec.id = "ds-" + RandomHex(4);
  TRANSFERD_RETURN_IF_ERROR(ValidateId(spec.id));
  if (spec.display_name.size() > 1024) {
    return absl::InvalidArgumentError("display_name is longer than 1024 bytes");
  }
  if (spec.expected_files < 0 || spec.expected_bytes < 0) {
    return absl::InvalidArgumentError(
        "expected_files and expected_bytes must not be negative");
  }
  if (spec.expected_files > limits_.max_files) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the upload declares ", spec.expected_files,
                     " files, over the limit of ", limits_.max_files,
                     " files per dataset (--max-dataset-files)"));
  }
  if (spec.split.has_value()) {
    // Checked once here so that a bad policy fails before any byte is sent.
    TRANSFERD_RETURN_IF_ERROR(
        common::AssignSplits({}, {}, *spec.split).status());
  }
  if (absl::Status existing = Get(spec.id).status(); existing.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("dataset \"", spec.id, "\" already exists"));
  } else if (!absl::IsNotFound(existing)) {
    return existing;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!uploading_.insert(spec.id).second) {
      return absl::AlreadyExistsError(absl::StrCat(
          "dataset \"", spec.id, "\" is being uploaded by another stream"));
    }
  }
  const fs::path dir = data_dir_.tmp_dir() / ("upload-" + RandomHex(8));
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec) {
    EndUpload(spec.id, 0);
    return absl::InternalError(
        absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  }
  std::unique_ptr<DatasetUpload> upload(
      new DatasetUpload(*this, std::move(spec), dir));
  if (upload->spec_.expected_bytes > 0) {
    TRANSFERD_RETURN_IF_ERROR(upload->CheckSpace(upload->spec_.expected_bytes));
  }
  return upload;
}

void DatasetCatalog::EndUpload(const std::string& id, int64_t reserved_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  uploading_.erase(id);
  reserved_bytes_ -= reserved_bytes;
}

absl::StatusOr<int64_t> DatasetCatalog::TotalBytes() {
  int64_t total = 0;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT COALESCE(SUM(bytes), 0) FROM datasets"));
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) total = q.ColumnInt(0);
        return absl::OkStatus();
      }));
  return total;
}

absl::StatusOr<DatasetInfo> DatasetCatalog::Get(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateId(id));
  std::optional<DatasetInfo> found;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(absl::StrCat("SELECT ", kDatasetColumns,
                                     " FROM datasets WHERE id = ?")));
        q.Bind(1, id);
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) return absl::OkStatus();
        found = ReadDatasetRow(q);
        return ReadSplitCounts(txn, *found);
      }));
  if (!found.has_value()) {
    return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
  }
  return *std::move(found);
}

absl::StatusOr<std::vector<DatasetInfo>> DatasetCatalog::List(
    int page_size, const std::string& page_token,
    std::string* next_page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(page_size, ClampPageSize(page_size));
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t offset, ParsePageToken(page_token));
  std::vector<DatasetInfo> out;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(absl::StrCat("SELECT ", kDatasetColumns,
                                     " FROM datasets ORDER BY create_time_ms "
                                     "DESC, id LIMIT ? OFFSET ?")));
        q.Bind(1, static_cast<int64_t>(page_size) + 1).Bind(2, offset);
        TRANSFERD_ASSIGN_OR_RETURN(
            more, ReadPage(q, page_size, [&](const Statement& row) {
              out.push_back(ReadDatasetRow(row));
              return absl::OkStatus();
            }));
        for (DatasetInfo& d : out)
          TRANSFERD_RETURN_IF_ERROR(ReadSplitCounts(txn, d));
        return absl::OkStatus();
      }));
  if (next_page_token != nullptr) {
    *next_page_token = more ? std::to_string(offset + page_size) : "";
  }
  return out;
}

void DatasetCatalog::SetInUseCheck(
    std::function<std::string(const std::string&)> in_use) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ = std::move(in_use);
}

absl::Status DatasetCatalog::Delete(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateId(id));
  std::function<std::string(const std::string&)> in_use;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use = in_use_;
  }
  if (in_use) {
    const std::string user = in_use(id);
    if (!user.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset \"", id, "\" is used by ", user,
          ", which is queued or running; cancel it or wait for it to finish"));
    }
  }
  bool deleted = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement d, txn.Prepare("DELETE FROM datasets WHERE id = ?"));
        d.Bind(1, id);
        TRANSFERD_RETURN_IF_ERROR(d.Run());
        deleted = txn.Changes() > 0;
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement f,
            txn.Prepare("DELETE FROM dataset_files WHERE dataset_id = ?"));
        f.Bind(1, id);
        return f.Run();
      }));
  if (!deleted)
    return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
  // After the rows: a crash here leaves an orphan folder, removed at start.
  std::error_code ec;
  fs::remove_all(data_dir_.datasets_dir() / id, ec);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<data::Example>> DatasetCatalog::Examples(
    const std::string& id, Split split) {
  TRANSFERD_RETURN_IF_ERROR(Get(id).status());
  std::vector<data::Example> out;
  const fs::path dir = data_dir_.datasets_dir() / id;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(
                "SELECT file, label FROM dataset_files WHERE dataset_id = ? "
                "AND split = ? ORDER BY idx"));
        q.Bind(1, id).Bind(2, static_cast<int64_t>(split));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          out.push_back({(dir / q.ColumnText(0)).string(), q.ColumnInt(1)});
        }
        return absl::OkStatus();
      }));
  return out;
}

absl::StatusOr<std::vector<DatasetFile>> DatasetCatalog::Files(
    const std::string& id, const std::vector<common::Split>& splits) {
  TRANSFERD_RETURN_IF_ERROR(Get(id).status());
  std::vector<DatasetFile> out;
  const fs::path dir = data_dir_.datasets_dir() / id;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(
                "SELECT client_path, file, label, split FROM dataset_files "
                "WHERE dataset_id = ? ORDER BY idx"));
        q.Bind(1, id);
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          const auto split = static_cast<common::Split>(q.ColumnInt(3));
          if (!splits.empty() &&
              std::find(splits.begin(), splits.end(), split) == splits.end()) {
            continue;
          }
          out.push_back({q.ColumnText(0), (dir / q.ColumnText(1)).string(),
                         q.ColumnInt(2), split});
        }
        return absl::OkStatus();
      }));
  return out;
}

}  // namespace transferd::core
