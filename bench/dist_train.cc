// One rank of a data-parallel training run, started the way torchrun starts
// a PyTorch DDP script: MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK in the
// environment (without WORLD_SIZE it runs alone, a world of size 1). Every
// rank runs the engine's Trainer with its own c10d process group (Gloo on
// CPU); rank 0 writes the checkpoints. Prints one JSON line: the per-epoch
// history every rank agrees on, this rank's time in allreduce and the steps.
//
// Used by bench/run_dist_bench.sh (scaling on this machine) and by
// tests/integration/data_parallel_test.cc (2 ranks x batch 10 against
// 1 rank x batch 20).
//
//   dist_train --data DIR --work DIR [--recipe parity|fine-tune]
//              [--batch N] [--epochs N] [--threads N] [--images N]
//              [--size PX] [--precision fp32|bf16] [--no-validation]
//
// DIR holds train/ and validation/: class folders of images, or files named
// CLASS.N.jpg (the shared cats-and-dogs set). --images keeps the first N
// training images of each class (0: all); validation keeps half as many.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "server/core/train/collective.h"
#include "server/core/train/job_request.h"
#include "server/core/train/trainer.h"

namespace fs = std::filesystem;
using namespace transferd::core;

namespace {

constexpr char kUsage[] =
    "usage: dist_train --data DIR --work DIR [--recipe parity|fine-tune]\n"
    "                  [--batch N] [--epochs N] [--threads N] [--images N]\n"
    "                  [--size PX] [--precision fp32|bf16] [--no-validation]\n"
    "                  [--trainable-from LAYER] [--optimizer "
    "adam|sgd|rmsprop]\n"
    "                  [--lr LR]\n"
    "One rank of a data-parallel run (torchrun's MASTER_ADDR, MASTER_PORT,\n"
    "WORLD_SIZE, RANK; alone without them). Prints the history as JSON.\n";

// The class of a file: its folder under the split, or the name before its
// first dot for files directly in the split (cat.12.jpg).
std::string ClassOf(const fs::path& split_dir, const fs::path& file) {
  const fs::path rel = fs::relative(file, split_dir);
  if (rel.has_parent_path()) return rel.begin()->string();
  const std::string name = file.filename().string();
  return name.substr(0, name.find('.'));
}

std::vector<std::pair<std::string, std::string>> Files(const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> out;  // class, path
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext != ".jpg" && ext != ".jpeg" && ext != ".png") continue;
    out.emplace_back(ClassOf(dir, e.path()), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir, work_dir, recipe = "parity", precision = "fp32";
  std::string trainable_from, optimizer;
  double learning_rate = 0;
  int batch = 20, epochs = 1, threads = 1, images = 0, size = 0;
  bool validation = true;
  int64_t die_after_steps = 0;  // tests: SIGKILL itself after N steps
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "dist_train: %s needs a value\n%s", a.c_str(),
                     kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--data") {
      data_dir = value();
    } else if (a == "--work") {
      work_dir = value();
    } else if (a == "--recipe") {
      recipe = value();
    } else if (a == "--batch") {
      batch = std::atoi(value().c_str());
    } else if (a == "--epochs") {
      epochs = std::atoi(value().c_str());
    } else if (a == "--threads") {
      threads = std::atoi(value().c_str());
    } else if (a == "--images") {
      images = std::atoi(value().c_str());
    } else if (a == "--size") {
      size = std::atoi(value().c_str());
    } else if (a == "--precision") {
      precision = value();
    } else if (a == "--die-after-steps") {
      die_after_steps = std::atoll(value().c_str());
    } else if (a == "--trainable-from") {
      trainable_from = value();
    } else if (a == "--optimizer") {
      optimizer = value();
    } else if (a == "--lr") {
      learning_rate = std::atof(value().c_str());
    } else if (a == "--no-validation") {
      validation = false;
    } else {
      std::fprintf(stderr, "dist_train: unknown argument \"%s\"\n%s", a.c_str(),
                   kUsage);
      return 2;
    }
  }
  if (data_dir.empty() || work_dir.empty() || batch < 1 || epochs < 1 ||
      threads < 1 || (recipe != "parity" && recipe != "fine-tune")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  torch::set_num_threads(threads);

  // The rendezvous: torchrun's environment, or a world of one.
  std::shared_ptr<train::Collective> collective = train::SoloCollective();
  absl::StatusOr<train::RendezvousOptions> rendezvous =
      train::RendezvousFromEnv();
  if (rendezvous.ok()) {
    rendezvous->timeout = std::chrono::seconds(30);
    auto joined = train::JoinProcessGroup(*rendezvous, torch::kCPU);
    if (!joined.ok()) {
      std::fprintf(stderr, "dist_train: %s\n",
                   std::string(joined.status().message()).c_str());
      return 1;
    }
    collective = *joined;
  } else if (!absl::IsNotFound(rendezvous.status())) {
    std::fprintf(stderr, "dist_train: %s\n",
                 std::string(rendezvous.status().message()).c_str());
    return 2;
  }

  train::TrainData data;
  data.dataset_id = fs::path(data_dir).filename().string();
  std::map<std::string, int> class_index;
  for (const char* split : {"train", "validation"}) {
    if (std::string(split) == "validation" && !validation) continue;
    std::map<std::string, int> taken;
    for (const auto& [cls, path] : Files(fs::path(data_dir) / split)) {
      const int limit = std::string(split) == "train" ? images : images / 2;
      if (limit > 0 && taken[cls]++ >= limit) continue;
      auto [it, added] =
          class_index.emplace(cls, static_cast<int>(class_index.size()));
      if (added) data.classes.push_back(cls);
      auto& list = std::string(split) == "train" ? data.train : data.validation;
      list.push_back({path, it->second});
    }
  }

  train::TrainConfig config;
  if (recipe == "parity") {
    // Small and deterministic: VGG16 from random weights at 32 px (no
    // BatchNorm), block5 onwards trainable as in the fine-tune stage,
    // Dense(16) and dropout 0.5 (keyed by example), Adam 1e-4, no
    // augmentation.
    config.model.backbone = "vgg16";
    config.model.weights = "none";
    config.model.input_size = size > 0 ? size : 32;
    config.model.head = {train::Pooling::kGlobalAverage, 16, 0.5};
    train::StageConfig s;
    s.name = "all";
    s.trainable_from = "block5_conv1";
    s.optimizer.kind = train::OptimizerKind::kAdam;
    s.optimizer.learning_rate = 1e-4;
    config.stages = {s};
    config.seed = 7;
  } else {
    // The fine-tune stage of the acceptance recipe (keras-book): VGG16 with
    // block5 onwards trainable, Flatten -> Dense(256) -> Dropout(0.5),
    // RMSprop 1e-5, the book's augmentation; random weights (the speed does
    // not depend on them).
    config = train::KerasBookRecipe();
    config.model.weights = "none";
    if (size > 0) config.model.input_size = size;
    config.stages = {config.stages[1]};
    config.seed = 1;
  }
  config.model.precision = precision;
  if (!trainable_from.empty()) config.stages[0].trainable_from = trainable_from;
  if (optimizer == "adam") {
    config.stages[0].optimizer.kind = train::OptimizerKind::kAdam;
  } else if (optimizer == "sgd") {
    config.stages[0].optimizer.kind = train::OptimizerKind::kSgd;
  } else if (optimizer == "rmsprop") {
    config.stages[0].optimizer.kind = train::OptimizerKind::kRmsprop;
  } else if (!optimizer.empty()) {
    std::fprintf(stderr, "dist_train: unknown optimizer \"%s\"\n",
                 optimizer.c_str());
    return 2;
  }
  if (learning_rate > 0) {
    config.stages[0].optimizer.learning_rate = learning_rate;
  }
  config.stages[0].epochs = epochs;
  config.stages[0].batch_size = batch;
  config.selection_metric = validation ? "val_loss" : "loss";

  train::TrainerEnv env;
  env.device.name = "cpu";
  env.cache_dir = fs::path(work_dir) / "cache";
  env.checkpoint_dir = fs::path(work_dir) / "checkpoints";
  env.loader_threads = 1;
  env.decoded_cache_bytes = int64_t{1} << 30;
  env.collective = collective;
  auto trainer = train::Trainer::Create(config, data, env);
  if (!trainer.ok()) {
    std::fprintf(stderr, "dist_train: %s\n",
                 std::string(trainer.status().message()).c_str());
    return 1;
  }
  int64_t steps = 0;
  train::TrainerCallbacks cb;
  cb.step_duration = [&](double) {
    if (++steps == die_after_steps) std::raise(SIGKILL);  // as kill -9
  };
  absl::StatusOr<train::TrainResult> result = (*trainer)->Run(cb);
  if (!result.ok()) {
    std::fprintf(stderr, "dist_train: rank %d: %s\n", collective->rank(),
                 std::string(result.status().message()).c_str());
    return 1;
  }
  nlohmann::json out;
  out["rank"] = collective->rank();
  out["world_size"] = collective->world_size();
  out["backend"] = collective->backend();
  out["threads"] = threads;
  out["train_images"] = data.train.size();
  out["steps"] = steps;
  out["allreduce_seconds"] = collective->seconds();
  out["epochs"] = nlohmann::json::array();
  for (const auto& e : result->history) {
    out["epochs"].push_back({{"epoch", e.epoch},
                             {"loss", e.loss},
                             {"accuracy", e.accuracy},
                             {"val_loss", e.val_loss},
                             {"val_accuracy", e.val_accuracy},
                             {"seconds", e.seconds},
                             {"images_per_second", e.images_per_second}});
  }
  out["weights_written"] = !result->weights_file.empty();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
