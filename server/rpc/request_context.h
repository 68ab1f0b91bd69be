// Per-call context shared by the services: the request id that the request
// log interceptor attaches to every call, and the caller's W3C trace id.
#pragma once

#include <string>
#include <string_view>

namespace grpc {
class CallbackServerContext;
class ServerContextBase;
}  // namespace grpc

namespace transferd::rpc {

inline constexpr char kRequestIdKey[] = "x-request-id";

// The call's request id: the client's x-request-id when it sent a valid one,
// otherwise the one the server generated. Empty only without the interceptor.
std::string RequestId(const grpc::CallbackServerContext& ctx);

inline constexpr char kTraceparentKey[] = "traceparent";

// The trace id of a W3C traceparent value ("00-<32 hex trace id>-<16 hex
// parent id>-<2 hex flags>"); "" when it is malformed, of version ff, or
// has an all-zero id.
std::string TraceIdOf(std::string_view traceparent);

// The trace id of the call's traceparent metadata ("" without one).
std::string TraceId(const grpc::ServerContextBase& ctx);

}  // namespace transferd::rpc
