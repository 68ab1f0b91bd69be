#include "server/rpc/grpc_status.h"

#include <gtest/gtest.h>

namespace transferd::rpc {
namespace {

TEST(ToGrpcStatusTest, OkIsOk) {
  grpc::Status s = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.error_message(), "");
}

TEST(ToGrpcStatusTest, EveryCodeMapsToTheSameNamedCodeWithItsMessage) {
  const std::pair<absl::StatusCode, grpc::StatusCode> cases[] = {
      {absl::StatusCode::kCancelled, grpc::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::UNAUTHENTICATED},
  };
  for (const auto& [absl_code, grpc_code] : cases) {
    grpc::Status s =
        ToGrpcStatus(absl::Status(absl_code, "spec.epochs must be >= 1"));
    EXPECT_EQ(s.error_code(), grpc_code) << absl::StatusCodeToString(absl_code);
    EXPECT_EQ(s.error_message(), "spec.epochs must be >= 1");
  }
}

}  // namespace
}  // namespace transferd::rpc
