// The classifier: Keras-like trainable counts, freezing (requires_grad and
// BatchNorm inference mode), the head's initialisation, save/load, and the
// field-naming errors of DescribeStage.
#include "server/core/train/classifier.h"

#include <algorithm>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/core/backbones/layers.h"
#include "server/core/train/train_util.h"
#include "server/core/train/trainer.h"
#include "tests/server/core/train/train_test_util.h"
#include "tests/support/subprocess.h"

namespace transferd::core::train {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

ModelConfig Vgg16Notebook() {
  ModelConfig m;
  m.backbone = "vgg16";
  m.weights = "none";
  m.input_size = 150;
  m.head.pooling = Pooling::kFlatten;
  m.head.hidden_units = 256;
  m.head.dropout = 0;
  return m;
}

TEST(DescribeStageTest, Vgg16NotebookCountsMatchKeras) {
  StageConfig stage = testing::Stage("all", 1);
  auto unfrozen = DescribeStage(Vgg16Notebook(), stage, 2);
  ASSERT_TRUE(unfrozen.ok()) << unfrozen.status();
  EXPECT_EQ(unfrozen->trainable_tensors, 30);
  // Keras: 14,714,688 (VGG16) + 8192*256+256 + 256+1.
  EXPECT_EQ(unfrozen->trainable_parameters, 14714688 + 2097665);
  EXPECT_EQ(unfrozen->non_trainable_parameters, 0);

  stage.trainable_from = "none";
  auto frozen = DescribeStage(Vgg16Notebook(), stage, 2);
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  EXPECT_EQ(frozen->trainable_tensors, 4);
  EXPECT_EQ(frozen->trainable_parameters, 2097665);
  EXPECT_EQ(frozen->non_trainable_parameters, 14714688);

  stage.trainable_from = "block5_conv1";
  auto partial = DescribeStage(Vgg16Notebook(), stage, 2);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->trainable_tensors, 10);
  EXPECT_EQ(partial->trainable_parameters, 7079424 + 2097665);
}

TEST(DescribeStageTest, BatchNormStatisticsAreNonTrainable) {
  StageConfig stage = testing::Stage("all", 1);
  ModelConfig m = testing::TinyMobileNet();
  auto s = DescribeStage(m, stage, 3);
  ASSERT_TRUE(s.ok()) << s.status();
  // MobileNet 0.25: 218,544 scalars of which 2 x (sum of BN channels) are
  // moving statistics (Keras: non-trainable 5,472 at alpha 0.25).
  EXPECT_EQ(s->non_trainable_parameters, 5472);
  // Head: Dense(256 -> 8) + Dense(8 -> 3).
  EXPECT_EQ(s->trainable_parameters, 218544 - 5472 + 256 * 8 + 8 + 8 * 3 + 3);
}

TEST(DescribeStageTest, ErrorsNameTheField) {
  StageConfig stage = testing::Stage("blok5_conv1", 1);
  auto bad_layer = DescribeStage(Vgg16Notebook(), stage, 2);
  ASSERT_FALSE(bad_layer.ok());
  EXPECT_EQ(bad_layer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_layer.status().message()),
              StartsWith("trainable_from: unknown layer \"blok5_conv1\""));
  EXPECT_THAT(std::string(bad_layer.status().message()),
              HasSubstr("block5_conv1"));

  ModelConfig small = Vgg16Notebook();
  small.input_size = 16;
  auto bad_size = DescribeStage(small, testing::Stage("none", 1), 2);
  ASSERT_FALSE(bad_size.ok());
  EXPECT_THAT(std::string(bad_size.status().message()),
              StartsWith("model.input_size: "));

  StageConfig zero = testing::Stage("none", 1, 0);
  auto bad_batch = DescribeStage(Vgg16Notebook(), zero, 2);
  ASSERT_FALSE(bad_batch.ok());
  EXPECT_EQ(std::string(bad_batch.status().message()),
            "batch_size must be > 0 (got 0)");

  ModelConfig bad_backbone = Vgg16Notebook();
  bad_backbone.backbone = "vgg17";
  EXPECT_THAT(
      std::string(DescribeStage(bad_backbone, testing::Stage("none", 1), 2)
                      .status()
                      .message()),
      StartsWith("model.backbone: "));
}

