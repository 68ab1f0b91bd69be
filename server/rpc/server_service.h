// transferd.v1.Server: describes the running server.
#pragma once

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
  // `static_info`: what the engine does not know (the limits in force, the
  // services this build implements, library versions), reported verbatim
  // with the engine's own description (ServerInfoToProto).
  ServerService(core::api::EngineApi& api, const auth::Authorizer& auth,
                transferd::v1::ServerInfo static_info);

  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::GetServerInfoRequest* request,
      transferd::v1::ServerInfo* response) override;

 private:
  core::api::EngineApi& api_;
  const auth::Authorizer& auth_;
  const transferd::v1::ServerInfo static_info_;
};

}  // namespace transferd::rpc
