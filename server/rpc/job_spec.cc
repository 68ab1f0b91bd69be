#include "server/rpc/job_spec.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;
namespace train = core::train;
using core::data::AugmentOptions;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

// The two recipes of the sources, as complete configs.
train::TrainConfig KerasBook() {
  train::TrainConfig c;
  c.model.backbone = "vgg16";
  c.model.weights = "imagenet";
  c.model.input_size = 150;
  c.model.head = {train::Pooling::kFlatten, 256, 0.5};
  train::StageConfig frozen;
  frozen.name = "frozen-base";
  frozen.trainable_from = "none";
  frozen.optimizer.kind = train::OptimizerKind::kRmsprop;
  frozen.optimizer.learning_rate = 2e-5;
  frozen.epochs = 30;
  frozen.batch_size = 20;
  frozen.augment = AugmentOptions::KerasBook();
  train::StageConfig tune = frozen;
  tune.name = "fine-tune";
  tune.trainable_from = "block5_conv1";
  tune.optimizer.learning_rate = 1e-5;
  tune.epochs = 100;
  c.stages = {frozen, tune};
  return c;
}

train::TrainConfig TfTutorial() {
  train::TrainConfig c;
  c.model.backbone = "mobilenet_v2";
  c.model.weights = "imagenet";
  c.model.input_size = 160;
  c.model.head = {train::Pooling::kGlobalAverage, 0, 0.2};
  train::StageConfig frozen;
  frozen.name = "frozen-base";
  frozen.trainable_from = "none";
  frozen.optimizer.kind = train::OptimizerKind::kAdam;
  frozen.optimizer.learning_rate = 1e-4;
  frozen.epochs = 10;
  frozen.batch_size = 32;
  frozen.augment = AugmentOptions::TfTutorial();
  // The tutorial calls the base with training=False: its BatchNorm layers
  // stay in inference mode when the top is unfrozen.
  frozen.batch_norm_inference = true;
  train::StageConfig tune = frozen;
  tune.name = "fine-tune";
  tune.trainable_from = "100";
  tune.optimizer.kind = train::OptimizerKind::kRmsprop;
  tune.optimizer.learning_rate = 1e-5;
  c.stages = {frozen, tune};
  return c;
}

absl::Status ApplyModel(const v1::ModelSpec& m,
                        const std::string& default_precision,
                        train::ModelConfig& out) {
  if (!m.backbone().empty()) out.backbone = m.backbone();
  if (m.has_alpha()) out.alpha = m.alpha();
  if (!m.weights().empty()) out.weights = m.weights();
  if (m.has_input_size()) out.input_size = m.input_size();
  switch (m.precision()) {
    case v1::PRECISION_UNSPECIFIED:
      if (out.precision.empty()) out.precision = default_precision;
      break;
    case v1::PRECISION_FP32:
      out.precision = "fp32";
      break;
    case v1::PRECISION_BF16:
      out.precision = "bf16";
      break;
    default:
      return Invalid("spec.model.precision",
                     "must be FP32 or BF16 (FP16 is not supported)");
  }
  const v1::HeadSpec& h = m.head();
  if (h.pooling() == v1::POOLING_FLATTEN)
    out.head.pooling = train::Pooling::kFlatten;
  if (h.pooling() == v1::POOLING_GLOBAL_AVERAGE)
    out.head.pooling = train::Pooling::kGlobalAverage;
  if (h.has_hidden_units()) out.head.hidden_units = h.hidden_units();
  if (h.has_dropout()) out.head.dropout = h.dropout();

  if (out.backbone.empty())
    return Invalid("spec.model.backbone", "is required without a recipe");
  if (out.input_size < 32) {
    return Invalid("spec.model.input_size",
                   absl::StrCat("must be >= 32, got ", out.input_size));
  }
  if (out.input_size > 1024) {
    return Invalid("spec.model.input_size",
                   absl::StrCat("must be <= 1024, got ", out.input_size));
  }
  if (!(out.alpha > 0)) return Invalid("spec.model.alpha", "must be > 0");
  if (out.head.hidden_units < 0 || out.head.hidden_units > 65536) {
    return Invalid("spec.model.head.hidden_units", "must be in [0, 65536]");
  }
  if (!(out.head.dropout >= 0 && out.head.dropout < 1)) {
    return Invalid("spec.model.head.dropout", "must be in [0, 1)");
  }
  if (out.weights.empty()) out.weights = "imagenet";
  return absl::OkStatus();
}

