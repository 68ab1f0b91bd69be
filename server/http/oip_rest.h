// The Open Inference Protocol's REST form on the HTTP port (the gRPC form is
// server/rpc/oip_service.cc; both run the same calls, oip_conversions.h):
//
//   GET  /v2/health/live                               no token  200
//   GET  /v2/health/ready                              no token  200, or 400
//   GET  /v2                                           viewer    server
//   metadata GET  /v2/models/{name}[/versions/{v}]              viewer    model
//   metadata GET  /v2/models/{name}[/versions/{v}]/ready        viewer    200,
//   or 400 POST /v2/models/{name}[/versions/{v}]/infer        trainer inference
//
// Inference bodies are the protocol's JSON, or JSON followed by binary
// tensor data (the binary_tensor_data extension: the JSON's length in the
// Inference-Header-Content-Length header, each binary input's size in its
// "binary_data_size" parameter). BYTES elements given in JSON are base64
// (encoded image files are not text). Outputs come as JSON, or as binary
// data after the JSON when asked ("binary_data": true on an output, or
// "binary_data_output": true on the request). Errors are {"error": "..."}
// with the HTTP status of the gRPC code.
#pragma once

#include <chrono>
#include <string>

namespace httplib {
class Server;
}  // namespace httplib

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api

namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::http {

// Whether `path` is one of the protocol's health probes (served without a
// token).
bool IsOipHealthPath(const std::string& path);

void AddOipRoutes(httplib::Server& server, core::api::EngineApi& api,
                  const auth::Authorizer& auth,
                  std::chrono::milliseconds max_request_time);

}  // namespace transferd::http