TEST(ClassifierTest, FrozenBatchNormStaysInInferenceMode) {
  torch::manual_seed(1);
  auto c = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(c.ok()) << c.status();
  Classifier model = *c;
  ASSERT_TRUE(model->SetTrainableFrom("conv_pw_13").ok());
  model->train();
  const auto& layers = model->backbone().layers();
  const int first = *model->backbone().ResolveLayer("conv_pw_13");
  int frozen_bn = 0, live_bn = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].kind != backbones::KerasLayer::Kind::kBatchNorm) continue;
    if (static_cast<int>(i) < first) {
      EXPECT_FALSE(layers[i].module->is_training()) << layers[i].name;
      ++frozen_bn;
    } else {
      EXPECT_TRUE(layers[i].module->is_training()) << layers[i].name;
      ++live_bn;
    }
  }
  EXPECT_EQ(frozen_bn, 26);
  EXPECT_EQ(live_bn, 1);
  EXPECT_TRUE(model->is_training());

  // A training forward pass leaves the frozen statistics alone.
  const backbones::NamedTensors before = model->BackboneTensors();
  (void)model->forward(torch::randn({4, 3, 32, 32}));
  const backbones::NamedTensors after = model->BackboneTensors();
  EXPECT_TRUE(torch::equal(before.at("conv1_bn.running_mean"),
                           after.at("conv1_bn.running_mean")));
  EXPECT_FALSE(torch::equal(before.at("conv_pw_13_bn.running_mean"),
                            after.at("conv_pw_13_bn.running_mean")));

  ASSERT_TRUE(model->SetTrainableFrom("all").ok());
  model->train();
  EXPECT_TRUE(layers[2].module->is_training());
  EXPECT_FALSE(model->backbone_frozen());
  ASSERT_TRUE(model->SetTrainableFrom("none").ok());
  EXPECT_TRUE(model->backbone_frozen());
  EXPECT_EQ(model->TrainableParameters().size(), 4u);
}

TEST(ClassifierTest, BatchNormInferenceKeepsStatisticsButTrainsGammaAndBeta) {
  torch::manual_seed(1);
  auto c = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(c.ok()) << c.status();
  Classifier model = *c;
  ASSERT_TRUE(model->SetTrainableFrom("conv_dw_13").ok());
  model->SetBatchNormInference(true);
  model->train();
  ASSERT_TRUE(model->is_training());
  const auto& layers = model->backbone().layers();
  const int first = *model->backbone().ResolveLayer("conv_dw_13");
  int trainable_bn = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].kind != backbones::KerasLayer::Kind::kBatchNorm) continue;
    EXPECT_FALSE(layers[i].module->is_training()) << layers[i].name;
    if (static_cast<int>(i) >= first) ++trainable_bn;
  }
  EXPECT_EQ(trainable_bn, 2);  // conv_dw_13_bn and conv_pw_13_bn

  // Moving statistics of this input (a randomly initialised base would
  // otherwise shrink the activations to ~0 by the top blocks), then the
  // modes as the classifier sets them again.
  const torch::Tensor x = torch::randn({4, 3, 32, 32});
  {
    torch::NoGradGuard no_grad;
    std::vector<double> momenta;
    for (const auto& l : layers) {
      if (l.kind != backbones::KerasLayer::Kind::kBatchNorm) continue;
      auto* bn = l.module->as<torch::nn::BatchNorm2dImpl>();
      ASSERT_NE(bn, nullptr);
      momenta.push_back(*bn->options.momentum());
      bn->options.momentum(1.0);
      bn->train();
    }
    (void)model->Features(x);
    size_t k = 0;
    for (const auto& l : layers) {
      if (l.kind != backbones::KerasLayer::Kind::kBatchNorm) continue;
      l.module->as<torch::nn::BatchNorm2dImpl>()->options.momentum(
          momenta[k++]);
    }
    model->train();
  }

  // One SGD step: the moving statistics stay, gamma and beta move, and the
  // gradients equal those of conv -> BatchNorm(eval) computed separately.
  const backbones::NamedTensors before = model->BackboneTensors();
  std::map<std::string, torch::Tensor> snapshot;
  for (const auto& [name, t] : before) snapshot[name] = t.clone();
  const torch::Tensor y = torch::tensor(std::vector<int64_t>{0, 1, 1, 0});
  torch::manual_seed(11);  // the same dropout mask in both passes
  model->Loss(model->forward(x), y).backward();
  // Gradients of the live parameters of the trainable conv/BatchNorm layers.
  const auto grads = [&] {
    std::map<std::string, torch::Tensor> out;
    for (const char* layer :
         {"conv_dw_13", "conv_dw_13_bn", "conv_pw_13", "conv_pw_13_bn"}) {
      const auto& module =
          layers[*model->backbone().ResolveLayer(layer)].module;
      for (const auto& p : module->named_parameters()) {
        if (p.value().grad().defined())
          out[std::string(layer) + "." + p.key()] = p.value().grad().clone();
      }
    }
    return out;
  };
  const std::map<std::string, torch::Tensor> folded = grads();
  EXPECT_EQ(folded.size(), 6u);  // two conv kernels, two gammas, two betas
  model->zero_grad();
  backbones::ConvBn::EnableFolding(false);
  torch::manual_seed(11);
  model->Loss(model->forward(x), y).backward();
  backbones::ConvBn::EnableFolding(true);
  const std::map<std::string, torch::Tensor> separate = grads();
  ASSERT_EQ(separate.size(), folded.size());
  for (const auto& [name, g] : folded) {
    EXPECT_GT(g.abs().max().item<double>(), 1e-6) << name;
    const double scale = separate.at(name).abs().max().item<double>();
    EXPECT_LE((g - separate.at(name)).abs().max().item<double>(),
              1e-4 * scale + 1e-8)
        << name;
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->TrainableParameters()) {
      if (p.grad().defined()) p.sub_(p.grad() * 0.1);
    }
  }
  const backbones::NamedTensors after = model->BackboneTensors();
  for (const char* stat :
       {"conv_dw_13_bn.running_mean", "conv_dw_13_bn.running_var",
        "conv_pw_13_bn.running_mean", "conv_pw_13_bn.running_var"}) {
    EXPECT_TRUE(torch::equal(snapshot.at(stat), after.at(stat))) << stat;
  }
  EXPECT_FALSE(torch::equal(snapshot.at("conv_pw_13_bn.weight"),
                            after.at("conv_pw_13_bn.weight")));
  EXPECT_FALSE(torch::equal(snapshot.at("conv_pw_13_bn.bias"),
                            after.at("conv_pw_13_bn.bias")));
  EXPECT_TRUE(torch::equal(snapshot.at("conv_pw_12.weight"),
                           after.at("conv_pw_12.weight")));

  // Off again: the trainable part's BatchNorm uses batch statistics.
  model->SetBatchNormInference(false);
  EXPECT_TRUE(layers[*model->backbone().ResolveLayer("conv_pw_13_bn")]
                  .module->is_training());
}

