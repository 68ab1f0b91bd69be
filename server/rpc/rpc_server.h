// The gRPC server: listens, registers every transferd.v1 service plus
// grpc.health.v1.Health (and reflection when asked), and shuts down
// gracefully.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class Server;
}

namespace transferd::core {
class Engine;
}

namespace transferd::rpc {

class ServerService;
class DatasetsService;
class JobsService;
class ModelsService;
class UnimplementedInferenceService;

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
  };

  // Builds and starts the server; UNAVAILABLE when the address cannot be
  // bound. Health reports NOT_SERVING until SetServing(true).
  static absl::StatusOr<std::unique_ptr<RpcServer>> Start(const Options& options,
                                                          core::Engine& engine);
  ~RpcServer();

  // The bound port.
  int port() const { return port_; }

  // Sets every health service name (and "") to SERVING or NOT_SERVING.
  void SetServing(bool serving);

  // Health NOT_SERVING at once, new calls refused, in-flight calls get the
  // grace period, then are cancelled; returns when all have finished.
  void Shutdown();

 private:
  RpcServer() = default;

  Options options_;
  int port_ = 0;
  std::unique_ptr<ServerService> server_service_;
  std::unique_ptr<DatasetsService> datasets_service_;
  std::unique_ptr<JobsService> jobs_service_;
  std::unique_ptr<ModelsService> models_service_;
  std::unique_ptr<UnimplementedInferenceService> inference_service_;
  std::unique_ptr<grpc::Server> server_;
  bool shut_down_ = false;
};

}  // namespace transferd::rpc
