// transferd.v1.Models over the engine API (the model registry): models,
// aliases, and export and import of archives (server/core/model_archive.h).
#pragma once

#include <chrono>
#include <memory>

#include "transferd/v1/models.grpc.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class AliasWatchHub;

class ModelsService final : public transferd::v1::Models::CallbackService {
 public:
  // WatchAliases streams a heartbeat every `alias_heartbeat` while nothing
  // changes.
  ModelsService(
      core::api::EngineApi& api, const auth::Authorizer& auth,
      std::chrono::milliseconds alias_heartbeat = std::chrono::seconds(5));
  ~ModelsService() override;

  grpc::ServerUnaryReactor* GetModel(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::GetModelRequest* request,
      transferd::v1::Model* response) override;
  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ListModelsRequest* request,
      transferd::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteModel(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::DeleteModelRequest* request,
      google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* SetAlias(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::SetAliasRequest* request,
      transferd::v1::Alias* response) override;
  grpc::ServerUnaryReactor* DeleteAlias(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::DeleteAliasRequest* request,
      google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* ListAliases(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ListAliasesRequest* request,
      transferd::v1::ListAliasesResponse* response) override;
  grpc::ServerWriteReactor<transferd::v1::ExportModelChunk>* ExportModel(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::ExportModelRequest* request) override;
  grpc::ServerReadReactor<transferd::v1::ImportModelRequest>* ImportModel(
      grpc::CallbackServerContext* ctx,
      transferd::v1::Model* response) override;
  grpc::ServerWriteReactor<transferd::v1::AliasSnapshot>* WatchAliases(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::WatchAliasesRequest* request) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
  std::unique_ptr<AliasWatchHub> alias_watch_;
};

}  // namespace transferd::rpc
