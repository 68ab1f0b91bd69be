// Building blocks shared by the backbones.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <torch/nn/functional/padding.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

namespace transferd::core::backbones {

// Keras' BatchNormalization defaults: momentum 0.99 (torch momentum 0.01).
inline torch::nn::BatchNorm2d MakeBatchNorm(int64_t channels, double eps) {
  return torch::nn::BatchNorm2d(
      torch::nn::BatchNorm2dOptions(channels).eps(eps).momentum(0.01));
}

inline torch::nn::Conv2d MakeConv(int64_t in, int64_t out, int64_t kernel,
                                  int64_t stride, int64_t padding, bool bias,
                                  int64_t groups = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(padding)
                               .bias(bias)
                               .groups(groups));
}

// A convolution followed by its BatchNorm. When the BatchNorm is in
// inference mode and no gradient is wanted for either layer's parameters (a
// frozen part of a backbone while training, or any eval() forward), the pair
// runs as one convolution with the BatchNorm folded into its weights:
//   w' = w * g / sqrt(v + eps),  b' = (b - m) * g / sqrt(v + eps) + beta.
// One pass over the activations instead of two; MobileNet's forward on a CPU
// is about twice as fast. The folded tensors are kept until one of the
// parameters or statistics changes (storage or version counter differ), so an
// optimizer step or a BatchNorm update in train mode refolds on the next call.
// An inference-mode BatchNorm whose layers do train (fine-tuning with the
// statistics kept) folds too, recomputed through autograd on every call so
// the gradients reach all four parameters. A BatchNorm in train mode (batch
// statistics) runs conv then BatchNorm as separate modules.
class ConvBn {
 public:
  ConvBn() = default;
  ConvBn(torch::nn::Conv2d conv, torch::nn::BatchNorm2d bn)
      : conv_(std::move(conv)),
        bn_(std::move(bn)),
        cache_(std::make_shared<Cache>()) {}

  torch::Tensor operator()(const torch::Tensor& x);
  explicit operator bool() const { return !conv_.is_empty(); }

  // Whether the next call on an input would run the cached folded
  // convolution (inference-mode BatchNorm, no gradient wanted).
  bool folds() const;

  // Process-wide switch, on by default; benchmarks and tests turn it off to
  // measure or compare against the separate conv + BatchNorm.
  static void EnableFolding(bool on);

 private:
  // The folded (weight, bias), tracked by autograd when grad mode is on.
  std::pair<torch::Tensor, torch::Tensor> Fold() const;

  struct Cache {
    std::mutex mu;
    std::vector<std::pair<const void*, uint32_t>> key;
    torch::Tensor weight, bias;
  };
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
  std::shared_ptr<Cache> cache_;
};

// Keras ZeroPadding2D(((top, bottom), (left, right))). Only the border is
// zeroed and the interior copied once, in the input's memory format (the
// generic pad fills the whole output first: on the early, large activations
// that is a fifth of MobileNet's forward on a CPU).
inline torch::Tensor ZeroPad(const torch::Tensor& x, int64_t top,
                             int64_t bottom, int64_t left, int64_t right) {
  if (top < 0 || bottom < 0 || left < 0 || right < 0 || x.dim() != 4) {
    return torch::nn::functional::pad(
        x, torch::nn::functional::PadFuncOptions({left, right, top, bottom}));
  }
  const int64_t h = x.size(2), w = x.size(3);
  torch::Tensor out =
      torch::empty({x.size(0), x.size(1), h + top + bottom, w + left + right},
                   x.options().memory_format(x.suggest_memory_format()));
  if (top > 0) out.narrow(2, 0, top).zero_();
  if (bottom > 0) out.narrow(2, top + h, bottom).zero_();
  torch::Tensor rows = out.narrow(2, top, h);
  if (left > 0) rows.narrow(3, 0, left).zero_();
  if (right > 0) rows.narrow(3, left + w, right).zero_();
  rows.narrow(3, left, w).copy_(x);
  return out;
}

// TensorFlow's padding='same' for a square kernel and stride: total padding
// max(k - s, 0) when the size divides by s, else max(k - size % s, 0); the
// extra pixel goes to the bottom/right.
inline torch::Tensor TfSamePad(const torch::Tensor& x, int64_t kernel,
                               int64_t stride) {
  auto pads = [&](int64_t size) {
    const int64_t rem = size % stride;
    const int64_t total =
        std::max<int64_t>(kernel - (rem == 0 ? stride : rem), 0);
    return std::pair<int64_t, int64_t>(total / 2, total - total / 2);
  };
  const auto [top, bottom] = pads(x.size(2));
  const auto [left, right] = pads(x.size(3));
  if (top == 0 && bottom == 0 && left == 0 && right == 0) return x;
  return ZeroPad(x, top, bottom, left, right);
}

}  // namespace transferd::core::backbones
