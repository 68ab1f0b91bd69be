// Backbone structure: Keras layer names and order, parameter counts, output
// shapes, layer resolution. No weight files needed.
#include "server/core/backbones/backbone.h"

#include <array>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/core/backbones/layers.h"
#include "server/core/backbones/preprocessing.h"

namespace transferd::core::backbones {
namespace {

using ::testing::HasSubstr;

Backbone Make(const std::string& name, double alpha = 1.0,
              Flavor flavor = Flavor::kKeras) {
  BackboneSpec spec;
  spec.name = name;
  spec.alpha = alpha;
  spec.flavor = flavor;
  auto backbone = CreateBackbone(spec);
  EXPECT_TRUE(backbone.ok()) << backbone.status();
  return backbone.ok() ? *backbone : nullptr;
}

struct Expected {
  std::string name;
  double alpha;
  int64_t parameters;  // Keras count_params(), include_top=False
  size_t layers;       // len(model.layers)
  int input;
  std::vector<int64_t> shape;  // (C, h, w)
};

void PrintTo(const Expected& e, std::ostream* os) {
  *os << e.name << " alpha " << e.alpha;
}

class BackboneShapeTest : public ::testing::TestWithParam<Expected> {};

TEST_P(BackboneShapeTest, MatchesKeras) {
  const Expected& e = GetParam();
  Backbone b = Make(e.name, e.alpha);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->KerasParameterCount(), e.parameters);
  EXPECT_EQ(b->layers().size(), e.layers);
  EXPECT_EQ(b->layers().front().name, "input_1");
  auto shape = b->OutputShape(e.input);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(*shape, e.shape);
}

INSTANTIATE_TEST_SUITE_P(
    Keras, BackboneShapeTest,
    ::testing::Values(
        // The seed notebook: VGG16 at 150 px gives (4, 4, 512).
        Expected{"vgg16", 1.0, 14714688, 19, 150, {512, 4, 4}},
        Expected{"vgg19", 1.0, 20024384, 22, 224, {512, 7, 7}},
        Expected{"resnet50", 1.0, 23587712, 175, 224, {2048, 7, 7}},
        Expected{"mobilenet", 0.25, 218544, 86, 224, {256, 7, 7}},
        Expected{"mobilenet", 1.0, 3228864, 86, 224, {1024, 7, 7}},
        // The TF tutorial: MobileNetV2 at 160 px gives (5, 5, 1280).
        Expected{"mobilenet_v2", 1.0, 2257984, 154, 160, {1280, 5, 5}},
        Expected{"mobilenet_v2", 0.35, 410208, 154, 224, {1280, 7, 7}},
        Expected{"mobilenet_v2", 1.4, 4363712, 154, 224, {1792, 7, 7}}),
    [](const ::testing::TestParamInfo<Expected>& info) {
      std::string alpha =
          std::to_string(static_cast<int>(info.param.alpha * 100));
      return info.param.name + "_" + alpha;
    });

TEST(BackboneTest, KerasLayerNamesAreModuleNames) {
  Backbone b = Make("vgg16");
  ASSERT_NE(b, nullptr);
  auto index = b->ResolveLayer("block5_conv1");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(*index, 15);
  EXPECT_EQ(b->layers()[*index].name, "block5_conv1");
  bool found = false;
  for (const auto& p : b->named_parameters()) {
    found |= p.key() == "block5_conv1.weight";
  }
  EXPECT_TRUE(found);
  // By index, as in the TF tutorial ("fine-tune from layer 100").
  Backbone v2 = Make("mobilenet_v2");
  ASSERT_NE(v2, nullptr);
  auto hundred = v2->ResolveLayer("100");
  ASSERT_TRUE(hundred.ok());
  EXPECT_EQ(*hundred, 100);
}

TEST(BackboneTest, UnknownLayerSuggestsNeighbours) {
  Backbone b = Make("vgg16");
  ASSERT_NE(b, nullptr);
  auto bad = b->ResolveLayer("block5_conv9");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("block5_conv1"));
  auto out_of_range = b->ResolveLayer("19");
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BackboneTest, BadSpecsAreInvalidArgument) {
  BackboneSpec spec;
  spec.name = "vgg17";
  EXPECT_EQ(CreateBackbone(spec).status().code(),
            absl::StatusCode::kInvalidArgument);
  spec.name = "mobilenet";
  spec.alpha = 0.3;
  auto bad_alpha = CreateBackbone(spec);
  EXPECT_EQ(bad_alpha.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_alpha.status().message()), HasSubstr("0.25"));
  spec.alpha = 1.0;
  spec.flavor = Flavor::kTorchvision;
  EXPECT_EQ(CreateBackbone(spec).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BackboneTest, SmallInputsWorkDownToTheMinimum) {
  Backbone b = Make("mobilenet", 0.25);
  ASSERT_NE(b, nullptr);
  auto shape = b->OutputShape(32);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(*shape, (std::vector<int64_t>{256, 1, 1}));
  EXPECT_EQ(b->OutputShape(31).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BackboneTest, PreprocessingFollowsTheWeights) {
  EXPECT_EQ(Make("vgg16")->DefaultPreprocessing().mode,
            Preprocessing::Mode::kCaffe);
  EXPECT_EQ(Make("resnet50")->DefaultPreprocessing().mode,
            Preprocessing::Mode::kCaffe);
  EXPECT_EQ(Make("mobilenet", 0.25)->DefaultPreprocessing().mode,
            Preprocessing::Mode::kTf);
  EXPECT_EQ(Make("mobilenet_v2")->DefaultPreprocessing().mode,
            Preprocessing::Mode::kTf);
  EXPECT_EQ(
      Make("vgg16", 1.0, Flavor::kTorchvision)->DefaultPreprocessing().mode,
      Preprocessing::Mode::kTorch);
}

TEST(BackboneTest, KerasInitIsGlorotUniform) {
  torch::manual_seed(0);
  Backbone b = Make("vgg16");
  ASSERT_NE(b, nullptr);
  torch::Tensor w;
  torch::Tensor bias;
  for (const auto& p : b->named_parameters()) {
    if (p.key() == "block1_conv1.weight") w = p.value();
    if (p.key() == "block1_conv1.bias") bias = p.value();
  }
  // fan_in = 3*3*3, fan_out = 3*3*64: limit = sqrt(6 / (27 + 576)).
  const double limit = std::sqrt(6.0 / (27 + 576));
  EXPECT_LE(w.abs().max().item<double>(), limit);
  EXPECT_GT(w.abs().max().item<double>(), 0.9 * limit);
  EXPECT_EQ(bias.abs().max().item<double>(), 0.0);
}

}  // namespace
}  // namespace transferd::core::backbones

