#include "server/core/backbones/weights.h"

#include <map>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/core/backbones/keras_h5.h"
#include "server/core/backbones/safetensors.h"
#include "server/core/util/status_macros.h"

namespace transferd::core::backbones {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// The backbone's tensors by name: parameters and BatchNorm running stats.
std::map<std::string, torch::Tensor> Targets(BackboneImpl& backbone) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : backbone.named_parameters())
    targets[p.key()] = p.value();
  for (const auto& b : backbone.named_buffers()) {
    if (absl::EndsWith(b.key(), "num_batches_tracked")) continue;
    targets[b.key()] = b.value();
  }
  return targets;
}

// Copies staged tensors into the backbone after checking every shape.
absl::Status Commit(BackboneImpl& backbone,
                    const std::map<std::string, torch::Tensor>& staged,
                    const std::string& source) {
  auto targets = Targets(backbone);
  for (const auto& [name, target] : targets) {
    auto it = staged.find(name);
    if (it == staged.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": no weights for ", name, " of ", backbone.spec().name,
          " (expected shape ", ShapeString(target.sizes()), ")"));
    }
    if (it->second.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": ", name, " has shape ", ShapeString(it->second.sizes()),
          " but ", backbone.spec().name, " alpha ", backbone.spec().alpha,
          " expects ", ShapeString(target.sizes())));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    target.copy_(staged.at(name).to(target.dtype()));
  }
  return absl::OkStatus();
}

// Stages the weights of `layer` from `file` under the backbone's tensor
// names, converted to PyTorch's layouts.
absl::Status StageKerasLayer(const KerasH5File& file, const KerasLayer& layer,
                             std::map<std::string, torch::Tensor>* staged) {
  TRANSFERD_ASSIGN_OR_RETURN(auto weights, file.LayerWeights(layer.name));
  // Weight names end in "/kernel:0", "/gamma:0", ...
  std::map<std::string, torch::Tensor> by_kind;
  for (auto& [wname, tensor] : weights) {
    std::string kind = wname.substr(wname.rfind('/') + 1);
    kind = kind.substr(0, kind.find(':'));
    by_kind[kind] = tensor;
  }
  auto take = [&](const std::string& kind) -> absl::StatusOr<torch::Tensor> {
    auto it = by_kind.find(kind);
    if (it == by_kind.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": layer \"", layer.name, "\" has no ",
                       kind, " (found ", by_kind.size(), " weights)"));
    }
    return it->second;
  };
  const std::string p = layer.name + ".";
  switch (layer.kind) {
    case KerasLayer::Kind::kConv: {
      TRANSFERD_ASSIGN_OR_RETURN(torch::Tensor k, take("kernel"));
      if (k.dim() != 4) {
        return absl::InvalidArgumentError(absl::StrCat(
            file.path(), ": layer \"", layer.name, "\" kernel has shape ",
            ShapeString(k.sizes()), ", expected 4 dimensions"));
      }
      (*staged)[p + "weight"] =
          k.permute({3, 2, 0, 1}).contiguous();  // HWIO->OIHW
      if (layer.has_bias) {
        TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "bias"], take("bias"));
      }
      break;
    }
    case KerasLayer::Kind::kDepthwise: {
      TRANSFERD_ASSIGN_OR_RETURN(torch::Tensor k, take("depthwise_kernel"));
      if (k.dim() != 4) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.path(), ": layer \"", layer.name,
                         "\" depthwise_kernel has shape ",
                         ShapeString(k.sizes()), ", expected 4 dimensions"));
      }
      // (kh, kw, C, 1) -> (C, 1, kh, kw)
      (*staged)[p + "weight"] = k.permute({2, 3, 0, 1}).contiguous();
      if (layer.has_bias) {
        TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "bias"], take("bias"));
      }
      break;
    }
    case KerasLayer::Kind::kBatchNorm: {
      TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "weight"], take("gamma"));
      TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "bias"], take("beta"));
      TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "running_mean"],
                                 take("moving_mean"));
      TRANSFERD_ASSIGN_OR_RETURN((*staged)[p + "running_var"],
                                 take("moving_variance"));
      break;
    }
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadKerasH5(BackboneImpl& backbone,
                         const std::filesystem::path& path) {
  if (backbone.spec().flavor != Flavor::kKeras) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Keras .h5 weights need the Keras flavour of ", backbone.spec().name));
  }
  TRANSFERD_ASSIGN_OR_RETURN(std::unique_ptr<KerasH5File> file,
                             KerasH5File::Open(path));
  std::map<std::string, torch::Tensor> staged;
  int matched = 0;
  for (const KerasLayer& layer : backbone.layers()) {
    if (layer.module == nullptr) continue;
    if (!file->HasLayer(layer.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": layer \"", layer.name, "\" of ",
          backbone.spec().name, " is missing (the file has ",
          file->layer_names().size(),
          matched == 0 ? " layers, none of them ours: weights of another "
                         "architecture?)"
                       : " layers)"));
    }
    ++matched;
    TRANSFERD_RETURN_IF_ERROR(StageKerasLayer(*file, layer, &staged));
  }
  return Commit(backbone, staged, file->path());
}

