// The trainer end to end on tiny images: frozen means frozen, events, the
// feature cache, checkpoints and resuming, and configuration errors.
#include "server/core/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "server/core/backbones/safetensors.h"
#include "server/core/data/loader.h"
#include "server/core/train/classifier.h"
#include "server/core/train/train_util.h"
#include "tests/server/core/train/train_test_util.h"
#include "tests/support/subprocess.h"

namespace transferd::core::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    root_ = dir_.path();
    data_ = testing::MakeData(root_ / "images");
  }

  TrainerEnv Env(const std::string& job) const {
    TrainerEnv env;
    env.device.name = "cpu";
    env.cache_dir = root_ / "cache";
    env.checkpoint_dir = root_ / "jobs" / job;
    env.loader_threads = 2;
    return env;
  }

  absl::StatusOr<TrainResult> Train(const TrainConfig& config,
                                    const TrainerEnv& env,
                                    const TrainerCallbacks& cb = {}) {
    auto trainer = Trainer::Create(config, data_, env);
    if (!trainer.ok()) return trainer.status();
    return (*trainer)->Run(cb);
  }

  // Dark against bright images (32 training, 16 validation) as the data, and
  // a small network trained from scratch on them: all of it trainable, Adam
  // 1e-4, 3 epochs of batch 8, seed 7. No BatchNorm, so validation can
  // follow training from the first epoch.
  TrainConfig UseSeparableProblem() {
    data_ = testing::MakeData(root_ / "separable", /*train=*/32,
                              /*validation=*/16, /*test=*/0);
    TrainConfig config;
    config.model = testing::TinyVgg16(Pooling::kGlobalAverage);
    config.stages = {testing::Stage("all", 3, 8)};
    config.stages[0].optimizer.kind = OptimizerKind::kAdam;
    config.stages[0].optimizer.learning_rate = 1e-4;
    config.seed = 7;
    return config;
  }

  transferd::testing::TempDir dir_;
  fs::path root_;
  TrainData data_;
};

void ExpectSameHistory(const std::vector<EpochReport>& a,
                       const std::vector<EpochReport>& b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].stage, b[i].stage);
    EXPECT_NEAR(a[i].loss, b[i].loss, tolerance) << "epoch " << a[i].epoch;
    EXPECT_NEAR(a[i].accuracy, b[i].accuracy, 1e-9) << "epoch " << a[i].epoch;
    EXPECT_NEAR(a[i].val_loss, b[i].val_loss, tolerance)
        << "epoch " << a[i].epoch;
    EXPECT_NEAR(a[i].learning_rate, b[i].learning_rate, 1e-12);
  }
}

nlohmann::json NewestCheckpointMeta(const fs::path& dir) {
  fs::path newest;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) == 0 && e.path().extension() == ".tdc" &&
        (newest.empty() || name > newest.filename().string())) {
      newest = e.path();
    }
  }
  auto sections = ReadSectionFile(newest);
  EXPECT_TRUE(sections.ok()) << sections.status();
  return nlohmann::json::parse(sections->at("meta"));
}

