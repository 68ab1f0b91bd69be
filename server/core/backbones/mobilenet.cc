// MobileNet (v1) and MobileNetV2 (keras.applications.mobilenet /
// mobilenet_v2, include_top=False), with ReLU6 and Keras' BatchNorm epsilon
// 1e-3.
//
// Keras pads stride-2 convolutions on the bottom/right only: MobileNet's
// conv1 and MobileNetV2's Conv1 use TensorFlow 'same' padding, MobileNet's
// stride-2 depthwise convs an explicit ZeroPadding2D(((0,1),(0,1))) and
// MobileNetV2's a ZeroPadding2D from correct_pad() (bottom/right for even
// sizes, both sides for odd ones). The torchvision flavour of MobileNetV2
// pads symmetrically and uses epsilon 1e-5.
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/core/backbones/architectures.h"
#include "server/core/backbones/layers.h"

namespace transferd::core::backbones {
namespace {

using Kind = KerasLayer::Kind;

// In place: the argument is always a fresh conv/BatchNorm output. hardtanh
// in float32: its backward is one fused kernel, while clamp's builds two
// comparison masks and a `where` (about 10x slower on CPU, and most of a
// fine-tuning step's backward through the top blocks). clamp in bf16:
// LibTorch 1.13 has no bf16 CPU backward for hardtanh, and bf16
// fine-tuning trains through these. Both compute min(max(x, 0), 6).
torch::Tensor Relu6(torch::Tensor x) {
  if (x.scalar_type() == torch::kBFloat16) return x.clamp_(0, 6);
  return torch::hardtanh_(x, 0, 6);
}

// ---- MobileNet v1
// -------------------------------------------------------------

class MobileNetImpl final : public BackboneImpl {
 public:
  explicit MobileNetImpl(const BackboneSpec& spec) : BackboneImpl(spec) {
    const double a = spec.alpha;
    const double eps = 1e-3;
    const int64_t first = static_cast<int64_t>(32 * a);
    AddLayer("input_1", Kind::kInput);
    conv1_ = register_module("conv1", MakeConv(3, first, 3, 2, 0, false));
    AddLayer("conv1", Kind::kConv, conv1_.get());
    bn1_ = register_module("conv1_bn", MakeBatchNorm(first, eps));
    AddLayer("conv1_bn", Kind::kBatchNorm, bn1_.get());
    AddLayer("conv1_relu");
    stem_ = ConvBn(conv1_, bn1_);

    const int filters[] = {64,  128, 128, 256, 256,  512, 512,
                           512, 512, 512, 512, 1024, 1024};
    const int strides[] = {1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1};
    int64_t in = first;
    for (int i = 0; i < 13; ++i) {
      const int id = i + 1;
      const int64_t out = static_cast<int64_t>(filters[i] * a);
      StartSegment();
      Block b;
      b.stride = strides[i];
      if (b.stride == 2) AddLayer(absl::StrCat("conv_pad_", id));
      const std::string dw = absl::StrCat("conv_dw_", id);
      const std::string pw = absl::StrCat("conv_pw_", id);
      b.dw = register_module(
          dw, MakeConv(in, in, 3, b.stride, b.stride == 1 ? 1 : 0, false, in));
      AddLayer(dw, Kind::kDepthwise, b.dw.get());
      b.dw_bn = register_module(dw + "_bn", MakeBatchNorm(in, eps));
      AddLayer(dw + "_bn", Kind::kBatchNorm, b.dw_bn.get());
      AddLayer(dw + "_relu");
      b.pw = register_module(pw, MakeConv(in, out, 1, 1, 0, false));
      AddLayer(pw, Kind::kConv, b.pw.get());
      b.pw_bn = register_module(pw + "_bn", MakeBatchNorm(out, eps));
      AddLayer(pw + "_bn", Kind::kBatchNorm, b.pw_bn.get());
      AddLayer(pw + "_relu");
      b.dw_op = ConvBn(b.dw, b.dw_bn);
      b.pw_op = ConvBn(b.pw, b.pw_bn);
      blocks_.push_back(std::move(b));
      in = out;
    }
  }