namespace transferd::core::backbones {
namespace {

// One pixel (R, G, B) = (0, 128, 255) through each convention.
torch::Tensor Pixel() {
  return torch::tensor({0, 128, 255}, torch::kUInt8).view({1, 1, 1, 3});
}

TEST(PreprocessingTest, TfScalesToMinusOneOne) {
  torch::Tensor x = ApplyPreprocessing(Preprocessing::Tf(), Pixel());
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{1, 3, 1, 1}));
  EXPECT_NEAR(x[0][0].item<float>(), -1.0f, 1e-6);
  EXPECT_NEAR(x[0][1].item<float>(), 128 / 127.5f - 1, 1e-6);
  EXPECT_NEAR(x[0][2].item<float>(), 1.0f, 1e-6);
}

TEST(PreprocessingTest, CaffeIsBgrMinusImagenetMeans) {
  torch::Tensor x = ApplyPreprocessing(Preprocessing::Caffe(), Pixel());
  EXPECT_NEAR(x[0][0].item<float>(), 255 - 103.939f, 1e-4);  // B
  EXPECT_NEAR(x[0][1].item<float>(), 128 - 116.779f, 1e-4);  // G
  EXPECT_NEAR(x[0][2].item<float>(), 0 - 123.68f, 1e-4);     // R
}

