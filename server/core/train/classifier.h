// The classifier a training job builds: a conv base (backbones::BuildBackbone)
// and Keras' classic head on top of it:
//
//   backbone -> Flatten | GlobalAveragePooling2D
//            -> [Dense(hidden_units, relu)] -> [Dropout(dropout)]
//            -> Dense(1) (sigmoid, binary cross-entropy) for 2 classes
//               Dense(N) (softmax, categorical cross-entropy) for N > 2
//
// forward() returns logits; the sigmoid/softmax lives in Loss() and
// Probabilities() (numerically stable, as Keras does with from_logits).
// Flatten follows Keras' channels-last order ((h, w, C) -> h*w*C), so a
// head's Dense kernel means the same as in Keras.
//
// Freezing follows Keras' `layer.trainable = False` on the conv base's layers
// before a given one: their parameters get requires_grad=false (no gradient,
// no optimizer state) and their BatchNorm layers run in inference mode even
// while the model trains, so their moving statistics never change.
//
// Saved as safetensors: backbone tensors under their Keras layer names
// ("block1_conv1.weight", "conv1_bn.running_mean"), the head under "head.*"
// ("head.hidden.weight", "head.output.bias"), BatchNorm statistics included.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/backbones/backbone.h"
#include "server/core/backbones/safetensors.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/train/train_config.h"

namespace transferd::core::train {

class ClassifierImpl : public torch::nn::Module {
 public:
  // `feature_shape` is the backbone's (C, h, w) at the model's input size.
  // The head is initialised as `head.init` says (Keras' glorot_uniform
  // kernels and zero biases by default) from the current torch seed.
  ClassifierImpl(backbones::Backbone backbone, const HeadConfig& head,
                 int num_classes, const std::vector<int64_t>& feature_shape);

  // x: N x 3 x S x S preprocessed images -> logits N x outputs().
  torch::Tensor forward(const torch::Tensor& x);
  // The backbone's feature map N x C x h x w.
  torch::Tensor Features(const torch::Tensor& x);
  // Feature maps (as Features() returns them) -> logits.
  torch::Tensor Head(const torch::Tensor& features);
  // The next Head() in training mode draws each row's dropout mask from its
  // key (int64, one per row; a generator seeded by it) instead of torch's
  // global generator, then forgets the keys. Keyed by example and epoch, an
  // example gets the same mask whatever batch, order or rank it is in, so
  // data-parallel ranks compute what one process would.
  void SetDropoutKeys(std::vector<uint64_t> keys) {
    dropout_keys_ = std::move(keys);
  }
  // Logits from the output of the backbone's first `segment` segments
  // (backbones::BackboneImpl::ForwardSegments): the rest of the backbone, then
  // the head. ForwardFrom(x, 0) is forward(x).
  torch::Tensor ForwardFrom(const torch::Tensor& activations, int segment);
  // The backbone's segments [begin, end) on x, one at a time: inside a
  // background DeviceArbiter turn each segment ends with a YieldPoint, in the
  // forward and (for an output that is differentiated) in the backward, so
  // interactive work waiting for the device runs between two blocks.
  // Features(x) is BackboneSegments(x, 0, backbone().num_segments()).
  torch::Tensor BackboneSegments(torch::Tensor x, int begin, int end);

  // Mean loss of `logits` against int64 `labels` (binary cross-entropy on the
  // single logit for 2 classes, cross-entropy otherwise), in float32, with
  // Keras' label smoothing: targets y * (1 - s) + s / K (K = 2 for the
  // binary loss, the number of classes otherwise). With `class_weights`
  // (float32, one per class) each example's loss is multiplied by its
  // class's weight before the mean over the batch (Keras' class_weight).
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& labels,
                     double label_smoothing = 0,
                     const torch::Tensor& class_weights = {}) const;
  // Predicted class per row (int64).
  torch::Tensor Predict(const torch::Tensor& logits) const;
  // N x num_classes probabilities (float32).
  torch::Tensor Probabilities(const torch::Tensor& logits) const;

