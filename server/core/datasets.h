// The dataset catalog: uploads arrive as a sequence of file chunks, are
// validated file by file, and become a stored dataset atomically.
//
//   * Client paths are metadata only. Files are stored under server-made names
//     (their SHA-256), so identical files are stored once.
//   * An upload builds its files in <data>/tmp/upload-<random>/, which is
//     removed when the upload is abandoned (and, after a crash, when the data
//     directory is next opened). Commit flushes the files, renames the folder
//     to <data>/datasets/<id>/ and then inserts the catalog rows in one
//     transaction. A folder under datasets/ without a row (a crash between the
//     two steps, or during a delete) is removed when the catalog opens.
//   * Each file is checked by its magic bytes, its header dimensions against
//     the pixel cap, then decoded once; a bad file is rejected with a reason
//     and the upload goes on. Quotas and the free-disk floor end the upload
//     with RESOURCE_EXHAUSTED naming the limit.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset_layout.h"
#include "server/core/data/example.h"
#include "server/core/data/images.h"

namespace transferd::core {

class DataDir;
class Store;
class DatasetCatalog;
class Metrics;

struct DatasetLimits {
  // Largest single file, bytes.
  int64_t max_file_bytes = 32ll << 20;
  // Files (accepted or not) in one upload.
  int64_t max_files = 1'000'000;
  // Stored bytes of one dataset (after de-duplication).
  int64_t max_dataset_bytes = 20ll << 30;
  // Stored bytes of all datasets together, this upload included.
  int64_t max_total_bytes = 200ll << 30;
  // Free space the data directory's file system must keep.
  int64_t min_free_disk_bytes = 1ll << 30;
  // Decoded-image caps (max_bytes is taken from max_file_bytes).
  ImageLimits image;
  // The folder on the server's volume admins may import datasets from
  // (UploadHeader.server_path); empty: imports are off.
  std::string import_root;
};

// Machine-readable reasons, one to one with transferd.v1.RejectReason.
enum class RejectReason {
  kBadPath = 1,
  kUnsupportedFormat = 2,
  kTooManyPixels = 3,
  kCorrupt = 4,
  kEmpty = 5,
  kTooLarge = 6,
  kNoLabel = 7,
  kNoSplit = 8,
  kSizeMismatch = 9,
};

struct RejectedFile {
  std::string path;  // as sent, truncated to 300 bytes, NULs shown as \0
  RejectReason reason = RejectReason::kCorrupt;
  std::string message;
};

struct UploadSpec {
  std::string id;  // empty: the server picks "ds-<8 hex digits>"
  std::string display_name;
  common::LabelSource label_source = common::LabelSource::kAuto;
  // nullopt: split folders when any path starts with one, else all train.
  std::optional<common::SplitPolicy> split;
  int64_t expected_files = 0;  // 0 = unknown
  int64_t expected_bytes = 0;  // 0 = unknown
};

// One piece of one file, as the wire carries it.
struct UploadChunk {
  std::string_view path;   // non-empty on a file's first chunk only
  std::string_view label;  // explicit label (first chunk)
  int64_t size = 0;        // declared total size (first chunk)
  std::string_view data;
  bool last = false;
  // By reference: the file's content is what the server holds under this
  // SHA-256 (staged, or a file of a stored dataset); the chunk carries path,
  // label and size, no data, and last. FAILED_PRECONDITION when the server
  // holds no such content.
  std::string_view sha256;
};

struct ImageSizeStats {
  int min_width = 0, max_width = 0, min_height = 0, max_height = 0;
  double mean_width = 0, mean_height = 0;
};

struct SplitCounts {
  common::Split split = common::Split::kTrain;
  int64_t files = 0;
  std::vector<int64_t> per_class;  // in the dataset's class order
};

struct DatasetFile {
  std::string client_path;  // as uploaded ("cats/cat.1.jpg")
  std::string path;         // on the server
  int64_t label = 0;
  common::Split split = common::Split::kTrain;
};

struct DatasetInfo {
  std::string id;
  std::string display_name;
  std::chrono::system_clock::time_point create_time;
  common::LabelSource label_source = common::LabelSource::kFilename;
  std::vector<std::string> classes;  // sorted
  std::vector<SplitCounts>
      splits;  // train, validation, test; empty ones left out
  int64_t files = 0;
  int64_t bytes = 0;
  ImageSizeStats image_size;
  int64_t rejected_files = 0;
  int64_t duplicate_files = 0;
  std::vector<RejectedFile> rejects;  // the first kMaxStoredRejects
};

struct UploadResult {
  DatasetInfo dataset;
  std::vector<RejectedFile> rejected;  // all of them
  int64_t accepted_files = 0;
  int64_t duplicate_files = 0;
};

// One upload in progress, fed by one stream (not thread-safe). Destroying it
// without Commit() removes everything it wrote.
class DatasetUpload {
 public:
  ~DatasetUpload();
  DatasetUpload(const DatasetUpload&) = delete;
  DatasetUpload& operator=(const DatasetUpload&) = delete;

