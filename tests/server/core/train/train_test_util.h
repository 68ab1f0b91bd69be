// Tiny datasets for the trainer tests: PNG images written with OpenCV into a
// temporary folder, two classes that differ in brightness (learnable), plus
// small model/stage configurations that train in well under a second per
// epoch on one CPU.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "server/core/train/train_config.h"

namespace transferd::core::train::testing {

// `n` images of `size` px per split half dark (label 0), half bright
// (label 1), interleaved; pixel noise from `seed`. `extension` picks the
// format OpenCV writes (".png" lossless, ".jpg" JPEG quality 95).
inline std::vector<data::Example> MakeImages(
    const std::filesystem::path& dir, const std::string& split, int n, int size,
    int seed, const std::string& extension = ".png") {
  std::filesystem::create_directories(dir / split);
  std::vector<data::Example> out;
  cv::RNG rng(static_cast<uint64_t>(seed) * 7919 + 17);
  for (int i = 0; i < n; ++i) {
    const int label = i % 2;
    cv::Mat img(size, size, CV_8UC3);
    const int lo = label ? 120 : 0, hi = label ? 255 : 150;
    rng.fill(img, cv::RNG::UNIFORM, cv::Scalar::all(lo), cv::Scalar::all(hi));
    const std::filesystem::path path =
        dir / split / (std::to_string(i) + extension);
    cv::imwrite(path.string(), img);
    out.push_back(data::Example{path.string(), label});
  }
  return out;
}

inline TrainData MakeData(const std::filesystem::path& dir, int train = 16,
                          int validation = 8, int test = 8, int size = 48) {
  TrainData d;
  d.dataset_id = "ds-test";
  d.classes = {"cat", "dog"};
  d.train = MakeImages(dir, "train", train, size, 1);
  if (validation > 0)
    d.validation = MakeImages(dir, "validation", validation, size, 2);
  if (test > 0) d.test = MakeImages(dir, "test", test, size, 3);
  return d;
}

// MobileNet alpha 0.25 at 32 px (has BatchNorm), Dense(8) head.
inline ModelConfig TinyMobileNet() {
  ModelConfig m;
  m.backbone = "mobilenet";
  m.alpha = 0.25;
  m.weights = "none";
  m.input_size = 32;
  m.head.pooling = Pooling::kGlobalAverage;
  m.head.hidden_units = 8;
  m.head.dropout = 0.5;
  return m;
}

// VGG16 at 32 px from random weights (no BatchNorm: training and inference
// compute the same function), Dense(16) head without dropout.
inline ModelConfig TinyVgg16(Pooling pooling) {
  ModelConfig m;
  m.backbone = "vgg16";
  m.weights = "none";
  m.input_size = 32;
  m.head.pooling = pooling;
  m.head.hidden_units = 16;
  m.head.dropout = 0;
  return m;
}

inline StageConfig Stage(const std::string& trainable_from, int epochs,
                         int batch_size = 4) {
  StageConfig s;
  s.name = "stage-" + trainable_from;
  s.trainable_from = trainable_from;
  s.epochs = epochs;
  s.batch_size = batch_size;
  s.optimizer.kind = OptimizerKind::kRmsprop;
  s.optimizer.learning_rate = 1e-3;
  return s;
}

}  // namespace transferd::core::train::testing
