#include "server/rpc/oip_service.h"

#include <atomic>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/oip_conversions.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {
namespace {

constexpr char kService[] = "inference.GRPCInferenceService.";

}  // namespace

grpc::ServerUnaryReactor* OipService::ServerLive(
    grpc::CallbackServerContext* ctx,
    const inference::ServerLiveRequest* /*request*/,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OipService::ServerReady(
    grpc::CallbackServerContext* ctx,
    const inference::ServerReadyRequest* /*request*/,
    inference::ServerReadyResponse* response) {
  response->set_ready(api_.ready() && !api_.shutting_down());
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OipService::ModelReady(
    grpc::CallbackServerContext* ctx,
    const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kViewer,
                             std::string(kService) + "ModelReady");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<bool> ready =
      oip::ModelReady(api_, request->name(), request->version());
  if (!ready.ok()) return Answer(ctx, ToGrpcStatus(ready.status()));
  response->set_ready(*ready);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OipService::ServerMetadata(
    grpc::CallbackServerContext* ctx,
    const inference::ServerMetadataRequest* /*request*/,
    inference::ServerMetadataResponse* response) {
  if (grpc::Status s = CheckCaller(auth_, *ctx, Role::kViewer,
                                   std::string(kService) + "ServerMetadata");
      !s.ok())
    return Answer(ctx, s);
  oip::ServerMetadata(response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OipService::ModelMetadata(
    grpc::CallbackServerContext* ctx,
    const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kViewer,
                             std::string(kService) + "ModelMetadata");
      !s.ok())
    return Answer(ctx, s);
  return Answer(ctx, ToGrpcStatus(oip::ModelMetadata(
                         api_, request->name(), request->version(), response)));
}

grpc::ServerUnaryReactor* OipService::ModelInfer(
    grpc::CallbackServerContext* ctx,
    const inference::ModelInferRequest* request,
    inference::ModelInferResponse* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kTrainer,
                             std::string(kService) + "ModelInfer");
      !s.ok())
    return Answer(ctx, s);
  auto* reactor = new CancellableReactor();
  // Outputs as raw_output_contents, as Triton answers (its clients read
  // them there).
  oip::ModelInfer(api_, *request, SteadyDeadline(ctx, max_request_time_),
                  reactor->cancelled(), /*raw_outputs=*/true,
                  [reactor, response](absl::Status status,
                                      inference::ModelInferResponse out) {
                    if (status.ok()) *response = std::move(out);
                    reactor->Finish(ToGrpcStatus(status));
                  });
  return reactor;
}

}  // namespace transferd::rpc