  // Takes the next chunk. A bad file becomes a reject and the upload goes
  // on; the returned error (which ends the upload) is INVALID_ARGUMENT for a
  // malformed chunk sequence and RESOURCE_EXHAUSTED for a quota or the
  // free-disk floor.
  absl::Status Add(const UploadChunk& chunk);

  // Takes every file under <import_root>/<server_path> on the server's own
  // volume as if it had been streamed (sorted paths relative to that
  // folder; hidden names and symbolic links skipped): the same checks,
  // limits and commit. FAILED_PRECONDITION when imports are off,
  // INVALID_ARGUMENT for a path that is malformed or leaves the root,
  // NOT_FOUND when it is not a folder.
  absl::Status AddServerFolder(const std::string& server_path);

  // Ends the upload: assigns labels and splits, then stores the dataset.
  // INVALID_ARGUMENT when a file is still open, when no file was accepted
  // (the message lists the first rejects) or when the split policy cannot be
  // met; ALREADY_EXISTS when the id was taken meanwhile.
  absl::StatusOr<UploadResult> Commit();

  const std::string& id() const { return spec_.id; }
  int64_t files_seen() const { return files_seen_; }

 private:
  friend class DatasetCatalog;
  struct Entry {
    std::string path;
    std::string explicit_label;
    std::string sha256;
    int64_t bytes = 0;
    int width = 0, height = 0;
  };
  DatasetUpload(DatasetCatalog& catalog, UploadSpec spec,
                std::filesystem::path dir);

  // A file Commit keeps: its entry, label and split.
  struct Kept {
    Entry entry;
    std::string label;
    common::Split split;
  };

  absl::Status BeginFile(const UploadChunk& chunk);
  absl::Status EndFile();
  // Commit's steps, in order. Each rejection is recorded in rejected_.
  // Labels every entry (moving entries_ out); `source` is resolved from kAuto.
  std::vector<Kept> LabelEntries(common::LabelSource& source);
  // Splits the labelled files; INVALID_ARGUMENT when nothing is kept.
  absl::StatusOr<std::vector<Kept>> SplitEntries(std::vector<Kept> labelled);
  // Removes stored files no kept entry uses; returns each kept file's size.
  std::map<std::string, int64_t> DropUnusedFiles(const std::vector<Kept>& kept);
  // Moves dir_ into datasets/<id>, durably.
  absl::Status MoveIntoPlace();
  // Inserts the dataset's rows and reads its split counts into `info`.
  absl::Status InsertRows(DatasetInfo& info, const std::vector<Kept>& kept);
  void Reject(RejectReason reason, std::string message);  // the open file
  void Rejected(RejectedFile file);
  absl::Status CheckSpace(int64_t more_bytes) const;
  void Abort();

  DatasetCatalog& catalog_;
  UploadSpec spec_;
  std::filesystem::path dir_;  // tmp/upload-*, removed unless committed

  // The open file, if any.
  bool in_file_ = false;
  bool skip_file_ = false;  // rejected at its first chunk: drop its data
  std::string file_path_;
  std::string file_label_;
  int64_t file_declared_ = 0;
  std::string file_data_;

  int64_t files_seen_ = 0;
  int64_t stored_bytes_ = 0;
  int64_t duplicates_ = 0;
  std::vector<Entry> entries_;
  std::set<std::string> stored_;       // sha256 of files written to dir_
  std::set<std::string> staged_used_;  // staged content referenced
  std::vector<RejectedFile> rejected_;
  bool committed_ = false;
};

class DatasetCatalog {
 public:
  static constexpr int kMaxStoredRejects = 1000;

  // Removes dataset folders that have no catalog row (see above).
  static absl::StatusOr<std::unique_ptr<DatasetCatalog>> Open(
      Store& store, const DataDir& data_dir, DatasetLimits limits);
  ~DatasetCatalog();

  const DatasetLimits& limits() const { return limits_; }
  int orphans_removed() const { return orphans_removed_; }

