// VGG16 / VGG19 (keras.applications.vgg16 / vgg19, include_top=False):
// blocks of 3x3 'same' convolutions with bias and ReLU, each block closed by
// a 2x2 max-pool. Identical in both flavours (torchvision's `features`).
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/core/backbones/architectures.h"
#include "server/core/backbones/layers.h"

namespace transferd::core::backbones {
namespace {

class VggImpl final : public BackboneImpl {
 public:
  VggImpl(const BackboneSpec& spec, int depth) : BackboneImpl(spec) {
    const std::vector<int> convs = depth == 16
                                       ? std::vector<int>{2, 2, 3, 3, 3}
                                       : std::vector<int>{2, 2, 4, 4, 4};
    const int filters[] = {64, 128, 256, 512, 512};
    AddLayer("input_1", KerasLayer::Kind::kInput);
    int64_t in = 3;
    for (int b = 0; b < 5; ++b) {
      if (b > 0) StartSegment();
      std::vector<torch::nn::Conv2d> block;
      for (int i = 0; i < convs[b]; ++i) {
        const std::string name = absl::StrCat("block", b + 1, "_conv", i + 1);
        auto conv =
            register_module(name, MakeConv(in, filters[b], 3, 1, 1, true));
        AddLayer(name, KerasLayer::Kind::kConv, conv.get(), true);
        block.push_back(conv);
        in = filters[b];
      }
      AddLayer(absl::StrCat("block", b + 1, "_pool"));
      blocks_.push_back(std::move(block));
    }
  }

  // One segment per block.
  torch::Tensor ForwardSegments(torch::Tensor x, int begin, int end) override {
    for (int s = begin; s < end; ++s) {
      for (auto& conv : blocks_[s]) x = conv->forward(x).relu_();
      x = torch::max_pool2d(x, 2, 2);
    }
    return x;
  }

 private:
  std::vector<std::vector<torch::nn::Conv2d>> blocks_;
};

}  // namespace

Backbone MakeVgg(const BackboneSpec& spec, int depth) {
  return std::make_shared<VggImpl>(spec, depth);
}

}  // namespace transferd::core::backbones
