// The real ImageNet weights of Keras MobileNet(alpha=0.25): they load with
// Keras' parameter count, and a logistic-regression probe on their globally
// pooled 224 px features separates cats from dogs (train folder -> validation
// folder of ../shared/data/cats_and_dogs). A wrong transpose, padding or
// preprocessing gives about 0.5-0.7; a correct pipeline about 0.93.
#include <algorithm>
#include <filesystem>

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "server/core/backbones/backbone.h"
#include "server/core/backbones/weights.h"
#include "tests/support/shared_data.h"

namespace transferd::core::backbones {
namespace {

namespace fs = std::filesystem;

struct Features {
  torch::Tensor x;  // N x 256
  torch::Tensor y;  // N, 1 = dog
};

// Decodes every JPEG of a Kaggle-named folder, 224x224 RGB, runs the base and
// pools globally.
Features Extract(BackboneImpl& base, const fs::path& folder, bool bf16) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(folder))
    files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<torch::Tensor> feats;
  std::vector<float> labels;
  const size_t batch = 64;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < files.size(); i += batch) {
    const size_t n = std::min(batch, files.size() - i);
    torch::Tensor images =
        torch::empty({static_cast<int64_t>(n), 224, 224, 3}, torch::kUInt8);
    for (size_t j = 0; j < n; ++j) {
      cv::Mat bgr = cv::imread(files[i + j].string(), cv::IMREAD_COLOR);
      EXPECT_FALSE(bgr.empty()) << files[i + j];
      cv::Mat rgb;
      cv::resize(bgr, bgr, cv::Size(224, 224), 0, 0, cv::INTER_AREA);
      cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
      std::memcpy(images[static_cast<int64_t>(j)].data_ptr(), rgb.data,
                  224 * 224 * 3);
      labels.push_back(
          files[i + j].filename().string().rfind("dog", 0) == 0 ? 1.0f : 0.0f);
    }
    // NCHW, as this test always ran: ApplyPreprocessing now gives
    // channels-last, for which oneDNN has no fast emulated-bf16 kernels on
    // CPUs without native bf16.
    torch::Tensor x =
        ApplyPreprocessing(base.DefaultPreprocessing(), images).contiguous();
    at::autocast::set_cpu_enabled(bf16);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    feats.push_back(base.forward(x).to(torch::kFloat32).mean({2, 3}));
    at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(false);
  }
  return {torch::cat(feats), torch::tensor(labels)};
}

double ProbeAccuracy(const Features& train, const Features& val) {
  // Standardised features, L2-regularised logistic regression, full batch.
  const torch::Tensor mean = train.x.mean(0);
  const torch::Tensor std = train.x.std(0) + 1e-6;
  const torch::Tensor xt = (train.x - mean) / std;
  const torch::Tensor xv = (val.x - mean) / std;
  torch::manual_seed(0);
  torch::nn::Linear probe(train.x.size(1), 1);
  torch::optim::Adam opt(probe->parameters(),
                         torch::optim::AdamOptions(0.01).weight_decay(1e-3));
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    torch::Tensor loss = torch::binary_cross_entropy_with_logits(
        probe->forward(xt).squeeze(1), train.y);
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  return ((probe->forward(xv).squeeze(1) > 0).to(torch::kFloat32) == val.y)
      .to(torch::kFloat32)
      .mean()
      .item<double>();
}

// Also the evidence behind the server's default precision: features computed
// under bf16 autocast give the same probe accuracy as fp32.
TEST(ImagenetProbeTest, RealMobileNetWeightsSeparateCatsFromDogs) {
  auto weights = testing::TestWeightsFile("mobilenet_2_5_224_tf_no_top.h5");
  auto data = testing::TestDataDir();
  if (!weights || !data) {
    GTEST_SKIP() << "TRANSFERD_TEST_WEIGHTS / TRANSFERD_TEST_DATA not set";
  }
  BackboneSpec spec;
  spec.name = "mobilenet";
  spec.alpha = 0.25;
  auto base = CreateBackbone(spec);
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(LoadKerasH5(**base, *weights).ok());
  EXPECT_EQ((*base)->KerasParameterCount(), 218544);
  (*base)->eval();

  double accuracy[2];
  for (bool bf16 : {false, true}) {
    Features train = Extract(**base, *data / "train", bf16);
    Features val = Extract(**base, *data / "validation", bf16);
    ASSERT_EQ(train.x.size(0), 2000);
    ASSERT_EQ(val.x.size(0), 1000);
    accuracy[bf16] = ProbeAccuracy(train, val);
    std::printf("probe validation accuracy (%s): %.4f\n",
                bf16 ? "bf16" : "fp32", accuracy[bf16]);
  }
  RecordProperty("validation_accuracy_fp32", std::to_string(accuracy[0]));
  RecordProperty("validation_accuracy_bf16", std::to_string(accuracy[1]));
  EXPECT_GE(accuracy[0], 0.90);
  EXPECT_GE(accuracy[1], 0.90);
  EXPECT_NEAR(accuracy[1], accuracy[0], 0.01);
}

}  // namespace
}  // namespace transferd::core::backbones
