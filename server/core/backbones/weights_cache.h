// The server's cache of official ImageNet weights (`weights: "imagenet"`),
// <data-dir>/weights/: the file keras.applications would load for a backbone
// with include_top=False, under Keras' own file name. A file found there is
// used (after one checksum check); a missing one is downloaded from Keras'
// URL only when downloads are allowed, and otherwise the error says which
// file to fetch, from where, and where to put it. (`weights: "none"` is
// Keras' random initialisation and needs nothing from here.)
//
//   <dir>/<file_name>                   the weights, e.g. vgg16_weights_tf_dim_
//                                       ordering_tf_kernels_notop.h5
//   <dir>/.verified/<file_name>.<hex>   written once the file matched the
//                                       digest <hex>; holds the size and
//                                       mtime it had then
//   <dir>/.download-XXXXXX              a download in progress
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace transferd::core::backbones {

// backbone.h (LibTorch): not included here, so that the engine's headers
// (jobs.h, predictor.h, engine.h) stay free of LibTorch.
struct BackboneSpec;

// One file of keras.applications' ImageNet weights.
struct OfficialWeights {
  std::string file_name;  // Keras' name, also the name in the cache
  std::string url;        // where keras.applications downloads it from
  // Lowercase hex digests; either may be empty. Keras publishes md5 digests
  // (get_file's file_hash) for VGG and ResNet and none for MobileNet; a
  // sha256 is given only where one is known from a checked copy of the file.
  std::string sha256;
  std::string md5;
};

// The include_top=False ImageNet weights keras.applications loads for
// `spec` at `input_size` x `input_size` pixels: vgg16, vgg19 and resnet50
// have one file for every size; mobilenet has one per alpha (0.25, 0.5, 0.75,
// 1.0) and input size 128, 160, 192 or 224, and mobilenet_v2 one per alpha
// (0.35, 0.5, 0.75, 1.0, 1.3, 1.4) and size 96, 128, 160, 192 or 224 -- for
// any other size Keras loads the 224 file, and so does this. INVALID_ARGUMENT
// for an unknown backbone, an alpha without ImageNet weights, or the
// torchvision flavour (its weights are not Keras files).
absl::StatusOr<OfficialWeights> OfficialKerasWeights(const BackboneSpec& spec,
                                                     int input_size);

struct WeightsCacheOptions {
  // The cache folder, <data-dir>/weights/.
  std::filesystem::path dir;
  // Whether a missing file may be downloaded (--allow-weight-downloads).
  bool allow_download = false;
  // Replaces "https://storage.googleapis.com/tensorflow/keras-applications"
  // at the start of the official URLs: a mirror, or a local server in tests.
  std::string base_url_override;
  // Limit on one whole download, in seconds.
  int timeout_seconds = 600;
  // Expected digests by file name, replacing the official ones: 64 hex digits
  // are a sha256, 32 an md5. For tests (small fake files) and for mirrors
  // that serve re-packed files; never needed with the official URLs.
  std::map<std::string, std::string> digest_overrides;
};

// The path of the official weights for `spec` (see OfficialKerasWeights) in
// the cache, downloading them first when missing and allowed:
//   - present: returned once its digest matched (checked the first time and
//     again whenever its size or mtime changed); DATA_LOSS naming the file,
//     the expected and the found digest when it does not match. A file with
//     no known digest is returned unchecked (the user put it there).
//   - missing, downloads off: FAILED_PRECONDITION naming the file, the URL to
//     fetch it from and the folder to put it in.
//   - missing, downloads on: fetched with libcurl (redirects followed, HTTP
//     errors fail) into a temporary file beside it, checked, fsync()ed and
//     renamed into place. FAILED_PRECONDITION without fetching anything when
//     no digest of the file is known; NOT_FOUND for HTTP 404/410,
//     UNAVAILABLE for other network and HTTP failures, DATA_LOSS when the
//     digest does not match. A failed download leaves nothing behind.
absl::StatusOr<std::filesystem::path> ResolveImagenetWeights(
    const BackboneSpec& spec, int input_size,
    const WeightsCacheOptions& options);

// What ResolveImagenetWeights would find, without fetching or hashing
// anything: OK when the file is in the cache (its digest is checked when it
// is used) or missing but may be downloaded; else the same
// FAILED_PRECONDITION (or INVALID_ARGUMENT) ResolveImagenetWeights returns.
// Run when a job is submitted, so that it is refused then, not failed later.
absl::Status CheckImagenetWeights(const BackboneSpec& spec, int input_size,
                                  const WeightsCacheOptions& options);

// Names of the weight files (*.h5, *.safetensors) in `dir`, sorted; empty
// when `dir` does not exist. For GetServerInfo's weights_available.
std::vector<std::string> CachedWeightFiles(const std::filesystem::path& dir);

}  // namespace transferd::core::backbones
