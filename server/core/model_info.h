// What the engine knows about one trained model version (ModelInfo) and a
// movable name pointing at one (AliasInfo): the registry stores them, model
// archives carry them, the predictor serves them. Kept apart from the
// registry so that archive and registry do not include each other.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "server/core/train/train_config.h"

namespace transferd::core {

struct PreprocessingInfo {
  std::string mode;  // "caffe", "tf", "torch"
  bool bgr = false;
  float scale = 1;
  std::vector<float> mean, std;
  int input_size = 0;
};

// A movable name pointing at one model.
struct AliasInfo {
  std::string alias;
  std::string model_id;
  std::chrono::system_clock::time_point update_time;
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
  std::vector<std::string>
      aliases;  // pointing at it, sorted (Get and List fill it)
};

}  // namespace transferd::core
