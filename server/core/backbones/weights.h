// Loading weight files into a backbone. Every loader stages and checks all
// tensors first and copies only when everything matched, so a failure never
// leaves a backbone loaded half-way. Errors name the layer and the expected
// and found shapes.
#pragma once

#include <filesystem>

#include "absl/status/status.h"
#include "server/core/backbones/backbone.h"
#include "server/core/backbones/weights_cache.h"

namespace transferd::core::backbones {

// A Keras .h5 weights file (keras.applications' *_notop.h5), read by layer
// name: Conv2D kernels HWIO -> OIHW, depthwise kernels (kh, kw, C, 1) ->
// (C, 1, kh, kw), BatchNorm gamma/beta/moving_mean/moving_variance. Layers of
// the file that the backbone lacks (a classifier top) are ignored. The
// backbone must have the Keras flavour.
absl::Status LoadKerasH5(BackboneImpl& backbone,
                         const std::filesystem::path& path);

// A safetensors file with torchvision's state_dict names ("features.0.weight",
// "layer1.0.conv1.weight", ...) for vgg16, vgg19, resnet50 and mobilenet_v2;
// classifier tensors are ignored. The backbone must have the torchvision
// flavour.
absl::Status LoadTorchvisionSafetensors(BackboneImpl& backbone,
                                        const std::filesystem::path& path);

// Builds a backbone and loads the weights a job or model names:
//   "imagenet"  the official Keras file (ResolveImagenetWeights: the cache in
//               <data-dir>/weights/, downloaded only when allowed);
//   "none"      Keras' random initialisation;
//   FILE        a file in the weights folder: *.h5 (Keras layout, Keras
//               flavour) or *.safetensors (torchvision names, torchvision
//               flavour). Plain names only: no '/', no "..".
// The flavour, and so the preprocessing, follows from the weights.
absl::StatusOr<Backbone> BuildBackbone(const std::string& name, double alpha,
                                       const std::string& weights,
                                       int input_size,
                                       const WeightsCacheOptions& cache);

// Whether BuildBackbone could get `weights` for this backbone, without
// building it or reading the file: OK for "none", for an "imagenet" file in
// the cache or one that may be downloaded, and for a FILE present in the
// weights folder; else FAILED_PRECONDITION saying what is missing and where
// it goes (INVALID_ARGUMENT for a bad name). Checked when a job is submitted.
absl::Status CheckWeightsObtainable(const std::string& name, double alpha,
                                    const std::string& weights, int input_size,
                                    const WeightsCacheOptions& cache);

// torchvision's name for one of the backbone's tensors ("block1_conv1.weight"
// -> "features.0.weight"); empty when there is none.
std::string TorchvisionName(const BackboneSpec& spec, const std::string& param);

}  // namespace transferd::core::backbones
