// Model archives: what ExportModel streams and ImportModel reads. A POSIX
// ustar tar (readable with `tar` or Python's tarfile) holding exactly two
// regular files, in this order:
//
//   model.json           everything needed to rebuild and serve the model:
//                        {"format": "transferd-model", "format_version": 1,
//                         "id", "display_name", "create_time_ms",
//                         "source_job", "parent", "model" (the ModelConfig as
//                         train_json writes it), "classes", "preprocessing",
//                         "history", "best_epoch", "evaluations",
//                         "parameters", "spec_blob" (the API's ModelSpec
//                         message, base64), "weights": {"file", "bytes",
//                         "sha256"}}
//   weights.safetensors  the whole classifier, as the registry stores it
//
// Writing is deterministic: the same model gives the same bytes (and so the
// same SHA-256) every time. Reading accepts only that shape: no other
// members, no links, directories, long-name or pax extensions, no data after
// the end-of-archive blocks other than zero padding.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/model_info.h"

namespace transferd::core {

inline constexpr const char* kModelArchiveFormat = "transferd-model";
inline constexpr int kModelArchiveFormatVersion = 1;
// Largest model.json accepted.
inline constexpr int64_t kMaxModelJsonBytes = 64ll << 20;

// Writes the archive of `model` (its weights read from model.weights_file)
// to `path`; returns the archive's size. Nothing is left at `path` on error.
absl::StatusOr<int64_t> WriteModelArchive(const ModelInfo& model,
                                          const std::filesystem::path& path);

// Reads an archive written by WriteModelArchive: checks the tar structure
// (header checksums, member names, types and sizes against the file's
// length), parses and checks model.json, and copies weights.safetensors to
// `weights_out` (checking its size and SHA-256 against model.json). Returns
// the metadata (weights_file, size_bytes and aliases empty; create_time from
// the archive). INVALID_ARGUMENT naming the problem for anything malformed;
// nothing is left at `weights_out` on error. The tensors themselves are not
// checked here (see ModelRegistry::Import).
absl::StatusOr<ModelInfo> ReadModelArchive(
    const std::filesystem::path& archive,
    const std::filesystem::path& weights_out);

}  // namespace transferd::core
