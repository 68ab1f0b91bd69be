// ResolveJob: recipes, overrides over them, defaults, and the checks that
// name the API field, without an engine or a server.
#include "server/core/train/job_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::core::train {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

JobRequest Train(std::string recipe = "") {
  JobRequest r;
  r.kind = RequestKind::kTrain;
  r.dataset_id = "cats";
  r.recipe = std::move(recipe);
  return r;
}

absl::Status ErrorOf(const JobRequest& r, const ModelConfig* base = nullptr) {
  return ResolveJob(r, "fp32", base).status();
}

TEST(JobRequestTest, KerasBookRecipeIsTheBooksTwoStages) {
  absl::StatusOr<ResolvedJob> job =
      ResolveJob(Train("keras-book"), "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const TrainConfig& c = job->config;
  EXPECT_EQ(job->dataset_id, "cats");
  EXPECT_EQ(c.model.backbone, "vgg16");
  EXPECT_EQ(c.model.input_size, 150);
  EXPECT_EQ(c.model.weights, "imagenet");
  EXPECT_EQ(c.model.precision, "fp32");
  EXPECT_EQ(c.model.head.pooling, Pooling::kFlatten);
  EXPECT_EQ(c.model.head.hidden_units, 256);
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].trainable_from, "none");
  EXPECT_EQ(c.stages[0].optimizer.kind, OptimizerKind::kRmsprop);
  EXPECT_DOUBLE_EQ(c.stages[0].optimizer.learning_rate, 2e-5);
  EXPECT_EQ(c.stages[0].epochs, 30);
  EXPECT_EQ(c.stages[0].batch_size, 20);
  EXPECT_DOUBLE_EQ(c.stages[0].augment.rotation_range, 40);
  EXPECT_DOUBLE_EQ(c.stages[0].augment.shear_range, 0.2);
  EXPECT_TRUE(c.stages[0].augment.horizontal_flip);
  EXPECT_EQ(c.stages[1].trainable_from, "block5_conv1");
  EXPECT_DOUBLE_EQ(c.stages[1].optimizer.learning_rate, 1e-5);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.selection_metric, "val_accuracy");
  EXPECT_EQ(c.label_smoothing, 0);
  EXPECT_EQ(c.class_weights, "none");
  EXPECT_EQ(c.top_k, 0);
  EXPECT_EQ(c.model.head.init, HeadInit::kGlorotUniform);
}

TEST(JobRequestTest, LandmarksRecipeTrainsTheHeadOnFeaturesFirst) {
  absl::StatusOr<ResolvedJob> job =
      ResolveJob(Train("landmarks"), "bf16", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const TrainConfig& c = job->config;
  EXPECT_EQ(c.model.backbone, "mobilenet_v2");
  EXPECT_EQ(c.model.input_size, 224);
  EXPECT_EQ(c.model.head.pooling, Pooling::kGlobalAverage);
  EXPECT_EQ(c.model.head.hidden_units, 0);
  ASSERT_EQ(c.stages.size(), 2u);
  // No augmentation in stage 1: the feature cache applies.
  EXPECT_FALSE(c.stages[0].augment.enabled());
  EXPECT_EQ(c.stages[0].trainable_from, "none");
  EXPECT_EQ(c.stages[1].trainable_from, "block_13_expand");
  EXPECT_TRUE(c.stages[1].augment.enabled());
  EXPECT_EQ(c.class_weights, "balanced-sqrt");
  EXPECT_DOUBLE_EQ(c.label_smoothing, 0.1);
  // Its choices are overridable like any recipe's.
  JobRequest r = Train("landmarks");
  r.class_weights = "none";
  r.label_smoothing = 0;
  job = ResolveJob(r, "bf16", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->config.class_weights, "none");
  EXPECT_EQ(job->config.label_smoothing, 0);
}

TEST(JobRequestTest, TfTutorialKeepsBatchNormInInferenceModeWhenTuning) {
  absl::StatusOr<ResolvedJob> job =
      ResolveJob(Train("tf-tutorial"), "bf16", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const TrainConfig& c = job->config;
  EXPECT_EQ(c.model.backbone, "mobilenet_v2");
  EXPECT_EQ(c.model.input_size, 160);
  EXPECT_EQ(c.model.precision, "bf16");  // the engine's default
  EXPECT_EQ(c.model.head.pooling, Pooling::kGlobalAverage);
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].optimizer.kind, OptimizerKind::kAdam);
  EXPECT_EQ(c.stages[1].optimizer.kind, OptimizerKind::kRmsprop);
  EXPECT_EQ(c.stages[1].trainable_from, "100");
  EXPECT_TRUE(c.stages[1].batch_norm_inference);
}