  // Segment 0: the stem; then one per depthwise-separable block.
  torch::Tensor ForwardSegments(torch::Tensor x, int begin, int end) override {
    if (begin == 0 && end > 0) x = Relu6(stem_(TfSamePad(x, 3, 2)));
    for (int s = std::max(begin, 1); s < end; ++s) {
      Block& b = blocks_[s - 1];
      if (b.stride == 2) x = ZeroPad(x, 0, 1, 0, 1);
      x = Relu6(b.dw_op(x));
      x = Relu6(b.pw_op(x));
    }
    return x;
  }

 private:
  struct Block {
    int stride = 1;
    torch::nn::Conv2d dw{nullptr}, pw{nullptr};
    torch::nn::BatchNorm2d dw_bn{nullptr}, pw_bn{nullptr};
    ConvBn dw_op, pw_op;
  };
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  ConvBn stem_;
  std::vector<Block> blocks_;
};

// ---- MobileNetV2
// --------------------------------------------------------------

// Keras' (and torchvision's) _make_divisible.
int64_t MakeDivisible(double v, int64_t divisor = 8) {
  int64_t new_v = std::max<int64_t>(
      divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(new_v) < 0.9 * v) new_v += divisor;
  return new_v;
}

class MobileNetV2Impl final : public BackboneImpl {
 public:
  explicit MobileNetV2Impl(const BackboneSpec& spec) : BackboneImpl(spec) {
    keras_ = spec.flavor == Flavor::kKeras;
    const double a = spec.alpha;
    const double eps = keras_ ? 1e-3 : 1e-5;
    const int64_t first = MakeDivisible(32 * a);
    AddLayer("input_1", Kind::kInput);
    conv1_ = register_module("Conv1",
                             MakeConv(3, first, 3, 2, keras_ ? 0 : 1, false));
    AddLayer("Conv1", Kind::kConv, conv1_.get());
    bn1_ = register_module("bn_Conv1", MakeBatchNorm(first, eps));
    AddLayer("bn_Conv1", Kind::kBatchNorm, bn1_.get());
    AddLayer("Conv1_relu");
    stem_ = ConvBn(conv1_, bn1_);

    struct Cfg {
      int filters, stride, expansion;
    };
    const Cfg cfg[] = {{16, 1, 1}, {24, 2, 6},  {24, 1, 6},  {32, 2, 6},
                       {32, 1, 6}, {32, 1, 6},  {64, 2, 6},  {64, 1, 6},
                       {64, 1, 6}, {64, 1, 6},  {96, 1, 6},  {96, 1, 6},
                       {96, 1, 6}, {160, 2, 6}, {160, 1, 6}, {160, 1, 6},
                       {320, 1, 6}};
    int64_t in = first;
    for (int id = 0; id < 17; ++id) {
      const Cfg& c = cfg[id];
      const int64_t out = MakeDivisible(static_cast<int64_t>(c.filters * a));
      const std::string p =
          id == 0 ? "expanded_conv_" : absl::StrCat("block_", id, "_");
      StartSegment();
      Block b;
      b.stride = c.stride;
      b.residual = in == out && c.stride == 1;
      int64_t hidden = in;
      if (id > 0) {
        hidden = in * c.expansion;
        b.expand =
            register_module(p + "expand", MakeConv(in, hidden, 1, 1, 0, false));
        AddLayer(p + "expand", Kind::kConv, b.expand.get());
        b.expand_bn =
            register_module(p + "expand_BN", MakeBatchNorm(hidden, eps));
        AddLayer(p + "expand_BN", Kind::kBatchNorm, b.expand_bn.get());
        AddLayer(p + "expand_relu");
      }
      if (c.stride == 2) AddLayer(p + "pad");
      const int64_t dw_pad = (c.stride == 1 || !keras_) ? 1 : 0;
      b.dw = register_module(
          p + "depthwise",
          MakeConv(hidden, hidden, 3, c.stride, dw_pad, false, hidden));
      AddLayer(p + "depthwise", Kind::kDepthwise, b.dw.get());
      b.dw_bn = register_module(p + "depthwise_BN", MakeBatchNorm(hidden, eps));
      AddLayer(p + "depthwise_BN", Kind::kBatchNorm, b.dw_bn.get());
      AddLayer(p + "depthwise_relu");
      b.project =
          register_module(p + "project", MakeConv(hidden, out, 1, 1, 0, false));
      AddLayer(p + "project", Kind::kConv, b.project.get());
      b.project_bn = register_module(p + "project_BN", MakeBatchNorm(out, eps));
      AddLayer(p + "project_BN", Kind::kBatchNorm, b.project_bn.get());
      if (b.residual) AddLayer(p + "add");
      if (b.expand) b.expand_op = ConvBn(b.expand, b.expand_bn);
      b.dw_op = ConvBn(b.dw, b.dw_bn);
      b.project_op = ConvBn(b.project, b.project_bn);
      blocks_.push_back(std::move(b));
      in = out;
    }
    const int64_t last = a > 1.0 ? MakeDivisible(1280 * a) : 1280;
    StartSegment();
    conv_last_ = register_module("Conv_1", MakeConv(in, last, 1, 1, 0, false));
    AddLayer("Conv_1", Kind::kConv, conv_last_.get());
    bn_last_ = register_module("Conv_1_bn", MakeBatchNorm(last, eps));
    AddLayer("Conv_1_bn", Kind::kBatchNorm, bn_last_.get());
    AddLayer("out_relu");
    last_ = ConvBn(conv_last_, bn_last_);
  }

