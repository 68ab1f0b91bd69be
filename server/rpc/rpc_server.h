// The gRPC server: listens, registers every transferd.v1 service plus
// grpc.health.v1.Health (and reflection when asked), and shuts down
// gracefully.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class CallbackGenericService;
class Server;
}  // namespace grpc

namespace transferd::core {
class Engine;
namespace api {
class EngineApi;
}
}  // namespace transferd::core

namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class ClusterService;
class ServerService;
class OipService;
class DatasetsService;
class JobsService;
class ModelsService;
class InferenceService;

class RpcServer {
 public:
  struct Options {
    // host:port; port 0 picks a free port (see port()).
    std::string listen_address = "127.0.0.1:50051";
    int max_receive_message_bytes = 8 * 1024 * 1024;
    int max_send_message_bytes = 64 * 1024 * 1024;
    // Upload data bytes per chunk clients are told to send.
    int upload_chunk_bytes = 1024 * 1024;
    // Serve grpc.reflection.v1alpha.ServerReflection.
    bool reflection = false;
    // How long in-flight calls may run after shutdown begins.
    std::chrono::milliseconds shutdown_grace{25000};

    // TLS: server certificate chain and key (PEM files), both or neither.
    std::string tls_cert_file;
    std::string tls_key_file;
    // With TLS: client certificates are required and verified against this
    // CA bundle (mutual TLS).
    std::string tls_client_ca_file;
    // Plaintext on an address other than loopback (checked by the caller,
    // which knows the flag names; kept here to be reported).
    bool allow_plaintext = false;
    // A second, plaintext listener serving only grpc.health.v1.Health (for
    // Kubernetes' gRPC probes, which cannot speak TLS); empty = none.
    std::string health_listen_address;
    // Bearer tokens with roles; empty = no authentication (see auth.h).
    std::string token_file;

    // Transport limits.
    int max_concurrent_streams = 100;       // per connection
    int64_t grpc_memory_bytes = 1ll << 30;  // gRPC's resource quota
    int max_rpc_threads = 64;               // gRPC's resource quota
    // Clients may ping at most this often without data (keepalive
    // enforcement; more pings close the connection with ENHANCE_YOUR_CALM).
    std::chrono::milliseconds min_ping_interval{10000};
    // Connections idle this long are closed (0 = never).
    std::chrono::milliseconds max_connection_idle{0};
    // Predict deadlines are capped at this from arrival.
    std::chrono::milliseconds max_request_time{300000};
    // Heartbeats on workers' membership streams (transferd.v1.Cluster).
    std::chrono::milliseconds cluster_heartbeat{2000};
  };

  // Builds and starts the server; UNAVAILABLE when the address cannot be
  // bound. Health reports NOT_SERVING until SetServing(true).
  static absl::StatusOr<std::unique_ptr<RpcServer>> Start(
      const Options& options, core::Engine& engine);
  ~RpcServer();

  // The bound port.
  int port() const { return port_; }

  // Sets every health service name (and "") to SERVING or NOT_SERVING.
  void SetServing(bool serving);

  // Re-reads the token file (SIGHUP); the tokens in force stay on error.
  absl::Status ReloadTokens();
  size_t token_count() const;
  // The tokens and roles in force; the HTTP port checks the same ones.
  const auth::Authorizer& authorizer() const { return *auth_; }

  // What GetServerInfo reports besides the engine's own description (the
  // limits, the implemented services, the gRPC version): a serialized
  // transferd.v1.ServerInfo, which the HTTP port's /api/v1/server completes
  // the same way.
  const std::string& static_server_info() const { return static_info_; }

  // The health-only listener's port (0 when there is none).
  int health_port() const { return health_port_; }

  // Health NOT_SERVING at once, new calls refused, in-flight calls get the
  // grace period, then are cancelled; returns when all have finished.
  void Shutdown();

 private:
  RpcServer() = default;

  Options options_;
  int port_ = 0;
  std::unique_ptr<core::api::EngineApi> api_;  // what every service calls
  std::unique_ptr<ServerService> server_service_;
  std::unique_ptr<DatasetsService> datasets_service_;
  std::unique_ptr<JobsService> jobs_service_;
  std::unique_ptr<ModelsService> models_service_;
  std::unique_ptr<InferenceService> inference_service_;
  std::unique_ptr<OipService> oip_service_;
  std::unique_ptr<ClusterService> cluster_service_;
  std::unique_ptr<auth::Authorizer> auth_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::CallbackGenericService> health_generic_;
  std::unique_ptr<grpc::Server> health_server_;
  int health_port_ = 0;
  std::string static_info_;
  bool shut_down_ = false;
};

}  // namespace transferd::rpc
