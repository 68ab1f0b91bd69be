// transferd: the gRPC training and inference server.
//
// Start-up: parse configuration, set up logging, route SIGINT/SIGTERM to a
// self-pipe read by one thread (whichever thread the kernel interrupts; some
// library threads exist before main), take the device and the data
// directory, start gRPC with health NOT_SERVING, do the slow part of start-up
// (store, migrations, recovery), then report SERVING.
// Shutdown on the first SIGINT/SIGTERM, also during start-up: health
// NOT_SERVING at once, the engine stops taking work and tells streams to
// finish, in-flight calls get the grace period, the store is checkpointed and
// closed, exit 0.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "server/app/config.h"
#include "server/app/logging.h"
#include "server/auth/auth.h"
#include "server/cluster/worker.h"
#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/core/util/build_info.h"
#include "server/core/util/cpu_features.h"
#include "server/http/http_server.h"
#include "server/replica/follower.h"
#include "server/rpc/rpc_server.h"

namespace {

using transferd::core::Engine;
using transferd::core::api::EngineApi;
using transferd::http::HttpServer;

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: only write(2).
void OnShutdownSignal(int signo) {
  const unsigned char byte = static_cast<unsigned char>(signo);
  const int saved = errno;
  (void)!write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

bool InstallSignalHandlers() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return false;
  struct sigaction action {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGINT, &action, nullptr) == 0 &&
         sigaction(SIGTERM, &action, nullptr) == 0 &&
         sigaction(SIGHUP, &action, nullptr) == 0;
}

// Blocks until a shutdown signal (or a byte written by this process).
int WaitForShutdownSignal() {
  unsigned char byte = 0;
  while (true) {
    ssize_t n = read(g_signal_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    return SIGTERM;
  }
}
using transferd::rpc::RpcServer;

// Serialises "become SERVING" against "begin shutdown", so a signal that
// arrives while start-up finishes can never leave health SERVING.
class Lifecycle {
 public:
  Lifecycle(Engine& engine, RpcServer& server)
      : engine_(engine), server_(server) {}

  void BeginShutdown() {
    std::lock_guard<std::mutex> lock(mu_);
    engine_.BeginShutdown();
    server_.SetServing(false);
  }
  bool BecomeServing() {
    std::lock_guard<std::mutex> lock(mu_);
    if (engine_.shutting_down()) return false;
    server_.SetServing(true);
    return true;
  }

 private:
  std::mutex mu_;
  Engine& engine_;
  RpcServer& server_;
};

// The signal thread: SIGHUP re-reads the token file and the server keeps
// running; the first SIGINT/SIGTERM (or a wake-up without a signal, 0)
// begins shutdown. Returns the signal.
int WaitForStop(RpcServer& server, Lifecycle& lifecycle,
                std::chrono::milliseconds grace) {
  int signo = WaitForShutdownSignal();
  for (; signo == SIGHUP; signo = WaitForShutdownSignal()) {
    if (absl::Status s = server.ReloadTokens(); s.ok()) {
      spdlog::info("SIGHUP: token file reloaded: {} tokens",
                   server.token_count());
    } else {
      spdlog::error(
          "SIGHUP: token file not reloaded, the tokens in force stay: {}",
          std::string(s.message()));
    }
  }
  if (signo != 0) {
    spdlog::info("received {}, shutting down (grace {} ms)", strsignal(signo),
                 grace.count());
  }
  lifecycle.BeginShutdown();
  return signo;
}

// The HTTP port, when configured: same tokens as gRPC, the same engine API.
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttp(
    const transferd::app::ServerConfig& config, EngineApi& api, Engine& engine,
    const RpcServer& rpc) {
  if (config.http.listen_address.empty()) return nullptr;
  HttpServer::Options options = config.http;
  options.server_info_base = rpc.static_server_info();
  auto http =
      HttpServer::Start(options, api, engine.metrics(), rpc.authorizer());
  if (!http.ok()) return http.status();
  spdlog::info(
      "serving HTTP{} on {} (port {}): dashboard /, JSON API /api/v1/, "
      "/metrics{}, /healthz, /readyz",
      (*http)->tls() ? "S" : "", config.http.listen_address, (*http)->port(),
      config.http.metrics_require_token ? " (token)" : "");
  return http;
}

int Run(const transferd::app::ServerConfig& config) {
  const auto& build = transferd::core::GetBuildInfo();
  spdlog::info("transferd {} ({}, {}, torch {}, {}) starting", build.version,
               build.revision, build.build_type, build.torch_version,
               build.allocator);
  if (!config.config_file.empty()) {
    spdlog::info("config file {}", config.config_file);
  }

  auto engine = Engine::Create(config.engine);
  if (!engine.ok()) {
    spdlog::critical("cannot start: {}", engine.status().ToString());
    return 1;
  }
  const auto& device = (*engine)->device();
  spdlog::info(
      "device {} ({}{}), {} threads, {} by default ({}native bf16), cpu: {}",
      device.name, device.description,
      device.capability.empty() ? ""
                                : ", compute capability " + device.capability,
      device.threads, device.precision, device.native_bf16 ? "" : "no ",
      transferd::core::DescribeCpuFeatures(transferd::core::GetCpuFeatures()));

  auto server = RpcServer::Start(config.rpc, **engine);
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    return 1;
  }
  spdlog::info("listening on {} (port {}), NOT_SERVING until ready{}",
               config.rpc.listen_address, (*server)->port(),
               config.rpc.reflection ? ", reflection on" : "");

  EngineApi api(**engine);
  auto http = StartHttp(config, api, **engine, **server);
  if (!http.ok()) {
    spdlog::critical("cannot start: {}", http.status().ToString());
    return 1;
  }

  Lifecycle lifecycle(**engine, **server);
  std::promise<int> stop_signal;
  std::thread signal_thread([&] {
    stop_signal.set_value(
        WaitForStop(**server, lifecycle, config.rpc.shutdown_grace));
  });

  int exit_code = 0;
  std::unique_ptr<transferd::replica::Follower> follower;
  std::unique_ptr<transferd::cluster::Worker> worker;
  absl::Status started = (*engine)->Start();
  if (started.ok()) {
    const auto info = (*engine)->Info();
    spdlog::info(
        "data dir {} (schema v{}, instance {}), {} stale tmp entries and {} "
        "uncatalogued dataset folders removed",
        (*engine)->data_dir().root().string(), info.store_schema_version,
        info.instance_id, (*engine)->data_dir().stale_tmp_entries_removed(),
        (*engine)->datasets().orphans_removed());
    if (lifecycle.BecomeServing()) {
      spdlog::info("serving transferd.v1 on {} (port {})",
                   config.rpc.listen_address, (*server)->port());
      // After SERVING: the per-alias health statuses are published (the
      // cached aliases served at once), then the primary's follow.
      if (!config.follow.primary.empty()) {
        auto started_follower =
            transferd::replica::Follower::Start(config.follow, **engine);
        if (started_follower.ok()) {
          follower = *std::move(started_follower);
          spdlog::info("read-only serving replica of {}",
                       config.follow.primary);
        } else {
          spdlog::critical("cannot start: {}",
                           started_follower.status().ToString());
          exit_code = 1;
          const unsigned char wake = 0;
          (void)!write(g_signal_pipe[1], &wake, 1);
        }
      }
      if (!config.worker.coordinator.empty()) {
        auto started_worker =
            transferd::cluster::Worker::Start(config.worker, **engine);
        if (started_worker.ok()) {
          worker = *std::move(started_worker);
          spdlog::info("worker \"{}\" of the coordinator {}",
                       config.worker.name, config.worker.coordinator);
        } else {
          spdlog::critical("cannot start: {}",
                           started_worker.status().ToString());
          exit_code = 1;
          const unsigned char wake = 0;
          (void)!write(g_signal_pipe[1], &wake, 1);
        }
      }
    }
  } else if (!(*engine)->shutting_down()) {
    spdlog::critical("cannot start: {}", started.ToString());
    exit_code = 1;
    // Wake the signal thread (byte 0: no signal) so that it can be joined.
    const unsigned char wake = 0;
    (void)!write(g_signal_pipe[1], &wake, 1);
  }

  stop_signal.get_future().wait();
  signal_thread.join();
  if (follower != nullptr) follower->Stop();
  if (worker != nullptr) worker->Stop();
  (*server)->Shutdown();
  server->reset();
  // After gRPC drained (readyz said 503 meanwhile), before the engine goes.
  if (*http != nullptr) (*http)->Shutdown();
  http->reset();
  if (absl::Status status = (*engine)->Shutdown(); !status.ok()) {
    spdlog::error("store close: {}", status.ToString());
    return 1;
  }
  if (exit_code == 0) spdlog::info("stopped cleanly");
  return exit_code;
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

  if (!InstallSignalHandlers()) {
    spdlog::critical("cannot install signal handlers: {}",
                     std::strerror(errno));
    return 1;
  }
  return Run(*parsed.config);
}
