// The one place where the engine's absl::Status becomes a grpc::Status.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace transferd::rpc {

// Same code, same message. absl codes outside gRPC's range become INTERNAL.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace transferd::rpc