absl::Status ApplyStage(const v1::StageSpec& s, const std::string& f,
                        train::StageConfig& out) {
  if (!s.name().empty()) out.name = s.name();
  if (!s.trainable_from().empty()) out.trainable_from = s.trainable_from();
  const v1::OptimizerSpec& o = s.optimizer();
  switch (o.kind()) {
    case v1::OptimizerSpec::KIND_UNSPECIFIED:
      break;
    case v1::OptimizerSpec::KIND_RMSPROP:
      out.optimizer.kind = train::OptimizerKind::kRmsprop;
      break;
    case v1::OptimizerSpec::KIND_ADAM:
      out.optimizer.kind = train::OptimizerKind::kAdam;
      break;
    case v1::OptimizerSpec::KIND_SGD:
      out.optimizer.kind = train::OptimizerKind::kSgd;
      break;
    default:
      return Invalid(f + ".optimizer.kind", "is unknown");
  }
  if (o.has_learning_rate()) out.optimizer.learning_rate = o.learning_rate();
  if (o.has_momentum()) out.optimizer.momentum = o.momentum();
  if (o.has_rho()) out.optimizer.rho = o.rho();
  if (o.has_epsilon()) out.optimizer.epsilon = o.epsilon();
  if (o.has_beta1()) out.optimizer.beta1 = o.beta1();
  if (o.has_beta2()) out.optimizer.beta2 = o.beta2();
  if (o.has_weight_decay()) out.optimizer.weight_decay = o.weight_decay();
  if (o.has_nesterov()) out.optimizer.nesterov = o.nesterov();
  if (s.has_epochs()) out.epochs = s.epochs();
  if (s.has_batch_size()) out.batch_size = s.batch_size();
  if (s.has_batch_norm_inference())
    out.batch_norm_inference = s.batch_norm_inference();

  const v1::AugmentationSpec& a = s.augmentation();
  if (!a.preset().empty()) {
    if (a.preset() == "keras-book") {
      out.augment = AugmentOptions::KerasBook();
    } else if (a.preset() == "tf-tutorial") {
      out.augment = AugmentOptions::TfTutorial();
    } else {
      return Invalid(f + ".augmentation.preset",
                     absl::StrCat("\"", a.preset(),
                                  "\" is unknown (keras-book, tf-tutorial)"));
    }
  }
  if (a.has_enabled() && !a.enabled()) out.augment = AugmentOptions();
  if (a.has_rotation_range()) out.augment.rotation_range = a.rotation_range();
  if (a.has_width_shift_range())
    out.augment.width_shift_range = a.width_shift_range();
  if (a.has_height_shift_range())
    out.augment.height_shift_range = a.height_shift_range();
  if (a.has_shear_range()) out.augment.shear_range = a.shear_range();
  if (a.has_zoom_range()) out.augment.zoom_range = a.zoom_range();
  if (a.has_horizontal_flip())
    out.augment.horizontal_flip = a.horizontal_flip();
  if (a.has_vertical_flip()) out.augment.vertical_flip = a.vertical_flip();
  if (a.has_cval()) out.augment.cval = a.cval();
  switch (a.fill_mode()) {
    case v1::FILL_MODE_NEAREST:
      out.augment.fill = AugmentOptions::Fill::kNearest;
      break;
    case v1::FILL_MODE_REFLECT:
      out.augment.fill = AugmentOptions::Fill::kReflect;
      break;
    case v1::FILL_MODE_CONSTANT:
      out.augment.fill = AugmentOptions::Fill::kConstant;
      break;
    case v1::FILL_MODE_WRAP:
      out.augment.fill = AugmentOptions::Fill::kWrap;
      break;
    default:
      break;
  }
  if (!s.early_stopping().monitor().empty()) {
    out.early_stopping.monitor = s.early_stopping().monitor();
    out.early_stopping.patience = s.early_stopping().patience();
    out.early_stopping.min_delta = s.early_stopping().min_delta();
  }
  const v1::LrScheduleSpec& l = s.lr_schedule();
  if (l.kind() != v1::LrScheduleSpec::KIND_UNSPECIFIED) {
    using K = train::LrSchedule::Kind;
    out.lr_schedule.kind = l.kind() == v1::LrScheduleSpec::KIND_STEP ? K::kStep
                           : l.kind() == v1::LrScheduleSpec::KIND_COSINE
                               ? K::kCosine
                               : K::kReduceOnPlateau;
    if (l.factor() != 0) out.lr_schedule.factor = l.factor();
    if (l.step_epochs() != 0) out.lr_schedule.step_epochs = l.step_epochs();
    if (l.patience() != 0) out.lr_schedule.patience = l.patience();
    out.lr_schedule.min_lr = l.min_lr();
  }

  // Checks.
  if (!(out.optimizer.learning_rate > 0) ||
      !std::isfinite(out.optimizer.learning_rate)) {
    return Invalid(
        f + ".optimizer.learning_rate",
        absl::StrCat("must be > 0, got ", out.optimizer.learning_rate));
  }
  if (out.optimizer.momentum < 0 || out.optimizer.momentum >= 1) {
    return Invalid(f + ".optimizer.momentum", "must be in [0, 1)");
  }
  if (out.optimizer.epsilon <= 0)
    return Invalid(f + ".optimizer.epsilon", "must be > 0");
  if (out.optimizer.weight_decay < 0)
    return Invalid(f + ".optimizer.weight_decay", "must be >= 0");
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
  if (g.cval < 0 || g.cval > 255)
    return Invalid(f + ".augmentation.cval", "must be in [0, 255]");
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
    if (out.lr_schedule.kind == train::LrSchedule::Kind::kStep ||
        out.lr_schedule.kind == train::LrSchedule::Kind::kReduceOnPlateau) {
      return Invalid(f + ".lr_schedule.factor", "must be in (0, 1]");
    }
  }
  return absl::OkStatus();
}

