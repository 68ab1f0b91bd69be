// safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then raw little-endian
// data. A format that cannot execute code, read and written here without a
// third-party library.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace transferd::core::backbones {

using NamedTensors = std::map<std::string, torch::Tensor>;

// Reads every tensor (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL) as a
// CPU tensor. INVALID_ARGUMENT naming the problem for a truncated file, a
// malformed header, out-of-range or overlapping offsets, or a size that does
// not match dtype x shape.
absl::StatusOr<NamedTensors> ReadSafetensors(const std::filesystem::path& path);

// Writes `tensors` (contiguous copies, CPU) with optional string metadata,
// atomically (temporary file, fsync, rename).
absl::Status WriteSafetensors(
    const std::filesystem::path& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace transferd::core::backbones
