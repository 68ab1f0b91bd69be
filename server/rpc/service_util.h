// Small pieces every transferd.v1 service uses: the gate of each method
// (role, then readiness) and finishing a unary call.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "common/stream_protocol.h"
#include "server/auth/auth.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api

namespace transferd::rpc {

using auth::Authorizer;
using auth::Role;

// The role check of one call: its "authorization" metadata against `auth`
// (UNAUTHENTICATED / PERMISSION_DENIED naming "transferd.v1.<method>").
grpc::Status CheckCaller(const Authorizer& auth,
                         const grpc::ServerContextBase& ctx, Role role,
                         std::string_view method);

// The gate of every transferd.v1 method but GetServerInfo: the caller's
// token must carry `role` (UNAUTHENTICATED / PERMISSION_DENIED naming
// `method`, "Jobs.CreateJob"), then the engine must be ready
// (EngineApi::CheckReady).
grpc::Status Admit(const grpc::CallbackServerContext* ctx,
                   const core::api::EngineApi& api, const Authorizer& auth,
                   Role role, std::string_view method);

// An upload's header passed its checks: sends the initial metadata that
// tells the client to go on with the data (common/stream_protocol.h). Once
// per call, before Finish.
template <class Request>
void AcceptUpload(grpc::CallbackServerContext& ctx,
                  grpc::ServerReadReactor<Request>& reactor) {
  ctx.AddInitialMetadata(common::kUploadAcceptedMetadata,
                         common::kUploadAcceptedValue);
  reactor.StartSendInitialMetadata();
}

// The call's deadline on the steady clock, capped at `cap` from now (the
// server's --max-request-seconds): a client without a deadline cannot keep
// work queued forever.
std::chrono::steady_clock::time_point SteadyDeadline(
    const grpc::CallbackServerContext* ctx, std::chrono::milliseconds cap);

// A unary call finished later by whoever answers it (the predictor); a
// client that goes away sets the flag that makes the predictor drop its
// queued images.
class CancellableReactor final : public grpc::ServerUnaryReactor {
 public:
  CancellableReactor()
      : cancelled_(std::make_shared<std::atomic<bool>>(false)) {}
  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }
  std::shared_ptr<std::atomic<bool>> cancelled() const { return cancelled_; }

 private:
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

// Finishes a unary call with `status`.
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                 const grpc::Status& status);

}  // namespace transferd::rpc
