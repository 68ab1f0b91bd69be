#include "server/core/model_transfer.h"

#include <algorithm>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "server/core/model_archive.h"
#include "server/core/registry.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;

// The free disk is checked at the start and then every this many bytes.
constexpr int64_t kDiskCheckEvery = 64ll << 20;

void RemoveQuietly(const fs::path& path) {
  if (path.empty()) return;
  std::error_code ec;
  fs::remove(path, ec);
}

}  // namespace

// ---- ModelImport
// -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ModelImport>> ModelImport::Begin(
    ModelRegistry& registry, const DataDir& data_dir, TransferLimits limits,
    ModelImportSpec spec) {
  if (spec.total_bytes < 0) {
    return absl::InvalidArgumentError(
        "header.total_bytes must not be negative");
  }
  if (spec.total_bytes > limits.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "header.total_bytes: ", spec.total_bytes, " is above the limit of ",
        limits.max_bytes, " bytes (max_dataset_bytes)"));
  }
  if (!spec.model_id.empty()) {
    if (absl::Status s = ValidateResourceId("header.model_id", spec.model_id);
        !s.ok()) {
      return s;
    }
    if (registry.Get(spec.model_id).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("model \"", spec.model_id, "\" already exists"));
    }
  }
  fs::path path = data_dir.tmp_dir() / ("import-" + RandomHex(8) + ".tar");
  const int64_t announced = spec.total_bytes;
  std::unique_ptr<ModelImport> import(
      new ModelImport(registry, limits, std::move(spec), std::move(path)));
  if (!import->out_) {
    return absl::InternalError("cannot create the import's temporary file");
  }
  if (absl::Status s = import->CheckDisk(announced); !s.ok()) return s;
  return import;
}

ModelImport::ModelImport(ModelRegistry& registry, TransferLimits limits,
                         ModelImportSpec spec, fs::path path)
    : registry_(registry),
      limits_(limits),
      spec_(std::move(spec)),
      path_(std::move(path)),
      out_(path_, std::ios::binary | std::ios::trunc) {}

ModelImport::~ModelImport() {
  if (out_.is_open()) out_.close();
  RemoveQuietly(path_);
}

absl::Status ModelImport::CheckDisk(int64_t more) const {
  std::error_code ec;
  const fs::space_info space = fs::space(path_.parent_path(), ec);
  if (ec) return absl::OkStatus();
  if (static_cast<int64_t>(space.available) - more <
      limits_.min_free_disk_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the import would leave less than min_free_disk_bytes (",
        limits_.min_free_disk_bytes, ") free on the data directory's disk"));
  }
  return absl::OkStatus();
}

absl::Status ModelImport::Append(std::string_view data) {
  if (committed_) {
    return absl::FailedPreconditionError("the import has already ended");
  }
  const int64_t after = received_ + static_cast<int64_t>(data.size());
  if (after > limits_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the archive is larger than the limit of ",
                     limits_.max_bytes, " bytes (max_dataset_bytes)"));
  }
  if (spec_.total_bytes > 0 && after > spec_.total_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: more than header.total_bytes (", spec_.total_bytes,
                     ") bytes sent"));
  }
  if (after / kDiskCheckEvery != received_ / kDiskCheckEvery) {
    if (absl::Status s = CheckDisk(0); !s.ok()) return s;
  }
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out_) {
    return absl::InternalError("cannot write the import's temporary file");
  }
  received_ = after;
  return absl::OkStatus();
}

absl::StatusOr<ModelInfo> ModelImport::Commit() {
  if (committed_) {
    return absl::FailedPreconditionError("the import has already ended");
  }
  committed_ = true;
  if (spec_.total_bytes > 0 && received_ != spec_.total_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the stream ended after ", received_, " of the ",
                     spec_.total_bytes, " bytes header.total_bytes announced"));
  }
  out_.close();
  if (!out_) return absl::InternalError("cannot write the archive");
  return registry_.Import(path_, spec_.model_id, spec_.display_name);
}

// ---- ModelExport
// -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ModelExport>> ModelExport::Create(
    const ModelInfo& model, const DataDir& data_dir) {
  fs::path path = data_dir.tmp_dir() / ("export-" + RandomHex(8) + ".tar");
  absl::StatusOr<int64_t> size = WriteModelArchive(model, path);
  if (!size.ok()) return size.status();
  std::unique_ptr<ModelExport> exported(
      new ModelExport(std::move(path), *size));
  if (!exported->in_) {
    return absl::InternalError("cannot read the archive back");
  }
  return exported;
}

ModelExport::ModelExport(fs::path path, int64_t total)
    : path_(std::move(path)), in_(path_, std::ios::binary), total_(total) {}

ModelExport::~ModelExport() {
  in_.close();
  RemoveQuietly(path_);
}

absl::StatusOr<std::string_view> ModelExport::Next(int64_t max_bytes) {
  const int64_t n = std::min<int64_t>(max_bytes, total_ - offset_);
  if (n <= 0) return std::string_view();
  buffer_.resize(static_cast<size_t>(n));
  if (!in_.read(buffer_.data(), n)) {
    return absl::InternalError("cannot read the archive back");
  }
  hash_.Update(buffer_.data(), static_cast<size_t>(n));
  offset_ += n;
  return std::string_view(buffer_.data(), static_cast<size_t>(n));
}

}  // namespace transferd::core
