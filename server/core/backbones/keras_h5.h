// Reader of Keras HDF5 weight files: what keras.applications downloads
// (*_notop.h5 / *_no_top.h5) and what Model.save_weights writes in the h5
// format. Root attribute `layer_names` lists the layers in order; each layer
// group has a `weight_names` attribute and the datasets at those paths.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace transferd::core::backbones {

class KerasH5File {
 public:
  // INVALID_ARGUMENT when the file is not HDF5 (or truncated) or lacks the
  // Keras layout; NOT_FOUND when it does not exist.
  static absl::StatusOr<std::unique_ptr<KerasH5File>> Open(
      const std::filesystem::path& path);
  ~KerasH5File();

  const std::vector<std::string>& layer_names() const { return layer_names_; }
  bool HasLayer(const std::string& name) const;

  // The layer's weights in file order: ("conv1/kernel:0", tensor in Keras
  // layout), as float32 CPU tensors.
  absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>>
  LayerWeights(const std::string& layer) const;

  const std::string& path() const { return path_; }

 private:
  KerasH5File(std::string path, int64_t file, int64_t root)
      : path_(std::move(path)), file_(file), root_(root) {}

  std::string path_;
  int64_t file_;  // hid_t
  int64_t root_;  // hid_t of the group holding the layers
  std::vector<std::string> layer_names_;
};

}  // namespace transferd::core::backbones
