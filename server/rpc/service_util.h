// Small pieces every transferd.v1 service uses: resource names, the answer of
// a service whose engine is not ready, and finishing a unary call.
#pragma once

#include <string>
#include <string_view>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"
#include "server/rpc/auth.h"

namespace transferd::core {
class Engine;
class ModelRegistry;
}  // namespace transferd::core

namespace transferd::rpc {

// "<collection>/{id}" -> id ("datasets/cats" -> "cats"). INVALID_ARGUMENT
// starting with `field` for another form or an invalid id.
absl::StatusOr<std::string> IdFromName(std::string_view field,
                                       std::string_view collection,
                                       const std::string& name);

// "models/{id}" or "aliases/{alias}" -> the model id (an alias is resolved
// through `models`). INVALID_ARGUMENT starting with `field` for another form
// or an invalid id; NOT_FOUND for an unknown alias or model.
absl::StatusOr<std::string> ModelIdFromName(core::ModelRegistry& models,
                                            const std::string& field,
                                            const std::string& name);

// UNAVAILABLE: the engine is starting or shutting down.
grpc::Status NotReady();

// The gate of every transferd.v1 method but GetServerInfo: the caller's
// token must carry `role` (UNAUTHENTICATED / PERMISSION_DENIED naming
// `method`, "Jobs.CreateJob"), then the engine must be ready (NotReady).
grpc::Status Admit(const grpc::CallbackServerContext* ctx,
                   const core::Engine& engine, const Authorizer& auth,
                   Role role, std::string_view method);

// Finishes a unary call with `status`.
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                 const grpc::Status& status);

}  // namespace transferd::rpc
