// transferctl: the command-line client of transferd.
//
// Exit codes: 0 success; 1 the server answered with an error; 2 usage error;
// 3 server unreachable or unavailable; 4 health check answered but the
// server (or the named service) is not SERVING.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
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

// ---- datasets ------------------------------------------------------------

constexpr char kUploadHelp[] =
    "Examples:\n"
    "  transferctl datasets upload ./cats_and_dogs_small --id cats-and-dogs\n"
    "      train/ validation/ test/ split folders, labels from the folders "
    "or\n"
    "      file names inside them (detected, printed before sending)\n"
    "  transferctl datasets upload ./kaggle/train --id dogs-vs-cats "
    "--split keras-book --seed 1\n"
    "      the Kaggle cat.N.jpg / dog.N.jpg folder, split 1000/500/500 per "
    "class\n"
    "  transferctl datasets upload ./photos --labels folder "
    "--split ratios:0.8,0.1,0.1\n"
    "      class folders, a stratified 80/10/10 split\n"
    "  transferctl --json datasets upload ./photos --id photos > photos.json\n"
    "Files and folders whose names start with '.' are skipped. Ctrl-C "
    "cancels;\nthe server keeps nothing of a cancelled or failed upload, so "
    "it can be rerun.";

struct UploadArgs {
  std::string dir;
  std::string id;
  std::string name;
  std::string labels = "auto";
  std::string split = "auto";
  uint64_t seed = 0;
};

// --split: auto | folders | ratios:T,V,E | counts:T,V,E | keras-book.
// nullopt is auto: the server picks split folders when the paths carry
// them, else everything goes to train.
absl::StatusOr<std::optional<v1::SplitPolicy>> ParseSplit(
    const std::string& text, uint64_t seed) {
  if (text == "auto") return std::nullopt;
  v1::SplitPolicy policy;
  if (text == "folders") {
    policy.mutable_folders();
    return policy;
  }
  if (text == "keras-book") {
    v1::SplitPolicy::PerClassCounts* c = policy.mutable_per_class_counts();
    c->set_train(1000);
    c->set_validation(500);
    c->set_test(500);
    c->set_seed(seed);
    return policy;
  }
  absl::string_view rest = text;
  const bool ratios = absl::ConsumePrefix(&rest, "ratios:");
  if (!ratios && !absl::ConsumePrefix(&rest, "counts:")) {
    return absl::InvalidArgumentError(
        "expected auto, folders, ratios:T,V,E, counts:T,V,E or keras-book");
  }
  const std::vector<std::string> parts = absl::StrSplit(rest, ',');
  if (parts.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(ratios ? "ratios" : "counts",
                     " takes three numbers, train,validation,test"));
  }
  if (ratios) {
    double v[3];
    for (int i = 0; i < 3; ++i) {
      if (!absl::SimpleAtod(parts[i], &v[i]) || !(v[i] >= 0 && v[i] <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ratio \"", parts[i], "\" is not a number in [0, 1]"));
      }
    }
    // The server's rule, checked here so a large folder is not sent first.
    if (std::abs(v[0] + v[1] + v[2] - 1) > 1e-6) {
      return absl::InvalidArgumentError("ratios must sum to 1");
    }
    v1::SplitPolicy::Ratios* r = policy.mutable_ratios();
    r->set_train(v[0]);
    r->set_validation(v[1]);
    r->set_test(v[2]);
    r->set_seed(seed);
    return policy;
  }
  int32_t n[3];
  for (int i = 0; i < 3; ++i) {
    if (!absl::SimpleAtoi(parts[i], &n[i]) || n[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "count \"", parts[i], "\" is not a non-negative integer"));
    }
  }
  v1::SplitPolicy::PerClassCounts* c = policy.mutable_per_class_counts();
  c->set_train(n[0]);
  c->set_validation(n[1]);
  c->set_test(n[2]);
  c->set_seed(seed);
  return policy;
}

