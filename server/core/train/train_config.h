// A training job as the engine sees it: the model to build, the stages to run
// and the data to run them on, fully resolved (recipes applied, defaults
// filled) by the job layer before a Trainer sees it. No protobuf or LibTorch
// types here, so the job queue and the RPC layer can include it cheaply.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "server/core/data/augment.h"
#include "server/core/data/example.h"

namespace transferd::core::train {

enum class Pooling { kFlatten, kGlobalAverage };

// How the head's Dense layers start: Keras' glorot_uniform (zero bias) or
// PyTorch nn.Linear's default (kernel and bias uniform in +-1/sqrt(fan_in)).
enum class HeadInit { kGlorotUniform, kTorch };

struct HeadConfig {
  Pooling pooling = Pooling::kFlatten;
  int hidden_units = 256;  // Dense(units, relu); 0 = no hidden layer
  double dropout = 0.5;    // before the output layer; 0 = none
  HeadInit init = HeadInit::kGlorotUniform;
};

struct ModelConfig {
  std::string backbone = "vgg16";
  double alpha = 1.0;
  std::string weights = "imagenet";  // "imagenet", "none" or a weights file
  int input_size = 150;
  std::string precision = "fp32";  // "fp32" or "bf16" (autocast)
  HeadConfig head;
  // FINE_TUNE: the whole classifier's starting weights (a registered model's
  // safetensors file); empty = backbone weights above and a fresh head.
  std::string init_weights_file;
};

enum class OptimizerKind { kRmsprop, kAdam, kSgd };

// Keras' defaults: RMSprop rho 0.9, epsilon 1e-7; Adam beta1 0.9, beta2
// 0.999, epsilon 1e-7; SGD momentum 0.
struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kRmsprop;
  double learning_rate = 1e-3;
  double momentum = 0;
  double rho = 0.9;
  double epsilon = 1e-7;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double weight_decay = 0;
  bool nesterov = false;
};

struct EarlyStopping {
  std::string
      monitor;  // "val_loss", "val_accuracy", "loss", "accuracy"; empty = off
  int patience = 0;
  double min_delta = 0;
};

struct LrSchedule {
  enum class Kind { kNone, kStep, kCosine, kReduceOnPlateau };
  Kind kind = Kind::kNone;
  double factor = 0.1;   // kStep, kReduceOnPlateau
  int step_epochs = 10;  // kStep
  int patience = 2;      // kReduceOnPlateau (monitors val_loss)
  double min_lr = 0;
};

struct StageConfig {
  std::string name;
  // First trainable backbone layer (Keras name or index); "none" freezes the
  // whole base, "all" trains it all. The head is always trainable.
  std::string trainable_from = "none";
  OptimizerConfig optimizer;
  int epochs = 1;
  int batch_size = 20;
  data::AugmentOptions augment;  // all zero = off
  EarlyStopping early_stopping;
  LrSchedule lr_schedule;
  // BatchNorm layers of the trainable part also run in inference mode: they
  // normalise with their moving statistics, which stay fixed, while gamma and
  // beta still train (Keras' base_model(x, training=False), which the
  // TensorFlow transfer-learning tutorial uses for fine-tuning). Off: they
  // train with batch statistics, as Keras' fit() does with trainable layers.
  bool batch_norm_inference = false;
};

struct TrainConfig {
  ModelConfig model;
  std::vector<StageConfig> stages;
  uint64_t seed = 0;
  // Metric that picks the best epoch: "val_accuracy" (default) or "val_loss"
  // (without a validation split: "accuracy" / "loss"), or "last": the final
  // epoch's weights.
  std::string selection_metric = "val_accuracy";
  // Keras' label_smoothing, in [0, 1): targets y * (1 - s) + s / K with K = 2
  // for the binary loss, the number of classes otherwise.
  double label_smoothing = 0;
  // Per-class loss weights of the training loss (Keras' class_weight):
  // "none", "balanced" (n / (K * n_c)) or "balanced-sqrt" (proportional to
  // 1 / sqrt(n_c)), both scaled so that the mean weight over the training
  // examples is 1. Validation and evaluation losses stay unweighted.
  std::string class_weights = "none";
  // The k of top-k accuracy and, for PREDICT jobs, how many classes each
  // file's result lists; 0 = 1 for two classes, 5 otherwise.
  int top_k = 0;
  // PREDICT jobs: the splits to run over ("train", "validation", "test";
  // empty = every file) and test-time horizontal-flip averaging.
  std::vector<std::string> predict_splits;
  bool predict_flip_tta = false;
  // The model's classes, recorded when the job is created.
  std::vector<std::string> predict_classes;
  // Data-parallel ranks of a TRAIN or FINE_TUNE job (1: this server alone),
  // and the fewest it goes on with after losing a worker (0: replicas).
  int replicas = 1;
  int min_replicas = 0;
};

// The examples of each split; labels index `classes`.
struct TrainData {
  std::string dataset_id;
  std::vector<std::string> classes;
  std::vector<data::Example> train, validation, test;
};

// Like Keras' model.summary(): tensors with requires_grad, and scalars.
struct TrainableSummary {
  int trainable_tensors = 0;
  int64_t trainable_parameters = 0;
  int64_t non_trainable_parameters = 0;  // frozen tensors and BN statistics
};

struct StepReport {
  int stage = 0;                  // 0-based
  int epoch = 0;                  // 1-based, counted over the whole job
  int64_t step = 0, steps = 0;    // 1-based step within the epoch
  double loss = 0, accuracy = 0;  // running means over the epoch so far
  double images_per_second = 0;
  double eta_seconds = 0;  // of the job
};

struct EpochReport {
  int stage = 0;
  int epoch = 0;  // 1-based over the whole job
  double loss = 0, accuracy = 0;
  bool has_validation = false;
  double val_loss = 0, val_accuracy = 0;
  double learning_rate = 0;
  double seconds = 0;
  // Training images per second of the epoch's steps (validation excluded).
  double images_per_second = 0;
};

// One non-zero cell of a confusion matrix: `count` examples of class
// `truth` predicted as `predicted`.
struct ConfusionCell {
  int32_t truth = 0, predicted = 0;
  int64_t count = 0;
};

// Evaluation of the best weights on one split (eval_metrics.h makes it).
struct EvaluationReport {
  std::string split;  // "validation", "test"
  double loss = 0, accuracy = 0;
  // Top-k accuracy; top_k is 0 when not measured (k >= classes, or a
  // record from before it existed).
  int top_k = 0;
  double top_k_accuracy = 0;
  // Mean over the classes present of the share of their examples predicted
  // right (balanced accuracy).
  double macro_accuracy = 0;
  // Global Average Precision of the top-1 predictions ranked by confidence.
  double gap = 0;
  int num_classes = 0;
  // The confusion matrix's non-zero cells, sorted by (truth, predicted).
  std::vector<ConfusionCell> confusion;
  double roc_auc = -1;  // two classes only; -1 otherwise
  int64_t examples = 0;
};

struct TrainerCallbacks {
  std::function<void(int stage, const TrainableSummary&,
                     bool uses_feature_cache)>
      stage_started;
  std::function<void(const StepReport&)> step;  // rate-limited by the trainer
  // Every step: seconds from asking for the batch to the end of the
  // optimizer step (data wait, device turn and compute).
  std::function<void(double seconds)> step_duration;
  std::function<void(const EpochReport&)> epoch_end;
  std::function<void(int epoch, int64_t bytes)> checkpoint_saved;
  // Polled between batches: true stops the run with CANCELLED.
  std::function<bool()> cancelled;
};

}  // namespace transferd::core::train
