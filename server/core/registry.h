// The model registry: trained classifiers as immutable versions. Each
// version is a folder <data>/models/<id>/ holding weights.safetensors (the
// whole classifier) and model.json (everything needed to rebuild and serve
// it: the model config, classes, preprocessing), plus a catalog row with its
// metrics. A version is written to tmp/ first and renamed into place before
// its row is inserted; a folder without a row is removed at start.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/train/train_config.h"

namespace transferd::core {

class DataDir;
class Store;

struct PreprocessingInfo {
  std::string mode;  // "caffe", "tf", "torch"
  bool bgr = false;
  float scale = 1;
  std::vector<float> mean, std;
  int input_size = 0;
};

struct ModelInfo {
  std::string id;
  std::string display_name;
  std::chrono::system_clock::time_point create_time;
  std::string source_job;  // "jobs/{id}" or ""
  std::string parent;      // "models/{id}" a fine-tune started from, or ""
  std::string spec_blob;   // the API's model spec, opaque to the engine
  train::ModelConfig model;
  std::vector<std::string> classes;
  PreprocessingInfo preprocessing;
  std::vector<train::EpochReport> history;
  int best_epoch = 0;
  std::vector<train::EvaluationReport> evaluations;
  int64_t size_bytes = 0;
  int64_t parameters = 0;
  std::filesystem::path weights_file;  // inside the data directory
};

class ModelRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Open(Store& store,
                                                             const DataDir& data_dir);

  // Registers a version: copies `weights` into its folder. `info.id` empty =
  // "m-<8 hex>". ALREADY_EXISTS for a taken id.
  absl::StatusOr<ModelInfo> Register(ModelInfo info, const std::filesystem::path& weights);

  absl::StatusOr<ModelInfo> Get(const std::string& id);
  absl::StatusOr<std::vector<ModelInfo>> List(int page_size, const std::string& page_token,
                                              std::string* next_page_token);
  // FAILED_PRECONDITION while `in_use` names a user.
  absl::Status Delete(const std::string& id);
  void SetInUseCheck(std::function<std::string(const std::string& id)> in_use);

  int orphans_removed() const { return orphans_removed_; }

 private:
  ModelRegistry(Store& store, const DataDir& data_dir) : store_(store), data_dir_(data_dir) {}

  Store& store_;
  const DataDir& data_dir_;
  int orphans_removed_ = 0;
  std::mutex mu_;
  std::function<std::string(const std::string&)> in_use_;
};

}  // namespace transferd::core