// PREDICT: a model over a dataset; training fields must stay empty.
absl::StatusOr<ResolvedJob> ResolvePredict(
    const v1::JobSpec& spec, const train::ModelConfig* base_model_config,
    ResolvedJob out) {
  if (spec.base_model().empty())
    return Invalid("spec.base_model", "is required for PREDICT");
  absl::StatusOr<std::string> id =
      IdFromName("spec.base_model", "models", spec.base_model());
  if (!id.ok()) return id.status();
  out.base_model = *id;
  if (!spec.recipe().empty())
    return Invalid("spec.recipe", "must be empty for PREDICT");
  if (spec.stages_size() > 0)
    return Invalid("spec.stages", "must be empty for PREDICT");
  if (spec.has_model() && !spec.model().backbone().empty()) {
    return Invalid("spec.model",
                   "must be empty for PREDICT (the model's network is used)");
  }
  if (base_model_config != nullptr) out.config.model = *base_model_config;
  out.config.stages.clear();
  for (int i = 0; i < spec.predict().splits_size(); ++i) {
    switch (spec.predict().splits(i)) {
      case v1::SPLIT_TRAIN:
        out.config.predict_splits.push_back("train");
        break;
      case v1::SPLIT_VALIDATION:
        out.config.predict_splits.push_back("validation");
        break;
      case v1::SPLIT_TEST:
        out.config.predict_splits.push_back("test");
        break;
      default:
        return Invalid(absl::StrCat("spec.predict.splits[", i, "]"),
                       "must be TRAIN, VALIDATION or TEST");
    }
  }
  out.config.predict_flip_tta = spec.predict().horizontal_flip_tta();
  return out;
}

v1::FillMode FillToProto(AugmentOptions::Fill fill) {
  switch (fill) {
    case AugmentOptions::Fill::kNearest:
      return v1::FILL_MODE_NEAREST;
    case AugmentOptions::Fill::kReflect:
      return v1::FILL_MODE_REFLECT;
    case AugmentOptions::Fill::kConstant:
      return v1::FILL_MODE_CONSTANT;
    case AugmentOptions::Fill::kWrap:
      return v1::FILL_MODE_WRAP;
  }
  return v1::FILL_MODE_UNSPECIFIED;
}

