// The server's data directory: the embedded default store. Layout:
//
//   <root>/transferd.db   SQLite database (WAL mode; -wal and -shm beside it)
//   <root>/LOCK           flock()ed by the one server that owns the directory
//   <root>/weights/       backbone weight files (the "imagenet" cache)
//   <root>/datasets/      stored dataset files, content-addressed
//   <root>/models/        model weights and checkpoints
//   <root>/cache/         derived data (feature caches); safe to delete
//   <root>/tmp/           in-progress uploads and writes; emptied at start
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"

namespace transferd::core {

class DataDir {
 public:
  struct Options {
    std::filesystem::path root = "transferd-data";
    // How long to wait for the directory lock while another process holds
    // it (a pod's predecessor still shutting down): 0 = refuse at once.
    std::chrono::milliseconds lock_wait{0};
  };

  // Creates the layout if missing, takes the directory lock, waiting up to
  // lock_wait while another process holds it (then FAILED_PRECONDITION
  // naming the holder), and empties tmp/ (what a crash left behind).
  static absl::StatusOr<std::unique_ptr<DataDir>> Open(const Options& options);

  ~DataDir();
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path database_path() const { return root_ / "transferd.db"; }
  std::filesystem::path weights_dir() const { return root_ / "weights"; }
  std::filesystem::path datasets_dir() const { return root_ / "datasets"; }
  std::filesystem::path models_dir() const { return root_ / "models"; }
  std::filesystem::path cache_dir() const { return root_ / "cache"; }
  std::filesystem::path tmp_dir() const { return root_ / "tmp"; }
  // Content staged for resumable uploads, by SHA-256 (datasets.h).
  std::filesystem::path staging_dir() const { return root_ / "staging"; }

  // Entries removed from tmp/ when the directory was opened.
  int stale_tmp_entries_removed() const { return stale_tmp_removed_; }

 private:
  DataDir(std::filesystem::path root, int lock_fd, int stale_tmp_removed)
      : root_(std::move(root)),
        lock_fd_(lock_fd),
        stale_tmp_removed_(stale_tmp_removed) {}

  std::filesystem::path root_;
  int lock_fd_;
  int stale_tmp_removed_;
};

}  // namespace transferd::core
