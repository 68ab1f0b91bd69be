// transferctl: the command-line client of transferd.
//
// Exit codes: 0 success; 1 the server answered with an error (or a followed
// job failed or was cancelled); 2 usage error; 3 server unreachable or
// unavailable; 4 health check answered but the server (or the named
// service) is not SERVING. Ctrl-C while following a job detaches: exit 0.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/client.h"
#include "client/plot.h"
#include "client/spec_file.h"

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
    "Exit codes: 0 success, 1 server error (or the followed job failed or "
    "was\ncancelled), 2 usage error, 3 server unreachable or unavailable, 4 "
    "not serving.\n"
    "The server address comes from --server or TRANSFERD_ADDR "
    "(default 127.0.0.1:50051),\nthe bearer token from --token or "
    "TRANSFERD_TOKEN.";

struct Globals {
  std::string server = "127.0.0.1:50051";
  bool json = false;
  double timeout_seconds = 30;
  std::string token;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
};

std::unique_ptr<Client> Connect(const Globals& g) {
  transferd::client::ClientOptions options;
  options.address = g.server;
  options.timeout =
      std::chrono::milliseconds(static_cast<int64_t>(g.timeout_seconds * 1000));
  options.token = g.token;
  options.tls = g.tls;
  options.tls_ca_file = g.tls_ca;
  options.tls_cert_file = g.tls_cert;
  options.tls_key_file = g.tls_key;
  options.tls_server_name = g.tls_server_name;
  return Client::Create(options);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "transferctl: %s\n",
               std::string(status.message()).c_str());
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
  if (n % (1024 * 1024) == 0)
    return absl::StrFormat("%d MiB", n / (1024 * 1024));
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
      c.logical_cpus(),
      features.empty() ? "none" : absl::StrJoin(features, " "),
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
      g, client->ListDatasets(v1::ListDatasetsRequest()),
      [](const v1::ListDatasetsResponse& r) {
        std::cout << absl::StrFormat("%-32s %-24s %8s %10s\n", "NAME",
                                     "DISPLAY NAME", "FILES", "CLASSES");
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

// `rm` of any resource: the delete RPCs return google.protobuf.Empty, which
// --json prints as {}.
int PrintDeleted(const Globals& g, const absl::Status& status,
                 const std::string& full) {
  if (!status.ok()) return Fail(status);
  if (g.json) {
    google::protobuf::Struct out;
    (*out.mutable_fields())["deleted"].set_string_value(full);
    PrintJson(out);
  } else {
    std::cout << "deleted " << full << "\n";
  }
  return kOk;
}

int DatasetsRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  const std::string full = transferd::client::DatasetName(name);
  return PrintDeleted(g, client->DeleteDataset(full), full);
}

constexpr char kTrainHelp[] =
    "Examples:\n"
    "  transferctl train cats-and-dogs --recipe keras-book\n"
    "      VGG16 at 150 px, Flatten + Dense(256) + Dropout(0.5), 30 frozen\n"
    "      epochs, then block5 fine-tuned for 100 (Chollet's book)\n"
    "  transferctl train cats-and-dogs --recipe tf-tutorial --epochs 5 "
    "--fine-tune-epochs 5\n"
    "  transferctl train datasets/small --backbone mobilenet --alpha 0.25 "
    "--weights none \\\n"
    "      --input-size 32 --epochs 2 --batch-size 4 --augment none "
    "--hidden-units 8\n"
    "  transferctl train flowers --spec flowers.yaml --lr 3e-4 --detach\n"
    "      flowers.yaml (JSON works too, same field names):\n"
    "        recipe: tf-tutorial\n"
    "        model: {input_size: 192}\n"
    "        stages:\n"
    "          - epochs: 5\n"
    "            optimizer: {kind: KIND_ADAM, learning_rate: 1e-4}\n"
    "Flags override --spec, which overrides the recipe, field by field. "
    "--epochs,\n--batch-size, --lr, --optimizer, --momentum, --augment and "
    "--trainable-from set\nstage 1; --fine-tune-* set stage 2. The server "
    "checks the values and names the\nfield it rejects "
    "(spec.stages[0].optimizer.learning_rate must be > 0).\n"
    "Without --detach the job is followed to its end: exit code 0 when it "
    "succeeds,\n1 when it fails or is cancelled. Ctrl-C detaches (exit code "
    "0) without\ncancelling; transferctl jobs watch JOB picks it up again.";

constexpr char kFinetuneHelp[] =
    "Examples:\n"
    "  transferctl finetune cats-vgg16 cats-and-dogs --trainable-from "
    "block5_conv1 \\\n"
    "      --optimizer rmsprop --lr 1e-5 --epochs 20\n"
    "  transferctl finetune models/cats-vgg16 more-cats --epochs 5 --detach\n"
    "The network is the base model's; the flags set its training stages as "
    "for train.";

constexpr char kWatchHelp[] =
    "Examples:\n"
    "  transferctl jobs watch cats-vgg16\n"
    "  transferctl --json jobs watch cats-vgg16 --from-start > events.jsonl\n"
    "Progress prints like Keras' fit(): a bar redrawn in place on a "
    "terminal, whole\nlines otherwise; --json prints each event as one line "
    "of protobuf JSON. A\ndropped connection is resumed where it stopped "
    "(for up to 30 s). Exit code 0\nwhen the job succeeds (or on Ctrl-C, "
    "which detaches and leaves the job\nrunning), 1 when it fails or is "
    "cancelled.";

// ---- jobs and models -------------------------------------------------------

// "JOB_STATE_SUCCEEDED" -> "SUCCEEDED", "JOB_KIND_FINE_TUNE" -> "FINE_TUNE".
std::string StateText(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "JOB_STATE_");
  return std::string(view);
}

std::string KindText(v1::JobKind kind) {
  std::string name = v1::JobKind_Name(kind);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "JOB_KIND_");
  return std::string(view);
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

