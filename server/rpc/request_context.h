// Per-call context shared by the services: the request id that the request
// log interceptor attaches to every call.
#pragma once

#include <string>

namespace grpc {
class CallbackServerContext;
}

namespace transferd::rpc {

inline constexpr char kRequestIdKey[] = "x-request-id";

// The call's request id: the client's x-request-id when it sent a valid one,
// otherwise the one the server generated. Empty only without the interceptor.
std::string RequestId(const grpc::CallbackServerContext& ctx);

}  // namespace transferd::rpc
