// The JSON API under /api/v1/ (docs/api.md, "HTTP/JSON API"): what the
// dashboard needs, over the same engine API as the gRPC services, with the
// gRPC contract's messages in proto3 JSON (field names as in the .proto
// files), its resource names, its roles and its error codes (mapped to HTTP
// statuses as google/rpc/code.proto says, with the JSON error body).
//
//   GET    /api/v1/server                       viewer   ServerInfo
//   GET    /api/v1/datasets                     viewer   ListDatasetsResponse
//   GET    /api/v1/datasets/{id}                viewer   Dataset
//   DELETE /api/v1/datasets/{id}                admin    {}
//   GET    /api/v1/jobs                         viewer   ListJobsResponse
//   POST   /api/v1/jobs                         trainer  CreateJobRequest ->
//   Job GET    /api/v1/jobs/{id}                    viewer   Job POST
//   /api/v1/jobs/{id}:cancel             trainer  Job GET
//   /api/v1/jobs/{id}/events             viewer   Server-Sent Events GET
//   /api/v1/jobs/{id}/predictions        viewer   ListJobPredictionsResponse
//   GET    /api/v1/models                       viewer   ListModelsResponse
//   GET    /api/v1/models/{id}                  viewer   Model
//   DELETE /api/v1/models/{id}                  admin    {}
//   GET    /api/v1/aliases                      viewer   ListAliasesResponse
//   PUT    /api/v1/aliases/{alias}              admin    {"model": ...} ->
//   Alias DELETE /api/v1/aliases/{alias}              admin    {} POST
//   /api/v1/models/{id}:predict          trainer  images -> PredictResponse
//   POST   /api/v1/aliases/{alias}:predict      trainer  images ->
//   PredictResponse
//
// Listings take ?page_size=&page_token= (jobs also ?state=JOB_STATE_...&
// kind=JOB_KIND_...). Predict takes multipart/form-data (every file part is
// an image, its file name the image id; a field horizontal_flip_tta=true) or
// a PredictRequest in JSON (images' data base64).
//
// Cross-site requests: no CORS headers are ever sent, so browsers keep other
// origins from reading answers; a request whose Origin header names another
// origin than the one it was sent to is refused (PERMISSION_DENIED) before
// anything runs, which stops form posts from other sites even when tokens
// are off; JSON bodies must be sent as application/json.
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

class EventStreams;

struct JsonApiOptions {
  // The cap on a Predict call's time, as --max-request-seconds for gRPC.
  std::chrono::milliseconds max_request_time{300000};
  // A serialized transferd.v1.ServerInfo with what the engine does not know
  // (limits, services, gRPC version), as RpcServer::static_server_info().
  std::string server_info_base;
};

// Adds the routes above to `server`. Every referenced object must outlive
// the server's handlers.
void AddJsonApiRoutes(httplib::Server& server, core::api::EngineApi& api,
                      const auth::Authorizer& auth,
                      const JsonApiOptions& options, EventStreams& streams);

// Whether a request's Origin header (empty when absent: not a cross-site
// browser request) names the host and port the request was sent to (`host`:
// its Host header, or X-Forwarded-Host behind a proxy). The scheme is not
// compared: a proxy may terminate TLS, and one host:port serves one scheme.
bool SameOrigin(const std::string& origin, const std::string& host);

}  // namespace transferd::http