// 1234567 -> "1,234,567".
std::string Thousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// A timestamp as "2024-05-01 12:34:56Z" (UTC); "-" when unset.
std::string When(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const time_t seconds = static_cast<time_t>(t.seconds());
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

// Keras' ETA format: "41s", "3:05", "1:02:03".
std::string KerasEta(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  }
  if (s >= 60) return absl::StrFormat("%d:%02d", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

// A learning rate or similar: "0.0001" -> "1e-04", 0.5 -> "0.5".
std::string Num(double v) { return absl::StrFormat("%g", v); }

std::string OptimizerText(const v1::OptimizerSpec& o) {
  std::string kind;
  switch (o.kind()) {
    case v1::OptimizerSpec::KIND_RMSPROP:
      kind = "rmsprop";
      break;
    case v1::OptimizerSpec::KIND_ADAM:
      kind = "adam";
      break;
    case v1::OptimizerSpec::KIND_SGD:
      kind = "sgd";
      break;
    default:
      kind = "default optimizer";
      break;
  }
  if (o.has_learning_rate())
    absl::StrAppend(&kind, " lr ", Num(o.learning_rate()));
  if (o.has_momentum() && o.momentum() != 0) {
    absl::StrAppend(&kind, " momentum ", Num(o.momentum()));
  }
  return kind;
}

std::string AugmentText(const v1::AugmentationSpec& a) {
  if (!a.preset().empty()) return a.preset();
  if (a.has_enabled() && !a.enabled()) return "off";
  std::vector<std::string> parts;
  if (a.rotation_range() != 0)
    parts.push_back("rotation " + Num(a.rotation_range()));
  if (a.width_shift_range() != 0 || a.height_shift_range() != 0) {
    parts.push_back(absl::StrCat("shift ", Num(a.width_shift_range()), "/",
                                 Num(a.height_shift_range())));
  }
  if (a.shear_range() != 0) parts.push_back("shear " + Num(a.shear_range()));
  if (a.zoom_range() != 0) parts.push_back("zoom " + Num(a.zoom_range()));
  if (a.horizontal_flip()) parts.push_back("horizontal flip");
  if (a.vertical_flip()) parts.push_back("vertical flip");
  if (parts.empty()) return a.has_enabled() ? "on" : "default";
  return absl::StrJoin(parts, ", ");
}

std::string StageText(const v1::StageSpec& s) {
  std::vector<std::string> parts;
  if (!s.trainable_from().empty()) {
    parts.push_back("trainable from " + s.trainable_from());
  }
  if (s.batch_norm_inference() && s.trainable_from() != "none") {
    parts.push_back("BatchNorm in inference mode");
  }
  parts.push_back(OptimizerText(s.optimizer()));
  if (s.has_epochs()) {
    parts.push_back(
        absl::StrCat(s.epochs(), s.epochs() == 1 ? " epoch" : " epochs"));
  }
  if (s.has_batch_size())
    parts.push_back(absl::StrCat("batch ", s.batch_size()));
  parts.push_back("augmentation " + AugmentText(s.augmentation()));
  if (!s.early_stopping().monitor().empty()) {
    parts.push_back(absl::StrCat("early stopping on ",
                                 s.early_stopping().monitor(), ", patience ",
                                 s.early_stopping().patience()));
  }
  return absl::StrJoin(parts, "; ");
}

std::string ModelSpecText(const v1::ModelSpec& m) {
  if (m.backbone().empty()) return "";
  std::string out = m.backbone();
  if (m.has_alpha() &&
      (absl::StartsWith(m.backbone(), "mobilenet") || m.alpha() != 1)) {
    absl::StrAppend(&out, " (alpha ", Num(m.alpha()), ")");
  }
  if (!m.weights().empty()) absl::StrAppend(&out, ", weights ", m.weights());
  if (m.has_input_size()) absl::StrAppend(&out, ", ", m.input_size(), " px");
  if (m.precision() == v1::PRECISION_FP32) absl::StrAppend(&out, ", fp32");
  if (m.precision() == v1::PRECISION_BF16) absl::StrAppend(&out, ", bf16");
  const v1::HeadSpec& h = m.head();
  std::vector<std::string> head;
  if (h.pooling() == v1::POOLING_FLATTEN) head.push_back("flatten");
  if (h.pooling() == v1::POOLING_GLOBAL_AVERAGE)
    head.push_back("global average");
  if (h.has_hidden_units() && h.hidden_units() > 0) {
    head.push_back(absl::StrCat("dense ", h.hidden_units()));
  }
  if (h.has_dropout() && h.dropout() > 0)
    head.push_back("dropout " + Num(h.dropout()));
  if (!head.empty())
    absl::StrAppend(&out, "; head ", absl::StrJoin(head, " + "));
  return out;
}

std::string TrainableText(const v1::TrainableSummary& t) {
  return absl::StrFormat(
      "%s trainable tensors, %s trainable params, %s non-trainable",
      Thousands(t.trainable_tensors()), Thousands(t.trainable_parameters()),
      Thousands(t.non_trainable_parameters()));
}

int TotalEpochs(const v1::Job& job) {
  if (job.progress().epochs() > 0) return job.progress().epochs();
  int total = 0;
  for (const v1::StageSpec& s : job.resolved_spec().stages())
    total += s.epochs();
  return total;
}

std::string OneLineJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Prints a job's events the way Keras' fit() prints progress: "Epoch 3/30",
// then on a terminal a bar redrawn in place, and a summary line per epoch.
// Off a terminal only whole lines (no \r): per epoch its header and
// summary, plus stage, state, checkpoint, log and evaluation lines. With
// --json each event is one line of protobuf JSON.
class WatchPrinter {
 public:
  WatchPrinter(bool tty, bool json, const v1::Job& job)
      : tty_(tty), json_(json), job_(job), total_epochs_(TotalEpochs(job)) {}

  void Event(const v1::JobEvent& e) {
    reconnecting_ = false;
    if (json_) {
      std::cout << OneLineJson(e) << '\n' << std::flush;
      if (e.has_state_changed()) NoteState(e.state_changed());
      return;
    }
    switch (e.event_case()) {
      case v1::JobEvent::kStep:
        Step(e.step());
        break;
      case v1::JobEvent::kEpochEnd:
        EpochEnd(e.epoch_end());
        break;
      case v1::JobEvent::kStageStarted:
        Stage(e.stage_started());
        break;
      case v1::JobEvent::kStateChanged:
        State(e.state_changed());
        break;
      case v1::JobEvent::kCheckpointSaved: {
        const v1::CheckpointSaved& c = e.checkpoint_saved();
        Line(absl::StrFormat("checkpoint: epoch %d, %s", c.epoch(),
                             HumanBytes(c.bytes())),
             /*dim=*/true);
        break;
      }
      case v1::JobEvent::kEvaluation:
        Evaluation(e.evaluation());
        break;
      case v1::JobEvent::kLog:
        Line(absl::StrCat(e.log().level().empty() ? "info" : e.log().level(),
                          ": ", e.log().message()),
             e.log().level() != "warning");
        break;
      default:
        break;
    }
    std::cout << std::flush;
  }

  // The stream broke; told once per outage, on stderr.
  void Reconnecting(const absl::Status& why, int64_t after) {
    if (reconnecting_) return;
    reconnecting_ = true;
    CloseBar();
    std::cout << std::flush;
    std::fprintf(
        stderr,
        "transferctl: connection lost (%s); reconnecting, resuming after "
        "event %lld\n",
        std::string(why.message()).c_str(), static_cast<long long>(after));
  }

  // Ends a bar being drawn, so what follows starts on its own line.
  void CloseBar() {
    if (bar_open_) {
      std::cout << "\r\033[K";
      bar_open_ = false;
    }
  }

  std::optional<v1::JobState> final_state() const { return final_state_; }
  const std::string& final_message() const { return final_message_; }

 private:
  void Line(const std::string& text, bool dim = false) {
    CloseBar();
    if (tty_ && dim) {
      std::cout << "\033[2m" << text << "\033[0m\n";
    } else {
      std::cout << text << '\n';
    }
  }

  void EpochHeader(int epoch) {
    if (header_epoch_ == epoch) return;
    header_epoch_ = epoch;
    if (job_.resolved_spec().kind() == v1::JOB_KIND_PREDICT) {
      Line("Predicting");
      return;
    }
    Line(total_epochs_ > 0
             ? absl::StrFormat("Epoch %d/%d", epoch, total_epochs_)
             : absl::StrFormat("Epoch %d", epoch));
  }

  void Step(const v1::StepProgress& s) {
    steps_ = s.steps();
    if (!tty_) return;  // pipes get the epoch's summary line only
    EpochHeader(s.epoch());
    const int width = static_cast<int>(absl::StrCat(s.steps()).size());
    std::cout << absl::StrFormat(
        "\r%*d/%d %s - ETA: %s - loss: %.4f - accuracy: %.4f\033[K", width,
        s.step(), s.steps(), Bar(s.step(), s.steps()),
        KerasEta(s.eta_seconds()), s.loss(), s.accuracy());
    bar_open_ = true;
  }

  static std::string Bar(int64_t step, int64_t steps) {
    constexpr int64_t kWidth = 30;
    const int64_t filled =
        steps > 0 ? std::min<int64_t>(kWidth, kWidth * step / steps) : 0;
    std::string bar = "[";
    if (filled > 0) {
      bar += std::string(static_cast<size_t>(filled - 1), '=');
      bar += step < steps ? '>' : '=';
    }
    bar += std::string(static_cast<size_t>(kWidth - filled), '.');
    bar += ']';
    return bar;
  }

  void EpochEnd(const v1::EpochMetrics& m) {
    EpochHeader(m.epoch());
    std::string line;
    if (steps_ > 0) line = absl::StrFormat("%d/%d - ", steps_, steps_);
    absl::StrAppend(&line,
                    absl::StrFormat("%ds - loss: %.4f - accuracy: %.4f",
                                    static_cast<int64_t>(m.seconds() + 0.5),
                                    m.loss(), m.accuracy()));
    if (m.has_val_loss())
      absl::StrAppend(&line,
                      absl::StrFormat(" - val_loss: %.4f", m.val_loss()));
    if (m.has_val_accuracy()) {
      absl::StrAppend(
          &line, absl::StrFormat(" - val_accuracy: %.4f", m.val_accuracy()));
    }
    Line(line);
    steps_ = 0;
  }

  void Stage(const v1::StageStarted& s) {
    const int stages = job_.resolved_spec().stages_size();
    std::string head =
        stages > 0 ? absl::StrFormat("Stage %d/%d", s.stage() + 1, stages)
                   : absl::StrFormat("Stage %d", s.stage() + 1);
    if (!s.name().empty()) absl::StrAppend(&head, " \"", s.name(), "\"");
    absl::StrAppend(&head, ": ", TrainableText(s.trainable()),
                    s.uses_feature_cache() ? "; backbone features cached"
                                           : "; no feature cache");
    Line(head);
    const v1::StageSpec* spec = s.has_spec() ? &s.spec() : nullptr;
    if (spec == nullptr && s.stage() >= 0 && s.stage() < stages) {
      spec = &job_.resolved_spec().stages(s.stage());
    }
    if (spec != nullptr) Line("  " + StageText(*spec));
  }

  void NoteState(const v1::StateChanged& s) {
    if (IsTerminal(s.state())) {
      final_state_ = s.state();
      final_message_ = s.message();
    }
  }

  void State(const v1::StateChanged& s) {
    NoteState(s);
    std::string line = "state: " + StateText(s.state());
    if (!s.message().empty()) absl::StrAppend(&line, " (", s.message(), ")");
    Line(line);
  }

  void Evaluation(const v1::Evaluation& e) {
    std::string line = absl::StrFormat(
        "evaluation %s: %d examples - loss: %.4f - accuracy: %.4f", e.split(),
        e.examples(), e.loss(), e.accuracy());
    if (e.roc_auc() > 0)
      absl::StrAppend(&line, absl::StrFormat(" - roc_auc: %.4f", e.roc_auc()));
    Line(line);
  }

  const bool tty_;
  const bool json_;
  const v1::Job job_;
  const int total_epochs_;
  int header_epoch_ = 0;
  int64_t steps_ = 0;
  bool bar_open_ = false;
  bool reconnecting_ = false;
  std::optional<v1::JobState> final_state_;
  std::string final_message_;
};

// Set by the first Ctrl-C of a watch: the watch ends, the job keeps running.
// The handler then restores the default, so a second Ctrl-C kills.
std::atomic<bool> g_detach{false};
void OnWatchInterrupt(int) {
  g_detach.store(true);
  std::signal(SIGINT, SIG_DFL);
}

// Follows `job` from after `after` to its end, printing as WatchPrinter
// does. Exit code: 0 SUCCEEDED (or detached with Ctrl-C), 1 FAILED or
// CANCELLED, else as Fail().
int FollowJob(const Globals& g, Client& client, const v1::Job& job,
              int64_t after) {
  const bool tty = !g.json && isatty(STDOUT_FILENO) == 1;
  WatchPrinter printer(tty, g.json, job);
  transferd::client::WatchOptions options;
  options.cancel = &g_detach;
  options.on_reconnect = [&](const absl::Status& why, int64_t seq) {
    printer.Reconnecting(why, seq);
  };
  g_detach.store(false);
  std::signal(SIGINT, OnWatchInterrupt);
  absl::Status status = client.WatchJob(
      job.name(), after, /*follow=*/true,
      [&](const v1::JobEvent& e) { printer.Event(e); }, options);
  std::signal(SIGINT, SIG_DFL);
  printer.CloseBar();
  std::cout << std::flush;
  if (g_detach.load()) {
    // On a terminal the line holding "^C" is ended first.
    std::fprintf(
        stderr,
        "%sdetached; the job keeps running: transferctl jobs watch %s\n",
        isatty(STDERR_FILENO) == 1 ? "\n" : "", job.name().c_str());
    return kOk;
  }
  if (!status.ok()) {
    if (transferd::client::IsUnreachable(status)) {
      std::fprintf(stderr,
                   "transferctl: %s\nthe job may still be running: transferctl "
                   "jobs watch %s\n",
                   std::string(status.message()).c_str(), job.name().c_str());
      return kUnreachable;
    }
    return Fail(status);
  }
  // The stream ended after the terminal state event; the job as it ended
  // says which model it made.
  std::optional<v1::JobState> state = printer.final_state();
  std::string message = printer.final_message();
  absl::StatusOr<v1::Job> now = client.GetJob(job.name());
  if (now.ok()) {
    if (!state.has_value() || IsTerminal(now->state())) state = now->state();
    if (!now->failure_reason().empty()) message = now->failure_reason();
  }
  if (!state.has_value()) {
    if (!now.ok()) return Fail(now.status());
    return kOk;
  }
  switch (*state) {
    case v1::JOB_STATE_SUCCEEDED:
      if (!g.json && now.ok() && !now->result_model().empty()) {
        std::cout << "model: " << now->result_model() << "\n";
      }
      return kOk;
    case v1::JOB_STATE_FAILED:
      std::fprintf(stderr, "transferctl: %s failed: %s\n", job.name().c_str(),
                   message.empty() ? "no reason given" : message.c_str());
      return kServerError;
    case v1::JOB_STATE_CANCELLED:
      std::fprintf(stderr, "transferctl: %s was cancelled\n",
                   job.name().c_str());
      return kServerError;
    default:
      return kOk;
  }
}

// CLI options whose presence matters (a flag given overrides --spec and the
// recipe; one not given leaves them alone).
template <class T>
struct Flag {
  T value{};
  CLI::Option* option = nullptr;
  bool set() const { return option != nullptr && option->count() > 0; }
};

template <class T>
CLI::Option* AddFlag(CLI::App* cmd, const std::string& name, Flag<T>& flag,
                     const std::string& help) {
  flag.option = cmd->add_option(name, flag.value, help);
  return flag.option;
}

struct SpecArgs {
  std::string dataset;
  std::string model;
  Flag<std::string> recipe, backbone, weights, precision, pooling;
  Flag<double> alpha, dropout;
  Flag<int32_t> input_size, hidden_units;
  Flag<int32_t> epochs, batch_size;
  Flag<double> lr, momentum;
  Flag<std::string> optimizer, augment, trainable_from;
  Flag<std::string> fine_tune_from;
  Flag<int32_t> fine_tune_epochs;
  Flag<double> fine_tune_lr;
  Flag<uint64_t> seed;
  Flag<std::string> id, spec_file;
  bool detach = false;
};

void AddModelFlags(CLI::App* cmd, SpecArgs& a) {
  AddFlag(cmd, "--backbone", a.backbone,
          "vgg16, vgg19, resnet50, mobilenet or mobilenet_v2 (server info "
          "lists them)");
  AddFlag(cmd, "--alpha", a.alpha, "MobileNet width multiplier (0.25 to 1.4)");
  AddFlag(
      cmd, "--weights", a.weights,
      "imagenet, none (random init) or a file in the server's weights folder");
  AddFlag(cmd, "--input-size", a.input_size,
          "Square input size in pixels (>= 32)");
  AddFlag(cmd, "--precision", a.precision,
          "fp32 or bf16 (default: the server's)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  AddFlag(cmd, "--pooling", a.pooling,
          "Head pooling: flatten or gap (global average)")
      ->check(CLI::IsMember({"flatten", "gap"}));
  AddFlag(cmd, "--hidden-units", a.hidden_units,
          "Width of the head's hidden Dense(relu) layer; 0 = none");
  AddFlag(cmd, "--dropout", a.dropout,
          "Dropout rate before the output layer, in [0, 1)");
}

void AddStageFlags(CLI::App* cmd, SpecArgs& a) {
  AddFlag(cmd, "--recipe", a.recipe,
          "Start from a recipe: keras-book (VGG16, 150 px, frozen then block5 "
          "fine-tune) or tf-tutorial (MobileNetV2, 160 px)")
      ->check(CLI::IsMember({"keras-book", "tf-tutorial"}));
  AddFlag(cmd, "--epochs", a.epochs, "Epochs of stage 1");
  AddFlag(cmd, "--batch-size", a.batch_size, "Batch size of stage 1");
  AddFlag(cmd, "--lr", a.lr, "Learning rate of stage 1 (> 0)");
  AddFlag(cmd, "--optimizer", a.optimizer,
          "Optimizer of stage 1: rmsprop, adam or sgd")
      ->check(CLI::IsMember({"rmsprop", "adam", "sgd"}));
  AddFlag(cmd, "--momentum", a.momentum,
          "Momentum of stage 1 (sgd, rmsprop), in [0, 1)");
  AddFlag(cmd, "--augment", a.augment,
          "Augmentation of stage 1: keras-book, tf-tutorial or none")
      ->check(CLI::IsMember({"keras-book", "tf-tutorial", "none"}));
  AddFlag(
      cmd, "--trainable-from", a.trainable_from,
      "First trainable backbone layer of stage 1 (Keras name, index, or none)");
  AddFlag(cmd, "--fine-tune-from", a.fine_tune_from,
          "Add (or change) stage 2, training from this backbone layer "
          "(\"block5_conv1\", \"100\")");
  AddFlag(cmd, "--fine-tune-epochs", a.fine_tune_epochs, "Epochs of stage 2");
  AddFlag(cmd, "--fine-tune-lr", a.fine_tune_lr, "Learning rate of stage 2");
  AddFlag(cmd, "--seed", a.seed,
          "Seed of initialisation, shuffling and augmentation");
  AddFlag(cmd, "--id", a.id, "Job id (default: the server chooses)");
  AddFlag(cmd, "--spec", a.spec_file,
          "A JobSpec in JSON or YAML (proto field names) to start from; flags "
          "override it")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--detach", a.detach,
                "Print the job and return at once instead of following it");
}

// The CreateJobRequest the flags describe.
absl::StatusOr<v1::CreateJobRequest> BuildRequest(const SpecArgs& a,
                                                  v1::JobKind kind) {
  v1::CreateJobRequest request;
  v1::JobSpec& spec = *request.mutable_spec();
  if (a.spec_file.set()) {
    std::ifstream in(a.spec_file.value);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", a.spec_file.value));
    }
    absl::StatusOr<std::string> json =
        transferd::client::SpecTextToJson(text.str());
    if (!json.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.spec_file.value, ": ", json.status().message()));
    }
    auto parsed = google::protobuf::util::JsonStringToMessage(*json, &spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          a.spec_file.value,
          " is not a JobSpec (protobuf JSON or YAML field names): ",
          parsed.ToString()));
    }
  }
  spec.set_kind(kind);
  if (!a.dataset.empty())
    spec.set_dataset(transferd::client::DatasetName(a.dataset));
  if (!a.model.empty())
    spec.set_base_model(transferd::client::ModelName(a.model));
  if (a.recipe.set()) spec.set_recipe(a.recipe.value);
  if (a.seed.set()) spec.set_seed(a.seed.value);

  v1::ModelSpec& m = *spec.mutable_model();
  if (a.backbone.set()) m.set_backbone(a.backbone.value);
  if (a.alpha.set()) m.set_alpha(a.alpha.value);
  if (a.weights.set()) m.set_weights(a.weights.value);
  if (a.input_size.set()) m.set_input_size(a.input_size.value);
  if (a.precision.set()) {
    m.set_precision(a.precision.value == "bf16" ? v1::PRECISION_BF16
                                                : v1::PRECISION_FP32);
  }
  if (a.pooling.set()) {
    m.mutable_head()->set_pooling(a.pooling.value == "gap"
                                      ? v1::POOLING_GLOBAL_AVERAGE
                                      : v1::POOLING_FLATTEN);
  }
  if (a.hidden_units.set())
    m.mutable_head()->set_hidden_units(a.hidden_units.value);
  if (a.dropout.set()) m.mutable_head()->set_dropout(a.dropout.value);
  if (kind == v1::JOB_KIND_FINE_TUNE && m.ByteSizeLong() == 0)
    spec.clear_model();

  const auto stage = [&](int i) {
    while (spec.stages_size() <= i) spec.add_stages();
    return spec.mutable_stages(i);
  };
  if (a.epochs.set()) stage(0)->set_epochs(a.epochs.value);
  if (a.batch_size.set()) stage(0)->set_batch_size(a.batch_size.value);
  if (a.lr.set()) stage(0)->mutable_optimizer()->set_learning_rate(a.lr.value);
  if (a.momentum.set())
    stage(0)->mutable_optimizer()->set_momentum(a.momentum.value);
  if (a.optimizer.set()) {
    const std::string& o = a.optimizer.value;
    stage(0)->mutable_optimizer()->set_kind(
        o == "adam"  ? v1::OptimizerSpec::KIND_ADAM
        : o == "sgd" ? v1::OptimizerSpec::KIND_SGD
                     : v1::OptimizerSpec::KIND_RMSPROP);
  }
  if (a.augment.set()) {
    v1::AugmentationSpec* aug = stage(0)->mutable_augmentation();
    if (a.augment.value == "none") {
      aug->clear_preset();
      aug->set_enabled(false);
    } else {
      aug->set_preset(a.augment.value);
      aug->set_enabled(true);
    }
  }
  if (a.trainable_from.set())
    stage(0)->set_trainable_from(a.trainable_from.value);
  if (a.fine_tune_from.set() || a.fine_tune_epochs.set() ||
      a.fine_tune_lr.set()) {
    const bool fresh = spec.stages_size() < 2;
    v1::StageSpec* tune = stage(1);
    // Without a recipe a new stage would be called "stage-2".
    if (fresh && spec.recipe().empty() && tune->name().empty())
      tune->set_name("fine-tune");
    if (a.fine_tune_from.set())
      tune->set_trainable_from(a.fine_tune_from.value);
    if (a.fine_tune_epochs.set()) tune->set_epochs(a.fine_tune_epochs.value);
    if (a.fine_tune_lr.set())
      tune->mutable_optimizer()->set_learning_rate(a.fine_tune_lr.value);
  }
  if (a.id.set()) request.set_job_id(a.id.value);
  return request;
}

