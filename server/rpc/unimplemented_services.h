// Services of the transferd.v1 contract whose engine parts have not landed
// yet. Every RPC answers UNIMPLEMENTED with a message naming it, so clients
// written against the full contract get a precise answer today. Each class
// is replaced by a real service as its issue lands.
#pragma once

#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd::rpc {

namespace v1 = ::transferd::v1;

class UnimplementedJobsService final : public v1::Jobs::CallbackService {
 public:
  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext*,
                                      const v1::CreateJobRequest*,
                                      v1::Job*) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext*,
                                   const v1::GetJobRequest*, v1::Job*) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext*,
                                     const v1::ListJobsRequest*,
                                     v1::ListJobsResponse*) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext*,
                                      const v1::CancelJobRequest*,
                                      v1::Job*) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext*, const v1::WatchJobRequest*) override;
  grpc::ServerUnaryReactor* ListJobPredictions(
      grpc::CallbackServerContext*, const v1::ListJobPredictionsRequest*,
      v1::ListJobPredictionsResponse*) override;
};

class UnimplementedModelsService final : public v1::Models::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext*,
                                     const v1::GetModelRequest*,
                                     v1::Model*) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext*,
                                       const v1::ListModelsRequest*,
                                       v1::ListModelsResponse*) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext*,
                                        const v1::DeleteModelRequest*,
                                        google::protobuf::Empty*) override;
  grpc::ServerUnaryReactor* SetAlias(grpc::CallbackServerContext*,
                                     const v1::SetAliasRequest*,
                                     v1::Alias*) override;
  grpc::ServerUnaryReactor* DeleteAlias(grpc::CallbackServerContext*,
                                        const v1::DeleteAliasRequest*,
                                        google::protobuf::Empty*) override;
  grpc::ServerUnaryReactor* ListAliases(grpc::CallbackServerContext*,
                                        const v1::ListAliasesRequest*,
                                        v1::ListAliasesResponse*) override;
  grpc::ServerWriteReactor<v1::ExportModelChunk>* ExportModel(
      grpc::CallbackServerContext*, const v1::ExportModelRequest*) override;
  grpc::ServerReadReactor<v1::ImportModelRequest>* ImportModel(
      grpc::CallbackServerContext*, v1::Model*) override;
};

class UnimplementedInferenceService final
    : public v1::Inference::CallbackService {
 public:
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext*,
                                    const v1::PredictRequest*,
                                    v1::PredictResponse*) override;
  grpc::ServerBidiReactor<v1::PredictStreamRequest, v1::PredictStreamResponse>*
  PredictStream(grpc::CallbackServerContext*) override;
};

}  // namespace transferd::rpc
