// inference.GRPCInferenceService, the Open Inference Protocol ("KServe v2")
// over the engine API: the same models, the same per-model queue and dynamic
// batcher, limits and metrics as transferd.v1.Inference. Model names are
// aliases or model ids, a version is the model id (oip_conversions.h says
// which tensors a model takes and returns).
//
// Roles: ServerLive and ServerReady need no token (they are probes);
// ServerMetadata, ModelMetadata and ModelReady need a viewer token,
// ModelInfer a trainer token (as Predict).
#pragma once

#include <chrono>

#include "inference/grpc_predict_v2.grpc.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class OipService final
    : public inference::GRPCInferenceService::CallbackService {
 public:
  // ModelInfer deadlines are capped at `max_request_time` from arrival.
  OipService(core::api::EngineApi& api, const auth::Authorizer& auth,
             std::chrono::milliseconds max_request_time)
      : api_(api), auth_(auth), max_request_time_(max_request_time) {}

  grpc::ServerUnaryReactor* ServerLive(
      grpc::CallbackServerContext* ctx,
      const inference::ServerLiveRequest* request,
      inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(
      grpc::CallbackServerContext* ctx,
      const inference::ServerReadyRequest* request,
      inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(
      grpc::CallbackServerContext* ctx,
      const inference::ModelReadyRequest* request,
      inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(
      grpc::CallbackServerContext* ctx,
      const inference::ServerMetadataRequest* request,
      inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(
      grpc::CallbackServerContext* ctx,
      const inference::ModelMetadataRequest* request,
      inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(
      grpc::CallbackServerContext* ctx,
      const inference::ModelInferRequest* request,
      inference::ModelInferResponse* response) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
  const std::chrono::milliseconds max_request_time_;
};

}  // namespace transferd::rpc