TEST_F(TrainerTest, FrozenBaseStaysByteIdentical) {
  // Start from known weights (a file), so the backbone before training is
  // known; augmentation on, so the images go through the backbone in train
  // mode every step.
  torch::manual_seed(11);
  auto initial = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(initial.ok()) << initial.status();
  // Non-trivial BN statistics, so "unchanged" means something.
  {
    torch::NoGradGuard g;
    for (auto& b : (*initial)->named_buffers()) {
      if (b.key().find("running_mean") != std::string::npos)
        b.value().uniform_(-0.1, 0.1);
      if (b.key().find("running_var") != std::string::npos)
        b.value().uniform_(0.5, 1.5);
    }
  }
  const fs::path init_file = root_ / "init.safetensors";
  ASSERT_TRUE((*initial)->Save(init_file).ok());

  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.model.init_weights_file = init_file.string();
  StageConfig stage = testing::Stage("none", 2);
  stage.augment = data::AugmentOptions::KerasBook();
  config.stages = {stage};
  config.selection_metric = "val_loss";
  bool cached = true;
  TrainableSummary summary;
  TrainerCallbacks cb;
  cb.stage_started = [&](int, const TrainableSummary& s, bool c) {
    summary = s;
    cached = c;
  };
  auto result = Train(config, Env("frozen"), cb);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(cached);
  EXPECT_EQ(summary.trainable_tensors, 4);

  auto before = backbones::ReadSafetensors(init_file);
  auto after = backbones::ReadSafetensors(result->weights_file);
  ASSERT_TRUE(before.ok() && after.ok());
  ASSERT_EQ(before->size(), after->size());
  int backbone = 0, head_changed = 0;
  for (const auto& [name, t] : *before) {
    if (name.rfind("head.", 0) == 0) {
      head_changed += !torch::equal(t, after->at(name));
      continue;
    }
    ++backbone;
    EXPECT_TRUE(torch::equal(t, after->at(name))) << name << " moved";
  }
  EXPECT_EQ(backbone, 27 * 4 + 27);  // 27 BN x 4 tensors + 27 conv kernels
  EXPECT_EQ(head_changed, 4);

  // The optimizer holds state for the 4 head tensors only.
  const nlohmann::json meta = NewestCheckpointMeta(root_ / "jobs" / "frozen");
  EXPECT_EQ(meta.at("optimizer_params").get<int>(), 4);
  EXPECT_EQ(meta.at("optimizer_states").get<int>(), 4);
}

// Training learns: on a separable problem (dark against bright images) a
// small network trained from scratch reaches high validation accuracy while
// its training loss falls. A trainer that stopped updating weights (a stage
// frozen by mistake, a lost optimizer step, labels detached from their
// images) fails here, where the other tests only see events and files.
TEST_F(TrainerTest, LearnsASeparableProblem) {
  const TrainConfig config = UseSeparableProblem();
  auto result = Train(config, Env("learns"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<EpochReport>& h = result->history;
  ASSERT_EQ(h.size(), 3u);
  double best = 0;
  for (const EpochReport& e : h) best = std::max(best, e.val_accuracy);
  // Chance is 0.5; measured: validation 1.0 from the first epoch, training
  // loss 0.57, 0.097, 0.0003 (about 16 s on one thread).
  EXPECT_GE(best, 0.95);
  EXPECT_GE(h.back().val_accuracy, 0.9);
  EXPECT_GE(h.back().accuracy, 0.9);
  EXPECT_LT(h.back().loss, 0.5 * h.front().loss);
}

// Label smoothing reaches both losses: with s = 0.5 the binary targets are
// 0.25 and 0.75, whose cross-entropy can never fall below their entropy
// H(0.25) = 0.5623, however well the model separates them; it still learns.
TEST_F(TrainerTest, LabelSmoothingBoundsBothLossesAndStillLearns) {
  TrainConfig config = UseSeparableProblem();
  config.label_smoothing = 0.5;
  auto result = Train(config, Env("smoothing"));
  ASSERT_TRUE(result.ok()) << result.status();
  const double entropy = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  for (const EpochReport& e : result->history) {
    EXPECT_GE(e.loss, entropy - 1e-4) << "epoch " << e.epoch;
    EXPECT_GE(e.val_loss, entropy - 1e-4) << "epoch " << e.epoch;
  }
  // Without smoothing this run's training loss ends at 0.0003
  // (LearnsASeparableProblem); here it stays near the bound.
  EXPECT_LT(result->history.back().loss, entropy + 0.1);
  EXPECT_GE(result->history.back().val_accuracy, 0.9);
}

// selection_metric "last" keeps the final epoch's weights: the evaluation of
// the kept model on validation is the last epoch's validation.
TEST_F(TrainerTest, SelectionLastKeepsTheFinalEpoch) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("none", 2), testing::Stage("conv_pw_13", 1)};
  config.selection_metric = "last";
  auto result = Train(config, Env("last"));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->history.size(), 3u);
  EXPECT_EQ(result->best_epoch, 3);
  ASSERT_FALSE(result->evaluations.empty());
  EXPECT_EQ(result->evaluations[0].split, "validation");
  EXPECT_NEAR(result->evaluations[0].loss, result->history.back().val_loss,
              1e-5);
  EXPECT_NEAR(result->evaluations[0].accuracy,
              result->history.back().val_accuracy, 1e-9);
}

