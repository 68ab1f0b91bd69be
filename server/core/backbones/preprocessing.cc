#include "server/core/backbones/preprocessing.h"

#include <torch/torch.h>

namespace transferd::core::backbones {

Preprocessing Preprocessing::Caffe() {
  Preprocessing p;
  p.mode = Mode::kCaffe;
  p.bgr = true;
  p.scale = 1.0f;
  p.mean = {103.939f, 116.779f, 123.68f};  // B, G, R
  p.std = {1.0f, 1.0f, 1.0f};
  return p;
}

Preprocessing Preprocessing::Tf() {
  Preprocessing p;
  p.mode = Mode::kTf;
  p.bgr = false;
  p.scale = 1.0f / 127.5f;
  p.mean = {1.0f, 1.0f, 1.0f};
  p.std = {1.0f, 1.0f, 1.0f};
  return p;
}

Preprocessing Preprocessing::Torch() {
  Preprocessing p;
  p.mode = Mode::kTorch;
  p.bgr = false;
  p.scale = 1.0f / 255.0f;
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  return p;
}

torch::Tensor ApplyPreprocessing(const Preprocessing& p,
                                 const torch::Tensor& rgb) {
  TORCH_CHECK(rgb.dim() == 4 && rgb.size(3) == 3,
              "expected N x H x W x 3 pixels");
  if (rgb.device().is_cpu() && rgb.scalar_type() == torch::kUInt8 &&
      rgb.is_contiguous()) {
    // The same float operations as below, in the same order, per value.
    torch::Tensor out =
        torch::empty({rgb.size(0), 3, rgb.size(1), rgb.size(2)},
                     torch::TensorOptions()
                         .dtype(torch::kFloat32)
                         .memory_format(torch::MemoryFormat::ChannelsLast));
    const int64_t pixels = rgb.numel() / 3;
    const uint8_t* in = rgb.data_ptr<uint8_t>();
    float* o = out.data_ptr<float>();
    float mean[3], inv_std[3];
    for (int c = 0; c < 3; ++c) {
      mean[c] = p.mean[c];
      inv_std[c] = 1.0f / p.std[c];
    }
    const int src[3] = {p.bgr ? 2 : 0, 1, p.bgr ? 0 : 2};
    for (int64_t i = 0; i < pixels; ++i, in += 3, o += 3) {
      for (int c = 0; c < 3; ++c) {
        const float scaled = static_cast<float>(in[src[c]]) * p.scale;
        const float centred = scaled - mean[c];
        o[c] = centred * inv_std[c];
      }
    }
    return out;
  }
  torch::Tensor x = rgb.permute({0, 3, 1, 2}).to(torch::kFloat32);
  if (p.bgr) x = x.flip(1);
  const auto opts = x.options();
  const torch::Tensor mean =
      torch::tensor({p.mean[0], p.mean[1], p.mean[2]}, opts).view({1, 3, 1, 1});
  const torch::Tensor inv_std =
      torch::tensor({1.0f / p.std[0], 1.0f / p.std[1], 1.0f / p.std[2]}, opts)
          .view({1, 3, 1, 1});
  return ((x * p.scale - mean) * inv_std)
      .contiguous(torch::MemoryFormat::ChannelsLast);
}

const char* Preprocessing::ModeName(Mode mode) {
  switch (mode) {
    case Mode::kCaffe:
      return "caffe";
    case Mode::kTf:
      return "tf";
    case Mode::kTorch:
      return "torch";
  }
  return "?";
}

}  // namespace transferd::core::backbones
