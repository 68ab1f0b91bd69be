// Small pieces every transferd.v1 service uses: resource names, the answer of
// a service whose engine is not ready, and finishing a unary call.
#pragma once

#include <string>
#include <string_view>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"

namespace transferd::rpc {

// "<collection>/{id}" -> id ("datasets/cats" -> "cats"). INVALID_ARGUMENT
// starting with `field` for another form or an invalid id.
absl::StatusOr<std::string> IdFromName(std::string_view field, std::string_view collection,
                                       const std::string& name);

// UNAVAILABLE: the engine is starting or shutting down.
grpc::Status NotReady();

// Finishes a unary call with `status`.
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const grpc::Status& status);

}  // namespace transferd::rpc