v1::LrScheduleSpec::Kind LrKindToProto(train::LrSchedule::Kind kind) {
  using K = train::LrSchedule::Kind;
  switch (kind) {
    case K::kNone:
      return v1::LrScheduleSpec::KIND_UNSPECIFIED;
    case K::kStep:
      return v1::LrScheduleSpec::KIND_STEP;
    case K::kCosine:
      return v1::LrScheduleSpec::KIND_COSINE;
    case K::kReduceOnPlateau:
      return v1::LrScheduleSpec::KIND_REDUCE_ON_PLATEAU;
  }
  return v1::LrScheduleSpec::KIND_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<ResolvedJob> ResolveJobSpec(
    const v1::JobSpec& spec, const std::string& default_precision,
    const train::ModelConfig* base_model_config) {
  ResolvedJob out;
  if (spec.kind() != v1::JOB_KIND_TRAIN &&
      spec.kind() != v1::JOB_KIND_FINE_TUNE &&
      spec.kind() != v1::JOB_KIND_PREDICT) {
    return Invalid("spec.kind", "must be TRAIN, FINE_TUNE or PREDICT");
  }
  absl::StatusOr<std::string> dataset =
      IdFromName("spec.dataset", "datasets", spec.dataset());
  if (!dataset.ok()) return dataset.status();
  out.dataset_id = *std::move(dataset);
  if (spec.kind() == v1::JOB_KIND_PREDICT)
    return ResolvePredict(spec, base_model_config, out);

  train::TrainConfig& c = out.config;
  c.model.precision.clear();
  if (spec.recipe() == "keras-book") {
    c = KerasBook();
    c.model.precision.clear();
  } else if (spec.recipe() == "tf-tutorial") {
    c = TfTutorial();
    c.model.precision.clear();
  } else if (!spec.recipe().empty()) {
    return Invalid("spec.recipe",
                   absl::StrCat("\"", spec.recipe(),
                                "\" is unknown (keras-book, tf-tutorial)"));
  } else {
    c.model.backbone.clear();
    c.stages.clear();
  }

  if (spec.kind() == v1::JOB_KIND_FINE_TUNE) {
    if (spec.base_model().empty())
      return Invalid("spec.base_model", "is required for FINE_TUNE");
    absl::StatusOr<std::string> id =
        IdFromName("spec.base_model", "models", spec.base_model());
    if (!id.ok()) return id.status();
    out.base_model = *id;
    if (base_model_config != nullptr) {
      c.model = *base_model_config;
      c.model.init_weights_file.clear();
    }
    if (spec.has_model() && !spec.model().backbone().empty()) {
      return Invalid(
          "spec.model",
          "must be empty for FINE_TUNE (the base model's network is used)");
    }
  }
  if (absl::Status s = ApplyModel(spec.model(), default_precision, c.model);
      !s.ok())
    return s;

  for (int i = 0; i < spec.stages_size(); ++i) {
    if (i >= static_cast<int>(c.stages.size())) {
      train::StageConfig fresh;
      fresh.name = absl::StrCat("stage-", i + 1);
      c.stages.push_back(fresh);
    }
  }
  if (c.stages.empty())
    return Invalid("spec.stages", "needs at least one stage without a recipe");
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const v1::StageSpec empty;
    const v1::StageSpec& s = static_cast<int>(i) < spec.stages_size()
                                 ? spec.stages(static_cast<int>(i))
                                 : empty;
    if (absl::Status st =
            ApplyStage(s, absl::StrCat("spec.stages[", i, "]"), c.stages[i]);
        !st.ok()) {
      return st;
    }
  }
  c.seed = spec.has_seed() ? spec.seed() : 42;
  c.selection_metric = spec.selection_metric().empty()
                           ? "val_accuracy"
                           : spec.selection_metric();
  const std::string& m = c.selection_metric;
  if (m != "val_accuracy" && m != "val_loss" && m != "accuracy" &&
      m != "loss") {
    return Invalid(
        "spec.selection_metric",
        absl::StrCat("\"", m,
                     "\" is unknown (val_accuracy, val_loss, accuracy, loss)"));
  }
  return out;
}