TEST(PreprocessingTest, TorchIsRgbStandardised) {
  torch::Tensor x = ApplyPreprocessing(Preprocessing::Torch(), Pixel());
  EXPECT_NEAR(x[0][0].item<float>(), (0 - 0.485f) / 0.229f, 1e-5);
  EXPECT_NEAR(x[0][1].item<float>(), (128 / 255.0f - 0.456f) / 0.224f, 1e-5);
  EXPECT_NEAR(x[0][2].item<float>(), (1 - 0.406f) / 0.225f, 1e-5);
}

TEST(PreprocessingTest, PixelLoopEqualsTensorOpsExactly) {
  torch::manual_seed(3);
  const torch::Tensor rgb =
      torch::randint(0, 256, {2, 5, 7, 3}).to(torch::kUInt8);
  // A non-contiguous view of the same pixels takes the tensor-op path.
  const torch::Tensor strided = torch::cat({rgb, rgb}, 3).narrow(3, 0, 3);
  ASSERT_FALSE(strided.is_contiguous());
  for (const Preprocessing& p :
       {Preprocessing::Tf(), Preprocessing::Caffe(), Preprocessing::Torch()}) {
    const torch::Tensor fast = ApplyPreprocessing(p, rgb);
    const torch::Tensor reference = ApplyPreprocessing(p, strided);
    EXPECT_TRUE(fast.is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_EQ(fast.sizes(), (std::vector<int64_t>{2, 3, 5, 7}));
    EXPECT_TRUE(torch::equal(fast, reference))
        << Preprocessing::ModeName(p.mode);
  }
}

// Folding restored to the default whatever a test does.
struct FoldingOn {
  ~FoldingOn() { ConvBn::EnableFolding(true); }
};

// A conv + BatchNorm pair with non-trivial statistics and affine parameters.
struct Pair {
  torch::nn::Conv2d conv = MakeConv(4, 6, 3, 1, 1, /*bias=*/true);
  torch::nn::BatchNorm2d bn = MakeBatchNorm(6, 1e-3);
  Pair() {
    torch::NoGradGuard no_grad;
    bn->running_mean.uniform_(-1, 1);
    bn->running_var.uniform_(0.5, 2);
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.uniform_(-1, 1);
  }
  torch::Tensor Separate(const torch::Tensor& x) {
    return bn->forward(conv->forward(x));
  }
};

TEST(ConvBnTest, FoldsOnlyWhenNothingNeedsTheSeparateLayers) {
  FoldingOn restore;
  Pair pair;
  ConvBn op(pair.conv, pair.bn);
  pair.bn->eval();
  ASSERT_TRUE(pair.conv->weight.requires_grad());
  EXPECT_FALSE(op.folds());  // grad mode on and the parameters want gradients
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(op.folds());
  }
  for (auto& p : pair.conv->parameters()) p.set_requires_grad(false);
  EXPECT_FALSE(op.folds());  // the BatchNorm's parameters still want them
  for (auto& p : pair.bn->parameters()) p.set_requires_grad(false);
  EXPECT_TRUE(op.folds());  // a frozen pair folds with grad mode on
  pair.bn->train();
  EXPECT_FALSE(op.folds());  // a BatchNorm in train mode uses batch statistics
  pair.bn->eval();
  ConvBn::EnableFolding(false);
  EXPECT_FALSE(op.folds());
}