  // "none" freezes the whole base, "all" trains all of it, otherwise the
  // first trainable layer by Keras name or index (ResolveLayer's message on
  // error, without a field prefix). The head always stays trainable.
  absl::Status SetTrainableFrom(const std::string& trainable_from);
  // Index into backbone().layers() for a trainable_from value.
  absl::StatusOr<int> ResolveTrainableFrom(
      const std::string& trainable_from) const;
  // Backbone layers with index < `first_trainable` are frozen.
  void FreezeBackboneBefore(int first_trainable);
  // True when no backbone parameter requires a gradient.
  bool backbone_frozen() const;

  // Keeps frozen BatchNorm layers in inference mode.
  void train(bool on = true) override;
  // With `on`, every backbone BatchNorm runs in inference mode while the model
  // trains, trainable ones included (their gamma and beta still get
  // gradients; the moving statistics stay as they are).
  void SetBatchNormInference(bool on);

  TrainableSummary Summary() const;

  // Parameters with requires_grad, in registration order (for optimizers).
  std::vector<torch::Tensor> TrainableParameters() const;

  // Every tensor (parameters and BatchNorm statistics, without
  // num_batches_tracked) under its saved name, as CPU copies.
  backbones::NamedTensors StateTensors() const;
  // The backbone's part of StateTensors() only.
  backbones::NamedTensors BackboneTensors() const;
  // Copies `tensors` in; every name must be present with the right shape,
  // and no unknown name may appear (INVALID_ARGUMENT naming it). Nothing is
  // changed on error.
  absl::Status LoadStateTensors(const backbones::NamedTensors& tensors);

  absl::Status Save(
      const std::filesystem::path& path,
      const std::map<std::string, std::string>& metadata = {}) const;
  absl::Status Load(const std::filesystem::path& path);

  backbones::BackboneImpl& backbone() { return *backbone_; }
  const backbones::BackboneImpl& backbone() const { return *backbone_; }
  int num_classes() const { return num_classes_; }
  int outputs() const { return num_classes_ == 2 ? 1 : num_classes_; }
  const HeadConfig& head_config() const { return head_config_; }

 private:
  // The head's initialisation of one Dense layer.
  void InitDense(torch::nn::LinearImpl& dense) const;
  // name -> tensor, for parameters and buffers under saved names.
  std::vector<std::pair<std::string, torch::Tensor>> NamedState() const;

  backbones::Backbone backbone_;
  HeadConfig head_config_;
  int num_classes_;
  std::shared_ptr<torch::nn::Module> head_;
  torch::nn::Linear hidden_{nullptr};
  torch::nn::Linear output_{nullptr};
  int first_trainable_ = 0;
  bool batch_norm_inference_ = false;
  std::vector<uint64_t> dropout_keys_;
};

TORCH_MODULE(Classifier);

// Builds the classifier a ModelConfig describes, with the backbone's weights
// loaded (model.weights) and, when model.init_weights_file is set, the whole
// classifier's weights from that file. Errors name the field:
// "model.backbone: ...", "model.alpha: ...", "model.input_size: ...",
// "model.weights: ...", "model.precision: ...", "model.head.dropout: ...",
// "model.init_weights_file: ...". The head's (and, for weights "none", the
// backbone's) initialisation follows the current torch seed. With
// `load_weights` false nothing is read: the backbone gets the flavour its
// weights would give it, with random initialisation (for DescribeStage).
absl::StatusOr<Classifier> BuildClassifier(
    const ModelConfig& model, int num_classes,
    const backbones::WeightsCacheOptions& weights, bool load_weights = true);

// Glorot-uniform kernel / zero bias, Keras' Dense default.
void KerasDenseInit(torch::nn::LinearImpl& dense);
// Kernel and bias uniform in +-1/sqrt(fan_in), PyTorch nn.Linear's default
// (kaiming_uniform with a = sqrt(5) for the kernel).
void TorchDenseInit(torch::nn::LinearImpl& dense);

}  // namespace transferd::core::train
