#include "server/rpc/rpc_server.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"
#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/rpc/cluster_service.h"
#include "server/rpc/datasets_service.h"
#include "server/rpc/inference_service.h"
#include "server/rpc/jobs_service.h"
#include "server/rpc/models_service.h"
#include "server/rpc/oip_service.h"
#include "server/rpc/request_log.h"
#include "server/rpc/server_service.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {
namespace {

// Linking grpc++_reflection registers its builder plugin for every server at
// static-initialisation time; this option takes it out again unless
// reflection was asked for.
class DropReflectionPlugin final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                         return p->name() == "proto_server_reflection";
                       }),
        plugins->end());
  }
};

// What the health-only port answers for every method but the health
// service's (also what gives that server the callback completion queue gRPC
// requires).
class HealthPortOnly final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext*) override {
    class Refuse final : public grpc::ServerGenericBidiReactor {
     public:
      Refuse() {
        Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                            "this port serves only grpc.health.v1.Health; "
                            "transferd.v1 is on the "
                            "main port"));
      }
      void OnDone() override { delete this; }
    };
    return new Refuse();
  }
};

absl::StatusOr<std::string> ReadPem(const std::string& what,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the ", what, " ", path));
  }
  return text.str();
}

// Plaintext, or TLS (with client certificates required and verified when a
// client CA is given).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const RpcServer::Options& options) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate and a key file");
  }
  if (options.tls_cert_file.empty()) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "a client CA needs TLS (a certificate and a key file)");
    }
    return grpc::InsecureServerCredentials();
  }
  auto cert = ReadPem("TLS certificate", options.tls_cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("TLS key", options.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca_file.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!options.tls_client_ca_file.empty()) {
    auto ca = ReadPem("TLS client CA", options.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

// The message size limits: a chunk must fit in a message with room to spare.
absl::Status CheckMessageSizes(const RpcServer::Options& options) {
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
  return absl::OkStatus();
}

// Logs how clients are authenticated and what the transport is.
void LogSecurity(const RpcServer::Options& options, const Authorizer& auth) {
  if (auth.enabled()) {
    spdlog::info("bearer tokens required: {} tokens from {}",
                 auth.token_count(), options.token_file);
  } else if (!absl::StartsWith(options.listen_address, "127.") &&
             !absl::StartsWith(options.listen_address, "localhost:") &&
             !absl::StartsWith(options.listen_address, "[::1]:")) {
    spdlog::warn(
        "no --token-file: every client that reaches {} may do anything",
        options.listen_address);
  }
  spdlog::info(
      "transport: {}{}", options.tls_cert_file.empty() ? "plaintext" : "TLS",
      options.tls_client_ca_file.empty() ? "" : " with client certificates");
}

// The services the server reports it implements.
std::vector<std::string> ImplementedServices(
    const RpcServer::Options& options) {
  std::vector<std::string> implemented = {
      "transferd.v1.Server",    "transferd.v1.Datasets",
      "transferd.v1.Jobs",      "transferd.v1.Models",
      "transferd.v1.Inference", "transferd.v1.Cluster",
      "grpc.health.v1.Health",  "inference.GRPCInferenceService"};
  if (options.reflection) {
    implemented.push_back("grpc.reflection.v1alpha.ServerReflection");
  }
  return implemented;
}

// The limits the server reports to clients.
v1::Limits ReportedLimits(const RpcServer::Options& options,
                          core::Engine& engine) {
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
  limits.set_max_images_per_request(
      engine.options().predictor.max_images_per_request);
  limits.set_shutdown_grace_seconds(static_cast<int32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(options.shutdown_grace)
          .count()));
  return limits;
}

// The main port's builder: plugins, listening port (bound into `*port` at
// start), message sizes, streams and keepalive.
void ConfigureTransport(
    const RpcServer::Options& options,
    const std::shared_ptr<grpc::ServerCredentials>& credentials, int* port,
    grpc::ServerBuilder& builder) {
  if (!options.reflection) {
    builder.SetOption(std::make_unique<DropReflectionPlugin>());
  }
  // Without this gRPC sets SO_REUSEPORT and a second server could bind the
  // same port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen_address, credentials, port);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(options.min_ping_interval.count()));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (options.max_connection_idle.count() > 0) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_IDLE_MS,
        static_cast<int>(options.max_connection_idle.count()));
  }
}

// The plaintext health-only listener on `address`; null when it cannot
// start. `*generic` answers every other method; `*port` is the bound port.
std::unique_ptr<grpc::Server> StartHealthServer(
    const std::string& address,
    std::unique_ptr<grpc::CallbackGenericService>* generic, int* port) {
  grpc::ServerBuilder health_builder;
  health_builder.SetOption(std::make_unique<DropReflectionPlugin>());
  health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  health_builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                                  port);
  health_builder.SetMaxReceiveMessageSize(64 * 1024);
  health_builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 16);
  *generic = std::make_unique<HealthPortOnly>();
  health_builder.RegisterCallbackGenericService(generic->get());
  return health_builder.BuildAndStart();
}