TEST(LayersTest, ZeroPadEqualsTorchPadInBothLayoutsWithGradients) {
  torch::manual_seed(3);
  for (const auto format :
       {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    const torch::Tensor x =
        torch::randn({2, 5, 7, 6}).contiguous(format).requires_grad_();
    for (const auto& p : std::vector<std::array<int64_t, 4>>{
             {0, 1, 0, 1}, {1, 1, 1, 1}, {3, 0, 2, 1}}) {
      const torch::Tensor mine = ZeroPad(x, p[0], p[1], p[2], p[3]);
      const torch::Tensor ref = torch::nn::functional::pad(
          x, torch::nn::functional::PadFuncOptions({p[2], p[3], p[0], p[1]}));
      EXPECT_TRUE(torch::equal(mine, ref));
      EXPECT_TRUE(mine.is_contiguous(format));
      const torch::Tensor w = torch::randn_like(ref);
      const torch::Tensor g_mine =
          torch::autograd::grad({(mine * w).sum()}, {x})[0];
      const torch::Tensor g_ref =
          torch::autograd::grad({(ref * w).sum()}, {x})[0];
      EXPECT_TRUE(torch::equal(g_mine, g_ref));
    }
  }
  // TensorFlow's 'same' for a 3x3 stride-2 conv on an even size: bottom/right.
  const torch::Tensor y = TfSamePad(torch::ones({1, 1, 4, 4}), 3, 2);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 1, 5, 5}));
  EXPECT_EQ(y.select(2, 4).sum().item<double>(), 0);
  EXPECT_EQ(y.select(3, 4).sum().item<double>(), 0);
  EXPECT_EQ(y.sum().item<double>(), 16);
}

TEST(ConvBnTest, FoldedEqualsConvThenBatchNorm) {
  FoldingOn restore;
  torch::manual_seed(1);
  Pair pair;
  ConvBn op(pair.conv, pair.bn);
  pair.bn->eval();
  const torch::Tensor x = torch::randn({3, 4, 9, 9});
  torch::NoGradGuard no_grad;
  ASSERT_TRUE(op.folds());
  EXPECT_TRUE(torch::allclose(op(x), pair.Separate(x), 1e-5, 1e-5));
  // Channels-last input gives the same values.
  EXPECT_TRUE(
      torch::allclose(op(x.contiguous(torch::MemoryFormat::ChannelsLast)),
                      pair.Separate(x), 1e-5, 1e-5));
}

TEST(ConvBnTest, RefoldsWhenAParameterOrStatisticChanges) {
  FoldingOn restore;
  torch::manual_seed(2);
  Pair pair;
  ConvBn op(pair.conv, pair.bn);
  pair.bn->eval();
  const torch::Tensor x = torch::randn({2, 4, 8, 8});
  torch::NoGradGuard no_grad;
  const torch::Tensor before = op(x);
  pair.conv->weight.mul_(2);  // an optimizer step is an in-place update too
  EXPECT_FALSE(torch::allclose(op(x), before, 1e-3, 1e-3));
  EXPECT_TRUE(torch::allclose(op(x), pair.Separate(x), 1e-5, 1e-5));
  pair.bn->running_mean.add_(0.5);
  EXPECT_TRUE(torch::allclose(op(x), pair.Separate(x), 1e-5, 1e-5));
  pair.bn->bias.sub_(0.25);
  EXPECT_TRUE(torch::allclose(op(x), pair.Separate(x), 1e-5, 1e-5));
  // A train-mode forward moves the statistics inside the kernel, without
  // bumping their version counters; the next eval call must still refold.
  const torch::Tensor folded = op(x);
  pair.bn->train();
  for (int i = 0; i < 50; ++i) (void)op(x * 3 + 1);
  pair.bn->eval();
  EXPECT_FALSE(torch::allclose(op(x), folded, 1e-3, 1e-3));
  EXPECT_TRUE(torch::allclose(op(x), pair.Separate(x), 1e-5, 1e-5));
}

TEST(ConvBnTest, TrainingStillGetsGradientsAndUpdatesStatistics) {
  FoldingOn restore;
  torch::manual_seed(4);
  Pair pair;
  ConvBn op(pair.conv, pair.bn);
  pair.bn->train();
  const torch::Tensor mean_before = pair.bn->running_mean.clone();
  op(torch::randn({2, 4, 8, 8})).sum().backward();
  EXPECT_TRUE(pair.conv->weight.grad().defined());
  EXPECT_TRUE(pair.bn->weight.grad().defined());
  EXPECT_FALSE(torch::equal(pair.bn->running_mean, mean_before));
}

