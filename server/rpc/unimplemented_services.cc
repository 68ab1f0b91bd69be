#include "server/rpc/unimplemented_services.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/core/build_info.h"

namespace transferd::rpc {
namespace {

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

// Reactors that finish at once. Finish may be called before gRPC binds the
// reactor; the operation is queued until then.
template <class Request>
class FinishedReader final : public grpc::ServerReadReactor<Request> {
 public:
  explicit FinishedReader(const char* method) {
    this->Finish(Unimplemented(method));
  }
  void OnDone() override { delete this; }
};

template <class Response>
class FinishedWriter final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit FinishedWriter(const char* method) {
    this->Finish(Unimplemented(method));
  }
  void OnDone() override { delete this; }
};

template <class Request, class Response>
class FinishedBidi final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit FinishedBidi(const char* method) {
    this->Finish(Unimplemented(method));
  }
  void OnDone() override { delete this; }
};

}  // namespace

// ---- Jobs -------------------------------------------------------------------

grpc::ServerUnaryReactor* UnimplementedJobsService::CreateJob(
    grpc::CallbackServerContext* ctx, const v1::CreateJobRequest*, v1::Job*) {
  return FinishUnary(ctx, "Jobs.CreateJob");
}
grpc::ServerUnaryReactor* UnimplementedJobsService::GetJob(
    grpc::CallbackServerContext* ctx, const v1::GetJobRequest*, v1::Job*) {
  return FinishUnary(ctx, "Jobs.GetJob");
}
grpc::ServerUnaryReactor* UnimplementedJobsService::ListJobs(
    grpc::CallbackServerContext* ctx, const v1::ListJobsRequest*,
    v1::ListJobsResponse*) {
  return FinishUnary(ctx, "Jobs.ListJobs");
}
grpc::ServerUnaryReactor* UnimplementedJobsService::CancelJob(
    grpc::CallbackServerContext* ctx, const v1::CancelJobRequest*, v1::Job*) {
  return FinishUnary(ctx, "Jobs.CancelJob");
}
grpc::ServerWriteReactor<v1::JobEvent>* UnimplementedJobsService::WatchJob(
    grpc::CallbackServerContext*, const v1::WatchJobRequest*) {
  return new FinishedWriter<v1::JobEvent>("Jobs.WatchJob");
}
grpc::ServerUnaryReactor* UnimplementedJobsService::ListJobPredictions(
    grpc::CallbackServerContext* ctx, const v1::ListJobPredictionsRequest*,
    v1::ListJobPredictionsResponse*) {
  return FinishUnary(ctx, "Jobs.ListJobPredictions");
}

// ---- Models -----------------------------------------------------------------

grpc::ServerUnaryReactor* UnimplementedModelsService::GetModel(
    grpc::CallbackServerContext* ctx, const v1::GetModelRequest*, v1::Model*) {
  return FinishUnary(ctx, "Models.GetModel");
}
grpc::ServerUnaryReactor* UnimplementedModelsService::ListModels(
    grpc::CallbackServerContext* ctx, const v1::ListModelsRequest*,
    v1::ListModelsResponse*) {
  return FinishUnary(ctx, "Models.ListModels");
}
grpc::ServerUnaryReactor* UnimplementedModelsService::DeleteModel(
    grpc::CallbackServerContext* ctx, const v1::DeleteModelRequest*,
    google::protobuf::Empty*) {
  return FinishUnary(ctx, "Models.DeleteModel");
}
grpc::ServerUnaryReactor* UnimplementedModelsService::SetAlias(
    grpc::CallbackServerContext* ctx, const v1::SetAliasRequest*, v1::Alias*) {
  return FinishUnary(ctx, "Models.SetAlias");
}
grpc::ServerUnaryReactor* UnimplementedModelsService::DeleteAlias(
    grpc::CallbackServerContext* ctx, const v1::DeleteAliasRequest*,
    google::protobuf::Empty*) {
  return FinishUnary(ctx, "Models.DeleteAlias");
}
grpc::ServerUnaryReactor* UnimplementedModelsService::ListAliases(
    grpc::CallbackServerContext* ctx, const v1::ListAliasesRequest*,
    v1::ListAliasesResponse*) {
  return FinishUnary(ctx, "Models.ListAliases");
}
grpc::ServerWriteReactor<v1::ExportModelChunk>*
UnimplementedModelsService::ExportModel(grpc::CallbackServerContext*,
                                        const v1::ExportModelRequest*) {
  return new FinishedWriter<v1::ExportModelChunk>("Models.ExportModel");
}
grpc::ServerReadReactor<v1::ImportModelRequest>*
UnimplementedModelsService::ImportModel(grpc::CallbackServerContext*,
                                        v1::Model*) {
  return new FinishedReader<v1::ImportModelRequest>("Models.ImportModel");
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
