#include "server/core/backbones/backbone.h"

#include <atomic>
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/backbones/architectures.h"
#include "server/core/backbones/layers.h"

namespace transferd::core::backbones {

namespace {
std::atomic<bool> fold_conv_bn{true};
}  // namespace

void ConvBn::EnableFolding(bool on) { fold_conv_bn = on; }

bool ConvBn::folds() const {
  if (!fold_conv_bn || bn_->is_training()) return false;
  if (!torch::GradMode::is_enabled()) return true;
  const auto wants_grad = [](const torch::Tensor& t) {
    return t.defined() && t.requires_grad();
  };
  return !(wants_grad(conv_->weight) || wants_grad(conv_->bias) ||
           wants_grad(bn_->weight) || wants_grad(bn_->bias));
}

// BatchNorm in inference mode after a convolution is an affine map per output
// channel: scale = gamma / sqrt(var + eps), shift = beta - mean * scale, so
// conv then BN is one conv with weight w * scale and bias (b - mean) * scale
// + beta.
std::pair<torch::Tensor, torch::Tensor> ConvBn::Fold() const {
  const auto& o = bn_->options;
  const torch::Tensor scale =
      (o.affine() ? bn_->weight : torch::ones_like(bn_->running_var)) /
      torch::sqrt(bn_->running_var + o.eps());
  const torch::Tensor shift = o.affine() ? bn_->bias : torch::zeros_like(scale);
  const torch::Tensor conv_bias =
      conv_->bias.defined() ? conv_->bias : torch::zeros_like(scale);
  return {conv_->weight * scale.reshape({-1, 1, 1, 1}),
          (conv_bias - bn_->running_mean) * scale + shift};
}

torch::Tensor ConvBn::operator()(const torch::Tensor& x) {
  if (!fold_conv_bn || bn_->is_training())
    return bn_->forward(conv_->forward(x));
  const auto& o = conv_->options;
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  TORCH_CHECK(padding != nullptr && o.padding_mode().index() == 0,
              "ConvBn supports explicit zero padding only");
  if (!folds()) {
    // Inference-mode BatchNorm whose parameters train (a fine-tuned layer
    // with its statistics kept, Keras' training=False): fold through
    // autograd on every call, so that the gradients reach the convolution's
    // and the BatchNorm's parameters through the weight-sized fold instead
    // of a BatchNorm backward over the activations.
    auto [weight, bias] = Fold();
    return torch::conv2d(x, weight, bias, o.stride(), *padding, o.dilation(),
                         o.groups());
  }
  // num_batches_tracked too: a train-mode BatchNorm forward updates the
  // running statistics inside the kernel without bumping their version
  // counters (LibTorch 1.13), but increments this counter in place.
  const torch::Tensor* sources[] = {&conv_->weight,
                                    &conv_->bias,
                                    &bn_->weight,
                                    &bn_->bias,
                                    &bn_->running_mean,
                                    &bn_->running_var,
                                    &bn_->num_batches_tracked};
  std::vector<std::pair<const void*, uint32_t>> key;
  for (const torch::Tensor* t : sources) {
    key.emplace_back(t->defined() ? t->data_ptr() : nullptr,
                     t->defined() ? t->_version() : 0);
  }
  torch::Tensor weight, bias;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->key != key) {
      // Plain tensors, made outside inference mode: they may meet tensors
      // that autograd tracks later on.
      c10::InferenceMode normal(false);
      torch::NoGradGuard no_grad;
      auto [w, b] = Fold();
      cache_->weight = w.to(conv_->weight.scalar_type())
                           .contiguous(conv_->weight.suggest_memory_format());
      cache_->bias = b.to(conv_->weight.scalar_type());
      cache_->key = std::move(key);
    }
    weight = cache_->weight;
    bias = cache_->bias;
  }
  return torch::conv2d(x, weight, bias, o.stride(), *padding, o.dilation(),
                       o.groups());
}

void BackboneImpl::StartSegment() {
  const int next = static_cast<int>(layers_.size());
  if (segment_starts_.empty() || segment_starts_.back() != next)
    segment_starts_.push_back(next);
}

int BackboneImpl::SegmentsBefore(int layer) const {
  int n = 0;
  for (size_t i = 0; i < segment_starts_.size(); ++i) {
    const int end = i + 1 < segment_starts_.size()
                        ? segment_starts_[i + 1]
                        : static_cast<int>(layers_.size());
    if (end > layer) break;
    ++n;
  }
  return n;
}

void BackboneImpl::AddLayer(std::string name, KerasLayer::Kind kind,
                            torch::nn::Module* module, bool has_bias) {
  if (layers_.empty()) StartSegment();
  layers_.push_back(KerasLayer{std::move(name), kind, module, has_bias});
}