TEST_F(TrainerTest, ReportsEventsAndEvaluations) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("none", 2), testing::Stage("conv_pw_13", 1)};
  config.stages[1].optimizer.kind = OptimizerKind::kAdam;
  config.stages[1].lr_schedule.kind = LrSchedule::Kind::kCosine;
  std::vector<int> started;
  std::vector<bool> cached;
  std::vector<StepReport> steps;
  std::vector<EpochReport> epochs;
  std::vector<int> checkpoints;
  TrainerCallbacks cb;
  cb.stage_started = [&](int s, const TrainableSummary&, bool c) {
    started.push_back(s);
    cached.push_back(c);
  };
  cb.step = [&](const StepReport& r) { steps.push_back(r); };
  cb.epoch_end = [&](const EpochReport& r) { epochs.push_back(r); };
  cb.checkpoint_saved = [&](int e, int64_t bytes) {
    EXPECT_GT(bytes, 0);
    checkpoints.push_back(e);
  };
  auto result = Train(config, Env("events"), cb);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(started, (std::vector<int>{0, 1}));
  EXPECT_EQ(cached, (std::vector<bool>{true, false}));
  ASSERT_EQ(epochs.size(), 3u);
  EXPECT_EQ(checkpoints, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(epochs[2].stage, 1);
  EXPECT_TRUE(epochs[2].has_validation);
  // Every epoch's last step is reported; 16 images / 4 = 4 steps.
  int last_steps = 0;
  for (const auto& s : steps) {
    EXPECT_EQ(s.steps, 4);
    last_steps += s.step == s.steps;
    EXPECT_GE(s.eta_seconds, 0);
  }
  EXPECT_EQ(last_steps, 3);
  EXPECT_EQ(steps.back().eta_seconds, 0);
  EXPECT_EQ(result->history.size(), 3u);
  for (const auto& h : result->history) EXPECT_GT(h.images_per_second, 0);
  EXPECT_GE(result->best_epoch, 1);
  EXPECT_LE(result->best_epoch, 3);
  // conv_pw_13 (kernel) + conv_pw_13_bn (gamma, beta) + the head.
  EXPECT_EQ(result->trainable.trainable_tensors, 3 + 4);
  ASSERT_EQ(result->evaluations.size(), 2u);
  for (const auto& e : result->evaluations) {
    EXPECT_EQ(e.examples, 8);
    int64_t total = 0;
    for (const auto& cell : e.confusion) total += cell.count;
    EXPECT_EQ(e.num_classes, 2);
    EXPECT_EQ(e.top_k, 0);  // two classes: top-k is not measured
    EXPECT_EQ(total, 8);
    EXPECT_GE(e.roc_auc, 0);
    EXPECT_LE(e.roc_auc, 1);
  }
  EXPECT_EQ(result->evaluations[0].split, "validation");
  EXPECT_EQ(result->evaluations[1].split, "test");
  EXPECT_TRUE(fs::exists(result->weights_file));
  EXPECT_EQ(result->weights_file.filename(), "best.safetensors");
}

TEST_F(TrainerTest, CancelStopsWithCancelled) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("none", 3)};
  TrainerCallbacks cb;
  int polls = 0;
  cb.cancelled = [&] { return ++polls > 2; };
  auto result = Train(config, Env("cancel"), cb);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
}

TEST_F(TrainerTest, FeatureCacheIsWrittenReusedAndMatchesTheImagePath) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("none", 3)};
  config.seed = 3;
  bool cached = false;
  TrainerCallbacks cb;
  cb.stage_started = [&](int, const TrainableSummary&, bool c) { cached = c; };

  auto first = Train(config, Env("cache1"), cb);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(cached);
  EXPECT_EQ(first->features_computed, 16 + 8 + 8);
  EXPECT_EQ(first->features_loaded, 0);
  int files = 0;
  for (const auto& e :
       fs::recursive_directory_iterator(root_ / "cache" / "features")) {
    files += e.path().extension() == ".feat";
  }
  EXPECT_EQ(files, 3);

  cached = false;
  auto second = Train(config, Env("cache2"), cb);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(cached);
  EXPECT_EQ(second->features_computed, 0);
  EXPECT_EQ(second->features_loaded, 16 + 8 + 8);
  ExpectSameHistory(first->history, second->history, 0);

  // The same training through the backbone every step (no cache).
  TrainerEnv env = Env("nocache");
  env.use_feature_cache = false;
  cached = true;
  auto direct = Train(config, env, cb);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_FALSE(cached);
  EXPECT_EQ(direct->features_computed, 0);
  ExpectSameHistory(first->history, direct->history, 1e-4);
  EXPECT_NEAR(first->evaluations[1].loss, direct->evaluations[1].loss, 1e-4);
}