  // Segment 0: the stem; then one per inverted-residual block; the last:
  // Conv_1 and its BatchNorm and ReLU.
  torch::Tensor ForwardSegments(torch::Tensor x, int begin, int end) override {
    const int last = static_cast<int>(blocks_.size()) + 1;
    if (begin == 0 && end > 0) {
      if (keras_) x = TfSamePad(x, 3, 2);
      x = Relu6(stem_(x));
    }
    for (int s = std::max(begin, 1); s < std::min(end, last); ++s) {
      Block& b = blocks_[s - 1];
      torch::Tensor y = x;
      if (b.expand_op) y = Relu6(b.expand_op(y));
      if (b.stride == 2 && keras_) {
        // correct_pad(x, 3): ((0,1),(0,1)) for even sizes, ((1,1),(1,1)) odd.
        const int64_t ah = 1 - y.size(2) % 2;
        const int64_t aw = 1 - y.size(3) % 2;
        y = ZeroPad(y, 1 - ah, 1, 1 - aw, 1);
      }
      y = Relu6(b.dw_op(y));
      y = b.project_op(y);
      x = b.residual ? x + y : y;
    }
    if (begin <= last && last < end) x = Relu6(last_(x));
    return x;
  }

 private:
  struct Block {
    int stride = 1;
    bool residual = false;
    torch::nn::Conv2d expand{nullptr}, dw{nullptr}, project{nullptr};
    torch::nn::BatchNorm2d expand_bn{nullptr}, dw_bn{nullptr},
        project_bn{nullptr};
    ConvBn expand_op, dw_op, project_op;
  };
  bool keras_ = true;
  torch::nn::Conv2d conv1_{nullptr}, conv_last_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn_last_{nullptr};
  ConvBn stem_, last_;
  std::vector<Block> blocks_;
};

}  // namespace

Backbone MakeMobileNet(const BackboneSpec& spec) {
  return std::make_shared<MobileNetImpl>(spec);
}

Backbone MakeMobileNetV2(const BackboneSpec& spec) {
  return std::make_shared<MobileNetV2Impl>(spec);
}

}  // namespace transferd::core::backbones