absl::StatusOr<int> BackboneImpl::ResolveLayer(
    const std::string& name_or_index) const {
  int index = -1;
  if (absl::SimpleAtoi(name_or_index, &index)) {
    if (index < 0 || index >= static_cast<int>(layers_.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer index ", index, " is out of range: ", spec_.name, " has ",
          layers_.size(), " layers (0..", layers_.size() - 1, ")"));
    }
    return index;
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].name == name_or_index) return static_cast<int>(i);
  }
  // Suggest weight layers that share the longest prefix.
  std::vector<std::string> close;
  size_t best = 0;
  for (const KerasLayer& layer : layers_) {
    if (layer.module == nullptr) continue;
    size_t common = 0;
    while (common < layer.name.size() && common < name_or_index.size() &&
           layer.name[common] == name_or_index[common]) {
      ++common;
    }
    if (common > best) {
      best = common;
      close.clear();
    }
    if (common == best && close.size() < 5) close.push_back(layer.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "no layer \"", name_or_index, "\" in ", spec_.name,
      close.empty() ? ""
                    : "; did you mean one of: " + absl::StrJoin(close, ", "),
      "?"));
}

absl::StatusOr<std::vector<int64_t>> BackboneImpl::OutputShape(int input_size) {
  if (input_size < min_input_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input size ", input_size, " is below ", spec_.name,
                     "'s minimum of ", min_input_size(), " pixels"));
  }
  auto it = shape_cache_.find(input_size);
  if (it != shape_cache_.end()) return it->second;
  torch::NoGradGuard no_grad;
  const bool was_training = is_training();
  eval();
  auto param = parameters().front();
  torch::Tensor out =
      forward(torch::zeros({1, 3, input_size, input_size}, param.options()));
  train(was_training);
  std::vector<int64_t> shape = {out.size(1), out.size(2), out.size(3)};
  shape_cache_[input_size] = shape;
  return shape;
}

int64_t BackboneImpl::KerasParameterCount() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  for (const auto& b : named_buffers()) {
    if (b.key().find("num_batches_tracked") != std::string::npos) continue;
    total += b.value().numel();
  }
  return total;
}

Preprocessing BackboneImpl::DefaultPreprocessing() const {
  if (spec_.flavor == Flavor::kTorchvision) return Preprocessing::Torch();
  if (spec_.name == "mobilenet" || spec_.name == "mobilenet_v2") {
    return Preprocessing::Tf();
  }
  return Preprocessing::Caffe();
}

void BackboneImpl::ResetToKerasInit() {
  torch::NoGradGuard no_grad;
  for (const KerasLayer& layer : layers_) {
    if (layer.module == nullptr) continue;
    if (layer.kind == KerasLayer::Kind::kBatchNorm) {
      auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(layer.module);
      bn->weight.fill_(1);
      bn->bias.zero_();
      bn->running_mean.zero_();
      bn->running_var.fill_(1);
      continue;
    }
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(layer.module);
    // Keras glorot_uniform over the kernel in Keras' (kh, kw, in, out)
    // layout: fan_in = kh*kw*in, fan_out = kh*kw*out (depthwise: out = 1).
    const auto& w = conv->weight;  // (out, in/groups, kh, kw)
    const int64_t receptive = w.size(2) * w.size(3);
    const bool depthwise = layer.kind == KerasLayer::Kind::kDepthwise;
    const int64_t fan_in = receptive * (depthwise ? w.size(0) : w.size(1));
    const int64_t fan_out = receptive * (depthwise ? 1 : w.size(0));
    const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
    w.uniform_(-limit, limit);
    if (conv->bias.defined()) conv->bias.zero_();
  }
}

absl::StatusOr<Backbone> CreateBackbone(const BackboneSpec& spec) {
  for (const BackboneCatalogEntry& entry : BackboneCatalog()) {
    if (entry.name != spec.name) continue;
    if (!entry.alphas.empty()) {
      bool ok = false;
      for (double a : entry.alphas) ok |= std::abs(a - spec.alpha) < 1e-9;
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            spec.name, " has no alpha ", spec.alpha, "; choose one of ",
            absl::StrJoin(entry.alphas, ", ")));
      }
    }
    if (spec.flavor == Flavor::kTorchvision && spec.name == "mobilenet") {
      return absl::InvalidArgumentError(
          "mobilenet (v1) has no torchvision weights; use Keras .h5 weights");
    }
    Backbone backbone;
    if (spec.name == "vgg16") backbone = MakeVgg(spec, 16);
    if (spec.name == "vgg19") backbone = MakeVgg(spec, 19);
    if (spec.name == "resnet50") backbone = MakeResNet50(spec);
    if (spec.name == "mobilenet") backbone = MakeMobileNet(spec);
    if (spec.name == "mobilenet_v2") backbone = MakeMobileNetV2(spec);
    backbone->ResetToKerasInit();
    return backbone;
  }
  std::vector<std::string> names;
  for (const auto& e : BackboneCatalog()) names.push_back(e.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backbone \"", spec.name,
                   "\"; available: ", absl::StrJoin(names, ", ")));
}

const std::vector<BackboneCatalogEntry>& BackboneCatalog() {
  static const auto* catalog = new std::vector<BackboneCatalogEntry>{
      {"vgg16", "VGG16", {}, 1.0, 224},
      {"vgg19", "VGG19", {}, 1.0, 224},
      {"resnet50", "ResNet50", {}, 1.0, 224},
      {"mobilenet", "MobileNet", {0.25, 0.5, 0.75, 1.0}, 1.0, 224},
      {"mobilenet_v2",
       "MobileNetV2",
       {0.35, 0.5, 0.75, 1.0, 1.3, 1.4},
       1.0,
       224},
  };
  return *catalog;
}

}  // namespace transferd::core::backbones