  // INVALID_ARGUMENT for a malformed id or spec, ALREADY_EXISTS when the id
  // is stored or being uploaded, RESOURCE_EXHAUSTED when the declared size
  // already breaks a quota or the disk floor.
  absl::StatusOr<std::unique_ptr<DatasetUpload>> BeginUpload(UploadSpec spec);

  // NOT_FOUND naming the id.
  absl::StatusOr<DatasetInfo> Get(const std::string& id);
  // Newest first. `page_token` is what the previous page returned.
  absl::StatusOr<std::vector<DatasetInfo>> List(int page_size,
                                                const std::string& page_token,
                                                std::string* next_page_token);
  // NOT_FOUND, or FAILED_PRECONDITION while `in_use` says a job uses it.
  absl::Status Delete(const std::string& id);

  // The stored files of one split, as loader examples (labels index the
  // dataset's classes), in a stable order.
  absl::StatusOr<std::vector<data::Example>> Examples(const std::string& id,
                                                      common::Split split);
  // Every file of the given splits (all when empty), in upload order, with
  // the client's path (for predict jobs' results).
  absl::StatusOr<std::vector<DatasetFile>> Files(
      const std::string& id, const std::vector<common::Split>& splits);

  // ---- Staged content: resumable, de-duplicating uploads ----
  // A client first asks which of its files' contents the server lacks,
  // sends those alone (each stored as it completes, so an interrupted
  // transfer resumes after the files that arrived, across restarts), then
  // uploads the dataset with every file by reference (UploadChunk::sha256):
  // the same validation, limits and atomic commit as a streamed upload.
  // Staged content is removed once a stored dataset holds it, and after
  // kStagedMaxAge unused.
  static constexpr std::chrono::hours kStagedMaxAge{24 * 7};

  // Whether the server holds each content (64 lower-case hex digits):
  // staged, or a file of a stored dataset. INVALID_ARGUMENT naming the first
  // malformed hash.
  absl::StatusOr<std::vector<bool>> HasContent(
      const std::vector<std::string>& sha256);
  // Stores `bytes` as staged content. DATA_LOSS when they do not hash to
  // `sha256`, RESOURCE_EXHAUSTED for the per-file limit, the total quota
  // (staged bytes count) or the free-disk floor. Staging content already
  // held is a no-op.
  absl::Status StageContent(const std::string& sha256, std::string_view bytes);
  // The bytes of a content the server holds (staged or a stored dataset's
  // file), for workers fetching a job's data; NOT_FOUND otherwise.
  absl::StatusOr<std::string> HeldContent(const std::string& sha256) {
    bool staged = false;
    return ReadContent(sha256, &staged);
  }
  // Bytes staged and not yet used by a dataset.
  int64_t staged_bytes();

  // Asked before a delete; returns the user (e.g. "jobs/7") or "" if none.
  void SetInUseCheck(std::function<std::string(const std::string& id)> in_use);
  // Where uploads count bytes, accepted files and rejects (null: nowhere).
  // Set before the first upload.
  void SetMetrics(Metrics* metrics) { metrics_ = metrics; }

  // Sum of the stored bytes of all datasets.
  absl::StatusOr<int64_t> TotalBytes();

  // "cats-and-dogs": 1 to 63 of [a-z0-9-], starting and ending alphanumeric.
  static absl::Status ValidateId(std::string_view id);

 private:
  friend class DatasetUpload;
  DatasetCatalog(Store& store, const DataDir& data_dir, DatasetLimits limits);
  absl::Status RemoveOrphans();
  // Sums the staged bytes; removes staged files older than kStagedMaxAge.
  void ScanStaging();
  void EndUpload(const std::string& id, int64_t reserved_bytes);
  // The bytes of the content `sha256` (hex): staged or a stored dataset's
  // file; NOT_FOUND when the server holds none. `staged` says which.
  absl::StatusOr<std::string> ReadContent(const std::string& sha256,
                                          bool* staged);
  // Removes staged content a committed dataset now holds.
  void ReleaseStaged(const std::set<std::string>& sha256);

  Store& store_;
  const DataDir& data_dir_;
  DatasetLimits limits_;
  int orphans_removed_ = 0;

  Metrics* metrics_ = nullptr;
  std::mutex mu_;
  std::set<std::string> uploading_;  // ids of uploads in progress
  int64_t reserved_bytes_ = 0;       // bytes written by uploads in progress
  int64_t staged_bytes_ = 0;         // bytes in staging_dir()
  std::function<std::string(const std::string&)> in_use_;
};

const char* RejectReasonName(RejectReason reason);

}  // namespace transferd::core