// What GetServerInfo reports besides the engine's own description.
v1::ServerInfo StaticServerInfo(const RpcServer::Options& options,
                                core::Engine& engine) {
  v1::ServerInfo info;
  info.mutable_build()->set_grpc_version(grpc::Version());
  *info.mutable_limits() = ReportedLimits(options, engine);
  for (std::string& s : ImplementedServices(options)) {
    info.add_implemented_services(std::move(s));
  }
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(
    const Options& options, core::Engine& engine) {
  if (absl::Status sizes = CheckMessageSizes(options); !sizes.ok()) {
    return sizes;
  }

  auto credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  auto auth = Authorizer::Create(options.token_file);
  if (!auth.ok()) return auth.status();

  std::unique_ptr<RpcServer> server(new RpcServer);
  server->options_ = options;
  server->auth_ = std::move(*auth);
  LogSecurity(options, *server->auth_);

  const v1::ServerInfo static_info = StaticServerInfo(options, engine);
  server->static_info_ = static_info.SerializeAsString();

  server->api_ = std::make_unique<core::api::EngineApi>(engine);
  core::api::EngineApi& api = *server->api_;
  server->server_service_ =
      std::make_unique<ServerService>(api, *server->auth_, static_info);
  server->datasets_service_ =
      std::make_unique<DatasetsService>(api, *server->auth_);
  server->jobs_service_ = std::make_unique<JobsService>(api, *server->auth_);
  server->models_service_ =
      std::make_unique<ModelsService>(api, *server->auth_);
  server->inference_service_ = std::make_unique<InferenceService>(
      api, *server->auth_, options.max_request_time);
  server->oip_service_ = std::make_unique<OipService>(api, *server->auth_,
                                                      options.max_request_time);
  server->cluster_service_ = std::make_unique<ClusterService>(
      api, engine, *server->auth_, options.cluster_heartbeat);

  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  }
  grpc::ServerBuilder builder;
  ConfigureTransport(options, *credentials, &server->port_, builder);
  grpc::ResourceQuota quota("transferd");
  quota.Resize(static_cast<size_t>(options.grpc_memory_bytes));
  quota.SetMaxThreads(options.max_rpc_threads);
  builder.SetResourceQuota(quota);
  builder.SetMaxSendMessageSize(options.max_send_message_bytes);
  builder.RegisterService(server->server_service_.get());
  builder.RegisterService(server->datasets_service_.get());
  builder.RegisterService(server->jobs_service_.get());
  builder.RegisterService(server->models_service_.get());
  builder.RegisterService(server->inference_service_.get());
  builder.RegisterService(server->oip_service_.get());
  builder.RegisterService(server->cluster_service_.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(MakeRequestLogInterceptorFactory(engine.metrics()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address,
                     " (address in use, or not a local address?)"));
  }
  if (!options.health_listen_address.empty()) {
    server->health_server_ =
        StartHealthServer(options.health_listen_address,
                          &server->health_generic_, &server->health_port_);
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      server->server_->Shutdown();
      return absl::UnavailableError(absl::StrCat("cannot listen on ",
                                                 options.health_listen_address,
                                                 " for health probes"));
    }
    spdlog::info("health probes (grpc.health.v1, plaintext) on {} (port {})",
                 options.health_listen_address, server->health_port_);
  }
  // NOT_SERVING until the caller says the engine is ready.
  server->SetServing(false);
  return server;
}

absl::Status RpcServer::ReloadTokens() { return auth_->Reload(); }

size_t RpcServer::token_count() const { return auth_->token_count(); }

RpcServer::~RpcServer() { Shutdown(); }

void RpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  std::vector<grpc::HealthCheckServiceInterface*> all;
  if (auto* health = server_->GetHealthCheckService()) all.push_back(health);
  if (health_server_ != nullptr) {
    if (auto* health = health_server_->GetHealthCheckService()) {
      all.push_back(health);
    }
  }
  for (auto* health : all) health->SetServingStatus(serving);
  // Per-alias statuses start once the engine is ready, on both ports.
  if (serving) inference_service_->EngineReady(all);
}

void RpcServer::Shutdown() {
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
  server_->Wait();
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now());
    health_server_->Wait();
  }
  // The engine outlives this server, and its predictor may still finish a
  // warm-up: its listeners must no longer reach the health services.
  inference_service_->Detach();
}

}  // namespace transferd::rpc
