#include "server/rpc/service_util.h"

#include <algorithm>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
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
  // transferd.v1 methods are named short ("Jobs.CreateJob"); others
  // ("inference.GRPCInferenceService.ModelInfer") in full.
  const std::string name(method);
  const std::string full = absl::StartsWith(name, "inference.")
                               ? name
                               : absl::StrCat("transferd.v1.", name);
  return ToGrpcStatus(auth.Check(caller, role, full));
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

std::chrono::steady_clock::time_point SteadyDeadline(
    const grpc::CallbackServerContext* ctx, std::chrono::milliseconds cap) {
  const auto deadline = ctx->deadline();
  const auto now = std::chrono::system_clock::now();
  const auto capped = std::chrono::steady_clock::now() + cap;
  if (deadline > now + std::chrono::hours(24 * 365)) return capped;
  return std::min(
      capped,
      std::chrono::steady_clock::now() +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              deadline - now));
}

}  // namespace transferd::rpc