TEST_F(TrainerTest, FrozenBottomActivationsGiveTheSameValidation) {
  // Only the top of the base trains: validation runs the frozen bottom once
  // per stage and then only the rest, with exactly the metrics of running
  // the whole base every epoch.
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("conv_dw_12", 2),
                   testing::Stage("conv_dw_13", 1)};
  config.seed = 5;
  auto kept = Train(config, Env("kept"));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->activations_kept,
            8 + 8);  // validation images, once per stage

  TrainerEnv env = Env("full");
  env.activation_cache_bytes = 0;
  auto full = Train(config, env);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->activations_kept, 0);
  ASSERT_EQ(kept->history.size(), 3u);
  ExpectSameHistory(kept->history, full->history, 0);
  for (size_t i = 0; i < kept->history.size(); ++i) {
    EXPECT_EQ(kept->history[i].val_accuracy, full->history[i].val_accuracy);
  }

  // Too little memory allowed: validation runs the whole base, same metrics.
  env = Env("small");
  env.activation_cache_bytes = 1000;
  auto small = Train(config, env);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->activations_kept, 0);
  ExpectSameHistory(small->history, full->history, 0);
}

TEST_F(TrainerTest, EpochOrderIsTheLoaderOrder) {
  data::LoaderOptions o;
  o.image_size = 32;
  o.batch_size = 3;
  o.seed = 42;
  o.threads = 2;
  auto loader = data::Loader::Create(data_.train, o);
  ASSERT_TRUE(loader.ok());
  for (int epoch : {1, 2, 7}) {
    (*loader)->StartEpoch(epoch);
    std::vector<int64_t> seen;
    while (true) {
      auto batch = (*loader)->Next();
      ASSERT_TRUE(batch.ok());
      if (!*batch) break;
      seen.insert(seen.end(), (*batch)->examples.begin(),
                  (*batch)->examples.end());
    }
    EXPECT_EQ(seen, EpochOrder(data_.train.size(), 42, epoch))
        << "epoch " << epoch;
  }
}

TrainConfig ResumeConfig() {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.seed = 9;
  config.stages = {testing::Stage("none", 2), testing::Stage("conv_pw_13", 2)};
  config.stages[1].optimizer.kind = OptimizerKind::kSgd;
  config.stages[1].optimizer.momentum = 0.9;
  config.stages[1].optimizer.learning_rate = 0.01;
  config.stages[1].augment.horizontal_flip = true;
  config.stages[1].augment.rotation_range = 10;
  config.selection_metric = "val_loss";
  return config;
}

TEST_F(TrainerTest, ResumesAfterCancelLikeAnUninterruptedRun) {
  const TrainConfig config = ResumeConfig();
  auto reference = Train(config, Env("reference"));
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(reference->history.size(), 4u);
  EXPECT_EQ(reference->resumes, 0);

  // Cancelled after epoch 3 (inside stage 1, so optimizer state matters).
  int ended = 0;
  TrainerCallbacks cb;
  cb.epoch_end = [&](const EpochReport&) { ++ended; };
  cb.cancelled = [&] { return ended >= 3; };
  auto cancelled = Train(config, Env("resumed"), cb);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);

  std::vector<int> resumed_epochs;
  TrainerCallbacks cb2;
  cb2.epoch_end = [&](const EpochReport& e) {
    resumed_epochs.push_back(e.epoch);
  };
  auto resumed = Train(config, Env("resumed"), cb2);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed_epochs, (std::vector<int>{4}));
  EXPECT_EQ(resumed->resumes, 1);
  ExpectSameHistory(reference->history, resumed->history, 1e-5);
  EXPECT_EQ(resumed->best_epoch, reference->best_epoch);
  ASSERT_EQ(resumed->evaluations.size(), reference->evaluations.size());
  EXPECT_NEAR(resumed->evaluations[0].loss, reference->evaluations[0].loss,
              1e-5);

  // Two checkpoints are kept.
  int checkpoints = 0;
  for (const auto& e : fs::directory_iterator(root_ / "jobs" / "resumed")) {
    checkpoints += e.path().extension() == ".tdc";
  }
  EXPECT_EQ(checkpoints, 2);
}