TEST(JobRequestTest, OverridesChangeOnlyWhatTheySet) {
  JobRequest r = Train("keras-book");
  r.model.input_size = 64;
  r.model.precision = "bf16";
  r.stages.resize(3);
  r.stages[0].epochs = 3;
  r.stages[1].learning_rate = 3e-5;
  r.stages[2].trainable_from = "all";
  r.stages[2].augmentation_enabled = false;
  r.seed = 7;
  r.selection_metric = "last";
  r.label_smoothing = 0.1;
  r.class_weights = "balanced-sqrt";
  r.top_k = 3;
  r.model.head_init = HeadInit::kTorch;
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const TrainConfig& c = job->config;
  EXPECT_EQ(c.model.input_size, 64);
  EXPECT_EQ(c.model.backbone, "vgg16");
  EXPECT_EQ(c.model.precision, "bf16");
  ASSERT_EQ(c.stages.size(), 3u);
  EXPECT_EQ(c.stages[0].epochs, 3);
  EXPECT_DOUBLE_EQ(c.stages[0].optimizer.learning_rate, 2e-5);
  EXPECT_EQ(c.stages[1].epochs, 100);
  EXPECT_DOUBLE_EQ(c.stages[1].optimizer.learning_rate, 3e-5);
  // A stage past the recipe's starts fresh, named by its position.
  EXPECT_EQ(c.stages[2].name, "stage-3");
  EXPECT_EQ(c.stages[2].trainable_from, "all");
  EXPECT_FALSE(c.stages[2].augment.enabled());
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.selection_metric, "last");
  EXPECT_DOUBLE_EQ(c.label_smoothing, 0.1);
  EXPECT_EQ(c.class_weights, "balanced-sqrt");
  EXPECT_EQ(c.top_k, 3);
  EXPECT_EQ(c.model.head.init, HeadInit::kTorch);
  EXPECT_EQ(c.model.head.hidden_units, 256);  // the recipe's, untouched
}

TEST(JobRequestTest, PresetThenSingleFieldsThenDisabling) {
  JobRequest r = Train();
  r.model.backbone = "mobilenet";
  r.stages.resize(2);
  r.stages[0].augmentation_preset = "tf-tutorial";
  r.stages[0].fill = data::AugmentOptions::Fill::kConstant;
  r.stages[0].cval = 128;
  r.stages[1].augmentation_preset = "keras-book";
  r.stages[1].augmentation_enabled = false;
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const data::AugmentOptions& a = job->config.stages[0].augment;
  EXPECT_DOUBLE_EQ(a.rotation_range,
                   data::AugmentOptions::TfTutorial().rotation_range);
  EXPECT_EQ(a.fill, data::AugmentOptions::Fill::kConstant);
  EXPECT_DOUBLE_EQ(a.cval, 128);
  EXPECT_FALSE(job->config.stages[1].augment.enabled());
}

TEST(JobRequestTest, LearningRateScheduleAndEarlyStopping) {
  JobRequest r = Train("keras-book");
  r.stages.resize(1);
  r.stages[0].lr_kind = LrSchedule::Kind::kStep;
  r.stages[0].lr_step_epochs = 5;  // factor 0: the default
  r.stages[0].early_stopping = {"val_loss", 3, 0.01};
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  const StageConfig& s = job->config.stages[0];
  EXPECT_EQ(s.lr_schedule.kind, LrSchedule::Kind::kStep);
  EXPECT_EQ(s.lr_schedule.step_epochs, 5);
  EXPECT_DOUBLE_EQ(s.lr_schedule.factor, LrSchedule().factor);
  EXPECT_EQ(s.early_stopping.monitor, "val_loss");
  EXPECT_EQ(s.early_stopping.patience, 3);
  EXPECT_EQ(job->config.stages[1].lr_schedule.kind, LrSchedule::Kind::kNone);
}