int SubmitJob(const Globals& g, const SpecArgs& args, v1::JobKind kind) {
  absl::StatusOr<v1::CreateJobRequest> request = BuildRequest(args, kind);
  if (!request.ok()) {
    std::fprintf(stderr, "transferctl: %s\n",
                 std::string(request.status().message()).c_str());
    return kUsage;
  }
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job = client->CreateJob(*request);
  if (!job.ok()) return Fail(job.status());
  if (args.detach) {
    if (g.json) {
      PrintJson(*job);
    } else {
      std::cout << absl::StrFormat(
          "%s %s; follow it with: transferctl jobs watch %s\n", job->name(),
          StateText(job->state()), job->name());
    }
    return kOk;
  }
  const v1::JobSpec& r = job->resolved_spec();
  if (g.json) {
    std::fprintf(stderr, "job %s created\n", job->name().c_str());
  } else {
    std::string what = KindText(r.kind());
    const std::string model =
        kind == v1::JOB_KIND_FINE_TUNE ? r.base_model() : r.model().backbone();
    std::cout
        << absl::StrFormat(
               "job %s: %s %s on %s, %d stage%s, %d epochs (Ctrl-C detaches)\n",
               job->name(), what, model, r.dataset(), r.stages_size(),
               r.stages_size() == 1 ? "" : "s", TotalEpochs(*job))
        << std::flush;
  }
  return FollowJob(g, *client, *job, 0);
}