TEST(BackboneTest, SegmentsComposeToTheForward) {
  torch::manual_seed(6);
  for (const auto& [name, alpha] :
       {std::pair<const char*, double>{"vgg16", 1.0},
        {"resnet50", 1.0},
        {"mobilenet", 0.25},
        {"mobilenet_v2", 0.35}}) {
    Backbone b = Make(name, alpha);
    ASSERT_NE(b, nullptr);
    b->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn({2, 3, 64, 64});
    const torch::Tensor full = b->forward(x);
    const int n = b->num_segments();
    ASSERT_GT(n, 4) << name;
    EXPECT_EQ(b->segment_starts().front(), 0);
    for (int k : {1, n / 2, n - 1}) {
      const torch::Tensor split =
          b->ForwardSegments(b->ForwardSegments(x, 0, k), k, n);
      EXPECT_TRUE(torch::equal(split, full))
          << name << " split after segment " << k;
    }
  }
}

TEST(BackboneTest, SegmentsBeforeAFirstTrainableLayer) {
  Backbone mobilenet = Make("mobilenet", 0.25);
  // The stem and blocks 1..11 lie before conv_dw_12 (block 12 starts with
  // its padding layer conv_pad_12).
  EXPECT_EQ(mobilenet->SegmentsBefore(*mobilenet->ResolveLayer("conv_dw_12")),
            12);
  EXPECT_EQ(mobilenet->SegmentsBefore(*mobilenet->ResolveLayer("conv_pad_12")),
            12);
  // A layer inside block 12: still only the segments before the block.
  EXPECT_EQ(mobilenet->SegmentsBefore(*mobilenet->ResolveLayer("conv_pw_12")),
            12);
  EXPECT_EQ(mobilenet->SegmentsBefore(0), 0);
  EXPECT_EQ(
      mobilenet->SegmentsBefore(static_cast<int>(mobilenet->layers().size())),
      mobilenet->num_segments());
  Backbone vgg = Make("vgg16");
  EXPECT_EQ(vgg->SegmentsBefore(*vgg->ResolveLayer("block5_conv1")), 4);
  EXPECT_EQ(vgg->num_segments(), 5);
}

TEST(ConvBnTest, MobileNetFeaturesMatchUnfoldedInEvalMode) {
  FoldingOn restore;
  torch::manual_seed(5);
  for (const auto& [name, alpha] :
       {std::pair<const char*, double>{"mobilenet", 0.25},
        {"mobilenet_v2", 0.35},
        {"resnet50", 1.0}}) {
    Backbone b = Make(name, alpha);
    ASSERT_NE(b, nullptr);
    {
      torch::NoGradGuard no_grad;
      for (auto& buffer : b->named_buffers()) {
        if (buffer.key().find("running_mean") != std::string::npos)
          buffer.value().uniform_(-0.1, 0.1);
        if (buffer.key().find("running_var") != std::string::npos)
          buffer.value().uniform_(0.5, 1.5);
      }
    }
    b->eval();
    const torch::Tensor x = torch::randn({2, 3, 96, 96})
                                .contiguous(torch::MemoryFormat::ChannelsLast);
    torch::NoGradGuard no_grad;
    const torch::Tensor folded = b->forward(x);
    ConvBn::EnableFolding(false);
    const torch::Tensor separate = b->forward(x);
    ConvBn::EnableFolding(true);
    const double scale = separate.abs().max().item<double>();
    ASSERT_GT(scale, 0);
    EXPECT_LT((folded - separate).abs().max().item<double>(), 1e-4 * scale)
        << name;
  }
}

}  // namespace
}  // namespace transferd::core::backbones