TEST(JobRequestTest, ErrorsNameTheField) {
  JobRequest r = Train("keras-book");
  r.stages.resize(2);
  r.stages[1].learning_rate = -1;
  EXPECT_EQ(ErrorOf(r).message(),
            "spec.stages[1].optimizer.learning_rate must be > 0, got -1");
  EXPECT_EQ(ErrorOf(r).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_THAT(ErrorOf(Train("kaggle")).message(),
              HasSubstr("spec.recipe \"kaggle\" is unknown"));
  JobRequest small = Train("keras-book");
  small.model.input_size = 16;
  EXPECT_EQ(ErrorOf(small).message(),
            "spec.model.input_size must be >= 32, got 16");
  JobRequest preset = Train("keras-book");
  preset.stages.resize(1);
  preset.stages[0].augmentation_preset = "imagenet";
  EXPECT_THAT(ErrorOf(preset).message(),
              HasSubstr("spec.stages[0].augmentation.preset \"imagenet\""));
  JobRequest zoom = Train("keras-book");
  zoom.stages.resize(1);
  zoom.stages[0].zoom_range = 1;
  EXPECT_THAT(ErrorOf(zoom).message(),
              HasSubstr("spec.stages[0].augmentation"));
  JobRequest metric = Train("keras-book");
  metric.selection_metric = "f1";
  EXPECT_THAT(ErrorOf(metric).message(),
              HasSubstr("spec.selection_metric \"f1\" is unknown"));
  JobRequest smoothing = Train("keras-book");
  smoothing.label_smoothing = 1;
  EXPECT_EQ(ErrorOf(smoothing).message(),
            "spec.label_smoothing must be in [0, 1), got 1");
  JobRequest weights = Train("keras-book");
  weights.class_weights = "inverse";
  EXPECT_THAT(ErrorOf(weights).message(),
              HasSubstr("spec.class_weights \"inverse\" is unknown"));
  JobRequest top = Train("keras-book");
  top.top_k = 101;
  EXPECT_EQ(ErrorOf(top).message(), "spec.top_k must be in [0, 100], got 101");
  top.top_k = -1;
  EXPECT_EQ(ErrorOf(top).code(), absl::StatusCode::kInvalidArgument);
  JobRequest batch = Train("keras-book");
  batch.stages.resize(1);
  batch.stages[0].batch_size = 0;
  EXPECT_EQ(ErrorOf(batch).message(),
            "spec.stages[0].batch_size must be in [1, 4096], got 0");
}

TEST(JobRequestTest, WithoutARecipeABackboneIsRequiredAndOneStageIsDefault) {
  EXPECT_EQ(ErrorOf(Train()).message(),
            "spec.model.backbone is required without a recipe");
  // No stage given: one stage of the defaults, as Keras' fit() runs one
  // epoch unless told otherwise.
  JobRequest r = Train();
  r.model.backbone = "mobilenet";
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->config.stages.size(), 1u);
  const StageConfig& stage = job->config.stages[0];
  EXPECT_EQ(stage.name, "stage-1");
  EXPECT_EQ(stage.trainable_from, "none");
  EXPECT_EQ(stage.epochs, 1);
  EXPECT_EQ(stage.batch_size, 20);
  EXPECT_EQ(stage.optimizer.kind, OptimizerKind::kRmsprop);
  EXPECT_DOUBLE_EQ(stage.optimizer.learning_rate, 1e-3);
  EXPECT_EQ(job->config.model.weights, "imagenet");
  // Given stages are kept as given, not joined by a default one.
  r.stages.resize(2);
  r.stages[1].epochs = 3;
  job = ResolveJob(r, "fp32", nullptr);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->config.stages.size(), 2u);
  EXPECT_EQ(job->config.stages[1].name, "stage-2");
  EXPECT_EQ(job->config.stages[1].epochs, 3);
}

TEST(JobRequestTest, FineTuneTakesTheBaseModelsNetwork) {
  ModelConfig base;
  base.backbone = "mobilenet";
  base.alpha = 0.25;
  base.input_size = 224;
  base.precision = "fp32";
  base.init_weights_file = "/somewhere/weights.safetensors";
  JobRequest r = Train();
  r.kind = RequestKind::kFineTune;
  r.stages.resize(1);
  r.stages[0].trainable_from = "conv_dw_12";
  EXPECT_EQ(ErrorOf(r, &base).message(),
            "spec.base_model is required for FINE_TUNE");
  r.base_model_id = "m-1";
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "bf16", &base);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->base_model, "m-1");
  EXPECT_EQ(job->config.model.backbone, "mobilenet");
  EXPECT_DOUBLE_EQ(job->config.model.alpha, 0.25);
  EXPECT_EQ(job->config.model.precision, "fp32");  // the base model's
  EXPECT_TRUE(job->config.model.init_weights_file.empty());
  r.model.backbone = "vgg16";
  EXPECT_THAT(ErrorOf(r, &base).message(),
              HasSubstr("spec.model must be empty for FINE_TUNE"));
}

TEST(JobRequestTest, PredictRunsTheModelOverChosenSplits) {
  ModelConfig base;
  base.backbone = "mobilenet";
  JobRequest r = Train();
  r.kind = RequestKind::kPredict;
  EXPECT_EQ(ErrorOf(r, &base).message(),
            "spec.base_model is required for PREDICT");
  r.base_model_id = "m-2";
  r.predict_splits = {common::Split::kValidation, common::Split::kTest};
  r.predict_flip_tta = true;
  absl::StatusOr<ResolvedJob> job = ResolveJob(r, "fp32", &base);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->config.model.backbone, "mobilenet");
  EXPECT_TRUE(job->config.stages.empty());
  EXPECT_THAT(job->config.predict_splits, ElementsAre("validation", "test"));
  EXPECT_TRUE(job->config.predict_flip_tta);
  r.stages.resize(1);
  EXPECT_EQ(ErrorOf(r, &base).message(),
            "spec.stages must be empty for PREDICT");
  r.stages.clear();
  r.recipe = "keras-book";
  EXPECT_EQ(ErrorOf(r, &base).message(),
            "spec.recipe must be empty for PREDICT");
}

}  // namespace
}  // namespace transferd::core::train
