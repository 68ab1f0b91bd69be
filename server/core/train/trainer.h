// Runs one training job's stages on the engine's device: builds the
// classifier (backbone + head), freezes what a stage says, trains with the
// stage's optimizer, evaluates each epoch, checkpoints atomically at every
// epoch end, and resumes from the newest good checkpoint when one exists in
// the job's checkpoint folder (after a crash or restart).
//
// A stage with a frozen base and no augmentation trains the head from cached
// backbone features (the notebook's fast path); the cache lives in
// <cache_dir>/features/, keyed by dataset, backbone, weights, input size and
// preprocessing, and later jobs reuse it.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/device.h"
#include "server/core/device_arbiter.h"
#include "server/core/train/train_config.h"

namespace transferd::core::train {

class Collective;

struct TrainerEnv {
  ComputeDevice device;
  backbones::WeightsCacheOptions weights;
  std::filesystem::path cache_dir;       // feature cache root
  std::filesystem::path checkpoint_dir;  // this job's checkpoints (created)
  int loader_threads = 2;
  // False: never read or write cached backbone features (always run the
  // backbone), e.g. to compare both paths.
  bool use_feature_cache = true;
  // Resized images kept in memory across epochs (0 = off), shared evenly by
  // the splits: each file is decoded once per job instead of once per epoch.
  int64_t decoded_cache_bytes = 0;
  // A stage that trains only the top of the backbone runs the frozen bottom
  // (its leading segments) over the validation images once, keeps the
  // output in memory up to this size, and each epoch's validation runs only
  // the rest (0 = off; the metrics are the same either way).
  int64_t activation_cache_bytes = int64_t{1} << 30;
  // Shared with the predictor: every step and evaluation batch takes a
  // background turn, so predict batches run between them. Null: no sharing.
  DeviceArbiter* arbiter = nullptr;
  // The data-parallel world this trainer is one rank of (collective.h).
  // Null: a single process (a world of size 1, the same code path). Each
  // stage's batch_size is per rank, as in PyTorch DDP: a step trains on
  // world_size * batch_size examples. Rank 0 alone writes checkpoints,
  // best weights and the final model and evaluates them; the others return
  // only the history.
  std::shared_ptr<Collective> collective;
  // A rank other than 0 of a server's job: the model is built without
  // reading config.model's weight files (rank 0 sends every weight when
  // the run starts), so a worker needs neither the base model's file nor
  // the ImageNet weights. The config is otherwise the same, so every rank
  // decides the same things (feature caches, stages).
  bool weights_from_rank0 = false;
};

struct TrainResult {
  std::vector<EpochReport> history;  // every epoch of every stage
  int best_epoch = 0;                // 1-based, by the selection metric
  TrainableSummary trainable;        // of the last stage
  std::vector<EvaluationReport> evaluations;  // best weights: validation, test
  // The best weights: the whole classifier as safetensors (backbone tensors
  // under their Keras layer names, head under "head.*"), with BatchNorm
  // statistics.
  std::filesystem::path weights_file;
  int resumes = 0;  // how many times this run continued from a checkpoint
  // Feature cache use by this Run(): images whose backbone features were
  // computed (and stored), and images whose features were read from the
  // cache.
  int64_t features_computed = 0;
  int64_t features_loaded = 0;
  // Images whose frozen-bottom activations were kept for validation
  // (TrainerEnv::activation_cache_bytes), summed over stages.
  int64_t activations_kept = 0;
};

class Trainer {
 public:
  // INVALID_ARGUMENT naming the field for a config the model cannot honour
  // (unknown backbone or layer name, input size below the minimum, no
  // validation data for a val_* metric...).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainConfig config,
                                                         TrainData data,
                                                         TrainerEnv env);
  ~Trainer();

  // Runs (or resumes) to the end. CANCELLED when callbacks.cancelled() turned
  // true (the last checkpoint stays, so a later Run could continue).
  absl::StatusOr<TrainResult> Run(const TrainerCallbacks& callbacks);

 private:
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The trainable summary a config's stage would have, without training
// (for validation and the job's report).
absl::StatusOr<TrainableSummary> DescribeStage(const ModelConfig& model,
                                               const StageConfig& stage,
                                               int num_classes);

}  // namespace transferd::core::train