int JobsWatch(const Globals& g, const std::string& name, bool from_start) {
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job =
      client->GetJob(transferd::client::JobName(name));
  if (!job.ok()) return Fail(job.status());
  // A live job is followed from now (with a line saying where it is); a
  // finished one, or --from-start, replays its stored events first.
  int64_t after = 0;
  if (!from_start && !IsTerminal(job->state())) {
    after = job->last_event_sequence();
    if (!g.json) {
      const v1::JobProgress& p = job->progress();
      std::cout << absl::StrFormat("%s %s", job->name(),
                                   StateText(job->state()));
      if (p.stages() > 0)
        std::cout << absl::StrFormat(", stage %d/%d", p.stage() + 1,
                                     p.stages());
      if (p.epochs() > 0)
        std::cout << absl::StrFormat(", epoch %d/%d", p.epoch(), p.epochs());
      std::cout << "\n" << std::flush;
    }
  }
  return FollowJob(g, *client, *job, after);
}

int JobsCancel(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job =
      client->CancelJob(transferd::client::JobName(name));
  if (!job.ok()) return Fail(job.status());
  if (g.json) {
    PrintJson(*job);
  } else if (job->state() == v1::JOB_STATE_CANCELLED) {
    std::cout << job->name() << " cancelled\n";
  } else {
    std::cout << absl::StrFormat(
        "%s: cancel requested (now %s; a running job stops within one batch)\n",
        job->name(), StateText(job->state()));
  }
  return kOk;
}

std::string ProgressText(const v1::Job& j) {
  const v1::JobProgress& p = j.progress();
  if (p.epochs() <= 0) return "-";
  return absl::StrFormat("%d/%d", p.epoch(), p.epochs());
}

