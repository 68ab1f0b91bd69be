// transferd.v1.Datasets over the engine API: the upload stream
// as a callback read reactor feeding a core::DatasetUpload chunk by chunk.
#pragma once

#include "transferd/v1/datasets.grpc.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class DatasetsService final : public transferd::v1::Datasets::CallbackService {
 public:
  DatasetsService(core::api::EngineApi& api, const auth::Authorizer& auth)
      : api_(api), auth_(auth) {}

  grpc::ServerReadReactor<transferd::v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* ctx,
      transferd::v1::UploadDatasetResponse* response) override;
  grpc::ServerUnaryReactor* GetDataset(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::GetDatasetRequest* request,
      transferd::v1::Dataset* response) override;
  grpc::ServerUnaryReactor* ListDatasets(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ListDatasetsRequest* request,
      transferd::v1::ListDatasetsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::DeleteDatasetRequest* request,
      google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* FindContent(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::FindContentRequest* request,
      transferd::v1::FindContentResponse* response) override;
  grpc::ServerReadReactor<transferd::v1::StageContentRequest>* StageContent(
      grpc::CallbackServerContext* ctx,
      transferd::v1::StageContentResponse* response) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
};

// The catalog's view of a dataset as the API's message.

}  // namespace transferd::rpc
