#include "server/rpc/service_util.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "server/core/api/engine_api.h"
#include "server/rpc/grpc_status.h"

namespace transferd::rpc {

grpc::Status CheckCaller(const Authorizer& auth,
                         const grpc::ServerContextBase& ctx, Role role,
                         std::string_view method) {
  Authorizer::Caller caller;
  const auto& metadata = ctx.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    caller.authorization.emplace(it->second.data(), it->second.size());
  }
  return ToGrpcStatus(auth.Check(
      caller, role, absl::StrCat("transferd.v1.", std::string(method))));
}

grpc::Status Admit(const grpc::CallbackServerContext* ctx,
                   const core::api::EngineApi& api, const Authorizer& auth,
                   Role role, std::string_view method) {
  if (grpc::Status s = CheckCaller(auth, *ctx, role, method); !s.ok()) {
    return s;
  }
  return ToGrpcStatus(api.CheckReady());
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                 const grpc::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace transferd::rpc
