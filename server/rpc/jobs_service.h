// transferd.v1.Jobs over the engine API (job queue and event log).
#pragma once

#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class JobsService final : public transferd::v1::Jobs::CallbackService {
 public:
  JobsService(core::api::EngineApi& api, const auth::Authorizer& auth)
      : api_(api), auth_(auth) {}

  grpc::ServerUnaryReactor* CreateJob(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::CreateJobRequest* request,
      transferd::v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const transferd::v1::GetJobRequest* request,
                                   transferd::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ListJobsRequest* request,
      transferd::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::CancelJobRequest* request,
      transferd::v1::Job* response) override;
  grpc::ServerWriteReactor<transferd::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListJobPredictions(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ListJobPredictionsRequest* request,
      transferd::v1::ListJobPredictionsResponse* response) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
};

}  // namespace transferd::rpc
