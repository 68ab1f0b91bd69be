// transferctl jobs: ls, show, watch, cancel, plot (training curves as PNG
// and CSV) and results (the per-file output of a PREDICT job).
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/follow.h"
#include "client/commands/output.h"
#include "client/plot.h"

namespace transferd::client::commands {
namespace {

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
      if (p.stages() > 0) {
        std::cout << absl::StrFormat(", stage %d/%d", p.stage() + 1,
                                     p.stages());
      }
      if (p.epochs() > 0) {
        std::cout << absl::StrFormat(", epoch %d/%d", p.epoch(), p.epochs());
      }
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
    if (v1::JobState_Parse("JOB_STATE_" + absl::AsciiStrToUpper(state), &s)) {
      request.set_state(s);
    }
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

// Class names for the confusion matrices of `j`: the model's, else the
// dataset's; none when the job has no evaluation.
std::vector<std::string> EvaluationClasses(Client& client, const v1::Job& j,
                                           const v1::JobSpec& r) {
  std::vector<std::string> classes;
  if (!j.evaluations().empty()) {
    if (!j.result_model().empty()) {
      absl::StatusOr<v1::Model> m = client.GetModel(j.result_model());
      if (m.ok()) classes.assign(m->classes().begin(), m->classes().end());
    }
    if (classes.empty() && !r.dataset().empty()) {
      absl::StatusOr<v1::Dataset> d = client.GetDataset(r.dataset());
      if (d.ok()) classes.assign(d->classes().begin(), d->classes().end());
    }
  }
  return classes;
}

// What `jobs show` prints of the spec: kind, dataset, base model, network,
// stages and seed.
void PrintJobSpec(const v1::JobSpec& r) {
  std::cout << absl::StrFormat(
      "kind        %s%s\n", KindText(r.kind()),
      r.recipe().empty() ? "" : absl::StrCat(" (recipe ", r.recipe(), ")"));
  std::cout << absl::StrFormat("dataset     %s\n", r.dataset());
  if (!r.base_model().empty()) {
    std::cout << absl::StrFormat("base model  %s\n", r.base_model());
  }
  const std::string model = ModelSpecText(r.model());
  if (!model.empty()) std::cout << absl::StrFormat("network     %s\n", model);
  for (int i = 0; i < r.stages_size(); ++i) {
    const v1::StageSpec& s = r.stages(i);
    std::cout << absl::StrFormat(
        "stage %-5d %s%s\n", i + 1,
        s.name().empty() ? "" : absl::StrCat(s.name(), ": "), StageText(s));
  }
  if (r.has_seed()) std::cout << absl::StrFormat("seed        %d\n", r.seed());
}

// What `jobs show` prints of the state: state, times and progress.
void PrintJobState(const v1::Job& j) {
  std::cout << absl::StrFormat(
      "state       %s%s\n", StateText(j.state()),
      j.failure_reason().empty() ? "" : absl::StrCat(": ", j.failure_reason()));
  std::cout << absl::StrFormat("created     %s\n", When(j.create_time()));
  if (j.has_start_time()) {
    std::cout << absl::StrFormat("started     %s\n", When(j.start_time()));
  }
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
  PrintJobSpec(r);
  PrintJobState(j);
  if (j.has_trainable() && j.trainable().trainable_tensors() > 0) {
    std::cout << "trainable   " << TrainableText(j.trainable()) << "\n";
  }
  if (j.resumes() > 0) {
    std::cout << absl::StrFormat("resumes     %d\n", j.resumes());
  }
  PrintHistory(j.history());
  PrintEvaluations(j.evaluations(), EvaluationClasses(*client, j, r));
  if (!j.result_model().empty()) {
    std::cout << absl::StrFormat("model       %s\n", j.result_model());
  }
  return kOk;
}

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

// Writes `bytes` to `path` ("-": standard output); prints why it could not
// and returns false.
bool WriteOutput(const std::string& path, const std::string& bytes) {
  if (path == "-") {
    std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::cout.flush();
    return static_cast<bool>(std::cout);
  }
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
  if (a.png == "-" && a.csv == "-") {
    std::fprintf(stderr,
                 "transferctl: jobs plot: -o - and --csv - would both write "
                 "to standard output; give one of them a file\n");
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
  // What went to standard output is the output: no summary after it.
  if (a.png == "-" || a.csv == "-") return kOk;
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
    "  transferctl jobs results landmarks-test --submission submission.csv \\\n"
    "      --submission-columns id,landmark_id,conf\n"
    "      a contest submission: file id, most probable class, its "
    "probability\n"
    "With more than 64 classes the CSV lists each file's top classes "
    "(predict --top-k)\ninstead of one column per class.\n"
    "Works on a running PREDICT job too: it lists the files done so far.";

// The CSV of `all`: path, split, true label, label, one probability per
// class (or, for a model of too many classes for that, the top classes and
// their probabilities), status.
std::string ResultsCsv(const v1::ListJobPredictionsResponse& all) {
  std::string out = "path,split,true_label,label";
  bool every_class = true;
  int top = 0;
  for (const v1::FilePrediction& p : all.predictions()) {
    if (p.status().code() == 0 && p.probabilities_size() == 0)
      every_class = false;
    top = std::max(top, p.top_size());
  }
  if (every_class) {
    for (const std::string& c : all.classes()) {
      absl::StrAppend(&out, ",", CsvField("p_" + c));
    }
  } else {
    for (int i = 1; i <= top; ++i) absl::StrAppend(&out, ",top", i, ",p", i);
  }
  out += ",status_code,status_message\n";
  for (const v1::FilePrediction& p : all.predictions()) {
    absl::StrAppend(&out, CsvField(p.path()), ",", SplitName(p.split()), ",",
                    CsvField(p.true_label()), ",", CsvField(p.label()));
    for (int i = 0; every_class && i < all.classes_size(); ++i) {
      out += ',';
      if (i < p.probabilities_size()) {
        absl::StrAppend(&out, absl::StrFormat("%.6f", p.probabilities(i)));
      }
    }
    for (int i = 0; !every_class && i < top; ++i) {
      if (i < p.top_size()) {
        absl::StrAppend(&out, ",", CsvField(p.top(i).label()),
                        absl::StrFormat(",%.6f", p.top(i).probability()));
      } else {
        out += ",,";
      }
    }
    absl::StrAppend(&out, ",", CodeName(p.status().code()), ",",
                    CsvField(p.status().message()), "\n");
  }
  return out;
}

// The contest submission of `all`: `columns` ("id,label,confidence"), then
// one row per file: its name without extension, the most probable class and
// its probability (empty and 0 for a file that could not be read).
std::string SubmissionCsv(const v1::ListJobPredictionsResponse& all,
                          const std::string& columns) {
  std::string out = columns + "\n";
  for (const v1::FilePrediction& p : all.predictions()) {
    std::string id = std::filesystem::path(p.path()).stem().string();
    if (p.status().code() != 0 || p.top_size() == 0) {
      absl::StrAppend(&out, CsvField(id), ",,0\n");
      continue;
    }
    absl::StrAppend(&out, CsvField(id), ",", CsvField(p.top(0).label()),
                    absl::StrFormat(",%.6f\n", p.top(0).probability()));
  }
  return out;
}

// `all` as a table, with the share of labelled files predicted right.
void PrintResultsTable(const v1::ListJobPredictionsResponse& all) {
  size_t width = 4;
  for (const v1::FilePrediction& p : all.predictions()) {
    width = std::max(width, p.path().size());
  }
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
    float prob = p.top_size() > 0 ? p.top(0).probability() : 0;
    for (int i = 0; i < all.classes_size() && i < p.probabilities_size(); ++i) {
      if (all.classes(i) == p.label()) prob = p.probabilities(i);
    }
    if (!p.true_label().empty()) {
      ++labelled;
      correct += p.true_label() == p.label() ? 1 : 0;
    }
    std::cout << absl::StrFormat("%-*s  %-10s %-10s %-10s %.4f\n", width,
                                 p.path(), SplitName(p.split()), p.true_label(),
                                 p.label(), prob);
  }
  std::cout << absl::StrFormat("%d files", all.predictions_size());
  if (labelled > 0) {
    std::cout << absl::StrFormat("; %d/%d labelled files correct (%.4f)",
                                 correct, labelled,
                                 static_cast<double>(correct) / labelled);
  }
  std::cout << "\n";
}

// `out` to `target` ("-": stdout), "FILE: N rows" after a file.
int WriteResults(const Globals& g, const std::string& target,
                 const std::string& out, int rows) {
  if (target == "-") {
    std::cout << out;
    return kOk;
  }
  if (!WriteOutput(target, out)) return kUsage;
  if (!g.json) std::cout << absl::StrFormat("%s: %d rows\n", target, rows);
  return kOk;
}

int JobsResults(const Globals& g, const std::string& name,
                const std::string& csv, const std::string& submission,
                const std::string& submission_columns) {
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
  const bool written = !submission.empty() || !csv.empty();
  if (!submission.empty()) {
    const int rc =
        WriteResults(g, submission, SubmissionCsv(all, submission_columns),
                     all.predictions_size());
    if (rc != kOk) return rc;
  }
  if (!csv.empty()) {
    const int rc =
        WriteResults(g, csv, ResultsCsv(all), all.predictions_size());
    if (rc != kOk) return rc;
  }
  // A file written is reported; with --json the results follow too, unless
  // stdout already carries a CSV.
  if (written && (!g.json || csv == "-" || submission == "-")) return kOk;
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  PrintResultsTable(all);
  return kOk;
}

// The arguments of the jobs subcommands; JOB is shared.
struct JobsArgs {
  std::string state;
  std::string kind;
  std::string name;
  bool from_start = false;
  PlotArgs plot;
  std::string results_csv;
  std::string submission;
  std::string submission_columns = "id,label,confidence";
};

void AddJobsListCommand(CLI::App* jobs, const Globals& g, int& rc,
                        const std::shared_ptr<JobsArgs>& args) {
  CLI::App* jobs_ls = jobs->add_subcommand("ls", "List jobs, newest first");
  jobs_ls->add_option("--state", args->state, "Only jobs in this state")
      ->check(CLI::IsMember(
          {"queued", "running", "succeeded", "failed", "cancelled"},
          CLI::ignore_case));
  jobs_ls->add_option("--kind", args->kind, "Only jobs of this kind")
      ->check(
          CLI::IsMember({"train", "fine-tune", "predict"}, CLI::ignore_case));
  jobs_ls->footer("Example: transferctl jobs ls --state running");
  jobs_ls->callback(
      [&g, &rc, args] { rc = JobsList(g, args->state, args->kind); });
}

void AddJobsShowCommand(CLI::App* jobs, const Globals& g, int& rc,
                        const std::shared_ptr<JobsArgs>& args) {
  CLI::App* jobs_show = jobs->add_subcommand(
      "show",
      "Spec, state, progress, epoch history, evaluations and result of a job");
  jobs_show->add_option("JOB", args->name, "ID or jobs/ID")->required();
  jobs_show->footer(
      "Example: transferctl jobs show cats-vgg16\n"
      "         transferctl --json jobs show cats-vgg16 | jq .history");
  jobs_show->callback([&g, &rc, args] { rc = JobsShow(g, args->name); });
}

void AddJobsWatchCommand(CLI::App* jobs, const Globals& g, int& rc,
                         const std::shared_ptr<JobsArgs>& args) {
  CLI::App* jobs_watch = jobs->add_subcommand(
      "watch", "Follow a job's progress to its end (Ctrl-C detaches)");
  jobs_watch->add_option("JOB", args->name, "ID or jobs/ID")->required();
  jobs_watch->add_flag(
      "--from-start", args->from_start,
      "Replay the job's stored events from its beginning first "
      "(always done for a finished job)");
  jobs_watch->footer(kWatchHelp);
  jobs_watch->callback(
      [&g, &rc, args] { rc = JobsWatch(g, args->name, args->from_start); });
}

void AddJobsCancelCommand(CLI::App* jobs, const Globals& g, int& rc,
                          const std::shared_ptr<JobsArgs>& args) {
  CLI::App* jobs_cancel = jobs->add_subcommand(
      "cancel", "Cancel a queued or running job (it stops within one batch)");
  jobs_cancel->add_option("JOB", args->name, "ID or jobs/ID")->required();
  jobs_cancel->footer("Example: transferctl jobs cancel cats-vgg16");
  jobs_cancel->callback([&g, &rc, args] { rc = JobsCancel(g, args->name); });
}

void AddJobsPlotCommand(CLI::App* jobs, const Globals& g, int& rc,
                        const std::shared_ptr<JobsArgs>& args) {
  PlotArgs& plot_args = args->plot;
  CLI::App* jobs_plot = jobs->add_subcommand(
      "plot",
      "Training and validation accuracy and loss per epoch as a PNG (and CSV)");
  jobs_plot->add_option("JOB", plot_args.job, "ID or jobs/ID")->required();
  jobs_plot->add_option("-o,--output", plot_args.png,
                        "PNG file to write (- = stdout)");
  jobs_plot->add_option("--csv", plot_args.csv,
                        "CSV file to write the numbers to (- = stdout)");
  jobs_plot->add_option("--width", plot_args.width, "Image width in pixels")
      ->check(CLI::Range(transferd::client::kMinPlotWidth,
                         transferd::client::kMaxPlotSide))
      ->capture_default_str();
  jobs_plot->add_option("--height", plot_args.height, "Image height in pixels")
      ->check(CLI::Range(transferd::client::kMinPlotHeight,
                         transferd::client::kMaxPlotSide))
      ->capture_default_str();
  jobs_plot->footer(kPlotHelp);
  jobs_plot->callback([&g, &rc, args] { rc = JobsPlot(g, args->plot); });
}

void AddJobsResultsCommand(CLI::App* jobs, const Globals& g, int& rc,
                           const std::shared_ptr<JobsArgs>& args) {
  CLI::App* jobs_results =
      jobs->add_subcommand("results",
                           "Per-file labels and probabilities of a PREDICT job "
                           "(table, CSV or JSON)");
  jobs_results->add_option("JOB", args->name, "ID or jobs/ID")->required();
  jobs_results->add_option("--csv", args->results_csv,
                           "Write CSV to this file (- = stdout)");
  jobs_results->add_option(
      "--submission", args->submission,
      "Write a contest submission to this file (- = stdout): one row per "
      "file, its id (the file name without extension), the most probable "
      "class and its probability");
  jobs_results
      ->add_option("--submission-columns", args->submission_columns,
                   "The submission's header, three names")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            const std::vector<std::string> parts = absl::StrSplit(text, ',');
            return parts.size() == 3 ? "" : "expected three column names";
          },
          "A,B,C"))
      ->capture_default_str();
  jobs_results->footer(kResultsHelp);
  jobs_results->callback([&g, &rc, args] {
    rc = JobsResults(g, args->name, args->results_csv, args->submission,
                     args->submission_columns);
  });
}

}  // namespace

void AddJobsCommands(CLI::App& app, const Globals& g, int& rc) {
  CLI::App* jobs =
      app.add_subcommand("jobs", "Train, fine-tune and predict jobs");
  jobs->require_subcommand(1);
  auto args = std::make_shared<JobsArgs>();
  AddJobsListCommand(jobs, g, rc, args);
  AddJobsShowCommand(jobs, g, rc, args);
  AddJobsWatchCommand(jobs, g, rc, args);
  AddJobsCancelCommand(jobs, g, rc, args);
  AddJobsPlotCommand(jobs, g, rc, args);
  AddJobsResultsCommand(jobs, g, rc, args);
}

}  // namespace transferd::client::commands
