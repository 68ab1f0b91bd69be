// Parity with plain PyTorch: the same classifier, initial weights, images
// and example order, trained (no augmentation, no dropout, fp32, one thread)
// by the Trainer and by parity_reference.py, give the same per-epoch training
// losses. Stage 1 trains the head from cached features, stage 2 fine-tunes
// the top of the base through the loader path.
//   - VGG16 with SGD, the Python side fed the loader's preprocessed tensors;
//   - the acceptance recipe's parts: MobileNet (BatchNorm folded into the
//     convolutions here, in inference mode in both stages), Keras' RMSprop
//     (FusedRMSprop here, torch.optim.RMSprop there), the Python side
//     decoding the JPEG files itself.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "server/core/backbones/safetensors.h"
#include "server/core/data/loader.h"
#include "server/core/train/classifier.h"
#include "server/core/train/train_util.h"
#include "server/core/train/trainer.h"
#include "tests/server/core/train/train_test_util.h"
#include "tests/support/paths.h"
#include "tests/support/subprocess.h"

namespace transferd::core::train {
namespace {

namespace fs = std::filesystem;

// What parity_reference.py printed for the plan in `root`.
struct Reference {
  std::vector<double> losses;
  double input_sum = 0;
  double input_sum_squares = 0;
};

Reference RunReference(const fs::path& root) {
  const auto python = transferd::testing::Run(
      {transferd::testing::Python3(),
       transferd::testing::SourcePath(
           "tests/server/core/train/parity_reference.py"),
       root.string()},
      {}, std::chrono::seconds(120));
  EXPECT_TRUE(python.status.exited && python.status.code == 0) << python.err;
  Reference r;
  if (!python.status.exited || python.status.code != 0) return r;
  const auto out = nlohmann::json::parse(python.out);
  r.losses = out.at("losses").get<std::vector<double>>();
  r.input_sum = out.at("input_sum").get<double>();
  r.input_sum_squares = out.at("input_sum_squares").get<double>();
  return r;
}

// The Trainer on `data` (one loader thread; cache and checkpoints under
// `root`); `cached` gets each stage's use of the feature cache.
absl::StatusOr<TrainResult> RunTrainer(const TrainConfig& config,
                                       const TrainData& data,
                                       const fs::path& root,
                                       std::vector<bool>* cached) {
  TrainerEnv env;
  env.device.name = "cpu";
  env.cache_dir = root / "cache";
  env.checkpoint_dir = root / "job";
  env.loader_threads = 1;
  TrainerCallbacks cb;
  cb.stage_started = [cached](int, const TrainableSummary&, bool c) {
    cached->push_back(c);
  };
  auto trainer = Trainer::Create(config, data, env);
  if (!trainer.ok()) return trainer.status();
  return (*trainer)->Run(cb);
}

// The trainer's per-epoch losses against the reference's, within `tolerance`.
void ExpectSameLosses(const TrainResult& result, const Reference& reference,
                      size_t epochs, double tolerance) {
  ASSERT_EQ(reference.losses.size(), epochs);
  ASSERT_EQ(result.history.size(), epochs);
  for (size_t i = 0; i < epochs; ++i) {
    EXPECT_TRUE(std::isfinite(reference.losses[i]));
    EXPECT_NEAR(result.history[i].loss, reference.losses[i], tolerance)
        << "epoch " << i + 1;
    std::printf("epoch %zu: trainer %.8f pytorch %.8f\n", i + 1,
                result.history[i].loss, reference.losses[i]);
  }
  // Training did something.
  EXPECT_NE(result.history[0].loss, result.history[epochs - 1].loss);
}

// The loader's first epoch unshuffled, in one batch: the preprocessed images.
torch::Tensor LoaderImages(const std::vector<data::Example>& examples, int size,
                           backbones::Preprocessing preprocessing) {
  data::LoaderOptions o;
  o.image_size = size;
  o.batch_size = static_cast<int>(examples.size());
  o.shuffle = false;
  o.threads = 1;
  o.preprocessing = preprocessing;
  auto loader = data::Loader::Create(examples, o);
  EXPECT_TRUE(loader.ok()) << loader.status();
  if (!loader.ok()) return {};
  (*loader)->StartEpoch(0);
  auto batch = (*loader)->Next();
  EXPECT_TRUE(batch.ok() && batch->has_value());
  if (!batch.ok() || !batch->has_value()) return {};
  return (*batch)->images.contiguous();
}

TEST(TrainerParityTest, EpochLossesMatchPyTorch) {
  torch::set_num_threads(1);
  transferd::testing::TempDir dir;
  const fs::path root = dir.path();
  TrainData data = testing::MakeData(root / "images", 16, 0, 0, 48);

  TrainConfig config;
  config.seed = 5;
  config.selection_metric = "loss";
  config.model = testing::TinyVgg16(Pooling::kFlatten);
  StageConfig head = testing::Stage("none", 2, 4);
  head.optimizer.kind = OptimizerKind::kSgd;
  head.optimizer.learning_rate = 1e-3;
  head.optimizer.momentum = 0.9;
  StageConfig fine = head;
  fine.trainable_from = "block5_conv1";
  fine.optimizer.learning_rate = 1e-4;
  config.stages = {head, fine};

  // The initial weights the Trainer builds from the seed.
  torch::manual_seed(config.seed);
  auto initial = BuildClassifier(config.model, 2, {});
  ASSERT_TRUE(initial.ok()) << initial.status();
  ASSERT_TRUE((*initial)->Save(root / "init.safetensors").ok());

  // The preprocessed images, as the loader makes them.
  const torch::Tensor images = LoaderImages(
      data.train, 32, (*initial)->backbone().DefaultPreprocessing());
  ASSERT_TRUE(images.defined());
  std::vector<int64_t> labels;
  for (const data::Example& e : data.train) labels.push_back(e.label);
  ASSERT_TRUE(backbones::WriteSafetensors(
                  root / "data.safetensors",
                  {{"images", images}, {"labels", torch::tensor(labels)}})
                  .ok());

  nlohmann::json plan;
  plan["hidden_units"] = 16;
  std::vector<std::string> block5 = {"block5_conv1", "block5_conv2",
                                     "block5_conv3"};
  plan["stages"] = {{{"epochs", 2},
                     {"batch_size", 4},
                     {"lr", 1e-3},
                     {"momentum", 0.9},
                     {"trainable", std::vector<std::string>{}}},
                    {{"epochs", 2},
                     {"batch_size", 4},
                     {"lr", 1e-4},
                     {"momentum", 0.9},
                     {"trainable", block5}}};
  for (int epoch = 1; epoch <= 4; ++epoch) {
    plan["orders"].push_back(EpochOrder(16, config.seed, epoch));
  }
  std::ofstream(root / "plan.json") << plan.dump();

  std::vector<bool> cached;
  auto result = RunTrainer(config, data, root, &cached);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(cached, (std::vector<bool>{true, false}));

  ExpectSameLosses(*result, RunReference(root), 4, 1e-4);
}

TEST(TrainerParityTest,
     MobileNetWithRmspropAndBatchNormInferenceMatchesPyTorch) {
  torch::set_num_threads(1);
  transferd::testing::TempDir dir;
  const fs::path root = dir.path();
  constexpr int kImages = 16;
  TrainData data;
  data.dataset_id = "ds-test";
  data.classes = {"cat", "dog"};
  data.train = testing::MakeImages(root / "images", "train", kImages, 32,
                                   /*seed=*/4, ".jpg");

  TrainConfig config;
  config.seed = 11;
  config.selection_metric = "loss";
  config.model = testing::TinyMobileNet();
  config.model.head.pooling = Pooling::kFlatten;  // the acceptance head
  config.model.head.dropout = 0;
  config.model.init_weights_file = (root / "init.safetensors").string();
  StageConfig head = testing::Stage("none", 2, 4);  // RMSprop, Keras' rho/eps
  head.optimizer.learning_rate = 1e-3;
  StageConfig fine = head;
  fine.trainable_from = "conv_dw_12";
  fine.optimizer.learning_rate = 1e-4;
  fine.batch_norm_inference = true;
  config.stages = {head, fine};

  // Initial weights with BatchNorm statistics and scales far from their
  // initial 0/1, so that inference-mode BatchNorm (and its folding into the
  // convolutions) changes what is computed.
  torch::manual_seed(config.seed);
  ModelConfig fresh = config.model;
  fresh.init_weights_file.clear();
  auto initial = BuildClassifier(fresh, 2, {});
  ASSERT_TRUE(initial.ok()) << initial.status();
  {
    torch::NoGradGuard no_grad;
    int perturbed = 0;
    for (auto& b : (*initial)->named_buffers()) {
      if (absl::EndsWith(b.key(), "running_mean")) {
        b.value().normal_(0, 0.2);
        ++perturbed;
      } else if (absl::EndsWith(b.key(), "running_var")) {
        b.value().uniform_(0.5, 2.0);
      }
    }
    for (auto& p : (*initial)->named_parameters()) {
      if (!absl::StrContains(p.key(), "_bn.")) continue;
      if (absl::EndsWith(p.key(), ".weight")) p.value().uniform_(0.7, 1.3);
      if (absl::EndsWith(p.key(), ".bias")) p.value().normal_(0, 0.1);
    }
    ASSERT_EQ(perturbed, 27);  // conv1_bn and 13 x (dw, pw)
  }
  ASSERT_TRUE((*initial)->Save(root / "init.safetensors").ok());

  // The layers from conv_dw_12 on, by name, as the Python side sets them
  // trainable.
  std::vector<std::string> top;
  for (int id : {12, 13}) {
    for (const char* part : {"conv_dw_", "conv_pw_"}) {
      const std::string name = part + std::to_string(id);
      top.push_back(name);
      top.push_back(name + "_bn");
    }
  }
  nlohmann::json plan;
  plan["model"] = "mobilenet";
  plan["alpha"] = config.model.alpha;
  plan["hidden_units"] = config.model.head.hidden_units;
  plan["optimizer"] = "rmsprop";
  for (const StageConfig* s : {&head, &fine}) {
    plan["stages"].push_back(
        {{"epochs", s->epochs},
         {"batch_size", s->batch_size},
         {"lr", s->optimizer.learning_rate},
         {"rho", s->optimizer.rho},
         {"epsilon", s->optimizer.epsilon},
         {"trainable", s == &head ? std::vector<std::string>{} : top}});
  }
  for (int epoch = 1; epoch <= 4; ++epoch) {
    plan["orders"].push_back(EpochOrder(kImages, config.seed, epoch));
  }
  for (const data::Example& e : data.train) {
    plan["images"].push_back({e.path, e.label});
  }
  std::ofstream(root / "plan.json") << plan.dump();

  std::vector<bool> cached;
  auto result = RunTrainer(config, data, root, &cached);
  ASSERT_TRUE(result.ok()) << result.status();
  // Starting from a weights file, neither stage uses the feature cache: both
  // run the loader path, as the acceptance recipe (augmented) does.
  EXPECT_EQ(cached, (std::vector<bool>{false, false}));

  const Reference reference = RunReference(root);
  // Both sides decoded the same pixels (libjpeg through OpenCV here, through
  // PIL there) and preprocessed them alike; a mismatch here would explain
  // any below.
  const torch::Tensor images = LoaderImages(
      data.train, 32, (*initial)->backbone().DefaultPreprocessing());
  ASSERT_TRUE(images.defined());
  EXPECT_NEAR(images.sum().item<double>(), reference.input_sum, 1e-2);
  EXPECT_NEAR(images.pow(2).sum().item<double>(), reference.input_sum_squares,
              1e-2);
  ExpectSameLosses(*result, reference, 4, 1e-5);
}

}  // namespace
}  // namespace transferd::core::train