std::string HumanBytes(int64_t n) {
  if (n < 1024) return absl::StrFormat("%d B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string Duration(double seconds) {
  if (!(seconds >= 0) || seconds > 359999) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

// Decimal units sized to `reference` bytes, so progress reads "12.3/40.0 MB"
// for a large folder and "30.2/45.1 kB" for a small one.
struct ByteUnit {
  double divisor;
  const char* name;
};
ByteUnit UnitFor(double reference) {
  if (reference >= 1e9) return {1e9, "GB"};
  if (reference >= 1e6) return {1e6, "MB"};
  return {1e3, "kB"};
}

// Upload progress on stderr: a bar redrawn in place (at most ~10 times a
// second) on a terminal, else a plain line per 10% so logs stay readable.
class UploadMeter {
 public:
  explicit UploadMeter(bool tty) : tty_(tty) {}

  void Update(const transferd::client::UploadProgress& p) {
    const bool done = p.files_sent >= p.files_total;
    // By bytes, which track time better than files; by files for a folder
    // of empty files.
    double fraction = 1.0;
    if (!done && p.bytes_total > 0) {
      fraction =
          std::min(1.0, static_cast<double>(p.bytes_sent) / p.bytes_total);
    } else if (!done) {
      fraction = static_cast<double>(p.files_sent) / p.files_total;
    }
    const double rate =
        p.elapsed_seconds > 0 ? p.bytes_sent / p.elapsed_seconds : 0;
    const ByteUnit size = UnitFor(static_cast<double>(p.bytes_total));
    const ByteUnit speed = UnitFor(rate);
    if (tty_) {
      const auto now = std::chrono::steady_clock::now();
      if (!done && drawn_ &&
          now - last_draw_ < std::chrono::milliseconds(100)) {
        return;
      }
      last_draw_ = now;
      drawn_ = true;
      const int width = 20;
      const int filled = static_cast<int>(fraction * width);
      const double eta = rate > 0 ? (p.bytes_total - p.bytes_sent) / rate : -1;
      // \033[K clears what a longer previous line left behind.
      std::fputs(
          absl::StrFormat(
              "\r[%s%s] %3d%%  %d/%d files  %.1f/%.1f %s  %.1f %s/s  "
              "ETA %s\033[K",
              std::string(filled, '#'), std::string(width - filled, '.'),
              static_cast<int>(fraction * 100), p.files_sent, p.files_total,
              p.bytes_sent / size.divisor, p.bytes_total / size.divisor,
              size.name, rate / speed.divisor, speed.name,
              done ? "0:00" : Duration(eta))
              .c_str(),
          stderr);
      std::fflush(stderr);
      return;
    }
    const int percent = static_cast<int>(fraction * 100);
    if (percent < next_percent_) return;
    next_percent_ = (percent / 10 + 1) * 10;
    std::fputs(absl::StrFormat(
                   "upload %3d%%: %d/%d files, %.1f/%.1f %s, %.1f %s/s\n",
                   percent, p.files_sent, p.files_total,
                   p.bytes_sent / size.divisor, p.bytes_total / size.divisor,
                   size.name, rate / speed.divisor, speed.name)
                   .c_str(),
               stderr);
  }

  // Ends the bar's line so what follows starts on a fresh one.
  void Close() {
    if (tty_ && drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  const bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_;
  int next_percent_ = 10;
};

// Set by the first Ctrl-C of an upload: the upload stops before its next
// chunk. The handler then restores the default, so a second Ctrl-C kills.
std::atomic<bool> g_cancel_upload{false};
void OnUploadInterrupt(int) {
  g_cancel_upload.store(true);
  std::signal(SIGINT, SIG_DFL);
}

std::string SplitName(v1::Split split) {
  switch (split) {
    case v1::SPLIT_TRAIN:
      return "train";
    case v1::SPLIT_VALIDATION:
      return "validation";
    case v1::SPLIT_TEST:
      return "test";
    default:
      return "unassigned";
  }
}

std::string LabelSourceText(v1::LabelSource source) {
  switch (source) {
    case v1::LABEL_SOURCE_FILENAME:
      return "file names";
    case v1::LABEL_SOURCE_FOLDER:
      return "class folders";
    case v1::LABEL_SOURCE_EXPLICIT:
      return "explicit";
    default:
      return "detected by the server";
  }
}

// "REJECT_REASON_UNSUPPORTED_FORMAT" -> "UNSUPPORTED_FORMAT".
std::string ReasonText(v1::RejectReason reason) {
  std::string name = v1::RejectReason_Name(reason);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "REJECT_REASON_");
  return view.empty() ? absl::StrCat("reason ", static_cast<int>(reason))
                      : std::string(view);
}

// Rejected files listed before "... and N more".
constexpr int kMaxRejectLines = 50;

// The dataset summary shared by `upload` and `show`. `kept` counts the
// files accepted (upload) or stored (show).
void PrintDataset(
    const v1::Dataset& d, const char* kept_word, int64_t kept,
    int64_t duplicates, int64_t rejected_total,
    const google::protobuf::RepeatedPtrField<v1::RejectedFile>& rejects) {
  std::string title = d.name();
  if (!d.display_name().empty()) {
    absl::StrAppend(&title, " (\"", d.display_name(), "\")");
  }
  std::cout << absl::StrFormat("dataset     %s\n", title);
  if (d.has_create_time()) {
    std::cout << absl::StrFormat(
        "created     %s\n",
        google::protobuf::util::TimeUtil::ToString(d.create_time()));
  }
  std::cout << absl::StrFormat("labels      %s\n",
                               LabelSourceText(d.label_source()));
  std::cout << absl::StrFormat("classes     %d: %s\n", d.classes_size(),
                               absl::StrJoin(d.classes(), ", "));
  for (const v1::SplitSummary& s : d.splits()) {
    std::vector<std::string> counts;
    for (const v1::ClassCount& c : s.classes()) {
      counts.push_back(absl::StrFormat("%s %d", c.label(), c.files()));
    }
    std::cout << absl::StrFormat("split       %s: %d files (%s)\n",
                                 SplitName(s.split()), s.files(),
                                 absl::StrJoin(counts, ", "));
  }
  rejected_total = std::max<int64_t>(rejected_total, rejects.size());
  std::cout << absl::StrFormat(
      "files       %d %s, %d duplicate%s, %d rejected\n", kept, kept_word,
      duplicates, duplicates == 1 ? "" : "s", rejected_total);
  std::cout << absl::StrFormat("stored      %d files, %s\n", d.files(),
                               HumanBytes(d.bytes()));
  const v1::ImageSizeStats& im = d.image_size();
  if (im.max_width() > 0) {
    std::cout << absl::StrFormat(
        "images      %dx%d to %dx%d pixels, mean %.1fx%.1f\n", im.min_width(),
        im.min_height(), im.max_width(), im.max_height(), im.mean_width(),
        im.mean_height());
  }
  const int shown = std::min(rejects.size(), kMaxRejectLines);
  for (int i = 0; i < shown; ++i) {
    const v1::RejectedFile& r = rejects[i];
    std::cout << absl::StrFormat(
        "rejected    %s: %s%s\n", r.path(), ReasonText(r.reason()),
        r.message().empty() ? "" : absl::StrCat(" (", r.message(), ")"));
  }
  if (rejected_total > shown) {
    std::cout << absl::StrFormat("            ... and %d more\n",
                                 rejected_total - shown);
  }
}

int DatasetsUpload(const Globals& g, const UploadArgs& args) {
  // What the folder looks like, before anything is sent: a wrong guess is
  // cheaper to spot now than after a long upload.
  auto layout = transferd::client::DetectLayout(args.dir);
  if (!layout.ok()) return Fail(layout.status());
  const std::string described = transferd::client::DescribeLayout(*layout);
  if (g.json) {
    std::fprintf(stderr, "layout: %s\n", described.c_str());
  } else {
    std::cout << "layout      " << described << "\n" << std::flush;
  }

  auto split = ParseSplit(args.split, args.seed);
  if (!split.ok()) {  // the option validator already checked the syntax
    std::fprintf(stderr, "transferctl: --split: %s\n",
                 std::string(split.status().message()).c_str());
    return kUsage;
  }

  transferd::client::UploadOptions options;
  options.directory = args.dir;
  options.dataset_id = args.id;
  options.display_name = args.name;
  if (options.display_name.empty()) {
    // The folder's own name, the way people refer to it.
    options.display_name = std::filesystem::absolute(args.dir)
                               .lexically_normal()
                               .filename()
                               .string();
    if (options.display_name.empty()) {
      options.display_name = std::filesystem::absolute(args.dir)
                                 .lexically_normal()
                                 .parent_path()
                                 .filename()
                                 .string();
    }
  }
  if (args.labels == "filename") {
    options.label_source = v1::LABEL_SOURCE_FILENAME;
  } else if (args.labels == "folder") {
    options.label_source = v1::LABEL_SOURCE_FOLDER;
  } else {
    // auto: the layout printed above, sent explicitly so that what the user
    // read is what the server applies (the server's own detection follows a
    // stricter every-path rule and could differ on a mixed folder).
    options.label_source = layout->label_source;
  }
  options.split_policy = *split;
  options.cancel = &g_cancel_upload;

  auto client = Connect(g);
  UploadMeter meter(isatty(STDERR_FILENO) == 1);
  g_cancel_upload.store(false);
  std::signal(SIGINT, OnUploadInterrupt);
  auto response = client->UploadDataset(
      options, [&](const transferd::client::UploadProgress& p) {
        meter.Update(p);
        // Everything is sent; what is left is the server's work, which a
        // Ctrl-C now ends at once (closing the call cancels it).
        if (p.files_sent == p.files_total) std::signal(SIGINT, SIG_DFL);
      });
  std::signal(SIGINT, SIG_DFL);
  meter.Close();
  if (!response.ok()) return Fail(response.status());
  if (g.json) {
    PrintJson(*response);
    return kOk;
  }
  PrintDataset(response->dataset(), "accepted", response->accepted_files(),
               response->duplicate_files(),
               std::max<int64_t>(response->rejected_size(),
                                 response->dataset().rejected_files()),
               response->rejected());
  return kOk;
}

int DatasetsShow(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  auto dataset = client->GetDataset(transferd::client::DatasetName(name));
  if (!dataset.ok()) return Fail(dataset.status());
  if (g.json) {
    PrintJson(*dataset);
    return kOk;
  }
  PrintDataset(*dataset, "stored", dataset->files(), dataset->duplicate_files(),
               dataset->rejected_files(), dataset->rejects());
  return kOk;
}

int DatasetsRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  const std::string full = transferd::client::DatasetName(name);
  absl::Status status = client->DeleteDataset(full);
  if (!status.ok()) return Fail(status);
  if (g.json) {
    // DeleteDataset returns google.protobuf.Empty.
    std::cout << "{}\n";
  } else {
    std::cout << "deleted " << full << "\n";
  }
  return kOk;
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

  UploadArgs upload_args;
  CLI::App* upload = datasets->add_subcommand(
      "upload", "Upload a folder of JPEG/PNG images as a dataset");
  upload->add_option("DIR", upload_args.dir, "Folder to upload (recursively)")
      ->required()
      ->check(CLI::ExistingDirectory);
  upload->add_option("--id", upload_args.id,
                     "Dataset id, lowercase [a-z0-9-] (default: the server "
                     "chooses)");
  upload->add_option("--name", upload_args.name,
                     "Display name (default: the folder's name)");
  upload
      ->add_option("--labels", upload_args.labels,
                   "Where labels come from: auto (detected, printed "
                   "first), filename (cat.0.jpg -> cat) or folder "
                   "(train/cats/x.jpg -> cats)")
      ->check(CLI::IsMember({"auto", "filename", "folder"}))
      ->capture_default_str();
  upload
      ->add_option("--split", upload_args.split,
                   "auto, folders (train/ validation|val/ test/), "
                   "ratios:T,V,E (fractions summing to 1), counts:T,V,E "
                   "(files per class) or keras-book (counts:1000,500,500)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            auto parsed = ParseSplit(text, 0);
            return parsed.ok() ? "" : std::string(parsed.status().message());
          },
          "SPLIT"))
      ->capture_default_str();
  upload
      ->add_option("--seed", upload_args.seed,
                   "Shuffle seed of ratios, counts and keras-book splits")
      ->capture_default_str();
  upload->footer(kUploadHelp);
  upload->callback([&] { rc = DatasetsUpload(g, upload_args); });

  std::string dataset_name;
  CLI::App* show = datasets->add_subcommand(
      "show", "Classes, splits, image sizes and rejects of a dataset");
  show->add_option("NAME", dataset_name, "ID or datasets/ID")->required();
  show->footer("Example: transferctl datasets show cats-and-dogs");
  show->callback([&] { rc = DatasetsShow(g, dataset_name); });

  CLI::App* rm =
      datasets->add_subcommand("rm", "Delete a dataset and its files");
  rm->add_option("NAME", dataset_name, "ID or datasets/ID")->required();
  rm->footer("Example: transferctl datasets rm cats-and-dogs");
  rm->callback([&] { rc = DatasetsRemove(g, dataset_name); });
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
