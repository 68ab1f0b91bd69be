#include "server/rpc/rpc_server.h"

#include <algorithm>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/rpc/datasets_service.h"
#include "server/rpc/jobs_service.h"
#include "server/rpc/request_log.h"
#include "server/rpc/server_service.h"
#include "server/rpc/unimplemented_services.h"

namespace transferd::rpc {
namespace {

// Linking grpc++_reflection registers its builder plugin for every server at
// static-initialisation time; this option takes it out again unless
// reflection was asked for.
class DropReflectionPlugin final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(
      std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                         return p->name() == "proto_server_reflection";
                       }),
        plugins->end());
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(
    const Options& options, core::Engine& engine) {
  if (options.max_receive_message_bytes < 64 * 1024) {
    return absl::InvalidArgumentError(
        "max receive message size must be at least 65536 bytes");
  }
  if (options.upload_chunk_bytes <= 0 ||
      options.upload_chunk_bytes > options.max_receive_message_bytes - 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upload chunk size must be in (0, max receive message size - 4096]; "
        "got ",
        options.upload_chunk_bytes));
  }

  std::unique_ptr<RpcServer> server(new RpcServer);
  server->options_ = options;

  std::vector<std::string> implemented = {
      "transferd.v1.Server", "transferd.v1.Datasets", "transferd.v1.Jobs",
      "transferd.v1.Models", "grpc.health.v1.Health"};
  if (options.reflection) {
    implemented.push_back("grpc.reflection.v1alpha.ServerReflection");
  }
  v1::Limits limits;
  limits.set_max_receive_message_bytes(options.max_receive_message_bytes);
  limits.set_max_send_message_bytes(options.max_send_message_bytes);
  limits.set_upload_chunk_bytes(options.upload_chunk_bytes);
  const core::DatasetLimits& datasets = engine.options().datasets;
  limits.set_max_image_pixels(datasets.image.max_pixels);
  limits.set_max_file_bytes(datasets.max_file_bytes);
  limits.set_max_dataset_bytes(datasets.max_dataset_bytes);
  limits.set_max_total_dataset_bytes(datasets.max_total_bytes);
  limits.set_min_free_disk_bytes(datasets.min_free_disk_bytes);
  limits.set_shutdown_grace_seconds(static_cast<int32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(options.shutdown_grace)
          .count()));

  server->server_service_ =
      std::make_unique<ServerService>(engine, limits, implemented);
  server->datasets_service_ = std::make_unique<DatasetsService>(engine);
  server->jobs_service_ = std::make_unique<JobsService>(engine);
  server->models_service_ = std::make_unique<ModelsService>(engine);
  server->inference_service_ = std::make_unique<UnimplementedInferenceService>();

  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  }
  grpc::ServerBuilder builder;
  if (!options.reflection) {
    builder.SetOption(std::make_unique<DropReflectionPlugin>());
  }
  // Without this gRPC sets SO_REUSEPORT and a second server could bind the
  // same port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen_address,
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(options.max_send_message_bytes);
  builder.RegisterService(server->server_service_.get());
  builder.RegisterService(server->datasets_service_.get());
  builder.RegisterService(server->jobs_service_.get());
  builder.RegisterService(server->models_service_.get());
  builder.RegisterService(server->inference_service_.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(MakeRequestLogInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address,
                     " (address in use, or not a local address?)"));
  }
  // NOT_SERVING until the caller says the engine is ready.
  server->SetServing(false);
  return server;
}

RpcServer::~RpcServer() { Shutdown(); }

void RpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  if (auto* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
  }
}

void RpcServer::Shutdown() {
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
  server_->Wait();
}

}  // namespace transferd::rpc
