#include "server/core/train/job_request.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/core/util/status_macros.h"

namespace transferd::core::train {
namespace {

// The most ranks of a data-parallel job.
constexpr int kMaxReplicas = 256;
// The largest spec.top_k.
constexpr int kMaxTopK = 100;

using data::AugmentOptions;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

absl::Status CheckModel(const ModelConfig& m) {
  if (m.backbone.empty())
    return Invalid("spec.model.backbone", "is required without a recipe");
  if (m.input_size < 32) {
    return Invalid("spec.model.input_size",
                   absl::StrCat("must be >= 32, got ", m.input_size));
  }
  if (m.input_size > 1024) {
    return Invalid("spec.model.input_size",
                   absl::StrCat("must be <= 1024, got ", m.input_size));
  }
  if (!(m.alpha > 0)) return Invalid("spec.model.alpha", "must be > 0");
  if (m.head.hidden_units < 0 || m.head.hidden_units > 65536) {
    return Invalid("spec.model.head.hidden_units", "must be in [0, 65536]");
  }
  if (!(m.head.dropout >= 0 && m.head.dropout < 1)) {
    return Invalid("spec.model.head.dropout", "must be in [0, 1)");
  }
  return absl::OkStatus();
}

absl::Status ApplyModel(const ModelOverrides& m,
                        const std::string& default_precision,
                        ModelConfig& out) {
  if (!m.backbone.empty()) out.backbone = m.backbone;
  if (m.alpha.has_value()) out.alpha = *m.alpha;
  if (!m.weights.empty()) out.weights = m.weights;
  if (m.input_size.has_value()) out.input_size = *m.input_size;
  if (!m.precision.empty()) {
    out.precision = m.precision;
  } else if (out.precision.empty()) {
    out.precision = default_precision;
  }
  if (m.pooling.has_value()) out.head.pooling = *m.pooling;
  if (m.hidden_units.has_value()) out.head.hidden_units = *m.hidden_units;
  if (m.dropout.has_value()) out.head.dropout = *m.dropout;
  if (m.head_init.has_value()) out.head.init = *m.head_init;
  if (absl::Status s = CheckModel(out); !s.ok()) return s;
  if (out.weights.empty()) out.weights = "imagenet";
  return absl::OkStatus();
}

void ApplyOptimizer(const StageOverrides& s, OptimizerConfig& o) {
  if (s.optimizer.has_value()) o.kind = *s.optimizer;
  if (s.learning_rate.has_value()) o.learning_rate = *s.learning_rate;
  if (s.momentum.has_value()) o.momentum = *s.momentum;
  if (s.rho.has_value()) o.rho = *s.rho;
  if (s.epsilon.has_value()) o.epsilon = *s.epsilon;
  if (s.beta1.has_value()) o.beta1 = *s.beta1;
  if (s.beta2.has_value()) o.beta2 = *s.beta2;
  if (s.weight_decay.has_value()) o.weight_decay = *s.weight_decay;
  if (s.nesterov.has_value()) o.nesterov = *s.nesterov;
}

absl::Status ApplyAugmentation(const StageOverrides& s, const std::string& f,
                               AugmentOptions& a) {
  if (!s.augmentation_preset.empty()) {
    if (s.augmentation_preset == "keras-book") {
      a = AugmentOptions::KerasBook();
    } else if (s.augmentation_preset == "tf-tutorial") {
      a = AugmentOptions::TfTutorial();
    } else {
      return Invalid(f + ".augmentation.preset",
                     absl::StrCat("\"", s.augmentation_preset,
                                  "\" is unknown (keras-book, tf-tutorial)"));
    }
  }
  if (s.augmentation_enabled.has_value() && !*s.augmentation_enabled) {
    a = AugmentOptions();
  }
  if (s.rotation_range.has_value()) a.rotation_range = *s.rotation_range;
  if (s.width_shift_range.has_value()) {
    a.width_shift_range = *s.width_shift_range;
  }
  if (s.height_shift_range.has_value()) {
    a.height_shift_range = *s.height_shift_range;
  }
  if (s.shear_range.has_value()) a.shear_range = *s.shear_range;
  if (s.zoom_range.has_value()) a.zoom_range = *s.zoom_range;
  if (s.horizontal_flip.has_value()) a.horizontal_flip = *s.horizontal_flip;
  if (s.vertical_flip.has_value()) a.vertical_flip = *s.vertical_flip;
  if (s.cval.has_value()) a.cval = *s.cval;
  if (s.fill.has_value()) a.fill = *s.fill;
  return absl::OkStatus();
}

void ApplySchedules(const StageOverrides& s, StageConfig& out) {
  if (!s.early_stopping.monitor.empty()) out.early_stopping = s.early_stopping;
  if (s.lr_kind.has_value()) {
    out.lr_schedule.kind = *s.lr_kind;
    if (s.lr_factor != 0) out.lr_schedule.factor = s.lr_factor;
    if (s.lr_step_epochs != 0) out.lr_schedule.step_epochs = s.lr_step_epochs;
    if (s.lr_patience != 0) out.lr_schedule.patience = s.lr_patience;
    out.lr_schedule.min_lr = s.lr_min_lr;
  }
}

absl::Status CheckOptimizer(const OptimizerConfig& o, const std::string& f) {
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return Invalid(f + ".optimizer.learning_rate",
                   absl::StrCat("must be > 0, got ", o.learning_rate));
  }
  if (o.momentum < 0 || o.momentum >= 1) {
    return Invalid(f + ".optimizer.momentum", "must be in [0, 1)");
  }
  if (o.epsilon <= 0) return Invalid(f + ".optimizer.epsilon", "must be > 0");
  if (o.weight_decay < 0) {
    return Invalid(f + ".optimizer.weight_decay", "must be >= 0");
  }
  return absl::OkStatus();
}

absl::Status CheckStage(const StageConfig& out, const std::string& f) {
  if (absl::Status s = CheckOptimizer(out.optimizer, f); !s.ok()) return s;
  if (out.epochs < 1 || out.epochs > 10000) {
    return Invalid(f + ".epochs",
                   absl::StrCat("must be in [1, 10000], got ", out.epochs));
  }
  if (out.batch_size < 1 || out.batch_size > 4096) {
    return Invalid(f + ".batch_size",
                   absl::StrCat("must be in [1, 4096], got ", out.batch_size));
  }
  const AugmentOptions& g = out.augment;
  if (g.rotation_range < 0 || g.width_shift_range < 0 ||
      g.height_shift_range < 0 || g.shear_range < 0 || g.zoom_range < 0 ||
      g.zoom_range >= 1) {
    return Invalid(f + ".augmentation",
                   "ranges must be >= 0 and zoom_range < 1");
  }
  if (g.cval < 0 || g.cval > 255) {
    return Invalid(f + ".augmentation.cval", "must be in [0, 255]");
  }
  const std::string& m = out.early_stopping.monitor;
  if (!m.empty() && m != "val_loss" && m != "val_accuracy" && m != "loss" &&
      m != "accuracy") {
    return Invalid(
        f + ".early_stopping.monitor",
        absl::StrCat("\"", m,
                     "\" is unknown (val_loss, val_accuracy, loss, accuracy)"));
  }
  if (!m.empty() && out.early_stopping.patience < 0) {
    return Invalid(f + ".early_stopping.patience", "must be >= 0");
  }
  if (out.lr_schedule.factor <= 0 || out.lr_schedule.factor >= 1 + 1e-12) {
    if (out.lr_schedule.kind == LrSchedule::Kind::kStep ||
        out.lr_schedule.kind == LrSchedule::Kind::kReduceOnPlateau) {
      return Invalid(f + ".lr_schedule.factor", "must be in (0, 1]");
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyStage(const StageOverrides& s, const std::string& f,
                        StageConfig& out) {
  if (!s.name.empty()) out.name = s.name;
  if (!s.trainable_from.empty()) out.trainable_from = s.trainable_from;
  ApplyOptimizer(s, out.optimizer);
  if (s.epochs.has_value()) out.epochs = *s.epochs;
  if (s.batch_size.has_value()) out.batch_size = *s.batch_size;
  if (s.batch_norm_inference.has_value()) {
    out.batch_norm_inference = *s.batch_norm_inference;
  }
  if (absl::Status st = ApplyAugmentation(s, f, out.augment); !st.ok()) {
    return st;
  }
  ApplySchedules(s, out);
  return CheckStage(out, f);
}

// PREDICT: a model over a dataset; training fields must stay empty.
// spec.top_k: 0 (by class count) up to kMaxTopK.
absl::Status ResolveTopK(const JobRequest& request, TrainConfig& c) {
  c.top_k = request.top_k.value_or(0);
  if (c.top_k < 0 || c.top_k > kMaxTopK) {
    return Invalid("spec.top_k", absl::StrCat("must be in [0, ", kMaxTopK,
                                              "], got ", c.top_k));
  }
  return absl::OkStatus();
}

absl::StatusOr<ResolvedJob> ResolvePredict(const JobRequest& request,
                                           const ModelConfig* base_model_config,
                                           ResolvedJob out) {
  if (request.base_model_id.empty()) {
    return Invalid("spec.base_model", "is required for PREDICT");
  }
  out.base_model = request.base_model_id;
  if (!request.recipe.empty()) {
    return Invalid("spec.recipe", "must be empty for PREDICT");
  }
  if (!request.stages.empty()) {
    return Invalid("spec.stages", "must be empty for PREDICT");
  }
  if (!request.model.backbone.empty()) {
    return Invalid("spec.model",
                   "must be empty for PREDICT (the model's network is used)");
  }
  if (base_model_config != nullptr) out.config.model = *base_model_config;
  out.config.stages.clear();
  for (common::Split split : request.predict_splits) {
    out.config.predict_splits.push_back(common::SplitName(split));
  }
  out.config.predict_flip_tta = request.predict_flip_tta;
  if (!request.class_weights.empty()) {
    return Invalid("spec.class_weights", "must be empty for PREDICT");
  }
  if (request.replicas.value_or(1) != 1 || request.min_replicas.has_value()) {
    return Invalid("spec.replicas",
                   "PREDICT runs on one server (leave replicas and "
                   "min_replicas unset)");
  }
  TRANSFERD_RETURN_IF_ERROR(ResolveTopK(request, out.config));
  return out;
}

// The recipe's config, or an empty one (no backbone, no stages) without.
absl::StatusOr<TrainConfig> StartingConfig(const std::string& recipe) {
  TrainConfig c;
  if (recipe == "keras-book") {
    c = KerasBookRecipe();
  } else if (recipe == "tf-tutorial") {
    c = TfTutorialRecipe();
  } else if (recipe == "landmarks") {
    c = LandmarksRecipe();
  } else if (!recipe.empty()) {
    return Invalid("spec.recipe",
                   absl::StrCat("\"", recipe,
                                "\" is unknown (keras-book, tf-tutorial, "
                                "landmarks)"));
  } else {
    c.model.backbone.clear();
    c.stages.clear();
  }
  c.model.precision.clear();  // the request's, else the engine's
  return c;
}

absl::Status ApplyStages(const std::vector<StageOverrides>& stages,
                         std::vector<StageConfig>& out) {
  // Neither a recipe nor stages: one stage of the defaults (frozen base,
  // RMSprop 1e-3, 1 epoch, batch 20, no augmentation), as Keras' fit() does
  // one epoch unless told otherwise.
  const size_t wanted = std::max<size_t>(stages.size(), 1);
  for (size_t i = out.size(); i < wanted; ++i) {
    StageConfig fresh;
    fresh.name = absl::StrCat("stage-", i + 1);
    out.push_back(fresh);
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const StageOverrides none;
    const StageOverrides& s = i < stages.size() ? stages[i] : none;
    if (absl::Status st =
            ApplyStage(s, absl::StrCat("spec.stages[", i, "]"), out[i]);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

TrainConfig KerasBookRecipe() {
  TrainConfig c;
  c.model.backbone = "vgg16";
  c.model.weights = "imagenet";
  c.model.input_size = 150;
  c.model.head = {Pooling::kFlatten, 256, 0.5};
  StageConfig frozen;
  frozen.name = "frozen-base";
  frozen.trainable_from = "none";
  frozen.optimizer.kind = OptimizerKind::kRmsprop;
  frozen.optimizer.learning_rate = 2e-5;
  frozen.epochs = 30;
  frozen.batch_size = 20;
  frozen.augment = AugmentOptions::KerasBook();
  StageConfig tune = frozen;
  tune.name = "fine-tune";
  tune.trainable_from = "block5_conv1";
  tune.optimizer.learning_rate = 1e-5;
  tune.epochs = 100;
  c.stages = {frozen, tune};
  return c;
}

TrainConfig TfTutorialRecipe() {
  TrainConfig c;
  c.model.backbone = "mobilenet_v2";
  c.model.weights = "imagenet";
  c.model.input_size = 160;
  c.model.head = {Pooling::kGlobalAverage, 0, 0.2};
  StageConfig frozen;
  frozen.name = "frozen-base";
  frozen.trainable_from = "none";
  frozen.optimizer.kind = OptimizerKind::kAdam;
  frozen.optimizer.learning_rate = 1e-4;
  frozen.epochs = 10;
  frozen.batch_size = 32;
  frozen.augment = AugmentOptions::TfTutorial();
  // The tutorial calls the base with training=False: its BatchNorm layers
  // stay in inference mode when the top is unfrozen.
  frozen.batch_norm_inference = true;
  StageConfig tune = frozen;
  tune.name = "fine-tune";
  tune.trainable_from = "100";
  tune.optimizer.kind = OptimizerKind::kRmsprop;
  tune.optimizer.learning_rate = 1e-5;
  c.stages = {frozen, tune};
  return c;
}

TrainConfig LandmarksRecipe() {
  TrainConfig c;
  c.model.backbone = "mobilenet_v2";
  c.model.alpha = 1.0;
  c.model.weights = "imagenet";
  c.model.input_size = 224;
  c.model.head = {Pooling::kGlobalAverage, 0, 0.2};
  // Stage 1: the head alone on cached backbone features (no augmentation,
  // so each image goes through the backbone once for all epochs).
  StageConfig head;
  head.name = "head-on-features";
  head.trainable_from = "none";
  head.optimizer.kind = OptimizerKind::kAdam;
  head.optimizer.learning_rate = 1e-3;
  head.epochs = 10;
  head.batch_size = 64;
  head.batch_norm_inference = true;
  // Stage 2: the last blocks, with flips and small rotations.
  StageConfig tune = head;
  tune.name = "fine-tune";
  tune.trainable_from = "block_13_expand";
  tune.optimizer.learning_rate = 1e-4;
  tune.epochs = 5;
  tune.batch_size = 32;
  tune.augment = AugmentOptions::TfTutorial();
  c.stages = {head, tune};
  // A long tail of similar classes.
  c.class_weights = "balanced-sqrt";
  c.label_smoothing = 0.1;
  return c;
}

absl::StatusOr<ResolvedJob> ResolveJob(const JobRequest& request,
                                       const std::string& default_precision,
                                       const ModelConfig* base_model_config) {
  ResolvedJob out;
  out.dataset_id = request.dataset_id;
  if (request.kind == RequestKind::kPredict) {
    return ResolvePredict(request, base_model_config, std::move(out));
  }
  absl::StatusOr<TrainConfig> start = StartingConfig(request.recipe);
  if (!start.ok()) return start.status();
  TrainConfig& c = out.config = *std::move(start);
  if (request.kind == RequestKind::kFineTune) {
    if (request.base_model_id.empty()) {
      return Invalid("spec.base_model", "is required for FINE_TUNE");
    }
    out.base_model = request.base_model_id;
    if (base_model_config != nullptr) {
      c.model = *base_model_config;
      c.model.init_weights_file.clear();
    }
    if (!request.model.backbone.empty()) {
      return Invalid(
          "spec.model",
          "must be empty for FINE_TUNE (the base model's network is used)");
    }
  }
  if (absl::Status s = ApplyModel(request.model, default_precision, c.model);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ApplyStages(request.stages, c.stages); !s.ok()) {
    return s;
  }
  c.seed = request.seed.value_or(42);
  c.selection_metric = request.selection_metric.empty()
                           ? "val_accuracy"
                           : request.selection_metric;
  const std::string& m = c.selection_metric;
  if (m != "val_accuracy" && m != "val_loss" && m != "accuracy" &&
      m != "loss" && m != "last") {
    return Invalid("spec.selection_metric",
                   absl::StrCat("\"", m,
                                "\" is unknown (val_accuracy, val_loss, "
                                "accuracy, loss, last)"));
  }
  if (request.label_smoothing.has_value())
    c.label_smoothing = *request.label_smoothing;
  if (!(c.label_smoothing >= 0 && c.label_smoothing < 1)) {
    return Invalid("spec.label_smoothing",
                   absl::StrCat("must be in [0, 1), got ", c.label_smoothing));
  }
  if (!request.class_weights.empty()) c.class_weights = request.class_weights;
  if (c.class_weights != "none" && c.class_weights != "balanced" &&
      c.class_weights != "balanced-sqrt") {
    return Invalid("spec.class_weights",
                   absl::StrCat("\"", c.class_weights,
                                "\" is unknown (none, balanced, "
                                "balanced-sqrt)"));
  }
  TRANSFERD_RETURN_IF_ERROR(ResolveTopK(request, c));
  c.replicas = request.replicas.value_or(1);
  if (c.replicas < 1 || c.replicas > kMaxReplicas) {
    return Invalid(
        "spec.replicas",
        absl::StrCat("must be in [1, ", kMaxReplicas, "], got ", c.replicas));
  }
  c.min_replicas = request.min_replicas.value_or(c.replicas);
  if (c.min_replicas < 1 || c.min_replicas > c.replicas) {
    return Invalid("spec.min_replicas",
                   absl::StrCat("must be in [1, replicas = ", c.replicas,
                                "], got ", c.min_replicas));
  }
  return out;
}

}  // namespace transferd::core::train
