#include "server/rpc/service_util.h"

#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/rpc/grpc_status.h"

namespace transferd::rpc {

grpc::Status Admit(const grpc::CallbackServerContext* ctx,
                   const core::api::EngineApi& api, const Authorizer& auth,
                   Role role, std::string_view method) {
  if (grpc::Status s = auth.Check(*ctx, role, method); !s.ok()) return s;
  return ToGrpcStatus(api.CheckReady());
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                 const grpc::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace transferd::rpc
