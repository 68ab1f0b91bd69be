// Early-return helpers for absl::Status / absl::StatusOr, the one status type
// used inside server/core (mapped to gRPC codes only in server/rpc).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TRANSFERD_STATUS_CONCAT_INNER_(a, b) a##b
#define TRANSFERD_STATUS_CONCAT_(a, b) TRANSFERD_STATUS_CONCAT_INNER_(a, b)

// Returns `expr`'s status from the enclosing function when it is not OK.
#define TRANSFERD_RETURN_IF_ERROR(expr)        \
  do {                                         \
    ::absl::Status transferd_status_ = (expr); \
    if (!transferd_status_.ok()) {             \
      return transferd_status_;                \
    }                                          \
  } while (false)

// `lhs = *expr` when `expr` (an absl::StatusOr) holds a value, otherwise
// returns its status from the enclosing function.
#define TRANSFERD_ASSIGN_OR_RETURN(lhs, expr) \
  TRANSFERD_ASSIGN_OR_RETURN_IMPL_(           \
      TRANSFERD_STATUS_CONCAT_(transferd_statusor_, __LINE__), lhs, expr)

#define TRANSFERD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                     \
  if (!statusor.ok()) {                                       \
    return std::move(statusor).status();                      \
  }                                                           \
  lhs = std::move(statusor).value()