namespace {

// The backbone `name` at `alpha` in the flavour its `weights` imply.
absl::StatusOr<BackboneSpec> SpecFor(const std::string& name, double alpha,
                                     const std::string& weights) {
  BackboneSpec spec;
  spec.name = name;
  spec.alpha = alpha;
  if (weights == "none" || weights == "imagenet") {
    spec.flavor = Flavor::kKeras;
  } else {
    if (weights.empty() || weights.find('/') != std::string::npos ||
        weights.find('\\') != std::string::npos || weights == "." ||
        weights == ".." || weights.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights \"", weights,
                       "\": expected imagenet, none, or the name of "
                       "a file in the server's weights folder"));
    }
    if (absl::EndsWith(weights, ".safetensors")) {
      spec.flavor = Flavor::kTorchvision;
    } else if (absl::EndsWith(weights, ".h5")) {
      spec.flavor = Flavor::kKeras;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("weights \"", weights,
                       "\": unknown format; expected a Keras .h5 or a "
                       "torchvision .safetensors file"));
    }
  }
  return spec;
}

}  // namespace

absl::Status CheckWeightsObtainable(const std::string& name, double alpha,
                                    const std::string& weights, int input_size,
                                    const WeightsCacheOptions& cache) {
  TRANSFERD_ASSIGN_OR_RETURN(const BackboneSpec spec,
                             SpecFor(name, alpha, weights));
  if (weights == "none") return absl::OkStatus();
  if (weights == "imagenet") {
    return CheckImagenetWeights(spec, input_size, cache);
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(cache.dir / weights, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("weights file ", weights, " is not in the weights folder ",
                     cache.dir.string(), "; put it there first"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Backbone> BuildBackbone(const std::string& name, double alpha,
                                       const std::string& weights,
                                       int input_size,
                                       const WeightsCacheOptions& cache) {
  TRANSFERD_ASSIGN_OR_RETURN(const BackboneSpec spec,
                             SpecFor(name, alpha, weights));
  TRANSFERD_ASSIGN_OR_RETURN(Backbone backbone, CreateBackbone(spec));
  TRANSFERD_RETURN_IF_ERROR(backbone->OutputShape(input_size).status());
  if (weights == "none") return backbone;
  if (weights == "imagenet") {
    TRANSFERD_ASSIGN_OR_RETURN(std::filesystem::path file,
                               ResolveImagenetWeights(spec, input_size, cache));
    TRANSFERD_RETURN_IF_ERROR(LoadKerasH5(*backbone, file));
    return backbone;
  }
  const std::filesystem::path file = cache.dir / weights;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return absl::NotFoundError(absl::StrCat("weights file ", weights,
                                            " is not in the weights folder ",
                                            cache.dir.string()));
  }
  if (spec.flavor == Flavor::kTorchvision) {
    TRANSFERD_RETURN_IF_ERROR(LoadTorchvisionSafetensors(*backbone, file));
  } else {
    TRANSFERD_RETURN_IF_ERROR(LoadKerasH5(*backbone, file));
  }
  return backbone;
}

std::string TorchvisionName(const BackboneSpec& spec,
                            const std::string& param) {
  const std::vector<std::string> parts = absl::StrSplit(param, '.');
  if (parts.size() != 2) return {};
  const std::string& layer = parts[0];
  const std::string& leaf = parts[1];
  if (spec.name == "vgg16" || spec.name == "vgg19") {
    // block{b}_conv{i} -> features.{index}: convs and ReLUs alternate, each
    // block ends with a max-pool.
    const std::vector<int> convs = spec.name == "vgg16"
                                       ? std::vector<int>{2, 2, 3, 3, 3}
                                       : std::vector<int>{2, 2, 4, 4, 4};
    int index = 0;
    for (int b = 0; b < 5; ++b) {
      for (int i = 0; i < convs[b]; ++i) {
        if (layer == absl::StrCat("block", b + 1, "_conv", i + 1)) {
          return absl::StrCat("features.", index, ".", leaf);
        }
        index += 2;
      }
      index += 1;
    }
    return {};
  }
  if (spec.name == "resnet50") {
    if (layer == "conv1_conv") return "conv1." + leaf;
    if (layer == "conv1_bn") return "bn1." + leaf;
    // conv{s}_block{b}_{k}_{conv|bn}
    int stage = 0, block = 0;
    std::vector<std::string> p = absl::StrSplit(layer, '_');
    if (p.size() != 4 || !absl::SimpleAtoi(p[0].substr(4), &stage) ||
        !absl::SimpleAtoi(p[1].substr(5), &block)) {
      return {};
    }
    const std::string base =
        absl::StrCat("layer", stage - 1, ".", block - 1, ".");
    if (p[2] == "0") {
      return base + (p[3] == "conv" ? "downsample.0." : "downsample.1.") + leaf;
    }
    return absl::StrCat(base, p[3] == "conv" ? "conv" : "bn", p[2], ".", leaf);
  }
  if (spec.name == "mobilenet_v2") {
    if (layer == "Conv1") return "features.0.0." + leaf;
    if (layer == "bn_Conv1") return "features.0.1." + leaf;
    if (layer == "Conv_1") return "features.18.0." + leaf;
    if (layer == "Conv_1_bn") return "features.18.1." + leaf;
    if (absl::StartsWith(layer, "expanded_conv_")) {
      const std::string op = layer.substr(14);
      if (op == "depthwise") return "features.1.conv.0.0." + leaf;
      if (op == "depthwise_BN") return "features.1.conv.0.1." + leaf;
      if (op == "project") return "features.1.conv.1." + leaf;
      if (op == "project_BN") return "features.1.conv.2." + leaf;
      return {};
    }
    int id = 0;
    std::vector<std::string> p = absl::StrSplit(layer, absl::MaxSplits('_', 2));
    if (p.size() != 3 || p[0] != "block" || !absl::SimpleAtoi(p[1], &id))
      return {};
    const std::string base = absl::StrCat("features.", id + 1, ".conv.");
    const std::string& op = p[2];
    if (op == "expand") return base + "0.0." + leaf;
    if (op == "expand_BN") return base + "0.1." + leaf;
    if (op == "depthwise") return base + "1.0." + leaf;
    if (op == "depthwise_BN") return base + "1.1." + leaf;
    if (op == "project") return base + "2." + leaf;
    if (op == "project_BN") return base + "3." + leaf;
  }
  return {};
}

absl::Status LoadTorchvisionSafetensors(BackboneImpl& backbone,
                                        const std::filesystem::path& path) {
  if (backbone.spec().flavor != Flavor::kTorchvision) {
    return absl::InvalidArgumentError(
        absl::StrCat("torchvision weights need the torchvision flavour of ",
                     backbone.spec().name));
  }
  TRANSFERD_ASSIGN_OR_RETURN(NamedTensors file, ReadSafetensors(path));
  std::map<std::string, torch::Tensor> staged;
  for (const auto& [name, target] : Targets(backbone)) {
    const std::string key = TorchvisionName(backbone.spec(), name);
    auto it = key.empty() ? file.end() : file.find(key);
    if (it == file.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path.string(), ": no tensor \"", key.empty() ? name : key, "\" for ",
          name, " of ", backbone.spec().name, " (expected shape ",
          ShapeString(target.sizes()),
          "; torchvision weights of another "
          "architecture?)"));
    }
    staged[name] = it->second;
  }
  return Commit(backbone, staged, path.string());
}

}  // namespace transferd::core::backbones
