// transferd.v1.Server: describes the running server.
#pragma once

#include <string>
#include <vector>

#include "transferd/v1/server.grpc.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class ServerService final : public transferd::v1::Server::CallbackService {
 public:
  // `limits` are the limits in force, `implemented` the services this build
  // implements (both reported verbatim).
  ServerService(core::api::EngineApi& api, const auth::Authorizer& auth,
                transferd::v1::Limits limits,
                std::vector<std::string> implemented);

  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::GetServerInfoRequest* request,
      transferd::v1::ServerInfo* response) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
  transferd::v1::Limits limits_;
  std::vector<std::string> implemented_;
};

}  // namespace transferd::rpc
