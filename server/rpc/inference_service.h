// transferd.v1.Inference over the engine API (the predictor), and the per-alias
// health statuses: the grpc.health.v1 service name "aliases/{alias}" is
// SERVING once the model the alias points at is loaded and warmed.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transferd/v1/inference.grpc.pb.h"

namespace grpc {
class HealthCheckServiceInterface;
}  // namespace grpc

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class InferenceService final
    : public transferd::v1::Inference::CallbackService {
 public:
  // Predict deadlines are capped at `max_request_time` from arrival.
  InferenceService(core::api::EngineApi& api, const auth::Authorizer& auth,
                   std::chrono::milliseconds max_request_time)
      : api_(api),
        auth_(auth),
        max_request_time_(max_request_time),
        gate_(std::make_shared<Gate>()) {
    gate_->self = this;
  }
  ~InferenceService() override { Detach(); }

  // Once the engine is ready: publishes a health status per alias, keeps it
  // current as aliases move and models load or unload, and warms the models
  // the aliases point at. `health`: the main port's health service and the
  // health-only port's, when there is one (probes of a TLS server ask
  // there).
  void EngineReady(std::vector<grpc::HealthCheckServiceInterface*> health);
  // Stops publishing: the engine's listeners (which live as long as the
  // engine) become no-ops, after any call in progress. Before the health
  // services go.
  void Detach();

  grpc::ServerUnaryReactor* Predict(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::PredictRequest* request,
      transferd::v1::PredictResponse* response) override;
  grpc::ServerBidiReactor<transferd::v1::PredictStreamRequest,
                          transferd::v1::PredictStreamResponse>*
  PredictStream(grpc::CallbackServerContext* ctx) override;

  // The health service name of an alias.
  static std::string HealthName(const std::string& alias) {
    return "aliases/" + alias;
  }

 private:
  // Publishes `alias`'s status from the registry's current answer.
  void AliasChanged(const std::string& alias);
  void ModelReady(const std::string& model_id, bool ready);

  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
  const std::chrono::milliseconds max_request_time_;
  std::mutex mu_;
  std::vector<grpc::HealthCheckServiceInterface*> health_;
  // What the engine's listeners hold: they reach this service only while
  // `self` is set.
  struct Gate {
    std::mutex mu;
    InferenceService* self = nullptr;
  };
  std::shared_ptr<Gate> gate_;
  std::map<std::string, std::string> aliases_;  // alias -> model id
};

}  // namespace transferd::rpc
