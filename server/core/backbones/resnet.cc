// ResNet50 (keras.applications.resnet50, include_top=False).
//
// Keras flavour (ResNet v1): conv1_pad + 7x7/2 conv with bias, BatchNorm
// epsilon 1.001e-5, pool1_pad + 3x3/2 max-pool; bottleneck blocks whose stride
// sits on the first 1x1 conv; every conv has a bias.
// Torchvision flavour (v1.5): no conv biases, epsilon 1e-5, the stride on the
// 3x3 conv, symmetric padding.
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/core/backbones/architectures.h"
#include "server/core/backbones/layers.h"

namespace transferd::core::backbones {
namespace {

class ResNet50Impl final : public BackboneImpl {
 public:
  explicit ResNet50Impl(const BackboneSpec& spec) : BackboneImpl(spec) {
    keras_ = spec.flavor == Flavor::kKeras;
    const double eps = keras_ ? 1.001e-5 : 1e-5;
    const bool bias = keras_;
    using Kind = KerasLayer::Kind;

    AddLayer("input_1", Kind::kInput);
    AddLayer("conv1_pad");
    conv1_ = register_module("conv1_conv",
                             MakeConv(3, 64, 7, 2, keras_ ? 0 : 3, bias));
    AddLayer("conv1_conv", Kind::kConv, conv1_.get(), bias);
    bn1_ = register_module("conv1_bn", MakeBatchNorm(64, eps));
    AddLayer("conv1_bn", Kind::kBatchNorm, bn1_.get());
    AddLayer("conv1_relu");
    stem_ = ConvBn(conv1_, bn1_);
    AddLayer("pool1_pad");
    AddLayer("pool1_pool");

    const int blocks[] = {3, 4, 6, 3};
    const int filters[] = {64, 128, 256, 512};
    int64_t in = 64;
    for (int s = 0; s < 4; ++s) {
      for (int b = 0; b < blocks[s]; ++b) {
        const std::string p = absl::StrCat("conv", s + 2, "_block", b + 1, "_");
        const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
        const int64_t f = filters[s];
        StartSegment();
        Block blk;
        blk.stride = stride;
        // Keras puts the stride on the 1x1 conv, torchvision on the 3x3.
        blk.c1 = register_module(
            p + "1_conv", MakeConv(in, f, 1, keras_ ? stride : 1, 0, bias));
        blk.b1 = register_module(p + "1_bn", MakeBatchNorm(f, eps));
        blk.c2 = register_module(
            p + "2_conv", MakeConv(f, f, 3, keras_ ? 1 : stride, 1, bias));
        blk.b2 = register_module(p + "2_bn", MakeBatchNorm(f, eps));
        blk.c3 =
            register_module(p + "3_conv", MakeConv(f, 4 * f, 1, 1, 0, bias));
        blk.b3 = register_module(p + "3_bn", MakeBatchNorm(4 * f, eps));
        if (b == 0) {
          blk.c0 = register_module(p + "0_conv",
                                   MakeConv(in, 4 * f, 1, stride, 0, bias));
          blk.b0 = register_module(p + "0_bn", MakeBatchNorm(4 * f, eps));
        }
        // Keras' model.layers order (a topological order of the graph).
        AddLayer(p + "1_conv", Kind::kConv, blk.c1.get(), bias);
        AddLayer(p + "1_bn", Kind::kBatchNorm, blk.b1.get());
        AddLayer(p + "1_relu");
        AddLayer(p + "2_conv", Kind::kConv, blk.c2.get(), bias);
        AddLayer(p + "2_bn", Kind::kBatchNorm, blk.b2.get());
        AddLayer(p + "2_relu");
        if (b == 0) AddLayer(p + "0_conv", Kind::kConv, blk.c0.get(), bias);
        AddLayer(p + "3_conv", Kind::kConv, blk.c3.get(), bias);
        if (b == 0) AddLayer(p + "0_bn", Kind::kBatchNorm, blk.b0.get());
        AddLayer(p + "3_bn", Kind::kBatchNorm, blk.b3.get());
        AddLayer(p + "add");
        AddLayer(p + "out");
        blk.op1 = ConvBn(blk.c1, blk.b1);
        blk.op2 = ConvBn(blk.c2, blk.b2);
        blk.op3 = ConvBn(blk.c3, blk.b3);
        if (blk.c0) blk.op0 = ConvBn(blk.c0, blk.b0);
        blocks_.push_back(std::move(blk));
        in = 4 * f;
      }
    }
  }

  // Segment 0: the stem and pooling; then one per residual block.
  torch::Tensor ForwardSegments(torch::Tensor x, int begin, int end) override {
    if (begin == 0 && end > 0) {
      if (keras_) x = ZeroPad(x, 3, 3, 3, 3);
      x = stem_(x).relu_();
      // After the ReLU, zero padding and -inf padding give the same max.
      x = torch::max_pool2d(x, 3, 2, /*padding=*/1);
    }
    for (int s = std::max(begin, 1); s < end; ++s) {
      Block& b = blocks_[s - 1];
      torch::Tensor shortcut = b.op0 ? b.op0(x) : x;
      torch::Tensor y = b.op1(x).relu_();
      y = b.op2(y).relu_();
      y = b.op3(y);
      x = y.add_(shortcut).relu_();
    }
    return x;
  }

 private:
  struct Block {
    int64_t stride = 1;
    torch::nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, c0{nullptr};
    torch::nn::BatchNorm2d b1{nullptr}, b2{nullptr}, b3{nullptr}, b0{nullptr};
    ConvBn op1, op2, op3, op0;
  };
  bool keras_ = true;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  ConvBn stem_;
  std::vector<Block> blocks_;
};

}  // namespace

Backbone MakeResNet50(const BackboneSpec& spec) {
  return std::make_shared<ResNet50Impl>(spec);
}

}  // namespace transferd::core::backbones
