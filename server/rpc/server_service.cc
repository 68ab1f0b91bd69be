#include "server/rpc/server_service.h"

#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/rpc/conversions.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {

namespace v1 = transferd::v1;

ServerService::ServerService(core::api::EngineApi& api,
                             const auth::Authorizer& auth,
                             v1::ServerInfo static_info)
    : api_(api), auth_(auth), static_info_(std::move(static_info)) {}

grpc::ServerUnaryReactor* ServerService::GetServerInfo(
    grpc::CallbackServerContext* ctx,
    const v1::GetServerInfoRequest* /*request*/, v1::ServerInfo* response) {
  // Answered while the engine starts too (it says what the server is).
  if (grpc::Status s =
          CheckCaller(auth_, *ctx, Role::kViewer, "Server.GetServerInfo");
      !s.ok()) {
    return Answer(ctx, s);
  }
  *response = static_info_;
  ServerInfoToProto(api_.Info(), response);

  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace transferd::rpc