int JobsList(const Globals& g, const std::string& state,
             const std::string& kind) {
  auto client = Connect(g);
  v1::ListJobsRequest request;
  if (!state.empty()) {
    v1::JobState s;
    if (v1::JobState_Parse("JOB_STATE_" + absl::AsciiStrToUpper(state), &s))
      request.set_state(s);
  }
  if (!kind.empty()) {
    std::string k = absl::AsciiStrToUpper(kind);
    std::replace(k.begin(), k.end(), '-', '_');
    v1::JobKind parsed;
    if (v1::JobKind_Parse("JOB_KIND_" + k, &parsed)) request.set_kind(parsed);
  }
  v1::ListJobsResponse all;
  do {
    absl::StatusOr<v1::ListJobsResponse> page = client->ListJobs(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Job& j : *page->mutable_jobs()) *all.add_jobs() = std::move(j);
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  std::cout << absl::StrFormat("%-28s %-10s %-10s %-8s %-24s %-21s %s\n",
                               "NAME", "KIND", "STATE", "EPOCH", "INPUT",
                               "CREATED", "RESULT");
  for (const v1::Job& j : all.jobs()) {
    const std::string input = j.spec().kind() == v1::JOB_KIND_FINE_TUNE
                                  ? j.spec().base_model()
                                  : j.spec().dataset();
    std::cout << absl::StrFormat(
        "%-28s %-10s %-10s %-8s %-24s %-21s %s\n", j.name(),
        KindText(j.spec().kind()), StateText(j.state()), ProgressText(j), input,
        When(j.create_time()),
        j.result_model().empty() ? "-" : j.result_model());
  }
  return kOk;
}

void PrintHistory(
    const google::protobuf::RepeatedPtrField<v1::EpochMetrics>& history) {
  if (history.empty()) return;
  std::cout << "history\n";
  std::cout << absl::StrFormat("  %5s %5s %8s %8s %8s %8s %10s %8s\n", "EPOCH",
                               "STAGE", "LOSS", "ACC", "VAL_LOSS", "VAL_ACC",
                               "LR", "SECONDS");
  for (const v1::EpochMetrics& e : history) {
    std::cout << absl::StrFormat(
        "  %5d %5d %8.4f %8.4f %8s %8s %10.3g %8.1f\n", e.epoch(),
        e.stage() + 1, e.loss(), e.accuracy(),
        e.has_val_loss() ? absl::StrFormat("%.4f", e.val_loss()) : "-",
        e.has_val_accuracy() ? absl::StrFormat("%.4f", e.val_accuracy()) : "-",
        e.learning_rate(), e.seconds());
  }
}

// Evaluations with their confusion matrices; `classes` names the rows when
// the matrices do not.
void PrintEvaluations(
    const google::protobuf::RepeatedPtrField<v1::Evaluation>& evaluations,
    const std::vector<std::string>& classes) {
  for (const v1::Evaluation& e : evaluations) {
    std::cout << absl::StrFormat(
        "evaluation  %s: %d examples, loss %.4f, accuracy %.4f", e.split(),
        e.examples(), e.loss(), e.accuracy());
    if (e.roc_auc() > 0)
      std::cout << absl::StrFormat(", roc_auc %.4f", e.roc_auc());
    std::cout << "\n";
    const v1::ConfusionMatrix& cm = e.confusion_matrix();
    const int64_t cells = cm.counts_size();
    int64_t n = static_cast<int64_t>(
        std::llround(std::sqrt(static_cast<double>(cells))));
    if (n == 0 || n * n != cells) continue;
    std::vector<std::string> names(cm.classes().begin(), cm.classes().end());
    if (static_cast<int64_t>(names.size()) != n) {
      names = static_cast<int64_t>(classes.size()) == n
                  ? classes
                  : std::vector<std::string>();
    }
    if (names.empty()) {
      for (int64_t i = 0; i < n; ++i) names.push_back(absl::StrCat(i));
    }
    size_t width = 6;
    for (const std::string& c : names) width = std::max(width, c.size());
    for (int64_t v : cm.counts())
      width = std::max(width, absl::StrCat(v).size());
    const int w = static_cast<int>(width);
    std::cout
        << "            confusion (rows: true class, columns: predicted)\n";
    std::cout << absl::StrFormat("            %*s", w, "");
    for (const std::string& c : names)
      std::cout << absl::StrFormat(" %*s", w, c);
    std::cout << "\n";
    for (int64_t i = 0; i < n; ++i) {
      std::cout << absl::StrFormat("            %*s", w,
                                   names[static_cast<size_t>(i)]);
      for (int64_t j = 0; j < n; ++j)
        std::cout << absl::StrFormat(" %*d", w,
                                     cm.counts(static_cast<int>(i * n + j)));
      std::cout << "\n";
    }
  }
}

int JobsShow(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job =
      client->GetJob(transferd::client::JobName(name));
  if (!job.ok()) return Fail(job.status());
  if (g.json) {
    PrintJson(*job);
    return kOk;
  }
  const v1::Job& j = *job;
  const v1::JobSpec& r = j.resolved_spec().kind() != v1::JOB_KIND_UNSPECIFIED
                             ? j.resolved_spec()
                             : j.spec();
  std::cout << absl::StrFormat("job         %s\n", j.name());
  std::cout << absl::StrFormat(
      "kind        %s%s\n", KindText(r.kind()),
      r.recipe().empty() ? "" : absl::StrCat(" (recipe ", r.recipe(), ")"));
  std::cout << absl::StrFormat("dataset     %s\n", r.dataset());
  if (!r.base_model().empty())
    std::cout << absl::StrFormat("base model  %s\n", r.base_model());
  const std::string model = ModelSpecText(r.model());
  if (!model.empty()) std::cout << absl::StrFormat("network     %s\n", model);
  for (int i = 0; i < r.stages_size(); ++i) {
    const v1::StageSpec& s = r.stages(i);
    std::cout << absl::StrFormat(
        "stage %-5d %s%s\n", i + 1,
        s.name().empty() ? "" : absl::StrCat(s.name(), ": "), StageText(s));
  }
  if (r.has_seed()) std::cout << absl::StrFormat("seed        %d\n", r.seed());
  std::cout << absl::StrFormat(
      "state       %s%s\n", StateText(j.state()),
      j.failure_reason().empty() ? "" : absl::StrCat(": ", j.failure_reason()));
  std::cout << absl::StrFormat("created     %s\n", When(j.create_time()));
  if (j.has_start_time())
    std::cout << absl::StrFormat("started     %s\n", When(j.start_time()));
  if (j.has_end_time()) {
    std::string took;
    if (j.has_start_time()) {
      took =
          absl::StrCat(" (",
                       Duration(static_cast<double>(j.end_time().seconds() -
                                                    j.start_time().seconds())),
                       ")");
    }
    std::cout << absl::StrFormat("ended       %s%s\n", When(j.end_time()),
                                 took);
  }
  const v1::JobProgress& p = j.progress();
  if (p.epochs() > 0) {
    std::string line =
        absl::StrFormat("stage %d/%d, epoch %d/%d", p.stage() + 1, p.stages(),
                        p.epoch(), p.epochs());
    if (j.state() == v1::JOB_STATE_RUNNING && p.steps() > 0) {
      absl::StrAppend(
          &line, absl::StrFormat(", step %d/%d, ETA %s", p.step(), p.steps(),
                                 Duration(p.eta_seconds())));
    }
    std::cout << "progress    " << line << "\n";
  }
  if (j.has_trainable() && j.trainable().trainable_tensors() > 0) {
    std::cout << "trainable   " << TrainableText(j.trainable()) << "\n";
  }
  if (j.resumes() > 0)
    std::cout << absl::StrFormat("resumes     %d\n", j.resumes());
  PrintHistory(j.history());
  // Class names for the confusion matrices: the model's, else the dataset's.
  std::vector<std::string> classes;
  if (!j.evaluations().empty()) {
    if (!j.result_model().empty()) {
      absl::StatusOr<v1::Model> m = client->GetModel(j.result_model());
      if (m.ok()) classes.assign(m->classes().begin(), m->classes().end());
    }
    if (classes.empty() && !r.dataset().empty()) {
      absl::StatusOr<v1::Dataset> d = client->GetDataset(r.dataset());
      if (d.ok()) classes.assign(d->classes().begin(), d->classes().end());
    }
  }
  PrintEvaluations(j.evaluations(), classes);
  if (!j.result_model().empty())
    std::cout << absl::StrFormat("model       %s\n", j.result_model());
  return kOk;
}

// ---- jobs plot
// ---------------------------------------------------------------

constexpr char kPlotHelp[] =
    "Examples:\n"
    "  transferctl jobs plot cats-vgg16 -o curves.png\n"
    "      the Keras book's two figures side by side: training (dots) and\n"
    "      validation (line) accuracy and loss per epoch, dashed lines where\n"
    "      a stage ends (frozen base -> fine-tuning)\n"
    "  transferctl jobs plot cats-vgg16 -o curves.png --csv curves.csv "
    "--width 800 --height 1000\n"
    "      stacked (taller than wide), and the numbers as CSV:\n"
    "      epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
    "A running job is plotted as far as it got; a job without a finished "
    "epoch\nis an error (exit code 1).";

struct PlotArgs {
  std::string job;
  std::string png;
  std::string csv;
  int width = transferd::client::PlotOptions().width;
  int height = transferd::client::PlotOptions().height;
};

// `text` as a JSON string literal.
std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", static_cast<int>(c)));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Prints why `path` could not be written and returns false.
bool WriteOutput(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (out) out.close();
  if (out) return true;
  std::fprintf(stderr, "transferctl: cannot write %s: %s\n", path.c_str(),
               std::strerror(errno));
  return false;
}

int JobsPlot(const Globals& g, const PlotArgs& a) {
  if (a.png.empty() && a.csv.empty()) {
    std::fprintf(
        stderr,
        "transferctl: jobs plot needs -o FILE.png, --csv FILE.csv or both\n");
    return kUsage;
  }
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job =
      client->GetJob(transferd::client::JobName(a.job));
  if (!job.ok()) return Fail(job.status());
  if (job->history().empty()) {
    std::fprintf(
        stderr,
        "transferctl: %s has no finished epoch to plot yet (state %s)\n",
        job->name().c_str(), StateText(job->state()).c_str());
    return kServerError;
  }
  const std::vector<transferd::client::EpochPoint> history =
      transferd::client::EpochPointsFromProto(job->history());
  if (!a.png.empty()) {
    transferd::client::PlotOptions options;
    options.width = a.width;
    options.height = a.height;
    options.title = job->name();
    absl::StatusOr<std::string> png =
        transferd::client::RenderCurvesPng(history, options);
    if (!png.ok()) return Fail(png.status());
    if (!WriteOutput(a.png, *png)) return kServerError;
  }
  if (!a.csv.empty() &&
      !WriteOutput(a.csv, transferd::client::CurvesCsv(history))) {
    return kServerError;
  }
  if (g.json) {
    std::cout << absl::StrFormat("{\"png\": %s, \"csv\": %s, \"epochs\": %d}\n",
                                 a.png.empty() ? "null" : JsonQuote(a.png),
                                 a.csv.empty() ? "null" : JsonQuote(a.csv),
                                 history.size());
    return kOk;
  }
  if (!a.png.empty()) {
    std::cout << absl::StrFormat("%s: %dx%d PNG, %d epochs of %s\n", a.png,
                                 a.width, a.height, history.size(),
                                 job->name());
  }
  if (!a.csv.empty()) {
    std::cout << absl::StrFormat("%s: CSV, %d epochs of %s\n", a.csv,
                                 history.size(), job->name());
  }
  return kOk;
}

std::string ValAccuracy(const v1::Model& m) {
  for (const v1::Evaluation& e : m.evaluations()) {
    if (e.split() == "validation") return absl::StrFormat("%.4f", e.accuracy());
  }
  return "-";
}

int ModelsList(const Globals& g) {
  auto client = Connect(g);
  v1::ListModelsRequest request;
  v1::ListModelsResponse all;
  do {
    absl::StatusOr<v1::ListModelsResponse> page = client->ListModels(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Model& m : *page->mutable_models())
      *all.add_models() = std::move(m);
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  std::cout << absl::StrFormat("%-28s %-20s %-14s %6s %8s %8s %-21s %s\n",
                               "NAME", "DISPLAY NAME", "BACKBONE", "INPUT",
                               "CLASSES", "VAL_ACC", "CREATED", "SOURCE");
  for (const v1::Model& m : all.models()) {
    std::cout << absl::StrFormat(
        "%-28s %-20s %-14s %6d %8d %8s %-21s %s\n", m.name(), m.display_name(),
        m.spec().backbone(), m.spec().input_size(), m.classes_size(),
        ValAccuracy(m), When(m.create_time()),
        m.source_job().empty() ? "-" : m.source_job());
  }
  return kOk;
}

int ModelsShow(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Model> model =
      client->GetModel(transferd::client::ModelName(name));
  if (!model.ok()) return Fail(model.status());
  if (g.json) {
    PrintJson(*model);
    return kOk;
  }
  const v1::Model& m = *model;
  std::string title = m.name();
  if (!m.display_name().empty())
    absl::StrAppend(&title, " (\"", m.display_name(), "\")");
  std::cout << absl::StrFormat("model       %s\n", title);
  std::cout << absl::StrFormat("created     %s\n", When(m.create_time()));
  if (!m.source_job().empty())
    std::cout << absl::StrFormat("job         %s\n", m.source_job());
  if (!m.parent().empty())
    std::cout << absl::StrFormat("parent      %s\n", m.parent());
  std::cout << absl::StrFormat("network     %s\n", ModelSpecText(m.spec()));
  std::cout << absl::StrFormat("classes     %d: %s\n", m.classes_size(),
                               absl::StrJoin(m.classes(), ", "));
  const v1::Preprocessing& p = m.preprocessing();
  std::string mode = v1::Preprocessing::Mode_Name(p.mode());
  absl::string_view mode_view = mode;
  absl::ConsumePrefix(&mode_view, "MODE_");
  std::cout << absl::StrFormat(
      "preprocess  %s, %s, %d px, scale %g, mean [%s], std [%s]\n",
      absl::AsciiStrToLower(std::string(mode_view)), p.channel_order(),
      p.input_size(), p.scale(), absl::StrJoin(p.mean(), ", "),
      absl::StrJoin(p.std(), ", "));
  if (m.best_epoch() > 0) {
    std::cout << absl::StrFormat("best epoch  %d of %d\n", m.best_epoch(),
                                 m.history_size());
  }
  std::cout << absl::StrFormat("size        %s, %s parameters\n",
                               HumanBytes(m.size_bytes()),
                               Thousands(m.parameters()));
  if (!m.aliases().empty())
    std::cout << absl::StrFormat("aliases     %s\n",
                                 absl::StrJoin(m.aliases(), ", "));
  PrintHistory(m.history());
  PrintEvaluations(
      m.evaluations(),
      std::vector<std::string>(m.classes().begin(), m.classes().end()));
  return kOk;
}

int ModelsRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  const std::string full = transferd::client::ModelName(name);
  return PrintDeleted(g, client->DeleteModel(full), full);
}

int ModelsAlias(const Globals& g, const std::string& alias,
                const std::string& model) {
  auto client = Connect(g);
  absl::StatusOr<v1::Alias> set = client->SetAlias(
      transferd::client::AliasName(alias), transferd::client::ModelName(model));
  if (!set.ok()) return Fail(set.status());
  if (g.json) {
    PrintJson(*set);
    return kOk;
  }
  std::cout << absl::StrFormat("%s -> %s\n", set->name(), set->model());
  return kOk;
}

int ModelsUnalias(const Globals& g, const std::string& alias) {
  auto client = Connect(g);
  const std::string full = transferd::client::AliasName(alias);
  return PrintDeleted(g, client->DeleteAlias(full), full);
}

int ModelsAliases(const Globals& g) {
  auto client = Connect(g);
  v1::ListAliasesRequest request;
  v1::ListAliasesResponse all;
  do {
    absl::StatusOr<v1::ListAliasesResponse> page = client->ListAliases(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Alias& a : *page->mutable_aliases())
      *all.add_aliases() = std::move(a);
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  std::cout << absl::StrFormat("%-28s %-28s %s\n", "ALIAS", "MODEL", "UPDATED");
  for (const v1::Alias& a : all.aliases()) {
    std::cout << absl::StrFormat("%-28s %-28s %s\n", a.name(), a.model(),
                                 When(a.update_time()));
  }
  return kOk;
}

int ModelsExport(const Globals& g, const std::string& name,
                 const std::string& output) {
  auto client = Connect(g);
  absl::StatusOr<transferd::client::ExportResult> result =
      client->ExportModel(transferd::client::ModelName(name), output);
  if (!result.ok()) return Fail(result.status());
  if (g.json) {
    google::protobuf::Struct out;
    auto& fields = *out.mutable_fields();
    fields["model"].set_string_value(transferd::client::ModelName(name));
    fields["path"].set_string_value(result->path.string());
    fields["bytes"].set_number_value(static_cast<double>(result->bytes));
    fields["sha256"].set_string_value(result->sha256);
    PrintJson(out);
    return kOk;
  }
  std::cout << absl::StrFormat("%s: %s (%d bytes), sha256 %s (verified)\n",
                               result->path.string(), HumanBytes(result->bytes),
                               result->bytes, result->sha256);
  return kOk;
}

int ModelsImport(const Globals& g, const std::string& file,
                 const std::string& id, const std::string& display_name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Model> model = client->ImportModel(file, id, display_name);
  if (!model.ok()) return Fail(model.status());
  if (g.json) {
    PrintJson(*model);
    return kOk;
  }
  std::cout << absl::StrFormat(
      "imported %s as %s (%s, %d classes, %s parameters)\n", file,
      model->name(),
      model->spec().backbone().empty() ? std::string("model")
                                       : model->spec().backbone(),
      model->classes_size(), Thousands(model->parameters()));
  return kOk;
}

// ---- predict / jobs results ------------------------------------------------

constexpr char kPredictHelp[] =
    "Examples:\n"
    "  transferctl predict --model catdog cat.jpg dog.png photos/\n"
    "      one line per image: file, label, probability; folders are searched\n"
    "      recursively for .jpg, .jpeg and .png files\n"
    "  transferctl --json predict --model models/cats-vgg16 --tta photos/\n"
    "      every class's probability, averaged with a horizontally flipped "
    "copy\n"
    "  transferctl predict --model catdog --dataset cats-and-dogs --split "
    "test\n"
    "      a PREDICT job over a stored dataset, followed to its end; then\n"
    "      transferctl jobs results JOB --csv results.csv\n"
    "An image the server cannot use (not a JPEG/PNG, truncated, too large) "
    "gets\n"
    "its own error line and does not stop the others; the exit code is then 1.";

struct PredictArgs {
  std::string model;
  std::vector<std::string> inputs;
  bool tta = false;
  int batch = 32;
  // PREDICT job instead of files.
  std::string dataset;
  std::vector<std::string> splits;
  std::string id;
  bool detach = false;
};

bool IsImageName(const std::filesystem::path& p) {
  const std::string ext = absl::AsciiStrToLower(p.extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Files named on the command line as given; folders searched recursively for
// images (hidden entries skipped), in sorted order.
absl::StatusOr<std::vector<std::string>> CollectImages(
    const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (std::filesystem::is_directory(input, ec)) {
      std::vector<std::string> found;
      std::filesystem::recursive_directory_iterator it(
          input, std::filesystem::directory_options::none, ec);
      if (ec)
        return absl::InvalidArgumentError(
            absl::StrCat("cannot read ", input, ": ", ec.message()));
      for (; it != std::filesystem::recursive_directory_iterator();
           it.increment(ec)) {
        if (ec)
          return absl::InvalidArgumentError(
              absl::StrCat("cannot read ", input, ": ", ec.message()));
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory(ec)) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file(ec) && IsImageName(it->path()))
          found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (std::filesystem::exists(input, ec)) {
      files.push_back(input);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(input, ": no such file or folder"));
    }
  }
  if (files.empty())
    return absl::InvalidArgumentError("no .jpg, .jpeg or .png files found");
  return files;
}

const char* CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

// One image's answer, from the server or (unreadable file, too large to
// send) from the client.
struct PredictRow {
  std::string file;
  v1::ImagePrediction prediction;
};

int PrintPredictions(const Globals& g, const std::string& model, bool tta,
                     const std::vector<PredictRow>& rows) {
  int errors = 0;
  for (const PredictRow& r : rows)
    errors += r.prediction.status().code() != 0 ? 1 : 0;
  if (g.json) {
    google::protobuf::Struct out;
    auto& fields = *out.mutable_fields();
    fields["model"].set_string_value(model);
    fields["horizontal_flip_tta"].set_bool_value(tta);
    auto* list = fields["predictions"].mutable_list_value();
    for (const PredictRow& r : rows) {
      auto& f = *list->add_values()->mutable_struct_value()->mutable_fields();
      f["file"].set_string_value(r.file);
      f["label"].set_string_value(r.prediction.label());
      f["probability"].set_number_value(r.prediction.probability());
      auto& scores = *f["scores"].mutable_struct_value()->mutable_fields();
      for (const v1::ClassScore& s : r.prediction.scores()) {
        scores[s.label()].set_number_value(s.probability());
      }
      auto& status = *f["status"].mutable_struct_value()->mutable_fields();
      status["code"].set_string_value(CodeName(r.prediction.status().code()));
      status["message"].set_string_value(r.prediction.status().message());
    }
    PrintJson(out);
  } else {
    size_t width = 4;
    for (const PredictRow& r : rows) width = std::max(width, r.file.size());
    width = std::min<size_t>(width, 60);
    std::cout << absl::StrFormat("%-*s  %-12s %s\n", width, "FILE", "LABEL",
                                 "PROBABILITY");
    for (const PredictRow& r : rows) {
      const v1::ItemStatus& s = r.prediction.status();
      if (s.code() != 0) {
        std::cout << absl::StrFormat("%-*s  %-12s %s: %s\n", width, r.file,
                                     "error", CodeName(s.code()), s.message());
      } else {
        std::cout << absl::StrFormat("%-*s  %-12s %.4f\n", width, r.file,
                                     r.prediction.label(),
                                     r.prediction.probability());
      }
    }
    std::cout << absl::StrFormat(
        "%d image%s, %d error%s; model %s%s\n", rows.size(),
        rows.size() == 1 ? "" : "s", errors, errors == 1 ? "" : "s", model,
        tta ? " (with horizontal-flip averaging)" : "");
  }
  return errors > 0 ? kServerError : kOk;
}

// "catdog" names an alias when one exists, else a model id; "models/ID" and
// "aliases/NAME" are taken as they are.
std::string ResolveModel(Client& client, const std::string& name) {
  if (name.find('/') != std::string::npos)
    return transferd::client::ModelName(name);
  const std::string alias = transferd::client::AliasName(name);
  if (client.GetModel(alias).ok()) return alias;
  return transferd::client::ModelName(name);
}

int PredictFiles(const Globals& g, const PredictArgs& a) {
  absl::StatusOr<std::vector<std::string>> files = CollectImages(a.inputs);
  if (!files.ok()) {
    std::fprintf(stderr, "transferctl: %s\n",
                 std::string(files.status().message()).c_str());
    return kUsage;
  }
  auto client = Connect(g);
  // Requests stay under the server's message and image-count limits.
  absl::StatusOr<v1::ServerInfo> info = client->GetServerInfo();
  if (!info.ok()) return Fail(info.status());
  int64_t max_bytes = info->limits().max_receive_message_bytes() - 64 * 1024;
  if (max_bytes <= 0) max_bytes = 4 * 1024 * 1024;
  int max_images = a.batch;
  if (info->limits().max_images_per_request() > 0) {
    max_images = std::min(max_images, info->limits().max_images_per_request());
  }
  const std::string model = ResolveModel(*client, a.model);
  std::string used_model;
  std::vector<PredictRow> rows(files->size());
  v1::PredictRequest request;
  std::vector<size_t> in_request;  // row index of each image in `request`
  int64_t request_bytes = 0;
  auto send = [&]() -> absl::Status {
    if (in_request.empty()) return absl::OkStatus();
    request.set_model(model);
    request.set_horizontal_flip_tta(a.tta);
    absl::StatusOr<v1::PredictResponse> response = client->Predict(request);
    if (!response.ok()) return response.status();
    used_model = response->model();
    for (int i = 0; i < response->predictions_size() &&
                    i < static_cast<int>(in_request.size());
         ++i) {
      rows[in_request[static_cast<size_t>(i)]].prediction =
          response->predictions(i);
    }
    request.Clear();
    in_request.clear();
    request_bytes = 0;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < files->size(); ++i) {
    const std::string& file = (*files)[i];
    rows[i].file = file;
    std::ifstream in(file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in && !in.eof()) {
      rows[i].prediction.mutable_status()->set_code(3);
      rows[i].prediction.mutable_status()->set_message(
          absl::StrCat("cannot read the file: ", std::strerror(errno)));
      continue;
    }
    std::string data = bytes.str();
    if (static_cast<int64_t>(data.size()) > max_bytes) {
      rows[i].prediction.mutable_status()->set_code(8);
      rows[i].prediction.mutable_status()->set_message(absl::StrFormat(
          "the file is %s, more than the server accepts in one request (%s)",
          HumanBytes(static_cast<int64_t>(data.size())),
          HumanBytes(max_bytes)));
      continue;
    }
    if (request_bytes + static_cast<int64_t>(data.size()) > max_bytes ||
        static_cast<int>(in_request.size()) >= max_images) {
      if (absl::Status s = send(); !s.ok()) return Fail(s);
    }
    v1::Image* image = request.add_images();
    image->set_id(file);
    request_bytes += static_cast<int64_t>(data.size());
    image->set_data(std::move(data));
    in_request.push_back(i);
  }
  if (absl::Status s = send(); !s.ok()) return Fail(s);
  return PrintPredictions(g, used_model.empty() ? model : used_model, a.tta,
                          rows);
}

int PredictJob(const Globals& g, const PredictArgs& a) {
  if (!a.inputs.empty()) {
    std::fprintf(stderr, "transferctl: give files or --dataset, not both\n");
    return kUsage;
  }
  v1::CreateJobRequest request;
  request.set_job_id(a.id);
  v1::JobSpec& spec = *request.mutable_spec();
  spec.set_kind(v1::JOB_KIND_PREDICT);
  spec.set_dataset(transferd::client::DatasetName(a.dataset));
  auto client = Connect(g);
  spec.set_base_model(ResolveModel(*client, a.model));
  spec.mutable_predict()->set_horizontal_flip_tta(a.tta);
  for (const std::string& split : a.splits) {
    const std::string s = absl::AsciiStrToLower(split);
    spec.mutable_predict()->add_splits(s == "train" ? v1::SPLIT_TRAIN
                                       : s == "validation"
                                           ? v1::SPLIT_VALIDATION
                                       : s == "test" ? v1::SPLIT_TEST
                                                     : v1::SPLIT_UNSPECIFIED);
  }
  absl::StatusOr<v1::Job> job = client->CreateJob(request);
  if (!job.ok()) return Fail(job.status());
  if (a.detach) {
    if (g.json) {
      PrintJson(*job);
    } else {
      std::cout << absl::StrFormat(
          "%s %s; results: transferctl jobs results %s\n", job->name(),
          StateText(job->state()), job->name());
    }
    return kOk;
  }
  if (g.json) {
    std::fprintf(stderr, "job %s created\n", job->name().c_str());
  } else {
    std::cout << absl::StrFormat(
                     "job %s: predict with %s over %s (Ctrl-C detaches)\n",
                     job->name(), spec.base_model(), spec.dataset())
              << std::flush;
  }
  const int rc = FollowJob(g, *client, *job, 0);
  if (rc == kOk && !g.json) {
    std::cout << absl::StrFormat(
        "results: transferctl jobs results %s [--csv FILE]\n", job->name());
  }
  return rc;
}

int Predict(const Globals& g, const PredictArgs& a) {
  if (!a.dataset.empty()) return PredictJob(g, a);
  if (!a.splits.empty() || !a.id.empty() || a.detach) {
    std::fprintf(stderr,
                 "transferctl: --split, --id and --detach need --dataset\n");
    return kUsage;
  }
  if (a.inputs.empty()) {
    std::fprintf(
        stderr,
        "transferctl: predict needs image files, folders or --dataset\n");
    return kUsage;
  }
  return PredictFiles(g, a);
}

// A CSV field, quoted when it needs to be (RFC 4180).
std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

constexpr char kResultsHelp[] =
    "Examples:\n"
    "  transferctl jobs results cats-predict              a table: path, "
    "split, true label,\n"
    "                                                     label, probability\n"
    "  transferctl jobs results cats-predict --csv out.csv\n"
    "      "
    "path,split,true_label,label,p_<class>...,status_code,status_message\n"
    "  transferctl jobs results cats-predict --csv -      the CSV on stdout\n"
    "Works on a running PREDICT job too: it lists the files done so far.";

int JobsResults(const Globals& g, const std::string& name,
                const std::string& csv) {
  auto client = Connect(g);
  v1::ListJobPredictionsRequest request;
  request.set_name(transferd::client::JobName(name));
  request.set_page_size(5000);
  v1::ListJobPredictionsResponse all;
  do {
    absl::StatusOr<v1::ListJobPredictionsResponse> page =
        client->ListJobPredictions(request);
    if (!page.ok()) return Fail(page.status());
    if (all.classes().empty()) *all.mutable_classes() = page->classes();
    for (v1::FilePrediction& p : *page->mutable_predictions()) {
      *all.add_predictions() = std::move(p);
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (!csv.empty()) {
    std::string out = "path,split,true_label,label";
    for (const std::string& c : all.classes())
      absl::StrAppend(&out, ",", CsvField("p_" + c));
    out += ",status_code,status_message\n";
    for (const v1::FilePrediction& p : all.predictions()) {
      absl::StrAppend(&out, CsvField(p.path()), ",", SplitName(p.split()), ",",
                      CsvField(p.true_label()), ",", CsvField(p.label()));
      for (int i = 0; i < all.classes_size(); ++i) {
        out += ',';
        if (i < p.probabilities_size())
          absl::StrAppend(&out, absl::StrFormat("%.6f", p.probabilities(i)));
      }
      absl::StrAppend(&out, ",", CodeName(p.status().code()), ",",
                      CsvField(p.status().message()), "\n");
    }
    if (csv == "-") {
      std::cout << out;
      return kOk;
    }
    if (!WriteOutput(csv, out)) return kUsage;
    if (!g.json) {
      std::cout << absl::StrFormat("%s: %d rows\n", csv,
                                   all.predictions_size());
      return kOk;
    }
  }
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  if (csv.empty()) {
    size_t width = 4;
    for (const v1::FilePrediction& p : all.predictions())
      width = std::max(width, p.path().size());
    width = std::min<size_t>(width, 60);
    std::cout << absl::StrFormat("%-*s  %-10s %-10s %-10s %s\n", width, "PATH",
                                 "SPLIT", "TRUE", "LABEL", "PROBABILITY");
    int correct = 0;
    int labelled = 0;
    for (const v1::FilePrediction& p : all.predictions()) {
      if (p.status().code() != 0) {
        std::cout << absl::StrFormat(
            "%-*s  %-10s %-10s %-10s %s: %s\n", width, p.path(),
            SplitName(p.split()), p.true_label(), "error",
            CodeName(p.status().code()), p.status().message());
        continue;
      }
      float prob = 0;
      for (int i = 0; i < all.classes_size() && i < p.probabilities_size();
           ++i) {
        if (all.classes(i) == p.label()) prob = p.probabilities(i);
      }
      if (!p.true_label().empty()) {
        ++labelled;
        correct += p.true_label() == p.label() ? 1 : 0;
      }
      std::cout << absl::StrFormat("%-*s  %-10s %-10s %-10s %.4f\n", width,
                                   p.path(), SplitName(p.split()),
                                   p.true_label(), p.label(), prob);
    }
    std::cout << absl::StrFormat("%d files", all.predictions_size());
    if (labelled > 0) {
      std::cout << absl::StrFormat("; %d/%d labelled files correct (%.4f)",
                                   correct, labelled,
                                   static_cast<double>(correct) / labelled);
    }
    std::cout << "\n";
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "transferctl: client of the transferd training and inference "
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
  app.add_option(
         "--token", g.token,
         "Bearer token for servers started with --token-file (never printed)")
      ->envname("TRANSFERD_TOKEN");
  app.add_flag("--tls", g.tls,
               "Connect over TLS, checking the server's certificate against "
               "the system's "
               "roots (implied by the other --tls-* options)")
      ->envname("TRANSFERD_TLS");
  app.add_option("--tls-ca", g.tls_ca,
                 "TLS: CA bundle (PEM) the server's certificate must chain to")
      ->envname("TRANSFERD_TLS_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", g.tls_cert,
                 "TLS: client certificate (PEM) for mutual TLS")
      ->envname("TRANSFERD_CLIENT_TLS_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", g.tls_key,
                 "TLS: the client certificate's key (PEM)")
      ->envname("TRANSFERD_CLIENT_TLS_KEY")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-server-name", g.tls_server_name,
                 "TLS: the name the server's certificate must carry, when it "
                 "differs from "
                 "the --server host")
      ->envname("TRANSFERD_TLS_SERVER_NAME");

  int rc = kOk;

  CLI::App* server =
      app.add_subcommand("server", "Server information and health");
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
  health
      ->add_option("--wait", wait_seconds,
                   "Wait up to this many seconds for the server to come up "
                   "and report SERVING")
      ->check(CLI::NonNegativeNumber);
  health->footer("Example: transferctl server health --wait 30");
  health->callback([&] { rc = ServerHealth(g, health_service, wait_seconds); });

  CLI::App* datasets = app.add_subcommand("datasets", "Stored datasets");
  datasets->require_subcommand(1);
  datasets->add_subcommand("ls", "List datasets, newest first")
      ->footer(
          "Example: transferctl datasets ls\n"
          "         transferctl --json datasets ls | jq '.datasets[].name'")
      ->callback([&] { rc = DatasetsList(g); });

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
  // ---- train / finetune / jobs / models ----
  SpecArgs train_args;
  CLI::App* train = app.add_subcommand(
      "train", "Train a model on a dataset and follow it like Keras' fit()");
  train->add_option("DATASET", train_args.dataset, "ID or datasets/ID")
      ->required();
  AddModelFlags(train, train_args);
  AddStageFlags(train, train_args);
  train->footer(kTrainHelp);
  train->callback([&] { rc = SubmitJob(g, train_args, v1::JOB_KIND_TRAIN); });

  SpecArgs tune_args;
  CLI::App* finetune = app.add_subcommand(
      "finetune", "Continue training a model (a new model results)");
  finetune
      ->add_option("MODEL", tune_args.model, "ID, models/ID or aliases/NAME")
      ->required();
  finetune->add_option("DATASET", tune_args.dataset, "ID or datasets/ID")
      ->required();
  AddStageFlags(finetune, tune_args);
  finetune->footer(kFinetuneHelp);
  finetune->callback(
      [&] { rc = SubmitJob(g, tune_args, v1::JOB_KIND_FINE_TUNE); });

  CLI::App* jobs =
      app.add_subcommand("jobs", "Train, fine-tune and predict jobs");
  jobs->require_subcommand(1);
  std::string job_state;
  std::string job_kind;
  CLI::App* jobs_ls = jobs->add_subcommand("ls", "List jobs, newest first");
  jobs_ls->add_option("--state", job_state, "Only jobs in this state")
      ->check(CLI::IsMember(
          {"queued", "running", "succeeded", "failed", "cancelled"},
          CLI::ignore_case));
  jobs_ls->add_option("--kind", job_kind, "Only jobs of this kind")
      ->check(
          CLI::IsMember({"train", "fine-tune", "predict"}, CLI::ignore_case));
  jobs_ls->footer("Example: transferctl jobs ls --state running");
  jobs_ls->callback([&] { rc = JobsList(g, job_state, job_kind); });

  std::string job_name;
  CLI::App* jobs_show = jobs->add_subcommand(
      "show",
      "Spec, state, progress, epoch history, evaluations and result of a job");
  jobs_show->add_option("JOB", job_name, "ID or jobs/ID")->required();
  jobs_show->footer(
      "Example: transferctl jobs show cats-vgg16\n"
      "         transferctl --json jobs show cats-vgg16 | jq .history");
  jobs_show->callback([&] { rc = JobsShow(g, job_name); });

  bool from_start = false;
  CLI::App* jobs_watch = jobs->add_subcommand(
      "watch", "Follow a job's progress to its end (Ctrl-C detaches)");
  jobs_watch->add_option("JOB", job_name, "ID or jobs/ID")->required();
  jobs_watch->add_flag(
      "--from-start", from_start,
      "Replay the job's stored events from its beginning first "
      "(always done for a finished job)");
  jobs_watch->footer(kWatchHelp);
  jobs_watch->callback([&] { rc = JobsWatch(g, job_name, from_start); });

  CLI::App* jobs_cancel = jobs->add_subcommand(
      "cancel", "Cancel a queued or running job (it stops within one batch)");
  jobs_cancel->add_option("JOB", job_name, "ID or jobs/ID")->required();
  jobs_cancel->footer("Example: transferctl jobs cancel cats-vgg16");
  jobs_cancel->callback([&] { rc = JobsCancel(g, job_name); });

  PlotArgs plot_args;
  CLI::App* jobs_plot = jobs->add_subcommand(
      "plot",
      "Training and validation accuracy and loss per epoch as a PNG (and CSV)");
  jobs_plot->add_option("JOB", plot_args.job, "ID or jobs/ID")->required();
  jobs_plot->add_option("-o,--output", plot_args.png, "PNG file to write");
  jobs_plot->add_option("--csv", plot_args.csv,
                        "CSV file to write the numbers to");
  jobs_plot->add_option("--width", plot_args.width, "Image width in pixels")
      ->check(CLI::Range(transferd::client::kMinPlotWidth,
                         transferd::client::kMaxPlotSide))
      ->capture_default_str();
  jobs_plot->add_option("--height", plot_args.height, "Image height in pixels")
      ->check(CLI::Range(transferd::client::kMinPlotHeight,
                         transferd::client::kMaxPlotSide))
      ->capture_default_str();
  jobs_plot->footer(kPlotHelp);
  jobs_plot->callback([&] { rc = JobsPlot(g, plot_args); });

  CLI::App* models = app.add_subcommand("models", "The model registry");
  models->require_subcommand(1);
  models->add_subcommand("ls", "List models, newest first")
      ->footer("Example: transferctl --json models ls")
      ->callback([&] { rc = ModelsList(g); });
  std::string model_name;
  CLI::App* models_show = models->add_subcommand(
      "show",
      "Network, classes, preprocessing, history and evaluations of a model");
  models_show->add_option("MODEL", model_name, "ID, models/ID or aliases/NAME")
      ->required();
  models_show->footer("Example: transferctl models show models/cats-vgg16");
  models_show->callback([&] { rc = ModelsShow(g, model_name); });
  CLI::App* models_rm = models->add_subcommand("rm", "Delete a model");
  models_rm->add_option("MODEL", model_name, "ID or models/ID")->required();
  models_rm->footer("Example: transferctl models rm cats-vgg16");
  models_rm->callback([&] { rc = ModelsRemove(g, model_name); });
  std::string alias_name;
  CLI::App* models_alias = models->add_subcommand(
      "alias", "Point an alias at a model (creates it, or moves it)");
  models_alias->add_option("ALIAS", alias_name, "NAME or aliases/NAME")
      ->required();
  models_alias->add_option("MODEL", model_name, "ID or models/ID")->required();
  models_alias->footer("Example: transferctl models alias catdog cats-vgg16");
  models_alias->callback([&] { rc = ModelsAlias(g, alias_name, model_name); });
  CLI::App* models_unalias =
      models->add_subcommand("unalias", "Delete an alias");
  models_unalias->add_option("ALIAS", alias_name, "NAME or aliases/NAME")
      ->required();
  models_unalias->footer("Example: transferctl models unalias catdog");
  models_unalias->callback([&] { rc = ModelsUnalias(g, alias_name); });
  models->add_subcommand("aliases", "List aliases and the models they point at")
      ->footer("Example: transferctl --json models aliases")
      ->callback([&] { rc = ModelsAliases(g); });
  std::string archive_file;
  CLI::App* models_export = models->add_subcommand(
      "export",
      "Download a model as a tar archive (model.json + weights.safetensors)");
  models_export
      ->add_option("MODEL", model_name, "ID, models/ID or aliases/NAME")
      ->required();
  models_export
      ->add_option("-o,--output", archive_file,
                   "Archive file to write (FILE.tar)")
      ->required();
  models_export->footer(
      "The archive's SHA-256 is checked against the server's before the file "
      "is\n"
      "renamed into place.\n"
      "Example: transferctl models export aliases/catdog -o catdog.tar");
  models_export->callback(
      [&] { rc = ModelsExport(g, model_name, archive_file); });
  std::string import_id;
  std::string import_name;
  CLI::App* models_import = models->add_subcommand(
      "import", "Register a model from an archive written by `models export`");
  models_import->add_option("FILE", archive_file, "Archive (FILE.tar)")
      ->required()
      ->check(CLI::ExistingFile);
  models_import->add_option(
      "--id", import_id,
      "Model id, lowercase [a-z0-9-] (default: the archive's when free, "
      "else the server chooses)");
  models_import->add_option("--name", import_name,
                            "Display name (default: the archive's)");
  models_import->footer(
      "Example: transferctl models import catdog.tar --id catdog-v2");
  models_import->callback(
      [&] { rc = ModelsImport(g, archive_file, import_id, import_name); });

  PredictArgs predict_args;
  CLI::App* predict = app.add_subcommand(
      "predict",
      "Classify images (files, folders) or, with --dataset, a stored dataset");
  predict
      ->add_option(
          "--model", predict_args.model,
          "Alias or model: NAME (an alias if one exists, else a model id), "
          "models/ID or aliases/NAME")
      ->required();
  predict->add_option("FILES", predict_args.inputs, "Image files and folders");
  predict->add_flag(
      "--tta", predict_args.tta,
      "Average each prediction with that of a horizontally flipped copy");
  predict
      ->add_option("--batch", predict_args.batch,
                   "Images per request (at most)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  predict->add_option(
      "--dataset", predict_args.dataset,
      "Run a PREDICT job over this stored dataset (ID or datasets/ID)");
  predict
      ->add_option(
          "--split", predict_args.splits,
          "With --dataset: only these splits (repeatable; default every file)")
      ->check(CLI::IsMember({"train", "validation", "test"}, CLI::ignore_case));
  predict->add_option("--id", predict_args.id, "With --dataset: the job id");
  predict->add_flag("--detach", predict_args.detach,
                    "With --dataset: print the job and return at once");
  predict->footer(kPredictHelp);
  predict->callback([&] { rc = Predict(g, predict_args); });

  std::string results_csv;
  CLI::App* jobs_results =
      jobs->add_subcommand("results",
                           "Per-file labels and probabilities of a PREDICT job "
                           "(table, CSV or JSON)");
  jobs_results->add_option("JOB", job_name, "ID or jobs/ID")->required();
  jobs_results->add_option("--csv", results_csv,
                           "Write CSV to this file (- = stdout)");
  jobs_results->footer(kResultsHelp);
  jobs_results->callback([&] { rc = JobsResults(g, job_name, results_csv); });

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