TEST_F(TrainerTest, TruncatedNewestCheckpointFallsBackToThePreviousOne) {
  const TrainConfig config = ResumeConfig();
  auto reference = Train(config, Env("reference"));
  ASSERT_TRUE(reference.ok()) << reference.status();

  int ended = 0;
  TrainerCallbacks cb;
  cb.epoch_end = [&](const EpochReport&) { ++ended; };
  cb.cancelled = [&] { return ended >= 3; };
  EXPECT_EQ(Train(config, Env("torn"), cb).status().code(),
            absl::StatusCode::kCancelled);
  const fs::path newest = root_ / "jobs" / "torn" / "checkpoint-000003.tdc";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);

  std::vector<int> resumed_epochs;
  TrainerCallbacks cb2;
  cb2.epoch_end = [&](const EpochReport& e) {
    resumed_epochs.push_back(e.epoch);
  };
  auto resumed = Train(config, Env("torn"), cb2);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed_epochs, (std::vector<int>{3, 4}));
  EXPECT_EQ(resumed->resumes, 1);
  ExpectSameHistory(reference->history, resumed->history, 1e-5);
}

TEST_F(TrainerTest, Bf16AutocastTrains) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.model.precision = "bf16";
  // Head only: LibTorch 1.13 has no bf16 CPU backward for hardtanh (MobileNet's
  // ReLU6), so fine-tuning MobileNet in bf16 on a CPU needs ReLU6 as clamp.
  config.stages = {testing::Stage("none", 1), testing::Stage("none", 1)};
  config.stages[1].augment.horizontal_flip = true;  // through the backbone
  auto result = Train(config, Env("bf16"));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->history.size(), 2u);
  for (const auto& e : result->history) {
    EXPECT_TRUE(std::isfinite(e.loss));
    EXPECT_TRUE(std::isfinite(e.val_loss));
  }
  // The weights stay float32.
  auto weights = backbones::ReadSafetensors(result->weights_file);
  ASSERT_TRUE(weights.ok());
  EXPECT_EQ(weights->at("head.output.weight").scalar_type(), torch::kFloat32);
}

TEST_F(TrainerTest, CreateErrorsNameTheField) {
  TrainConfig config;
  config.model = testing::TinyMobileNet();
  config.stages = {testing::Stage("none", 1), testing::Stage("conv_pw_14", 1)};
  auto bad_layer = Trainer::Create(config, data_, Env("errors"));
  ASSERT_FALSE(bad_layer.ok());
  EXPECT_EQ(bad_layer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(bad_layer.status().message()),
      StartsWith("stages[1].trainable_from: unknown layer \"conv_pw_14\""));

  config.stages = {testing::Stage("none", 1, 0)};
  EXPECT_THAT(
      std::string(
          Trainer::Create(config, data_, Env("errors")).status().message()),
      StartsWith("stages[0].batch_size must be > 0"));

  config.stages = {testing::Stage("none", 1)};
  config.model.input_size = 20;
  EXPECT_THAT(
      std::string(
          Trainer::Create(config, data_, Env("errors")).status().message()),
      StartsWith("model.input_size: "));

  config.model = testing::TinyMobileNet();
  TrainData no_val = data_;
  no_val.validation.clear();
  EXPECT_THAT(
      std::string(
          Trainer::Create(config, no_val, Env("errors")).status().message()),
      StartsWith("selection_metric: \"val_accuracy\" needs validation data"));
  config.selection_metric = "accuracy";
  EXPECT_TRUE(Trainer::Create(config, no_val, Env("errors")).ok());
  // "last" needs no validation either.
  config.selection_metric = "last";
  EXPECT_TRUE(Trainer::Create(config, no_val, Env("errors")).ok());

  config.label_smoothing = -0.1;
  EXPECT_THAT(
      std::string(
          Trainer::Create(config, data_, Env("errors")).status().message()),
      StartsWith("label_smoothing: must be in [0, 1), got -0.1"));
}

}  // namespace
}  // namespace transferd::core::train
