#include "server/rpc/grpc_status.h"

#include <string>

namespace transferd::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  grpc::StatusCode code;
  switch (status.code()) {
    case absl::StatusCode::kCancelled:
      code = grpc::CANCELLED;
      break;
    case absl::StatusCode::kUnknown:
      code = grpc::UNKNOWN;
      break;
    case absl::StatusCode::kInvalidArgument:
      code = grpc::INVALID_ARGUMENT;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      code = grpc::DEADLINE_EXCEEDED;
      break;
    case absl::StatusCode::kNotFound:
      code = grpc::NOT_FOUND;
      break;
    case absl::StatusCode::kAlreadyExists:
      code = grpc::ALREADY_EXISTS;
      break;
    case absl::StatusCode::kPermissionDenied:
      code = grpc::PERMISSION_DENIED;
      break;
    case absl::StatusCode::kResourceExhausted:
      code = grpc::RESOURCE_EXHAUSTED;
      break;
    case absl::StatusCode::kFailedPrecondition:
      code = grpc::FAILED_PRECONDITION;
      break;
    case absl::StatusCode::kAborted:
      code = grpc::ABORTED;
      break;
    case absl::StatusCode::kOutOfRange:
      code = grpc::OUT_OF_RANGE;
      break;
    case absl::StatusCode::kUnimplemented:
      code = grpc::UNIMPLEMENTED;
      break;
    case absl::StatusCode::kInternal:
      code = grpc::INTERNAL;
      break;
    case absl::StatusCode::kUnavailable:
      code = grpc::UNAVAILABLE;
      break;
    case absl::StatusCode::kDataLoss:
      code = grpc::DATA_LOSS;
      break;
    case absl::StatusCode::kUnauthenticated:
      code = grpc::UNAUTHENTICATED;
      break;
    default:
      code = grpc::INTERNAL;
      break;
  }
  return grpc::Status(code, std::string(status.message()));
}

}  // namespace transferd::rpc
