// Moving a model version in and out of the server as a model archive
// (model_archive.h), shaped like DatasetUpload: a temporary file in tmp/,
// bounded by a size limit and the free-disk floor, removed when the object
// goes, however the transfer ended. Both do file I/O and ModelImport::Commit
// builds the classifier to check the weights: front ends call them from the
// engine's executor (Engine::executor()), never from their own threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/hash.h"
#include "server/core/model_info.h"

namespace transferd::core {

class DataDir;
class ModelRegistry;

struct TransferLimits {
  int64_t max_bytes = 0;            // the archive's largest size
  int64_t min_free_disk_bytes = 0;  // left free on the data directory's disk
};

struct ModelImportSpec {
  std::string model_id;      // empty: the registry chooses
  std::string display_name;  // empty: the archive's
  int64_t total_bytes = 0;   // announced size; 0: unknown
};

class ModelImport {
 public:
  // Checks the spec (INVALID_ARGUMENT for a negative size or a malformed id,
  // RESOURCE_EXHAUSTED above the limit or the disk floor, ALREADY_EXISTS for
  // a taken id) and creates the temporary file.
  static absl::StatusOr<std::unique_ptr<ModelImport>> Begin(
      ModelRegistry& registry, const DataDir& data_dir, TransferLimits limits,
      ModelImportSpec spec);
  ~ModelImport();
  ModelImport(const ModelImport&) = delete;
  ModelImport& operator=(const ModelImport&) = delete;

  // The archive's next bytes. RESOURCE_EXHAUSTED past the limit or the disk
  // floor, INVALID_ARGUMENT past the announced size.
  absl::Status Append(std::string_view data);
  // Checks the announced size and registers the archive
  // (ModelRegistry::Import: the tar, model.json and the weights are
  // checked). At most once.
  absl::StatusOr<ModelInfo> Commit();

  int64_t received() const { return received_; }

 private:
  ModelImport(ModelRegistry& registry, TransferLimits limits,
              ModelImportSpec spec, std::filesystem::path path);
  absl::Status CheckDisk(int64_t more) const;

  ModelRegistry& registry_;
  TransferLimits limits_;
  ModelImportSpec spec_;
  std::filesystem::path path_;
  std::ofstream out_;
  int64_t received_ = 0;
  bool committed_ = false;
};

class ModelExport {
 public:
  // Writes the archive of `model` into tmp/; INTERNAL (or the archive
  // writer's status) when it cannot.
  static absl::StatusOr<std::unique_ptr<ModelExport>> Create(
      const ModelInfo& model, const DataDir& data_dir);
  ~ModelExport();
  ModelExport(const ModelExport&) = delete;
  ModelExport& operator=(const ModelExport&) = delete;

  int64_t total_bytes() const { return total_; }
  int64_t offset() const { return offset_; }
  bool done() const { return offset_ >= total_; }
  // The next piece of the archive, at most `max_bytes` (valid until the next
  // call); empty once done(). INTERNAL when the file cannot be read back.
  absl::StatusOr<std::string_view> Next(int64_t max_bytes);
  // The archive's SHA-256 (lowercase hex), once done().
  std::string sha256() const { return hash_.HexDigest(); }

 private:
  ModelExport(std::filesystem::path path, int64_t total);

  std::filesystem::path path_;
  std::ifstream in_;
  std::vector<char> buffer_;
  common::Sha256 hash_;
  int64_t total_ = 0;
  int64_t offset_ = 0;
};

}  // namespace transferd::core
