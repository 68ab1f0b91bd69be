// transferctl: the command-line client of transferd.
//
// Exit codes: 0 success; 1 the server answered with an error; 2 usage error;
// 3 server unreachable or unavailable; 4 health check answered but the
// server (or the named service) is not SERVING.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/client.h"

namespace {

namespace v1 = transferd::v1;
using transferd::client::Client;

enum ExitCode {
  kOk = 0,
  kServerError = 1,
  kUsage = 2,
  kUnreachable = 3,
  kNotServing = 4,
};

constexpr char kExitCodesHelp[] =
    "Exit codes: 0 success, 1 server error, 2 usage error, 3 server "
    "unreachable or unavailable, 4 not serving.\n"
    "The server address comes from --server or TRANSFERD_ADDR "
    "(default 127.0.0.1:50051).";

struct Globals {
  std::string server = "127.0.0.1:50051";
  bool json = false;
  double timeout_seconds = 30;
};

std::unique_ptr<Client> Connect(const Globals& g) {
  transferd::client::ClientOptions options;
  options.address = g.server;
  options.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(g.timeout_seconds * 1000));
  return Client::Create(options);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "transferctl: %s\n", std::string(status.message()).c_str());
  return transferd::client::IsUnreachable(status) ? kUnreachable : kServerError;
}

void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::cout << out;
  if (out.empty() || out.back() != '\n') std::cout << '\n';
}

std::string Bytes(int64_t n) {
  if (n <= 0) return "-";
  if (n % (1024 * 1024) == 0) return absl::StrFormat("%d MiB", n / (1024 * 1024));
  return absl::StrFormat("%d B", n);
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
      "libraries   torch %s%s, grpc %s, protobuf %s\n"
      "device      %s: %s, %d threads\n"
      "cpu         %d logical CPUs; %s\n"
      "backbones   %s\n"
      "limits      max message %s in / %s out, upload chunk %s, shutdown "
      "grace %ds\n"
      "services    %s\n"
      "started     %s (store schema v%d)\n",
      client->address(), info->version(), b.revision(), b.build_type(),
      b.torch_version(), b.torch_cuda() ? " (CUDA)" : "", b.grpc_version(),
      b.protobuf_version(), d.name(), d.description(), d.threads(),
      c.logical_cpus(), features.empty() ? "none" : absl::StrJoin(features, " "),
      backbones.empty() ? "none yet" : absl::StrJoin(backbones, ", "),
      Bytes(l.max_receive_message_bytes()), Bytes(l.max_send_message_bytes()),
      Bytes(l.upload_chunk_bytes()), l.shutdown_grace_seconds(),
      absl::StrJoin(info->implemented_services(), ", "),
      google::protobuf::util::TimeUtil::ToString(info->start_time()),
      info->store_schema_version());
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
    std::cout << absl::StrFormat("{\"service\": \"%s\", \"status\": \"%s\"}\n",
                                 service, name);
  } else {
    std::cout << (service.empty() ? "server" : service) << ": " << name << "\n";
  }
  return *status == transferd::client::HealthStatus::kServing ? kOk
                                                              : kNotServing;
}

template <class Response>
int PrintList(const Globals& g, const absl::StatusOr<Response>& response,
              const std::function<void(const Response&)>& table) {
  if (!response.ok()) return Fail(response.status());
  if (g.json) {
    PrintJson(*response);
  } else {
    table(*response);
  }
  return kOk;
}

int DatasetsList(const Globals& g) {
  auto client = Connect(g);
  return PrintList<v1::ListDatasetsResponse>(
      g, client->ListDatasets(v1::ListDatasetsRequest()), [](const v1::ListDatasetsResponse& r) {
        std::cout << absl::StrFormat("%-32s %-24s %8s %10s\n", "NAME", "DISPLAY NAME",
                                     "FILES", "CLASSES");
        for (const auto& d : r.datasets()) {
          std::cout << absl::StrFormat("%-32s %-24s %8d %10d\n", d.name(),
                                       d.display_name(), d.files(),
                                       d.classes_size());
        }
      });
}

int JobsList(const Globals& g) {
  auto client = Connect(g);
  return PrintList<v1::ListJobsResponse>(
      g, client->ListJobs(v1::ListJobsRequest()), [](const v1::ListJobsResponse& r) {
        std::cout << absl::StrFormat("%-28s %-10s %-10s\n", "NAME", "KIND",
                                     "STATE");
        for (const auto& j : r.jobs()) {
          std::cout << absl::StrFormat("%-28s %-10s %-10s\n", j.name(),
                                       v1::JobKind_Name(j.spec().kind()),
                                       v1::JobState_Name(j.state()));
        }
      });
}

int ModelsList(const Globals& g) {
  auto client = Connect(g);
  return PrintList<v1::ListModelsResponse>(
      g, client->ListModels(v1::ListModelsRequest()), [](const v1::ListModelsResponse& r) {
        std::cout << absl::StrFormat("%-28s %-24s %-14s\n", "NAME",
                                     "DISPLAY NAME", "BACKBONE");
        for (const auto& m : r.models()) {
          std::cout << absl::StrFormat("%-28s %-24s %-14s\n", m.name(),
                                       m.display_name(), m.spec().backbone());
        }
      });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"transferctl: client of the transferd training and inference "
               "server",
               "transferctl"};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  Globals g;
  app.add_option("--server", g.server, "transferd address HOST:PORT")
      ->envname("TRANSFERD_ADDR")
      ->capture_default_str();
  app.add_flag("--json", g.json, "Print machine-readable JSON");
  app.add_option("--timeout", g.timeout_seconds, "Seconds per call")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  int rc = kOk;

  CLI::App* server = app.add_subcommand("server", "Server information and health");
  server->require_subcommand(1);
  server->add_subcommand("info", "Version, build, device, backbones, limits")
      ->footer("Example: transferctl --server gpu-box:50051 server info --json")
      ->callback([&] { rc = ServerInfo(g); });
  std::string health_service;
  double wait_seconds = 0;
  CLI::App* health = server->add_subcommand(
      "health", "grpc.health.v1 status; exit code 4 unless SERVING");
  health->add_option("--service", health_service,
                     "Service name to ask about (default: the whole server)");
  health->add_option("--wait", wait_seconds,
                     "Wait up to this many seconds for the server to come up "
                     "and report SERVING")
      ->check(CLI::NonNegativeNumber);
  health->footer("Example: transferctl server health --wait 30");
  health->callback([&] { rc = ServerHealth(g, health_service, wait_seconds); });

  CLI::App* datasets = app.add_subcommand("datasets", "Stored datasets");
  datasets->require_subcommand(1);
  datasets->add_subcommand("ls", "List datasets")->callback([&] {
    rc = DatasetsList(g);
  });
  CLI::App* jobs = app.add_subcommand("jobs", "Train, fine-tune and predict jobs");
  jobs->require_subcommand(1);
  jobs->add_subcommand("ls", "List jobs")->callback([&] { rc = JobsList(g); });
  CLI::App* models = app.add_subcommand("models", "The model registry");
  models->require_subcommand(1);
  models->add_subcommand("ls", "List models")->callback([&] {
    rc = ModelsList(g);
  });

  // Global flags may be given after the subcommand too.
  std::function<void(CLI::App*)> fall_through = [&](CLI::App* cmd) {
    for (CLI::App* sub : cmd->get_subcommands([](CLI::App*) { return true; })) {
      sub->fallthrough();
      fall_through(sub);
    }
  };
  fall_through(&app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }
  return rc;
}
