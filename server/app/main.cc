// transferd: the gRPC training and inference server.
//
// Start-up: parse configuration, set up logging, block SIGINT/SIGTERM in
// every thread, create the engine (data dir, store, device), start gRPC.
// Shutdown on the first SIGINT/SIGTERM: health NOT_SERVING at once, the
// engine stops taking work and tells streams to finish, in-flight calls get
// the grace period, the store is checkpointed and closed, exit 0.
#include <signal.h>

#include <cstdio>
#include <cstring>

#include <spdlog/spdlog.h>

#include "server/app/config.h"
#include "server/app/logging.h"
#include "server/core/build_info.h"
#include "server/core/cpu_features.h"
#include "server/core/engine.h"
#include "server/rpc/rpc_server.h"

namespace {

int Run(const transferd::app::ServerConfig& config, const sigset_t& signals) {
  using transferd::core::Engine;
  using transferd::rpc::RpcServer;

  const auto& build = transferd::core::GetBuildInfo();
  spdlog::info("transferd {} ({}, {}, torch {}) starting", build.version,
               build.revision, build.build_type, build.torch_version);
  if (!config.config_file.empty()) {
    spdlog::info("config file {}", config.config_file);
  }

  auto engine = Engine::Create(config.engine);
  if (!engine.ok()) {
    spdlog::critical("cannot start: {}", engine.status().ToString());
    return 1;
  }
  const auto info = (*engine)->Info();
  spdlog::info("data dir {} (schema v{}, instance {}), {} stale tmp entries removed",
               (*engine)->data_dir().root().string(), info.store_schema_version,
               info.instance_id, (*engine)->data_dir().stale_tmp_entries_removed());
  spdlog::info("device {} ({}), {} threads, cpu: {}", info.device.name,
               info.device.description, info.device.threads,
               transferd::core::DescribeCpuFeatures(info.cpu));

  auto server = RpcServer::Start(config.rpc, **engine);
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    return 1;
  }
  spdlog::info("serving transferd.v1 on {} (port {}){}",
               config.rpc.listen_address, (*server)->port(),
               config.rpc.reflection ? ", reflection on" : "");

  int signo = 0;
  if (sigwait(&signals, &signo) != 0) {
    spdlog::critical("sigwait failed");
    return 1;
  }
  const auto grace_ms = config.rpc.shutdown_grace.count();
  spdlog::info("received {}, shutting down (grace {} ms)", strsignal(signo),
               grace_ms);
  (*server)->SetServing(false);
  (*engine)->BeginShutdown();
  (*server)->Shutdown();
  server->reset();
  if (absl::Status status = (*engine)->Shutdown(); !status.ok()) {
    spdlog::error("store close: {}", status.ToString());
    return 1;
  }
  spdlog::info("stopped cleanly");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  transferd::app::ParseOutcome parsed =
      transferd::app::ParseServerConfig(argc, argv);
  if (!parsed.config.has_value()) {
    std::fputs(parsed.output.c_str(), parsed.exit_code == 0 ? stdout : stderr);
    return parsed.exit_code;
  }
  transferd::app::SetUpLogging(parsed.config->log);

  // Block the shutdown signals before any thread starts so that every thread
  // inherits the mask and only sigwait() in main sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  return Run(*parsed.config, signals);
}
