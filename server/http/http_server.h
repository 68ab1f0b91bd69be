// transferd's one HTTP port: /metrics (Prometheus text format), /healthz
// and /readyz today; the dashboard and the REST/JSON API (docs/api.md) are
// routes on the same listener, with the same TLS settings as gRPC and the
// same bearer tokens and roles (server/auth). Handlers call the engine API
// (server/core/api) and never the gRPC services.
//
// Routes and who may call them:
//   GET /healthz  no token: liveness (200 while the process serves HTTP)
//   GET /readyz   no token: readiness, like gRPC health's overall status
//                 (200 once the engine is ready, 503 while it starts or
//                 shuts down)
//   GET /metrics  no token by default (Prometheus scrapes without one, and
//                 the exposition holds no user data: ids of models and
//                 running jobs at most); with metrics_require_token, a
//                 viewer token
//   anything else 404 (JSON error body), after the token check
//
// The probes answer plain text. Every other error is JSON: {"error":
// {"code": 404, "status": "NOT_FOUND", "message": "..."}}, code being the
// HTTP status, mapped from the gRPC code as the standard mapping does
// (INVALID_ARGUMENT 400, NOT_FOUND 404, ...).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace transferd::core {
class Metrics;
namespace api {
class EngineApi;
}  // namespace api
}  // namespace transferd::core

namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::http {

class EventStreams;

// The HTTP status for a gRPC/absl code (google/rpc/code.proto's mapping).
int HttpStatusFor(absl::StatusCode code);

class HttpServer {
 public:
  struct Options {
    // host:port; empty: no HTTP listener. Port 0 picks a free port (port()).
    std::string listen_address;
    // TLS, as for gRPC: certificate chain and key (PEM), both or neither;
    // with a client CA, client certificates are required.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    // /metrics needs a viewer token too.
    bool metrics_require_token = false;
    // Threads serving connections (each keep-alive connection holds one
    // while it is open; at most a quarter of them serve event streams).
    int threads = 64;
    // The largest request body (a Predict's images): gRPC's
    // --max-receive-message-bytes. Larger bodies get 413.
    int64_t max_body_bytes = 64 << 20;
    // The cap on a Predict call's time (--max-request-seconds).
    std::chrono::milliseconds max_request_time{300000};
    // A serialized transferd.v1.ServerInfo with what the engine does not
    // know (RpcServer::static_server_info()), for /api/v1/server.
    std::string server_info_base;
  };

  // Binds and starts serving. UNAVAILABLE when the address cannot be bound,
  // INVALID_ARGUMENT for a malformed address or unreadable TLS files.
  // `metrics` may be null (then /metrics answers 404).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const Options& options, core::api::EngineApi& api, core::Metrics* metrics,
      const auth::Authorizer& auth);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  bool tls() const { return tls_; }
  // Stops accepting and waits for the handlers in progress. Idempotent.
  void Shutdown();

 private:
  HttpServer() = default;
  // Threads, limits, timeouts and the event streams' bound.
  void Configure();
  // Security headers, the origin check and the token check.
  void Guard();
  // Probes, /metrics, the dashboard's files and the JSON API.
  void Route();
  // JSON error bodies for unknown routes, exceptions and oversized bodies;
  // the access log.
  void HandleErrorsAndLog();

  Options options_;
  core::api::EngineApi* api_ = nullptr;
  core::Metrics* metrics_ = nullptr;
  const auth::Authorizer* auth_ = nullptr;
  std::unique_ptr<EventStreams> streams_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listener_done_{false};
  int port_ = 0;
  bool tls_ = false;
  bool loopback_ = false;  // listening on a loopback address only
};

}  // namespace transferd::http
