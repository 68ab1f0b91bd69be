#include "server/core/train/classifier.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/backbones/weights.h"
#include "server/core/device_arbiter.h"
#include "server/core/util/status_macros.h"

namespace transferd::core::train {
namespace {

constexpr char kBackbonePrefix[] = "backbone.";

bool IsBatchNormStat(const std::string& name) {
  return name.size() >= 20 &&
         name.compare(name.size() - 20, 20, ".num_batches_tracked") == 0;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min(
          {row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

void KerasDenseInit(torch::nn::LinearImpl& dense) {
  torch::NoGradGuard no_grad;
  const auto fan_out = dense.weight.size(0);
  const auto fan_in = dense.weight.size(1);
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  dense.weight.uniform_(-limit, limit);
  if (dense.bias.defined()) dense.bias.zero_();
}

void TorchDenseInit(torch::nn::LinearImpl& dense) {
  torch::NoGradGuard no_grad;
  const double limit =
      1.0 / std::sqrt(static_cast<double>(dense.weight.size(1)));
  dense.weight.uniform_(-limit, limit);
  if (dense.bias.defined()) dense.bias.uniform_(-limit, limit);
}

ClassifierImpl::ClassifierImpl(backbones::Backbone backbone,
                               const HeadConfig& head, int num_classes,
                               const std::vector<int64_t>& feature_shape)
    : backbone_(std::move(backbone)),
      head_config_(head),
      num_classes_(num_classes) {
  register_module("backbone", backbone_);
  head_ = register_module("head", std::make_shared<torch::nn::Module>());
  int64_t features = feature_shape.at(0);
  if (head.pooling == Pooling::kFlatten) {
    features *= feature_shape.at(1) * feature_shape.at(2);
  }
  if (head.hidden_units > 0) {
    hidden_ = head_->register_module(
        "hidden", torch::nn::Linear(features, head.hidden_units));
    InitDense(*hidden_);
    features = head.hidden_units;
  }
  output_ =
      head_->register_module("output", torch::nn::Linear(features, outputs()));
  InitDense(*output_);
}

void ClassifierImpl::InitDense(torch::nn::LinearImpl& dense) const {
  if (head_config_.init == HeadInit::kTorch) {
    TorchDenseInit(dense);
  } else {
    KerasDenseInit(dense);
  }
}

torch::Tensor ClassifierImpl::Features(const torch::Tensor& x) {
  return BackboneSegments(x, 0, backbone_->num_segments());
}

torch::Tensor ClassifierImpl::BackboneSegments(torch::Tensor x, int begin,
                                               int end) {
  for (int s = begin; s < end; ++s) {
    x = backbone_->ForwardSegments(x, s, s + 1);
    if (!DeviceArbiter::CanYield()) continue;
    DeviceArbiter::YieldPoint();
    // The backward reaches this hook between segment s + 1's and segment
    // s's gradients, on this thread (CPU autograd runs on the caller's).
    if (x.requires_grad() && s + 1 < end) {
      x.register_hook(
          [](const torch::Tensor&) { DeviceArbiter::YieldPoint(); });
    }
  }
  return x;
}

torch::Tensor ClassifierImpl::Head(const torch::Tensor& features) {
  torch::Tensor x;
  if (head_config_.pooling == Pooling::kFlatten) {
    // Keras flattens channels-last feature maps.
    x = features.permute({0, 2, 3, 1}).flatten(1);
  } else {
    x = features.mean({2, 3});
  }
  if (hidden_) x = torch::relu(hidden_->forward(x));
  std::vector<uint64_t> keys = std::move(dropout_keys_);
  dropout_keys_.clear();
  const double p = head_config_.dropout;
  if (p > 0 && is_training() && !keys.empty() &&
      static_cast<int64_t>(keys.size()) == x.size(0)) {
    // Inverted dropout as torch::dropout, each row's mask from its key.
    const double keep = 1 - p;
    std::vector<torch::Tensor> rows;
    rows.reserve(keys.size());
    for (uint64_t key : keys) {
      torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(key);
      rows.push_back(torch::empty({x.size(1)}).bernoulli_(keep, gen));
    }
    const torch::Tensor mask = (torch::stack(rows) / keep).to(x.options());
    x = x * mask;
  } else if (p > 0) {
    x = torch::dropout(x, p, is_training());
  }
  return output_->forward(x);
}

torch::Tensor ClassifierImpl::ForwardFrom(const torch::Tensor& activations,
                                          int segment) {
  return Head(
      BackboneSegments(activations, segment, backbone_->num_segments()));
}

torch::Tensor ClassifierImpl::forward(const torch::Tensor& x) {
  return Head(Features(x));
}

torch::Tensor ClassifierImpl::Loss(const torch::Tensor& logits,
                                   const torch::Tensor& labels,
                                   double label_smoothing,
                                   const torch::Tensor& class_weights) const {
  namespace F = torch::nn::functional;
  const torch::Tensor z = logits.to(torch::kFloat32);
  const bool weighted = class_weights.defined();
  torch::Tensor per_example;
  if (num_classes_ == 2) {
    torch::Tensor target = labels.to(torch::kFloat32);
    if (label_smoothing > 0) {
      target = target * (1 - label_smoothing) + 0.5 * label_smoothing;
    }
    if (!weighted)
      return torch::binary_cross_entropy_with_logits(z.select(1, 0), target);
    per_example = F::binary_cross_entropy_with_logits(
        z.select(1, 0), target,
        F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
  } else {
    auto options =
        F::CrossEntropyFuncOptions().label_smoothing(label_smoothing);
    if (!weighted) return F::cross_entropy(z, labels, options);
    per_example = F::cross_entropy(z, labels, options.reduction(torch::kNone));
  }
  return (per_example * class_weights.index_select(0, labels)).mean();
}

torch::Tensor ClassifierImpl::Predict(const torch::Tensor& logits) const {
  if (num_classes_ == 2) return (logits.select(1, 0) > 0).to(torch::kInt64);
  return logits.argmax(1);
}

torch::Tensor ClassifierImpl::Probabilities(const torch::Tensor& logits) const {
  const torch::Tensor z = logits.to(torch::kFloat32);
  if (num_classes_ == 2) {
    const torch::Tensor p = torch::sigmoid(z.select(1, 0));
    return torch::stack({1 - p, p}, 1);
  }
  return torch::softmax(z, 1);
}

absl::StatusOr<int> ClassifierImpl::ResolveTrainableFrom(
    const std::string& trainable_from) const {
  if (trainable_from == "none" || trainable_from.empty()) {
    return static_cast<int>(backbone_->layers().size());
  }
  if (trainable_from == "all") return 0;
  absl::StatusOr<int> index = backbone_->ResolveLayer(trainable_from);
  if (index.ok()) return index;
  int number = 0;
  if (absl::SimpleAtoi(trainable_from, &number)) return index.status();
  // Suggest the weight layers closest by edit distance.
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& layer : backbone_->layers()) {
    if (layer.module != nullptr) {
      scored.emplace_back(EditDistance(trainable_from, layer.name), layer.name);
    }
  }
  std::stable_sort(
      scored.begin(), scored.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> close;
  for (size_t i = 0; i < scored.size() && i < 3; ++i)
    close.push_back(scored[i].second);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown layer \"", trainable_from, "\" in ", backbone_->spec().name,
      "; did you mean ", absl::StrJoin(close, ", "),
      "? (a Keras layer name or index, \"none\" or \"all\")"));
}

absl::Status ClassifierImpl::SetTrainableFrom(
    const std::string& trainable_from) {
  TRANSFERD_ASSIGN_OR_RETURN(int index, ResolveTrainableFrom(trainable_from));
  FreezeBackboneBefore(index);
  return absl::OkStatus();
}

void ClassifierImpl::FreezeBackboneBefore(int first_trainable) {
  first_trainable_ = first_trainable;
  const auto& layers = backbone_->layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].module == nullptr) continue;
    const bool trainable = static_cast<int>(i) >= first_trainable;
    for (auto& p : layers[i].module->parameters(/*recurse=*/true)) {
      p.set_requires_grad(trainable);
    }
  }
  for (auto& p : head_->parameters()) p.set_requires_grad(true);
  train(is_training());
}

bool ClassifierImpl::backbone_frozen() const {
  for (const auto& p : backbone_->parameters()) {
    if (p.requires_grad()) return false;
  }
  return true;
}

void ClassifierImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!on) return;
  const auto& layers = backbone_->layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (static_cast<int>(i) >= first_trainable_ && !batch_norm_inference_)
      break;
    if (layers[i].kind == backbones::KerasLayer::Kind::kBatchNorm &&
        layers[i].module) {
      layers[i].module->eval();
    }
  }
}

