// transferctl predict: images (files, folders) sent in batches to Predict,
// or with --dataset a PREDICT job over a stored dataset.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/follow.h"
#include "client/commands/output.h"

namespace transferd::client::commands {
namespace {

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
  int top_k = 0;
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
      if (ec) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot read ", input, ": ", ec.message()));
      }
      for (; it != std::filesystem::recursive_directory_iterator();
           it.increment(ec)) {
        if (ec) {
          return absl::InvalidArgumentError(
              absl::StrCat("cannot read ", input, ": ", ec.message()));
        }
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory(ec)) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file(ec) && IsImageName(it->path())) {
          found.push_back(it->path().string());
        }
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
  if (files.empty()) {
    return absl::InvalidArgumentError("no .jpg, .jpeg or .png files found");
  }
  return files;
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
  for (const PredictRow& r : rows) {
    errors += r.prediction.status().code() != 0 ? 1 : 0;
  }
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
      // The most probable classes, most probable first (--top-k).
      auto* top = f["top"].mutable_list_value();
      for (const v1::ClassScore& s : r.prediction.top()) {
        auto& t = *top->add_values()->mutable_struct_value()->mutable_fields();
        t["label"].set_string_value(s.label());
        t["probability"].set_number_value(s.probability());
      }
      auto& status = *f["status"].mutable_struct_value()->mutable_fields();
      // The numeric google.rpc.Code, as ItemStatus has it in every other
      // --json output (jobs results) and in the API.
      status["code"].set_number_value(r.prediction.status().code());
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
        // Beyond the label, the next most probable classes (--top-k).
        std::string more;
        for (int i = 1; i < r.prediction.top_size(); ++i) {
          absl::StrAppendFormat(&more, "%s%s %.4f", i == 1 ? "  (" : ", ",
                                r.prediction.top(i).label(),
                                r.prediction.top(i).probability());
        }
        if (!more.empty()) more += ")";
        std::cout << absl::StrFormat("%-*s  %-12s %.4f%s\n", width, r.file,
                                     r.prediction.label(),
                                     r.prediction.probability(), more);
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
  if (name.find('/') != std::string::npos) {
    return transferd::client::ModelName(name);
  }
  const std::string alias = transferd::client::AliasName(name);
  if (client.GetModel(alias).ok()) return alias;
  return transferd::client::ModelName(name);
}

// What one PredictRequest may hold.
struct RequestLimits {
  int64_t max_bytes = 0;
  int max_images = 0;
};

// The server's limits on a PredictRequest, less room for the rest of the
// message, and at most `batch` images.
absl::StatusOr<RequestLimits> GetRequestLimits(Client& client, int batch) {
  absl::StatusOr<v1::ServerInfo> info = client.GetServerInfo();
  if (!info.ok()) return info.status();
  RequestLimits limits;
  limits.max_bytes = info->limits().max_receive_message_bytes() - 64 * 1024;
  if (limits.max_bytes <= 0) limits.max_bytes = 4 * 1024 * 1024;
  limits.max_images = batch;
  if (info->limits().max_images_per_request() > 0) {
    limits.max_images =
        std::min(limits.max_images, info->limits().max_images_per_request());
  }
  return limits;
}

// The bytes of `file`; nullopt, with `prediction`'s status saying why, when
// it cannot be read or is over `max_bytes`.
std::optional<std::string> ReadImage(const std::string& file, int64_t max_bytes,
                                     v1::ImagePrediction& prediction) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  if (!in && !in.eof()) {
    prediction.mutable_status()->set_code(3);
    prediction.mutable_status()->set_message(
        absl::StrCat("cannot read the file: ", std::strerror(errno)));
    return std::nullopt;
  }
  std::string data = bytes.str();
  if (static_cast<int64_t>(data.size()) > max_bytes) {
    prediction.mutable_status()->set_code(8);
    prediction.mutable_status()->set_message(absl::StrFormat(
        "the file is %s, more than the server accepts in one request (%s)",
        HumanBytes(static_cast<int64_t>(data.size())), HumanBytes(max_bytes)));
    return std::nullopt;
  }
  return data;
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
  absl::StatusOr<RequestLimits> limits = GetRequestLimits(*client, a.batch);
  if (!limits.ok()) return Fail(limits.status());
  const int64_t max_bytes = limits->max_bytes;
  const int max_images = limits->max_images;
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
    request.set_top_k(a.top_k);
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
    std::optional<std::string> data =
        ReadImage(file, max_bytes, rows[i].prediction);
    if (!data.has_value()) continue;
    if (request_bytes + static_cast<int64_t>(data->size()) > max_bytes ||
        static_cast<int>(in_request.size()) >= max_images) {
      if (absl::Status s = send(); !s.ok()) return Fail(s);
    }
    v1::Image* image = request.add_images();
    image->set_id(file);
    request_bytes += static_cast<int64_t>(data->size());
    image->set_data(std::move(*data));
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
  if (a.top_k > 0) spec.set_top_k(a.top_k);
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

}  // namespace

void AddPredictCommands(CLI::App& app, const Globals& g, int& rc) {
  auto predict_args = std::make_shared<PredictArgs>();
  CLI::App* predict = app.add_subcommand(
      "predict",
      "Classify images (files, folders) or, with --dataset, a stored dataset");
  predict
      ->add_option(
          "--model", predict_args->model,
          "Alias or model: NAME (an alias if one exists, else a model id), "
          "models/ID or aliases/NAME")
      ->required();
  predict->add_option("FILES", predict_args->inputs, "Image files and folders");
  predict->add_flag(
      "--tta", predict_args->tta,
      "Average each prediction with that of a horizontally flipped copy");
  predict
      ->add_option("--top-k", predict_args->top_k,
                   "Also list the next most probable classes, K in all "
                   "(0: the server's default, 1 for two classes, 5 otherwise)")
      ->check(CLI::Range(0, 100000));
  predict
      ->add_option("--batch", predict_args->batch,
                   "Images per request (at most)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  predict->add_option(
      "--dataset", predict_args->dataset,
      "Run a PREDICT job over this stored dataset (ID or datasets/ID)");
  predict
      ->add_option(
          "--split", predict_args->splits,
          "With --dataset: only these splits (repeatable; default every file)")
      ->check(CLI::IsMember({"train", "validation", "test"}, CLI::ignore_case));
  predict->add_option("--id", predict_args->id, "With --dataset: the job id");
  predict->add_flag("--detach", predict_args->detach,
                    "With --dataset: print the job and return at once");
  predict->footer(kPredictHelp);
  predict->callback(
      [&g, &rc, predict_args] { rc = Predict(g, *predict_args); });
}

}  // namespace transferd::client::commands
