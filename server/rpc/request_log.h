// A server interceptor that gives every call a request id and writes one
// access-log line per finished call (method, request id, peer, status,
// milliseconds). The id is the client's x-request-id metadata when valid
// (1-128 chars of [A-Za-z0-9._-]), else a fresh random one; it is echoed in
// the response's initial metadata and readable by services via RequestId().
// The same interceptor records the RPC metrics.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace transferd::core {
class Metrics;
}

namespace transferd::rpc {

// `metrics` (may be null) counts every call by method and code, its
// duration, and the calls in flight.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRequestLogInterceptorFactory(core::Metrics* metrics);

}  // namespace transferd::rpc
