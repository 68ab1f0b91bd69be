// Parity with plain PyTorch: the same VGG16 classifier, initial weights,
// preprocessed images and example order, trained with SGD (no augmentation,
// no dropout, one thread) by the Trainer and by parity_reference.py, give the
// same per-epoch training losses. Stage 1 trains the head from cached
// features, stage 2 fine-tunes block5 through the loader path.
#include <cstdio>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

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
  data::LoaderOptions o;
  o.image_size = 32;
  o.batch_size = 16;
  o.shuffle = false;
  o.threads = 1;
  o.preprocessing = (*initial)->backbone().DefaultPreprocessing();
  auto loader = data::Loader::Create(data.train, o);
  ASSERT_TRUE(loader.ok());
  (*loader)->StartEpoch(0);
  auto batch = (*loader)->Next();
  ASSERT_TRUE(batch.ok() && batch->has_value());
  ASSERT_TRUE(
      backbones::WriteSafetensors(root / "data.safetensors",
                                  {{"images", (*batch)->images.contiguous()},
                                   {"labels", (*batch)->labels}})
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

  TrainerEnv env;
  env.device.name = "cpu";
  env.cache_dir = root / "cache";
  env.checkpoint_dir = root / "job";
  env.loader_threads = 1;
  std::vector<bool> cached;
  TrainerCallbacks cb;
  cb.stage_started = [&](int, const TrainableSummary&, bool c) {
    cached.push_back(c);
  };
  auto trainer = Trainer::Create(config, data, env);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto result = (*trainer)->Run(cb);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(cached, (std::vector<bool>{true, false}));

  const auto python = transferd::testing::Run(
      {transferd::testing::Python3(),
       transferd::testing::SourcePath(
           "tests/server/core/train/parity_reference.py"),
       root.string()},
      {}, std::chrono::seconds(120));
  ASSERT_TRUE(python.status.exited && python.status.code == 0) << python.err;
  const auto reference =
      nlohmann::json::parse(python.out).at("losses").get<std::vector<double>>();
  ASSERT_EQ(reference.size(), 4u);
  ASSERT_EQ(result->history.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(reference[i]));
    EXPECT_NEAR(result->history[i].loss, reference[i], 1e-4)
        << "epoch " << i + 1;
    std::printf("epoch %zu: trainer %.8f pytorch %.8f\n", i + 1,
                result->history[i].loss, reference[i]);
  }
  // Training did something.
  EXPECT_NE(result->history[0].loss, result->history[3].loss);
}

}  // namespace
}  // namespace transferd::core::train
