// transferd.v1.Jobs over the engine's job queue, and transferd.v1.Models
// over its registry (models, aliases, export and import of archives; see
// server/core/model_archive.h).
#pragma once

#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd::core {
class Engine;
struct JobRecord;
struct JobEvent;
struct ModelInfo;
}  // namespace transferd::core

namespace transferd::rpc {

class Authorizer;

class JobsService final : public transferd::v1::Jobs::CallbackService {
 public:
  JobsService(core::Engine& engine, const Authorizer& auth) : engine_(engine), auth_(auth) {}

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* ctx,
                                      const transferd::v1::CreateJobRequest* request,
                                      transferd::v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const transferd::v1::GetJobRequest* request,
                                   transferd::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const transferd::v1::ListJobsRequest* request,
                                     transferd::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const transferd::v1::CancelJobRequest* request,
                                      transferd::v1::Job* response) override;
  grpc::ServerWriteReactor<transferd::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* ctx, const transferd::v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListJobPredictions(
      grpc::CallbackServerContext* ctx, const transferd::v1::ListJobPredictionsRequest* request,
      transferd::v1::ListJobPredictionsResponse* response) override;

 private:
  core::Engine& engine_;
  const Authorizer& auth_;
};

class ModelsService final : public transferd::v1::Models::CallbackService {
 public:
  ModelsService(core::Engine& engine, const Authorizer& auth) : engine_(engine), auth_(auth) {}

  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* ctx,
                                     const transferd::v1::GetModelRequest* request,
                                     transferd::v1::Model* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const transferd::v1::ListModelsRequest* request,
                                       transferd::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* ctx,
                                        const transferd::v1::DeleteModelRequest* request,
                                        google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* SetAlias(grpc::CallbackServerContext* ctx,
                                     const transferd::v1::SetAliasRequest* request,
                                     transferd::v1::Alias* response) override;
  grpc::ServerUnaryReactor* DeleteAlias(grpc::CallbackServerContext* ctx,
                                        const transferd::v1::DeleteAliasRequest* request,
                                        google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* ListAliases(grpc::CallbackServerContext* ctx,
                                        const transferd::v1::ListAliasesRequest* request,
                                        transferd::v1::ListAliasesResponse* response) override;
  grpc::ServerWriteReactor<transferd::v1::ExportModelChunk>* ExportModel(
      grpc::CallbackServerContext* ctx, const transferd::v1::ExportModelRequest* request) override;
  grpc::ServerReadReactor<transferd::v1::ImportModelRequest>* ImportModel(
      grpc::CallbackServerContext* ctx, transferd::v1::Model* response) override;

 private:
  core::Engine& engine_;
  const Authorizer& auth_;
};

void ToProto(const core::JobRecord& in, transferd::v1::Job* out);
void ToProto(const core::JobEvent& in, transferd::v1::JobEvent* out);
void ToProto(const core::ModelInfo& in, transferd::v1::Model* out);

}  // namespace transferd::rpc