void ClassifierImpl::SetBatchNormInference(bool on) {
  batch_norm_inference_ = on;
  train(is_training());
}

TrainableSummary ClassifierImpl::Summary() const {
  TrainableSummary s;
  for (const auto& p : parameters()) {
    if (p.requires_grad()) {
      ++s.trainable_tensors;
      s.trainable_parameters += p.numel();
    } else {
      s.non_trainable_parameters += p.numel();
    }
  }
  for (const auto& b : named_buffers()) {
    if (IsBatchNormStat(b.key())) continue;
    s.non_trainable_parameters += b.value().numel();
  }
  return s;
}

std::vector<torch::Tensor> ClassifierImpl::TrainableParameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& p : parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> ClassifierImpl::NamedState()
    const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto add = [&](const std::string& key, const torch::Tensor& t) {
    if (IsBatchNormStat(key)) return;
    std::string name = key;
    if (name.rfind(kBackbonePrefix, 0) == 0)
      name = name.substr(sizeof(kBackbonePrefix) - 1);
    out.emplace_back(std::move(name), t);
  };
  for (const auto& p : named_parameters()) add(p.key(), p.value());
  for (const auto& b : named_buffers()) add(b.key(), b.value());
  return out;
}

backbones::NamedTensors ClassifierImpl::StateTensors() const {
  backbones::NamedTensors out;
  for (const auto& [name, t] : NamedState()) {
    out[name] =
        t.detach().to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
  }
  return out;
}

