// How raw RGB pixels in [0, 255] become a backbone's input, fixed by the
// weights: Keras 'caffe' (VGG/ResNet50 Keras files), Keras 'tf'
// (MobileNet/MobileNetV2 Keras files), torchvision 'torch'. Recorded with every
// model so that training and serving can never disagree.
#pragma once

#include <array>
#include <string>

#include <torch/types.h>

namespace transferd::core::backbones {

struct Preprocessing {
  enum class Mode { kCaffe, kTf, kTorch };
  Mode mode = Mode::kTf;
  bool bgr = false;                    // feed channels in BGR order
  float scale = 1.0f;                  // multiply raw [0,255] values first
  std::array<float, 3> mean{0, 0, 0};  // subtracted after scaling, in fed order
  std::array<float, 3> std{1, 1, 1};   // divided after subtraction

  static Preprocessing Caffe();
  static Preprocessing Tf();
  static Preprocessing Torch();
  static const char* ModeName(Mode mode);
};

// Raw RGB images, N x H x W x 3 uint8 (as decoded), to the float N x 3 x H x W
// tensor the backbone expects, on the images' device, in channels-last memory
// (the bytes' own order). On the CPU this is one plain loop over the pixels:
// the loader calls it from its worker threads, where tensor ops would start
// an OpenMP team per thread and compete with training for the cores.
torch::Tensor ApplyPreprocessing(const Preprocessing& p,
                                 const torch::Tensor& rgb);

}  // namespace transferd::core::backbones
