// The Open Inference Protocol ("KServe v2", proto/inference/) over the
// engine: how a transferd model looks as an OIP model, and the conversions
// between its tensors and a Predict call. Shared by the gRPC service
// (oip_service.cc) and the REST form on the HTTP port (server/http/
// oip_rest.cc), which builds the same ModelInferRequest from its JSON; no
// gRPC headers.
//
// A model takes one of two inputs and returns up to two outputs:
//   images         BYTES [N]          encoded JPEG/PNG files, decoded and
//                                     resized exactly as Predict does
//   pixels         UINT8 [N,S,S,3]    RGB pixels already at the model's input
//                                     size S, used as they are
//   probabilities  FP32  [N,C]        class probabilities, in the order of
//                                     the model's classes
//   labels         BYTES [N]          the most probable class's name
// An output asked for with the parameter "classification": k becomes BYTES
// [N,k]: the top k classes as "score:index:label" (the classification
// extension).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/core/model_info.h"
#include "server/core/predictor.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api

namespace transferd::rpc::oip {

inline constexpr char kImages[] = "images";
inline constexpr char kPixels[] = "pixels";
inline constexpr char kProbabilities[] = "probabilities";
inline constexpr char kLabels[] = "labels";
// What transferd reports as its ServerMetadata.extensions.
inline constexpr const char* kExtensions[] = {"classification",
                                              "binary_tensor_data"};

// The metadata of `model`, served as `name` (an alias or the model id);
// its one version is the model id.
void ModelMetadataToProto(const std::string& name, const core::ModelInfo& model,
                          inference::ModelMetadataResponse* out);

// What a ModelInferRequest asks of the predictor.
struct InferCall {
  std::vector<std::string> images;  // encoded files, or pixels
  int pixel_size = 0;               // > 0: `images` hold S x S x 3 pixels
  struct Output {
    std::string name;
    int classification = 0;  // > 0: the top k as strings
  };
  std::vector<Output> outputs;  // in the order answered
};

// The input tensor (from contents or raw_input_contents) and the outputs
// asked for. INVALID_ARGUMENT naming the tensor for an unknown name, a wrong
// datatype or shape, data that does not match the shape, or a bad parameter.
absl::StatusOr<InferCall> ParseInferRequest(
    const inference::ModelInferRequest& request);

// The outputs for the predictor's answer, as raw_output_contents (raw) or
// contents. A request fails as a whole (the protocol has no per-image
// status): INVALID_ARGUMENT naming the first image that could not be read.
// A classification k beyond the model's classes is INVALID_ARGUMENT.
absl::Status InferResponseFromOutcome(const InferCall& call,
                                      const core::PredictOutcome& outcome,
                                      bool raw,
                                      inference::ModelInferResponse* out);

// BYTES tensors in raw form: each element as a 4-byte little-endian length
// and its bytes. INVALID_ARGUMENT naming `tensor` when `raw` does not hold
// exactly `count` elements.
absl::StatusOr<std::vector<std::string>> SplitBytes(std::string_view raw,
                                                    int64_t count,
                                                    std::string_view tensor);
void AppendBytesElement(std::string_view element, std::string* raw);

// ---- The protocol's calls over the engine API (both front ends) ----------

// ServerMetadata: "transferd", its version, kExtensions.
void ServerMetadata(inference::ServerMetadataResponse* out);
// ModelReady: loaded and warmed; a model that is not starts loading (the
// way clients poll it). NOT_FOUND for an unknown name or version.
absl::StatusOr<bool> ModelReady(core::api::EngineApi& api,
                                const std::string& name,
                                const std::string& version);
absl::Status ModelMetadata(core::api::EngineApi& api, const std::string& name,
                           const std::string& version,
                           inference::ModelMetadataResponse* out);
// ModelInfer: parses `request` (which must outlive `done`), submits it to the
// model's queue and answers through `done`, on whichever thread the
// predictor answers; outputs raw when `raw_outputs`.
void ModelInfer(
    core::api::EngineApi& api, const inference::ModelInferRequest& request,
    std::chrono::steady_clock::time_point deadline,
    std::shared_ptr<std::atomic<bool>> cancelled, bool raw_outputs,
    std::function<void(absl::Status, inference::ModelInferResponse)> done);

}  // namespace transferd::rpc::oip
