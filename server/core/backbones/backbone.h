// Conv bases ("backbones") mirroring keras.applications with include_top=False:
// VGG16, VGG19, ResNet50, MobileNet (v1) and MobileNetV2, as torch::nn modules
// whose submodules carry the Keras layer names ("block5_conv1",
// "conv_dw_12_bn", "block_16_project"), so that a user can say "trainable
// from block5_conv1" exactly as in the Keras notebook.
//
// A backbone is built in one of two flavours, fixed by the weights it will
// load: kKeras follows Keras' graph exactly (TensorFlow 'same' padding, which
// pads stride-2 convolutions on the bottom/right; ResNet50 v1 with conv
// biases and the stride on the first 1x1 conv; Keras' BatchNorm epsilons);
// kTorchvision follows torchvision's (symmetric padding, ResNet50 v1.5).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "server/core/backbones/preprocessing.h"

namespace transferd::core::backbones {

enum class Flavor { kKeras, kTorchvision };

// One entry of Keras' model.layers (include_top=False), in order.
struct KerasLayer {
  enum class Kind {
    kInput,      // input_1
    kConv,       // Conv2D: kernel (+ bias)
    kDepthwise,  // DepthwiseConv2D: depthwise_kernel (+ bias)
    kBatchNorm,  // gamma, beta, moving_mean, moving_variance
    kOther,      // activation, padding, pooling, add: no weights
  };
  std::string name;
  Kind kind = Kind::kOther;
  // The module holding this layer's tensors (nullptr for weightless layers).
  torch::nn::Module* module = nullptr;
  bool has_bias = false;
};

struct BackboneSpec {
  std::string
      name;  // "vgg16", "vgg19", "resnet50", "mobilenet", "mobilenet_v2"
  double alpha = 1.0;  // width multiplier (MobileNet, MobileNetV2)
  Flavor flavor = Flavor::kKeras;
};

class BackboneImpl : public torch::nn::Module {
 public:
  // x: N x 3 x H x W, already preprocessed. Returns the feature map
  // N x C x h x w (Keras' (h, w, C) in NCHW order).
  torch::Tensor forward(torch::Tensor x) {
    return ForwardSegments(x, 0, num_segments());
  }

  // The backbone as a chain of segments (its blocks), so that a frozen prefix
  // can run once and its output be kept: segment i starts at layer index
  // segment_starts()[i] (ascending, the first is 0) and ends where the next
  // starts. ForwardSegments(x, begin, end) runs segments [begin, end) on x,
  // the output of segment begin - 1 (the preprocessed images for begin 0);
  // ForwardSegments(ForwardSegments(x, 0, k), k, num_segments()) is forward(x).
  virtual torch::Tensor ForwardSegments(torch::Tensor x, int begin,
                                        int end) = 0;
  int num_segments() const { return static_cast<int>(segment_starts_.size()); }
  const std::vector<int>& segment_starts() const { return segment_starts_; }
  // How many leading segments lie entirely before layer index `layer`: the
  // prefix that freezing every layer before `layer` leaves unchanged.
  int SegmentsBefore(int layer) const;

  const BackboneSpec& spec() const { return spec_; }
  // Keras' model.layers order, input layer first.
  const std::vector<KerasLayer>& layers() const { return layers_; }

  // Index into layers() of a layer given by Keras name ("block5_conv1") or by
  // index ("100"); INVALID_ARGUMENT naming the closest valid choices.
  absl::StatusOr<int> ResolveLayer(const std::string& name_or_index) const;

  // (C, h, w) of forward() for a square input of `input_size` pixels;
  // INVALID_ARGUMENT below min_input_size().
  absl::StatusOr<std::vector<int64_t>> OutputShape(int input_size);
  int min_input_size() const { return 32; }

  // Scalars in parameters and BatchNorm moving statistics, as Keras'
  // count_params() reports for the conv base.
  int64_t KerasParameterCount() const;

  // The preprocessing the flavour's weights expect.
  Preprocessing DefaultPreprocessing() const;

  // Keras' initialisers (glorot_uniform kernels, zero biases, BatchNorm
  // gamma 1 / beta 0 / mean 0 / variance 1), deterministic given the
  // current torch seed: weights "none".
  void ResetToKerasInit();

 protected:
  explicit BackboneImpl(BackboneSpec spec) : spec_(std::move(spec)) {}
  void AddLayer(std::string name,
                KerasLayer::Kind kind = KerasLayer::Kind::kOther,
                torch::nn::Module* module = nullptr, bool has_bias = false);
  // The next AddLayer begins a new segment (the first layer always does).
  void StartSegment();

 private:
  BackboneSpec spec_;
  std::vector<KerasLayer> layers_;
  std::vector<int> segment_starts_;
  std::map<int, std::vector<int64_t>> shape_cache_;
};

using Backbone = std::shared_ptr<BackboneImpl>;

// Builds a backbone with Keras initialisation. INVALID_ARGUMENT for an
// unknown name or an alpha the architecture does not offer.
absl::StatusOr<Backbone> CreateBackbone(const BackboneSpec& spec);

// What GetServerInfo lists.
struct BackboneCatalogEntry {
  std::string name;
  std::string keras_name;
  std::vector<double> alphas;  // empty: no width multiplier
  double default_alpha = 1.0;
  int default_input_size = 224;
};
const std::vector<BackboneCatalogEntry>& BackboneCatalog();

}  // namespace transferd::core::backbones
