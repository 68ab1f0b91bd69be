// transferctl server: info (version, build, device, limits) and health.
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/output.h"

namespace transferd::client::commands {
namespace {

std::string Bytes(int64_t n) {
  if (n <= 0) return "-";
  if (n % (1024 * 1024) == 0) {
    return absl::StrFormat("%d MiB", n / (1024 * 1024));
  }
  return absl::StrFormat("%d B", n);
}

// "15.6 GiB"; "unknown" for 0.
std::string GiB(int64_t n) {
  if (n <= 0) return "unknown";
  return absl::StrFormat("%.1f GiB", static_cast<double>(n) / (1 << 30));
}

std::string When(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "never";
  return google::protobuf::util::TimeUtil::ToString(t);
}

// A serving replica's view of its primary (transferd --follow).
void PrintReplica(const v1::ReplicaStatus& r) {
  std::cout << absl::StrFormat(
      "replica     read-only, follows %s: %s, %s\n"
      "            last contact %s, last in sync %s\n"
      "            pulls %d ok, %d refused, %d failed (%s received)\n",
      r.primary(), r.primary_connected() ? "connected" : "PRIMARY LOST",
      r.in_sync() ? "in sync" : "not in sync", When(r.last_contact_time()),
      When(r.last_sync_time()), r.pulls(), r.pulls_refused(), r.pulls_failed(),
      absl::StrFormat("%.1f MiB",
                      static_cast<double>(r.pulled_bytes()) / (1 << 20)));
  if (!r.last_error().empty()) {
    std::cout << "            last error: " << r.last_error() << "\n";
  }
  for (const v1::ReplicaAlias& a : r.aliases()) {
    std::cout << absl::StrFormat(
        "            %s -> %s%s%s\n", a.alias(),
        a.model().empty() ? "(none yet)" : a.model(),
        a.model() == a.primary_model()
            ? ""
            : absl::StrCat(" (primary: ", a.primary_model(), ")"),
        a.ready() ? ", warm" : ", NOT warm");
  }
}

// Data-parallel training: a coordinator's workers, a worker's coordinator.
void PrintCluster(const v1::ClusterStatus& c) {
  if (c.role() == "worker") {
    std::cout << absl::StrFormat(
        "cluster     worker of %s: %s%s\n", c.coordinator(),
        c.connected() ? "connected" : "NOT CONNECTED",
        c.running().empty() ? ", idle"
                            : absl::StrCat(", running ", c.running()));
    if (!c.last_error().empty()) {
      std::cout << "            last error: " << c.last_error() << "\n";
    }
    return;
  }
  std::cout << absl::StrFormat("cluster     coordinator, %d worker%s\n",
                               c.workers_size(),
                               c.workers_size() == 1 ? "" : "s");
  for (const v1::ClusterWorker& w : c.workers()) {
    std::cout << absl::StrFormat(
        "            %s (%s) %s: %s, %d threads, since %s, %s\n", w.name(),
        w.id(), w.peer(), w.device().name(), w.device().threads(),
        When(w.join_time()),
        w.job().empty() ? "idle" : absl::StrCat("running ", w.job()));
  }
}

int ServerInfo(const Globals& g) {
  auto client = Connect(g);
  auto info = client->GetServerInfo();
  if (!info.ok()) return Fail(info.status());
  if (g.json) {
    PrintJson(*info);
    return kOk;
  }
  const auto& b = info->build();
  const auto& d = info->device();
  const auto& c = info->cpu();
  std::vector<std::string> features;
  if (c.avx2()) features.push_back("avx2");
  if (c.avx512f()) features.push_back("avx512f");
  if (c.avx512_bf16()) features.push_back("avx512_bf16");
  if (c.amx_tile()) features.push_back("amx_tile");
  if (c.amx_bf16()) features.push_back("amx_bf16");
  if (c.onednn()) features.push_back("onednn");
  std::vector<std::string> backbones;
  for (const auto& bb : info->backbones()) backbones.push_back(bb.name());
  const auto& l = info->limits();
  std::cout << absl::StrFormat(
      "server      %s\n"
      "version     %s (%s, %s)\n"
      "libraries   torch %s%s, grpc %s, protobuf %s; allocator %s\n"
      "device      %s: %s%s, %s memory, %d threads, %s by default (%s)\n"
      "cpu         %d logical CPUs; %s\n"
      "backbones   %s\n"
      "limits      max message %s in / %s out, upload chunk %s, shutdown "
      "grace %ds\n"
      "services    %s\n"
      "started     %s (store schema v%d)\n",
      client->address(), info->version(), b.revision(), b.build_type(),
      b.torch_version(), b.torch_cuda() ? " (CUDA)" : "", b.grpc_version(),
      b.protobuf_version(), b.allocator().empty() ? "?" : b.allocator(),
      d.name(), d.description(),
      d.compute_capability().empty()
          ? ""
          : absl::StrCat(" (compute capability ", d.compute_capability(), ")"),
      GiB(d.memory_bytes()), d.threads(),
      d.default_precision() == v1::PRECISION_BF16 ? "bf16" : "fp32",
      d.native_bf16() ? "native bf16" : "no native bf16", c.logical_cpus(),
      features.empty() ? "none" : absl::StrJoin(features, " "),
      backbones.empty() ? "none yet" : absl::StrJoin(backbones, ", "),
      Bytes(l.max_receive_message_bytes()), Bytes(l.max_send_message_bytes()),
      Bytes(l.upload_chunk_bytes()), l.shutdown_grace_seconds(),
      absl::StrJoin(info->implemented_services(), ", "),
      google::protobuf::util::TimeUtil::ToString(info->start_time()),
      info->store_schema_version());
  if (info->has_replica()) PrintReplica(info->replica());
  if (info->has_cluster()) PrintCluster(info->cluster());
  return kOk;
}

int ServerHealth(const Globals& g, const std::string& service,
                 double wait_seconds) {
  auto client = Connect(g);
  auto status = client->CheckHealth(
      service,
      std::chrono::milliseconds(static_cast<int64_t>(wait_seconds * 1000)));
  if (!status.ok()) return Fail(status.status());
  const char* name = transferd::client::HealthStatusName(*status);
  if (g.json) {
    google::protobuf::Struct out;
    (*out.mutable_fields())["service"].set_string_value(service);
    (*out.mutable_fields())["status"].set_string_value(name);
    PrintJson(out);
  } else {
    std::cout << (service.empty() ? "server" : service) << ": " << name << "\n";
  }
  return *status == transferd::client::HealthStatus::kServing ? kOk
                                                              : kNotServing;
}

struct HealthArgs {
  std::string service;
  double wait_seconds = 0;
};

}  // namespace

void AddServerCommands(CLI::App& app, const Globals& g, int& rc) {
  CLI::App* server =
      app.add_subcommand("server", "Server information and health");
  server->require_subcommand(1);
  server->add_subcommand("info", "Version, build, device, backbones, limits")
      ->footer("Example: transferctl --server gpu-box:50051 server info --json")
      ->callback([&g, &rc] { rc = ServerInfo(g); });
  auto args = std::make_shared<HealthArgs>();
  CLI::App* health = server->add_subcommand(
      "health", "grpc.health.v1 status; exit code 4 unless SERVING");
  health->add_option("--service", args->service,
                     "Service name to ask about (default: the whole server)");
  health
      ->add_option("--wait", args->wait_seconds,
                   "Wait up to this many seconds for the server to come up "
                   "and report SERVING")
      ->check(CLI::NonNegativeNumber);
  health->footer("Example: transferctl server health --wait 30");
  health->callback([&g, &rc, args] {
    rc = ServerHealth(g, args->service, args->wait_seconds);
  });
}

}  // namespace transferd::client::commands
