#include "server/rpc/unimplemented_services.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/core/build_info.h"

namespace transferd::rpc {
grpc::Status Unimplemented(const char* method) {
  return grpc::Status(
      grpc::StatusCode::UNIMPLEMENTED,
      absl::StrCat("transferd.v1.", method,
                   " is not implemented in this build of transferd (",
                   core::GetBuildInfo().version,
                   "); Server.GetServerInfo lists the implemented services"));
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                      const char* method) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(Unimplemented(method));
  return reactor;
}

// ---- Inference --------------------------------------------------------------

grpc::ServerUnaryReactor* UnimplementedInferenceService::Predict(
    grpc::CallbackServerContext* ctx, const v1::PredictRequest*,
    v1::PredictResponse*) {
  return FinishUnary(ctx, "Inference.Predict");
}
grpc::ServerBidiReactor<v1::PredictStreamRequest, v1::PredictStreamResponse>*
UnimplementedInferenceService::PredictStream(grpc::CallbackServerContext*) {
  return new FinishedBidi<v1::PredictStreamRequest, v1::PredictStreamResponse>(
      "Inference.PredictStream");
}

}  // namespace transferd::rpc