TEST(ClassifierTest, HeadIsKerasInitialisedAndDeterministic) {
  torch::manual_seed(5);
  auto a = BuildClassifier(testing::TinyMobileNet(), 2, {});
  torch::manual_seed(5);
  auto b = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(a.ok() && b.ok());
  const auto ta = (*a)->StateTensors(), tb = (*b)->StateTensors();
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta)
    EXPECT_TRUE(torch::equal(t, tb.at(name))) << name;
  const torch::Tensor w = ta.at("head.hidden.weight");
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{8, 256}));
  const double limit = std::sqrt(6.0 / (256 + 8));
  EXPECT_LE(w.abs().max().item<double>(), limit);
  EXPECT_GT(w.abs().max().item<double>(), 0.9 * limit);
  EXPECT_EQ(ta.at("head.hidden.bias").abs().sum().item<double>(), 0);
  EXPECT_EQ(ta.at("head.output.weight").sizes(), (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(ta.count("conv1_bn.running_var"), 1u);
  EXPECT_EQ(ta.count("conv_dw_1.weight"), 1u);
}

TEST(ClassifierTest, TorchHeadInitIsNnLinearsDefault) {
  ModelConfig config = testing::TinyMobileNet();
  config.head.init = HeadInit::kTorch;
  torch::manual_seed(5);
  auto model = BuildClassifier(config, 2, {});
  ASSERT_TRUE(model.ok()) << model.status();
  const auto t = (*model)->StateTensors();
  // Kernel and bias uniform in +-1/sqrt(fan_in): fan_in 256 for the hidden
  // layer (glorot's limit would be sqrt(6 / 264) = 0.151), 8 for the output.
  for (const auto& [layer, fan_in] :
       {std::pair<std::string, double>{"hidden", 256}, {"output", 8}}) {
    const double limit = 1 / std::sqrt(fan_in);
    const torch::Tensor w = t.at("head." + layer + ".weight");
    const torch::Tensor b = t.at("head." + layer + ".bias");
    EXPECT_LE(w.abs().max().item<double>(), limit) << layer;
    EXPECT_LE(b.abs().max().item<double>(), limit) << layer;
    EXPECT_GT(b.abs().sum().item<double>(), 0) << layer << " bias is zero";
  }
  // 2048 draws of U(-l, l): standard deviation l / sqrt(3).
  const torch::Tensor w = t.at("head.hidden.weight");
  EXPECT_NEAR(w.std().item<double>(), 1 / std::sqrt(256.0 * 3), 0.004);
  // The backbone is the same draw as with glorot: only the head differs.
  torch::manual_seed(5);
  auto glorot = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(glorot.ok());
  const auto g = (*glorot)->StateTensors();
  EXPECT_TRUE(torch::equal(g.at("conv1.weight"), t.at("conv1.weight")));
  EXPECT_FALSE(torch::equal(g.at("head.hidden.weight"), w));
}

TEST(ClassifierTest, LabelSmoothingIsKerasTargets) {
  torch::manual_seed(3);
  const torch::Tensor logits = torch::randn({6, 1});
  const torch::Tensor labels = torch::tensor({0, 1, 1, 0, 1, 0}, torch::kLong);
  auto binary = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(binary.ok());
  // Binary: targets y * (1 - s) + s / 2, binary cross-entropy on sigmoid.
  const double s = 0.2;
  const torch::Tensor p =
      torch::sigmoid(logits.select(1, 0)).to(torch::kDouble);
  const torch::Tensor y = labels.to(torch::kDouble) * (1 - s) + s / 2;
  const double expected =
      -(y * p.log() + (1 - y) * (1 - p).log()).mean().item<double>();
  EXPECT_NEAR((*binary)->Loss(logits, labels, s).item<double>(), expected,
              1e-6);
  // Even a perfectly confident right answer costs the targets' entropy.
  const torch::Tensor sure = torch::where(labels.eq(1), torch::full({6}, 30.0),
                                          torch::full({6}, -30.0))
                                 .unsqueeze(1);
  EXPECT_LT((*binary)->Loss(sure, labels, 0).item<double>(), 1e-6);
  EXPECT_GT((*binary)->Loss(sure, labels, s).item<double>(), 1.0);

  // N classes: targets y * (1 - s) + s / N, cross-entropy on softmax.
  auto multi = BuildClassifier(testing::TinyMobileNet(), 4, {});
  ASSERT_TRUE(multi.ok());
  const torch::Tensor z = torch::randn({6, 4});
  const torch::Tensor k = torch::tensor({0, 3, 2, 1, 3, 0}, torch::kLong);
  const torch::Tensor target =
      torch::one_hot(k, 4).to(torch::kDouble) * (1 - s) + s / 4;
  const double want = -(target * torch::log_softmax(z.to(torch::kDouble), 1))
                           .sum(1)
                           .mean()
                           .item<double>();
  EXPECT_NEAR((*multi)->Loss(z, k, s).item<double>(), want, 1e-6);
}

TEST(ClassifierTest, ClassWeightsScaleEachExamplesLoss) {
  torch::manual_seed(5);
  const double s = 0.1;
  const torch::Tensor w = torch::tensor({0.5, 2.0, 1.0, 4.0}, torch::kFloat);
  // N classes: the mean of w[y_i] * loss_i (Keras' class_weight), smoothing
  // kept.
  auto multi = BuildClassifier(testing::TinyMobileNet(), 4, {});
  ASSERT_TRUE(multi.ok());
  const torch::Tensor z = torch::randn({6, 4});
  const torch::Tensor k = torch::tensor({0, 3, 2, 1, 3, 0}, torch::kLong);
  const torch::Tensor target =
      torch::one_hot(k, 4).to(torch::kDouble) * (1 - s) + s / 4;
  const torch::Tensor each =
      -(target * torch::log_softmax(z.to(torch::kDouble), 1)).sum(1);
  const double want =
      (each * w.to(torch::kDouble).index_select(0, k)).mean().item<double>();
  EXPECT_NEAR((*multi)->Loss(z, k, s, w).item<double>(), want, 1e-6);
  // Unit weights change nothing.
  EXPECT_NEAR((*multi)->Loss(z, k, s, torch::ones({4})).item<double>(),
              (*multi)->Loss(z, k, s).item<double>(), 1e-6);
  // Two classes: the binary loss, weighted the same way.
  auto binary = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(binary.ok());
  const torch::Tensor logits = torch::randn({6, 1});
  const torch::Tensor labels = torch::tensor({0, 1, 1, 0, 1, 0}, torch::kLong);
  const torch::Tensor p =
      torch::sigmoid(logits.select(1, 0)).to(torch::kDouble);
  const torch::Tensor y = labels.to(torch::kDouble);
  const torch::Tensor bce = -(y * p.log() + (1 - y) * (1 - p).log());
  const torch::Tensor w2 = torch::tensor({3.0, 0.6}, torch::kFloat);
  const double want2 = (bce * w2.to(torch::kDouble).index_select(0, labels))
                           .mean()
                           .item<double>();
  EXPECT_NEAR((*binary)->Loss(logits, labels, 0, w2).item<double>(), want2,
              1e-6);
}

TEST(ClassifierTest, SaveAndLoadRoundTrip) {
  transferd::testing::TempDir dir;
  torch::manual_seed(1);
  auto a = BuildClassifier(testing::TinyMobileNet(), 3, {});
  torch::manual_seed(2);
  auto b = BuildClassifier(testing::TinyMobileNet(), 3, {});
  ASSERT_TRUE(a.ok() && b.ok());
  {
    torch::NoGradGuard g;
    (*a)->named_buffers()["backbone.conv1_bn.running_mean"].fill_(0.25);
  }
  const std::string path = dir.path() + "/model.safetensors";
  ASSERT_TRUE((*a)->Save(path).ok());
  ASSERT_TRUE((*b)->Load(path).ok());
  const auto ta = (*a)->StateTensors(), tb = (*b)->StateTensors();
  for (const auto& [name, t] : ta)
    EXPECT_TRUE(torch::equal(t, tb.at(name))) << name;
  const torch::Tensor x = torch::rand({2, 3, 32, 32});
  (*a)->eval();
  (*b)->eval();
  EXPECT_TRUE(torch::allclose((*a)->forward(x), (*b)->forward(x)));
  EXPECT_EQ((*a)->Probabilities((*a)->forward(x)).sizes(),
            (std::vector<int64_t>{2, 3}));

  // A two-class file does not fit a three-class model.
  torch::manual_seed(3);
  auto two = BuildClassifier(testing::TinyMobileNet(), 2, {});
  ASSERT_TRUE(two.ok());
  absl::Status s = (*two)->Load(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("head.output.weight"));
}

TEST(TrainUtilTest, RocAuc) {
  EXPECT_DOUBLE_EQ(RocAuc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);
  EXPECT_DOUBLE_EQ(RocAuc({0.5, 0.5}, {0, 1}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc({0.2, 0.3}, {1, 1}), -1);
}

TEST(TrainUtilTest, SectionFileDetectsTruncation) {
  transferd::testing::TempDir dir;
  const std::filesystem::path path =
      std::filesystem::path(dir.path()) / "x.tdc";
  auto written =
      WriteSectionFile(path, {{"a", "hello"}, {"b", std::string(1000, 'x')}});
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, static_cast<int64_t>(std::filesystem::file_size(path)));
  auto read = ReadSectionFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->at("a"), "hello");
  EXPECT_EQ(read->at("b").size(), 1000u);
  std::filesystem::resize_file(path, *written - 10);
  EXPECT_EQ(ReadSectionFile(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(ClassifierTest, KeyedDropoutGivesAnExampleTheSameMaskInAnyBatch) {
  torch::manual_seed(3);
  ModelConfig m = testing::TinyVgg16(Pooling::kGlobalAverage);
  m.head.dropout = 0.5;
  auto model = BuildClassifier(m, 3, {});
  ASSERT_TRUE(model.ok()) << model.status();
  Classifier& c = *model;
  c->train();
  const torch::Tensor feats = torch::rand({3, 512, 1, 1});
  c->SetDropoutKeys({11, 22, 33});
  const torch::Tensor all = c->Head(feats);
  // The same examples split into two batches, in another order.
  c->SetDropoutKeys({33});
  const torch::Tensor last = c->Head(feats.slice(0, 2, 3));
  c->SetDropoutKeys({22, 11});
  const torch::Tensor first = c->Head(torch::stack({feats[1], feats[0]}));
  EXPECT_TRUE(torch::allclose(last[0], all[2]));
  EXPECT_TRUE(torch::allclose(first[0], all[1]));
  EXPECT_TRUE(torch::allclose(first[1], all[0]));
  // Other keys draw other masks; the keys are used once.
  c->SetDropoutKeys({12, 23, 34});
  EXPECT_FALSE(torch::allclose(c->Head(feats), all));
  torch::manual_seed(5);
  const torch::Tensor unkeyed_a = c->Head(feats);
  torch::manual_seed(6);
  EXPECT_FALSE(torch::allclose(c->Head(feats), unkeyed_a));
  // In eval mode there is no dropout, keys or not.
  c->eval();
  c->SetDropoutKeys({11, 22, 33});
  const torch::Tensor eval_keyed = c->Head(feats);
  EXPECT_TRUE(torch::allclose(eval_keyed, c->Head(feats)));
}

}  // namespace
}  // namespace transferd::core::train
