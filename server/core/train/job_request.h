// A job as a client asks for it, and its resolution into the TrainConfig a
// Trainer runs: the named recipes of the sources, field-by-field overrides,
// defaults, and every check that needs no engine state, each failing with
// INVALID_ARGUMENT naming the API field ("spec.stages[1].optimizer.
// learning_rate must be > 0, got -1"). Front ends (gRPC, HTTP) convert their
// messages into a JobRequest and call ResolveJob; nothing here knows
// protobuf or LibTorch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset_layout.h"
#include "server/core/train/train_config.h"

namespace transferd::core::train {

enum class RequestKind { kTrain, kFineTune, kPredict };

// The model part of a request: unset fields keep the recipe's (or the base
// model's) value.
struct ModelOverrides {
  std::string backbone;
  std::optional<double> alpha;
  std::string weights;
  std::optional<int> input_size;
  std::string precision;  // "fp32", "bf16"; empty: the engine's default
  std::optional<Pooling> pooling;
  std::optional<int> hidden_units;
  std::optional<double> dropout;
  std::optional<HeadInit> head_init;
};

// One stage of a request, over the recipe's stage of the same index (or a
// fresh stage named "stage-N").
struct StageOverrides {
  std::string name;
  std::string trainable_from;
  std::optional<OptimizerKind> optimizer;
  std::optional<double> learning_rate, momentum, rho, epsilon, beta1, beta2,
      weight_decay;
  std::optional<bool> nesterov;
  std::optional<int> epochs, batch_size;
  std::optional<bool> batch_norm_inference;
  // "keras-book" or "tf-tutorial" (data::AugmentOptions' presets); applied
  // before the single fields below.
  std::string augmentation_preset;
  std::optional<bool> augmentation_enabled;  // false: no augmentation
  std::optional<double> rotation_range, width_shift_range, height_shift_range,
      shear_range, zoom_range, cval;
  std::optional<bool> horizontal_flip, vertical_flip;
  std::optional<data::AugmentOptions::Fill> fill;
  // Taken whole when monitor is set.
  EarlyStopping early_stopping;
  // Taken when kind is set; zero factor, step_epochs or patience keep the
  // default.
  std::optional<LrSchedule::Kind> lr_kind;
  double lr_factor = 0;
  int lr_step_epochs = 0;
  int lr_patience = 0;
  double lr_min_lr = 0;
};

struct JobRequest {
  RequestKind kind = RequestKind::kTrain;
  std::string dataset_id;
  std::string recipe;  // "keras-book", "tf-tutorial", "landmarks" or empty
  // FINE_TUNE and PREDICT: the base model as the client named it
  // ("models/{id}" or "aliases/{alias}"), and the id the engine resolved it
  // to (api::EngineApi::CreateJob), which ResolveJob reads.
  std::string base_model_name;
  std::string base_model_id;
  ModelOverrides model;
  std::vector<StageOverrides> stages;
  std::optional<uint64_t> seed;           // default 42
  std::string selection_metric;           // default "val_accuracy"
  std::optional<double> label_smoothing;  // default 0
  std::string class_weights;              // default "none"
  std::optional<int> top_k;               // default 0: by class count
  std::optional<int> replicas;            // default 1 (TRAIN, FINE_TUNE)
  std::optional<int> min_replicas;        // default: replicas
  // PREDICT: the splits to run over (empty: every file), flip averaging.
  std::vector<common::Split> predict_splits;
  bool predict_flip_tta = false;
};

struct ResolvedJob {
  TrainConfig config;
  std::string dataset_id;
  std::string base_model;  // model id (FINE_TUNE, PREDICT)
};

// The two recipes of the sources, as complete configs: the Keras book's
// (VGG16 at 150 px, Flatten-256-Dropout head, RMSprop 2e-5 frozen for 30
// epochs with its augmentation, then block5 unfrozen at 1e-5) and the
// TensorFlow tutorial's (MobileNetV2 at 160 px, pooled head, Adam 1e-4 for 10
// epochs, then RMSprop 1e-5 from layer 100 with BatchNorm in inference mode).
TrainConfig KerasBookRecipe();
TrainConfig TfTutorialRecipe();
// Many classes with a long tail (the 1,049-landmark contest): MobileNetV2
// 1.0 at 224 px, global average pooling into Dense(N) (dropout 0.2); 10
// epochs of the head on cached features (Adam 1e-3, batch 64), then 5 of
// fine-tuning from block_13_expand (Adam 1e-4, batch 32, flips and small
// rotations); balanced-sqrt class weights, label smoothing 0.1.
TrainConfig LandmarksRecipe();

// `default_precision` ("fp32" or "bf16") is the engine's, for an empty
// precision. FINE_TUNE and PREDICT take the network from `base_model_config`
// (the base model's) when given.
absl::StatusOr<ResolvedJob> ResolveJob(const JobRequest& request,
                                       const std::string& default_precision,
                                       const ModelConfig* base_model_config);

}  // namespace transferd::core::train