backbones::NamedTensors ClassifierImpl::BackboneTensors() const {
  backbones::NamedTensors out;
  for (const auto& [name, t] : NamedState()) {
    if (name.rfind("head.", 0) == 0) continue;
    out[name] = t.detach().to(torch::kCPU, false, true);
  }
  return out;
}

absl::Status ClassifierImpl::LoadStateTensors(
    const backbones::NamedTensors& tensors) {
  auto state = NamedState();
  std::set<std::string> known;
  for (const auto& [name, t] : state) {
    known.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing tensor \"", name, "\""));
    }
    if (it->second.sizes() != t.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" has shape [",
          absl::StrJoin(it->second.sizes(), ", "), "], the model expects [",
          absl::StrJoin(t.sizes(), ", "), "]"));
    }
    if (!it->second.is_floating_point()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", name, "\" is not a floating-point tensor"));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (known.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown tensor \"", name, "\" (not part of this ",
                       backbone_->spec().name, " classifier)"));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : state) t.copy_(tensors.at(name));
  return absl::OkStatus();
}

absl::Status ClassifierImpl::Save(
    const std::filesystem::path& path,
    const std::map<std::string, std::string>& metadata) const {
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "transferd-classifier";
  meta["backbone"] = backbone_->spec().name;
  meta["num_classes"] = std::to_string(num_classes_);
  return backbones::WriteSafetensors(path, StateTensors(), meta);
}

absl::Status ClassifierImpl::Load(const std::filesystem::path& path) {
  TRANSFERD_ASSIGN_OR_RETURN(backbones::NamedTensors tensors,
                             backbones::ReadSafetensors(path));
  absl::Status s = LoadStateTensors(tensors);
  if (!s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(path.string(), ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Classifier> BuildClassifier(
    const ModelConfig& model, int num_classes,
    const backbones::WeightsCacheOptions& weights, bool load_weights) {
  auto field = [](const char* name, const absl::Status& s) {
    return absl::Status(s.code(),
                        absl::StrCat("model.", name, ": ", s.message()));
  };
  const backbones::BackboneCatalogEntry* entry = nullptr;
  for (const auto& e : backbones::BackboneCatalog()) {
    if (e.name == model.backbone) entry = &e;
  }
  if (entry == nullptr) {
    std::vector<std::string> names;
    for (const auto& e : backbones::BackboneCatalog()) names.push_back(e.name);
    return absl::InvalidArgumentError(
        absl::StrCat("model.backbone: unknown backbone \"", model.backbone,
                     "\"; available: ", absl::StrJoin(names, ", ")));
  }
  if (!entry->alphas.empty()) {
    bool ok = false;
    for (double a : entry->alphas) ok |= std::abs(a - model.alpha) < 1e-9;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.alpha: ", model.backbone, " has no alpha ", model.alpha,
          "; choose one of ", absl::StrJoin(entry->alphas, ", ")));
    }
  }
  if (model.input_size < 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.input_size: ", model.input_size, " is below ",
                     model.backbone, "'s minimum of 32 pixels"));
  }
  if (model.input_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.input_size: ", model.input_size,
                     " is above the maximum of 1024 pixels"));
  }
  if (model.precision != "fp32" && model.precision != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.precision: \"", model.precision, "\"; expected fp32 or bf16"));
  }
  if (model.head.hidden_units < 0 || model.head.hidden_units > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.head.hidden_units: ", model.head.hidden_units,
                     " is outside 0..65536"));
  }
  if (!(model.head.dropout >= 0 && model.head.dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.head.dropout: ", model.head.dropout, " is outside [0, 1)"));
  }
  if (num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classes: a classifier needs at least 2 classes, the dataset has ",
        num_classes));
  }
  absl::StatusOr<backbones::Backbone> backbone;
  if (load_weights) {
    backbone = backbones::BuildBackbone(
        model.backbone, model.alpha, model.weights, model.input_size, weights);
  } else {
    backbones::BackboneSpec spec;
    spec.name = model.backbone;
    spec.alpha = model.alpha;
    spec.flavor = absl::EndsWith(model.weights, ".safetensors")
                      ? backbones::Flavor::kTorchvision
                      : backbones::Flavor::kKeras;
    backbone = backbones::CreateBackbone(spec);
  }
  if (!backbone.ok()) {
    const std::string message(backbone.status().message());
    if (message.find("input size") != std::string::npos) {
      return field("input_size", backbone.status());
    }
    return field("weights", backbone.status());
  }
  absl::StatusOr<std::vector<int64_t>> shape =
      (*backbone)->OutputShape(model.input_size);
  if (!shape.ok()) return field("input_size", shape.status());
  Classifier classifier(*backbone, model.head, num_classes, *shape);
  if (load_weights && !model.init_weights_file.empty()) {
    absl::Status s = classifier->Load(model.init_weights_file);
    if (!s.ok()) return field("init_weights_file", s);
  }
  return classifier;
}

}  // namespace transferd::core::train