v1::JobSpec ToResolvedSpec(const v1::JobSpec& spec, const ResolvedJob& r) {
  v1::JobSpec out;
  out.set_kind(spec.kind());
  out.set_dataset(spec.dataset());
  out.set_recipe(spec.recipe());
  out.set_base_model(spec.base_model());
  out.set_seed(r.config.seed);
  out.set_selection_metric(r.config.selection_metric);
  const train::ModelConfig& m = r.config.model;
  v1::ModelSpec* model = out.mutable_model();
  model->set_backbone(m.backbone);
  model->set_alpha(m.alpha);
  model->set_weights(m.weights);
  model->set_input_size(m.input_size);
  model->set_precision(m.precision == "bf16" ? v1::PRECISION_BF16
                                             : v1::PRECISION_FP32);
  if (spec.kind() == v1::JOB_KIND_PREDICT)
    *out.mutable_predict() = spec.predict();
  model->mutable_head()->set_pooling(m.head.pooling == train::Pooling::kFlatten
                                         ? v1::POOLING_FLATTEN
                                         : v1::POOLING_GLOBAL_AVERAGE);
  model->mutable_head()->set_hidden_units(m.head.hidden_units);
  model->mutable_head()->set_dropout(m.head.dropout);
  for (const train::StageConfig& s : r.config.stages) {
    v1::StageSpec* st = out.add_stages();
    st->set_name(s.name);
    st->set_trainable_from(s.trainable_from);
    v1::OptimizerSpec* o = st->mutable_optimizer();
    o->set_kind(s.optimizer.kind == train::OptimizerKind::kRmsprop
                    ? v1::OptimizerSpec::KIND_RMSPROP
                : s.optimizer.kind == train::OptimizerKind::kAdam
                    ? v1::OptimizerSpec::KIND_ADAM
                    : v1::OptimizerSpec::KIND_SGD);
    o->set_learning_rate(s.optimizer.learning_rate);
    o->set_momentum(s.optimizer.momentum);
    o->set_rho(s.optimizer.rho);
    o->set_epsilon(s.optimizer.epsilon);
    o->set_beta1(s.optimizer.beta1);
    o->set_beta2(s.optimizer.beta2);
    o->set_weight_decay(s.optimizer.weight_decay);
    o->set_nesterov(s.optimizer.nesterov);
    st->set_epochs(s.epochs);
    st->set_batch_size(s.batch_size);
    st->set_batch_norm_inference(s.batch_norm_inference);
    v1::AugmentationSpec* a = st->mutable_augmentation();
    a->set_enabled(s.augment.enabled());
    a->set_rotation_range(s.augment.rotation_range);
    a->set_width_shift_range(s.augment.width_shift_range);
    a->set_height_shift_range(s.augment.height_shift_range);
    a->set_shear_range(s.augment.shear_range);
    a->set_zoom_range(s.augment.zoom_range);
    a->set_horizontal_flip(s.augment.horizontal_flip);
    a->set_vertical_flip(s.augment.vertical_flip);
    a->set_fill_mode(FillToProto(s.augment.fill));
    a->set_cval(s.augment.cval);
    if (!s.early_stopping.monitor.empty()) {
      st->mutable_early_stopping()->set_monitor(s.early_stopping.monitor);
      st->mutable_early_stopping()->set_patience(s.early_stopping.patience);
      st->mutable_early_stopping()->set_min_delta(s.early_stopping.min_delta);
    }
    if (s.lr_schedule.kind != train::LrSchedule::Kind::kNone) {
      v1::LrScheduleSpec* l = st->mutable_lr_schedule();
      l->set_kind(LrKindToProto(s.lr_schedule.kind));
      l->set_factor(s.lr_schedule.factor);
      l->set_step_epochs(s.lr_schedule.step_epochs);
      l->set_patience(s.lr_schedule.patience);
      l->set_min_lr(s.lr_schedule.min_lr);
    }
  }
  return out;
}

}  // namespace transferd::rpc
