#include "server/core/jobs.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/backbones/backbone.h"
#include "server/core/data/images.h"
#include "server/core/datasets.h"
#include "server/core/predictor.h"
#include "server/core/registry.h"
#include "server/core/train/train_json.h"
#include "server/core/train/train_util.h"
#include "server/core/train/trainer.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/store.h"

namespace transferd::core {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;
using Clock = std::chrono::system_clock;

json ProgressJson(const JobProgress& p) {
  return {{"stage", p.stage},
          {"stages", p.stages},
          {"epoch", p.epoch},
          {"epochs", p.epochs},
          {"step", p.step},
          {"steps", p.steps},
          {"eta_seconds", p.eta_seconds}};
}

JobProgress ProgressFrom(const json& j) {
  JobProgress p;
  p.stage = j.at("stage").get<int>();
  p.stages = j.at("stages").get<int>();
  p.epoch = j.at("epoch").get<int>();
  p.epochs = j.at("epochs").get<int>();
  p.step = j.at("step").get<int64_t>();
  p.steps = j.at("steps").get<int64_t>();
  p.eta_seconds = j.at("eta_seconds").get<double>();
  return p;
}

std::string EventToJson(const JobEvent& e) {
  json j = {{"type", static_cast<int>(e.type)}};
  switch (e.type) {
    case JobEvent::Type::kStateChanged:
      j["state"] = static_cast<int>(e.state);
      j["message"] = e.message;
      break;
    case JobEvent::Type::kLog:
      j["level"] = e.level;
      j["message"] = e.message;
      break;
    case JobEvent::Type::kStageStarted:
      j["stage"] = e.stage;
      j["stage_name"] = e.stage_name;
      j["trainable"] = json::parse(train::SummaryToJson(e.trainable));
      j["uses_feature_cache"] = e.uses_feature_cache;
      break;
    case JobEvent::Type::kStep: {
      const train::StepReport& s = e.step;
      j["step"] = {{"stage", s.stage},
                   {"epoch", s.epoch},
                   {"step", s.step},
                   {"steps", s.steps},
                   {"loss", s.loss},
                   {"accuracy", s.accuracy},
                   {"images_per_second", s.images_per_second},
                   {"eta_seconds", s.eta_seconds}};
      break;
    }
    case JobEvent::Type::kEpochEnd:
      j["epoch"] = json::parse(train::HistoryToJson({e.epoch}))[0];
      break;
    case JobEvent::Type::kCheckpointSaved:
      j["checkpoint_epoch"] = e.checkpoint_epoch;
      j["checkpoint_bytes"] = e.checkpoint_bytes;
      break;
    case JobEvent::Type::kEvaluation:
      j["evaluation"] =
          json::parse(train::EvaluationsToJson({e.evaluation}))[0];
      break;
  }
  return j.dump();
}

absl::StatusOr<JobEvent> EventFromJson(const std::string& text) {
  try {
    const json j = json::parse(text);
    JobEvent e;
    e.type = static_cast<JobEvent::Type>(j.at("type").get<int>());
    switch (e.type) {
      case JobEvent::Type::kStateChanged:
        e.state = static_cast<JobState>(j.at("state").get<int>());
        e.message = j.at("message").get<std::string>();
        break;
      case JobEvent::Type::kLog:
        e.level = j.at("level").get<std::string>();
        e.message = j.at("message").get<std::string>();
        break;
      case JobEvent::Type::kStageStarted: {
        e.stage = j.at("stage").get<int>();
        e.stage_name = j.at("stage_name").get<std::string>();
        TRANSFERD_ASSIGN_OR_RETURN(
            e.trainable, train::SummaryFromJson(j.at("trainable").dump()));
        e.uses_feature_cache = j.at("uses_feature_cache").get<bool>();
        break;
      }
      case JobEvent::Type::kStep: {
        const json& s = j.at("step");
        e.step.stage = s.at("stage").get<int>();
        e.step.epoch = s.at("epoch").get<int>();
        e.step.step = s.at("step").get<int64_t>();
        e.step.steps = s.at("steps").get<int64_t>();
        e.step.loss = s.at("loss").get<double>();
        e.step.accuracy = s.at("accuracy").get<double>();
        e.step.images_per_second = s.at("images_per_second").get<double>();
        e.step.eta_seconds = s.at("eta_seconds").get<double>();
        break;
      }
      case JobEvent::Type::kEpochEnd: {
        TRANSFERD_ASSIGN_OR_RETURN(
            auto history,
            train::HistoryFromJson(json::array({j.at("epoch")}).dump()));
        e.epoch = history.at(0);
        break;
      }
      case JobEvent::Type::kCheckpointSaved:
        e.checkpoint_epoch = j.at("checkpoint_epoch").get<int>();
        e.checkpoint_bytes = j.at("checkpoint_bytes").get<int64_t>();
        break;
      case JobEvent::Type::kEvaluation: {
        TRANSFERD_ASSIGN_OR_RETURN(
            auto evals, train::EvaluationsFromJson(
                            json::array({j.at("evaluation")}).dump()));
        e.evaluation = evals.at(0);
        break;
      }
    }
    return e;
  } catch (const std::exception& ex) {
    return absl::DataLossError(
        absl::StrCat("stored job event is malformed: ", ex.what()));
  }
}

constexpr const char* kJobColumns =
    "id, kind, state, failure_reason, dataset_id, base_model, spec_blob, "
    "resolved_blob, config, "
    "create_time_ms, start_time_ms, end_time_ms, progress, history, trainable, "
    "evaluations, "
    "result_model, last_event_sequence, resumes";

absl::StatusOr<JobRecord> ReadJob(const Statement& q) {
  JobRecord r;
  r.id = q.ColumnText(0);
  r.kind = static_cast<JobKind>(q.ColumnInt(1));
  r.state = static_cast<JobState>(q.ColumnInt(2));
  r.failure_reason = q.ColumnText(3);
  r.dataset_id = q.ColumnText(4);
  r.base_model = q.ColumnText(5);
  r.spec_blob = q.ColumnText(6);
  r.resolved_blob = q.ColumnText(7);
  TRANSFERD_ASSIGN_OR_RETURN(r.config, train::ConfigFromJson(q.ColumnText(8)));
  r.create_time = FromUnixMillis(q.ColumnInt(9));
  r.start_time = FromUnixMillis(q.ColumnInt(10));
  r.end_time = FromUnixMillis(q.ColumnInt(11));
  try {
    r.progress = ProgressFrom(json::parse(q.ColumnText(12)));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("job ", r.id, ": stored progress is malformed"));
  }
  TRANSFERD_ASSIGN_OR_RETURN(r.history,
                             train::HistoryFromJson(q.ColumnText(13)));
  TRANSFERD_ASSIGN_OR_RETURN(r.trainable,
                             train::SummaryFromJson(q.ColumnText(14)));
  TRANSFERD_ASSIGN_OR_RETURN(r.evaluations,
                             train::EvaluationsFromJson(q.ColumnText(15)));
  r.result_model = q.ColumnText(16);
  r.last_event_sequence = q.ColumnInt(17);
  r.resumes = static_cast<int>(q.ColumnInt(18));
  return r;
}

absl::StatusOr<std::optional<JobRecord>> SelectJob(StoreTxn& txn,
                                                   const std::string& id) {
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement q, txn.Prepare(absl::StrCat("SELECT ", kJobColumns,
                                            " FROM jobs WHERE id = ?")));
  q.Bind(1, id);
  TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::nullopt;
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord r, ReadJob(q));
  return std::optional<JobRecord>(std::move(r));
}

bool NeedsValidation(const std::string& metric) {
  return absl::StartsWith(metric, "val_");
}

// What the model's weights expect, recorded with the model so that serving
// preprocesses exactly as training did.
absl::StatusOr<PreprocessingInfo> PreprocessingFor(
    const train::ModelConfig& m) {
  backbones::BackboneSpec spec;
  spec.name = m.backbone;
  spec.alpha = m.alpha;
  spec.flavor = absl::EndsWith(m.weights, ".safetensors")
                    ? backbones::Flavor::kTorchvision
                    : backbones::Flavor::kKeras;
  TRANSFERD_ASSIGN_OR_RETURN(backbones::Backbone backbone,
                             backbones::CreateBackbone(spec));
  const backbones::Preprocessing p = backbone->DefaultPreprocessing();
  PreprocessingInfo out;
  out.mode = backbones::Preprocessing::ModeName(p.mode);
  out.bgr = p.bgr;
  out.scale = p.scale;
  out.mean.assign(p.mean.begin(), p.mean.end());
  out.std.assign(p.std.begin(), p.std.end());
  out.input_size = m.input_size;
  return out;
}

}  // namespace

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

absl::StatusOr<std::unique_ptr<JobQueue>> JobQueue::Open(Env env) {
  std::unique_ptr<JobQueue> queue(new JobQueue(std::move(env)));
  JobQueue* q = queue.get();
  std::vector<std::string> interrupted;
  TRANSFERD_RETURN_IF_ERROR(
      q->env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement s,
            txn.Prepare("SELECT id, last_event_sequence FROM jobs"));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, s.Step());
          if (!row) break;
          q->last_seq_[s.ColumnText(0)] = s.ColumnInt(1);
        }
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement r,
            txn.Prepare("SELECT id FROM jobs WHERE state = ? ORDER BY ord"));
        r.Bind(1, static_cast<int64_t>(JobState::kRunning));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, r.Step());
          if (!row) break;
          interrupted.push_back(r.ColumnText(0));
        }
        return absl::OkStatus();
      }));
  // RUNNING jobs stay RUNNING: the worker picks them first and resumes them.
  for (const std::string& id : interrupted) {
    spdlog::info("job {} was interrupted; it resumes from its last checkpoint",
                 id);
  }
  q->env_.datasets->SetInUseCheck(
      [q](const std::string& id) { return q->UserOf("dataset_id", id); });
  q->env_.models->SetInUseCheck(
      [q](const std::string& id) { return q->UserOf("base_model", id); });
  return queue;
}

JobQueue::~JobQueue() {
  Stop();
  env_.datasets->SetInUseCheck(nullptr);
  env_.models->SetInUseCheck(nullptr);
}

void JobQueue::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (worker_.joinable()) return;
  worker_ = std::thread([this] { WorkerLoop(); });
  notifier_ = std::thread([this] { NotifierLoop(); });
}

void JobQueue::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stopping_flag_.store(true);
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  {
    // Watchers observe the shutdown (their streams end UNAVAILABLE, to be
    // resumed from the last sequence) before the notifier goes.
    std::lock_guard<std::mutex> lock(watch_mu_);
    for (auto& [handle, watcher] : watchers_) watcher.second();
    notifier_stopping_ = true;
  }
  watch_cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
}

std::string JobQueue::UserOf(const char* column, const std::string& value) {
  std::string user;
  absl::Status s = env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare(absl::StrCat(
                         "SELECT id FROM jobs WHERE ", column,
                         " = ? AND state IN (?, ?) ORDER BY ord LIMIT 1")));
    q.Bind(1, value)
        .Bind(2, static_cast<int64_t>(JobState::kQueued))
        .Bind(3, static_cast<int64_t>(JobState::kRunning));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) user = absl::StrCat("jobs/", q.ColumnText(0));
    return absl::OkStatus();
  });
  if (!s.ok()) return "a job (the job table could not be read)";
  return user;
}

absl::StatusOr<JobRecord> JobQueue::Create(NewJob job) {
  if (job.id.empty()) job.id = "j-" + RandomHex(4);
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("job_id", job.id));
  if (job.kind == JobKind::kPredict) return CreatePredict(std::move(job));
  // The dataset and the splits the spec needs.
  absl::StatusOr<DatasetInfo> dataset = env_.datasets->Get(job.dataset_id);
  if (!dataset.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.dataset: ", dataset.status().message()));
  }
  int64_t train_files = 0, val_files = 0;
  for (const SplitCounts& s : dataset->splits) {
    if (s.split == common::Split::kTrain) train_files = s.files;
    if (s.split == common::Split::kValidation) val_files = s.files;
  }
  if (train_files == 0) {
    return absl::InvalidArgumentError(absl::StrCat("spec.dataset: dataset \"",
                                                   job.dataset_id,
                                                   "\" has no training split"));
  }
  if (dataset->classes.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.dataset: dataset \"", job.dataset_id, "\" has ",
        dataset->classes.size(), " class; a classifier needs at least 2"));
  }
  const train::TrainConfig& config = job.config;
  if (val_files == 0 && NeedsValidation(config.selection_metric)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.selection_metric: \"", config.selection_metric,
        "\" needs a validation split and "
        "dataset \"",
        job.dataset_id, "\" has none (use \"accuracy\" or \"loss\")"));
  }
  for (size_t i = 0; i < config.stages.size(); ++i) {
    if (val_files == 0 &&
        NeedsValidation(config.stages[i].early_stopping.monitor)) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.stages[", i, "].early_stopping.monitor: \"",
                       config.stages[i].early_stopping.monitor,
                       "\" needs a validation split and the dataset has none"));
    }
  }
  if (job.kind == JobKind::kFineTune) {
    absl::StatusOr<ModelInfo> base = env_.models->Get(job.base_model);
    if (!base.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.base_model: ", base.status().message()));
    }
    if (base->classes != dataset->classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.base_model: model \"", job.base_model,
                       "\" was trained on other classes than "
                       "dataset \"",
                       job.dataset_id, "\" has"));
    }
    job.config.model.init_weights_file = base->weights_file.string();
  }
  // Layer names and sizes, checked on a randomly initialised model.
  for (size_t i = 0; i < config.stages.size(); ++i) {
    absl::StatusOr<train::TrainableSummary> summary =
        train::DescribeStage(config.model, config.stages[i],
                             static_cast<int>(dataset->classes.size()));
    if (!summary.ok()) {
      // The trainer names fields relative to the spec ("model.input_size",
      // "trainable_from"); the API names them from the request.
      const std::string message(summary.status().message());
      std::string named;
      if (absl::StartsWith(message, "model.") ||
          absl::StartsWith(message, "stages[")) {
        named = absl::StrCat("spec.", message);
      } else if (absl::StartsWith(message, "trainable_from") ||
                 absl::StartsWith(message, "batch_size") ||
                 absl::StartsWith(message, "epochs") ||
                 absl::StartsWith(message, "optimizer")) {
        named = absl::StrCat("spec.stages[", i, "].", message);
      } else {
        named = absl::StrCat("spec.stages[", i, "]: ", message);
      }
      return absl::Status(summary.status().code(), named);
    }
  }

  return Insert(std::move(job));
}

absl::StatusOr<JobRecord> JobQueue::Insert(NewJob job) {
  JobRecord record;
  record.id = job.id;
  record.kind = job.kind;
  record.state = JobState::kQueued;
  record.dataset_id = job.dataset_id;
  record.base_model = job.base_model;
  record.spec_blob = job.spec_blob;
  record.resolved_blob = job.resolved_blob;
  record.config = job.config;
  record.create_time = Clock::now();
  record.progress.stages = static_cast<int>(job.config.stages.size());
  for (const train::StageConfig& s : job.config.stages)
    record.progress.epochs += s.epochs;
  TRANSFERD_RETURN_IF_ERROR(
      env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(std::optional<JobRecord> existing,
                                   SelectJob(txn, record.id));
        if (existing.has_value()) {
          return absl::AlreadyExistsError(
              absl::StrCat("job \"", record.id, "\" already exists"));
        }
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(absl::StrCat(
                "INSERT INTO jobs (ord, ", kJobColumns,
                ") VALUES ((SELECT COALESCE(MAX(ord), 0) + 1 FROM jobs),"
                "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")));
        q.Bind(1, record.id)
            .Bind(2, static_cast<int64_t>(record.kind))
            .Bind(3, static_cast<int64_t>(record.state))
            .Bind(4, std::string_view(""))
            .Bind(5, record.dataset_id)
            .Bind(6, record.base_model)
            .BindBlob(7, record.spec_blob)
            .BindBlob(8, record.resolved_blob)
            .Bind(9, train::ConfigToJson(record.config))
            .Bind(10, UnixMillis(record.create_time))
            .Bind(11, int64_t{0})
            .Bind(12, int64_t{0})
            .Bind(13, ProgressJson(record.progress).dump())
            .Bind(14, std::string_view("[]"))
            .Bind(15, train::SummaryToJson({}))
            .Bind(16, std::string_view("[]"))
            .Bind(17, std::string_view(""))
            .Bind(18, int64_t{0})
            .Bind(19, int64_t{0});
        return q.Run();
      }));
  {
    std::lock_guard<std::mutex> lock(seq_mu_);
    last_seq_[record.id] = 0;
  }
  JobEvent queued;
  queued.type = JobEvent::Type::kStateChanged;
  queued.state = JobState::kQueued;
  queued.message = "queued";
  TRANSFERD_RETURN_IF_ERROR(Append(record.id, queued));
  work_cv_.notify_all();
  return Get(record.id);
}

absl::StatusOr<JobRecord> JobQueue::Get(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("job id", id));
  std::optional<JobRecord> found;
  TRANSFERD_RETURN_IF_ERROR(
      env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(found, SelectJob(txn, id));
        return absl::OkStatus();
      }));
  if (!found.has_value())
    return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return *std::move(found);
}

absl::StatusOr<std::vector<JobRecord>> JobQueue::List(
    int page_size, const std::string& page_token, std::optional<JobState> state,
    std::optional<JobKind> kind, std::string* next_page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(page_size, ClampPageSize(page_size));
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t offset, ParsePageToken(page_token));
  std::vector<JobRecord> out;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(env_.store->Transaction([&](StoreTxn& txn)
                                                        -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(absl::StrCat(
            "SELECT ", kJobColumns,
            " FROM jobs WHERE (?1 = 0 OR state = ?1) AND (?2 = 0 OR kind = ?2)"
            " ORDER BY ord DESC LIMIT ?3 OFFSET ?4")));
    q.Bind(1, state ? static_cast<int64_t>(*state) : int64_t{0})
        .Bind(2, kind ? static_cast<int64_t>(*kind) : int64_t{0})
        .Bind(3, static_cast<int64_t>(page_size) + 1)
        .Bind(4, offset);
    TRANSFERD_ASSIGN_OR_RETURN(
        more, ReadPage(q, page_size, [&](const Statement& row) {
          TRANSFERD_ASSIGN_OR_RETURN(JobRecord r, ReadJob(row));
          out.push_back(std::move(r));
          return absl::OkStatus();
        }));
    return absl::OkStatus();
  }));
  if (next_page_token != nullptr)
    *next_page_token = more ? std::to_string(offset + page_size) : "";
  return out;
}

absl::StatusOr<JobRecord> JobQueue::Cancel(const std::string& id) {
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord job, Get(id));
  if (IsTerminal(job.state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job \"", id, "\" has already finished (",
                     JobStateName(job.state), ")"));
  }
  {
    // Held across the write so that the worker cannot start the job between
    // the check and the state change (RunJob re-reads the state under it).
    std::lock_guard<std::mutex> lock(mu_);
    if (running_ == id) {
      cancel_running_ = true;
      return job;  // the worker ends it CANCELLED within one batch
    }
    TRANSFERD_RETURN_IF_ERROR(
        SetState(id, JobState::kCancelled, "cancelled while queued"));
  }
  return Get(id);
}

absl::StatusOr<std::vector<JobEvent>> JobQueue::Events(const std::string& id,
                                                       int64_t after,
                                                       int limit) {
  std::vector<JobEvent> out;
  TRANSFERD_RETURN_IF_ERROR(env_.store->Transaction([&](StoreTxn& txn)
                                                        -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "SELECT seq, time_ms, body FROM job_events WHERE job_id = ? AND "
            "seq > ? ORDER BY seq LIMIT ?"));
    q.Bind(1, id).Bind(2, after).Bind(3, static_cast<int64_t>(limit));
    while (true) {
      TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      TRANSFERD_ASSIGN_OR_RETURN(JobEvent e, EventFromJson(q.ColumnText(2)));
      e.sequence = q.ColumnInt(0);
      e.time = FromUnixMillis(q.ColumnInt(1));
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return out;
}

bool JobQueue::stopping() { return stopping_flag_.load(); }

int64_t JobQueue::Subscribe(const std::string& id, std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  const int64_t handle = next_handle_++;
  watchers_[handle] = {id, std::move(wake)};
  return handle;
}

void JobQueue::Unsubscribe(int64_t handle) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  watchers_.erase(handle);
}

void JobQueue::NotifierLoop() {
  std::unique_lock<std::mutex> lock(watch_mu_);
  while (true) {
    watch_cv_.wait(lock, [&] { return notifier_stopping_ || !dirty_.empty(); });
    if (notifier_stopping_) return;
    std::set<std::string> jobs(dirty_.begin(), dirty_.end());
    dirty_.clear();
    for (auto& [handle, watcher] : watchers_) {
      if (jobs.count(watcher.first) > 0) watcher.second();
    }
  }
}

absl::Status JobQueue::Append(const std::string& id, JobEvent event) {
  int64_t seq;
  {
    std::lock_guard<std::mutex> lock(seq_mu_);
    seq = ++last_seq_[id];
  }
  event.time = Clock::now();
  const std::string body = EventToJson(event);
  TRANSFERD_RETURN_IF_ERROR(env_.store->Transaction([&](StoreTxn& txn)
                                                        -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare("INSERT INTO job_events (job_id, seq, time_ms, body) "
                    "VALUES (?, ?, ?, ?)"));
    q.Bind(1, id).Bind(2, seq).Bind(3, UnixMillis(event.time)).Bind(4, body);
    TRANSFERD_RETURN_IF_ERROR(q.Run());
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement u,
        txn.Prepare("UPDATE jobs SET last_event_sequence = ? WHERE id = ?"));
    u.Bind(1, seq).Bind(2, id);
    TRANSFERD_RETURN_IF_ERROR(u.Run());
    if (event.type == JobEvent::Type::kStateChanged) {
      TRANSFERD_ASSIGN_OR_RETURN(
          Statement s,
          txn.Prepare(
              "UPDATE jobs SET state = ?, failure_reason = ?, "
              "start_time_ms = CASE WHEN ?1 = 2 AND start_time_ms = 0 THEN ?3 "
              "ELSE start_time_ms END, end_time_ms = CASE WHEN ?1 >= 3 THEN ?3 "
              "ELSE end_time_ms END WHERE id = ?4"));
      s.Bind(1, static_cast<int64_t>(event.state))
          .Bind(2, event.state == JobState::kFailed ? event.message
                                                    : std::string())
          .Bind(3, UnixMillis(event.time))
          .Bind(4, id);
      TRANSFERD_RETURN_IF_ERROR(s.Run());
    }
    return absl::OkStatus();
  }));
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    dirty_.push_back(id);
  }
  watch_cv_.notify_one();
  return absl::OkStatus();
}

absl::Status JobQueue::SetState(const std::string& id, JobState state,
                                const std::string& message) {
  JobEvent e;
  e.type = JobEvent::Type::kStateChanged;
  e.state = state;
  e.message = message;
  return Append(id, std::move(e));
}

absl::Status JobQueue::SaveRunState(const JobRecord& job) {
  return env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "UPDATE jobs SET progress = ?, history = ?, trainable = ?, "
            "evaluations = ?, result_model = ?, resumes = ? WHERE id = ?"));
    q.Bind(1, ProgressJson(job.progress).dump())
        .Bind(2, train::HistoryToJson(job.history))
        .Bind(3, train::SummaryToJson(job.trainable))
        .Bind(4, train::EvaluationsToJson(job.evaluations))
        .Bind(5, job.result_model)
        .Bind(6, static_cast<int64_t>(job.resumes))
        .Bind(7, job.id);
    return q.Run();
  });
}

std::optional<std::string> JobQueue::NextQueued() {
  std::optional<std::string> next;
  absl::Status s = env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
    // Interrupted (RUNNING) jobs first, then the queue in creation order.
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare("SELECT id FROM jobs WHERE state IN (?, ?) "
                                 "ORDER BY state DESC, ord LIMIT 1"));
    q.Bind(1, static_cast<int64_t>(JobState::kQueued))
        .Bind(2, static_cast<int64_t>(JobState::kRunning));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) next = q.ColumnText(0);
    return absl::OkStatus();
  });
  if (!s.ok()) spdlog::error("job queue: {}", std::string(s.message()));
  return next;
}

void JobQueue::WorkerLoop() {
  while (true) {
    std::optional<std::string> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    next = NextQueued();
    if (!next.has_value()) {
      std::unique_lock<std::mutex> lock(mu_);
      // Woken by Create() or Stop(); the timeout covers a wake-up that came
      // between the query above and this wait.
      work_cv_.wait_for(lock, std::chrono::seconds(1),
                        [&] { return stopping_; });
      continue;
    }
    RunJob(*next);
  }
}

void JobQueue::RunJob(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = id;
    cancel_running_ = false;
  }
  absl::StatusOr<JobRecord> job = Get(id);
  if (job.ok() && IsTerminal(job->state)) {  // cancelled just before it started
    std::lock_guard<std::mutex> lock(mu_);
    running_.clear();
    return;
  }
  absl::Status status = job.status();
  if (job.ok()) {
    const bool resuming = job->state == JobState::kRunning;
    if (resuming) ++job->resumes;
    status = SetState(id, JobState::kRunning,
                      resuming ? "resumed after a server restart" : "started");
    if (status.ok()) {
      status = job->kind == JobKind::kPredict ? RunPrediction(*job)
                                              : RunTraining(*job);
    }
  }
  bool stopping, cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
    cancelled = cancel_running_;
    running_.clear();
  }
  if (status.ok()) {
    (void)SetState(id, JobState::kSucceeded, "succeeded");
    std::error_code ec;
    fs::remove_all(env_.data_dir->models_dir() / "jobs" / id, ec);
  } else if (absl::IsCancelled(status) && cancelled) {
    (void)SetState(id, JobState::kCancelled, "cancelled");
  } else if (absl::IsCancelled(status) && stopping) {
    spdlog::info("job {} interrupted by shutdown; it resumes at the next start",
                 id);
  } else {
    spdlog::warn("job {} failed: {}", id, std::string(status.message()));
    (void)SetState(id, JobState::kFailed, std::string(status.message()));
  }
}

absl::Status JobQueue::RunTraining(JobRecord& job) {
  train::TrainData data;
  data.dataset_id = job.dataset_id;
  TRANSFERD_ASSIGN_OR_RETURN(DatasetInfo dataset,
                             env_.datasets->Get(job.dataset_id));
  data.classes = dataset.classes;
  TRANSFERD_ASSIGN_OR_RETURN(
      data.train,
      env_.datasets->Examples(job.dataset_id, common::Split::kTrain));
  TRANSFERD_ASSIGN_OR_RETURN(
      data.validation,
      env_.datasets->Examples(job.dataset_id, common::Split::kValidation));
  TRANSFERD_ASSIGN_OR_RETURN(
      data.test, env_.datasets->Examples(job.dataset_id, common::Split::kTest));

  train::TrainerEnv env;
  env.device = env_.device;
  env.weights = env_.weights;
  env.cache_dir = env_.data_dir->cache_dir();
  env.checkpoint_dir = env_.data_dir->models_dir() / "jobs" / job.id;
  env.loader_threads = env_.loader_threads;
  env.decoded_cache_bytes = env_.decoded_cache_bytes;
  env.arbiter = env_.arbiter;
  TRANSFERD_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                             train::Trainer::Create(job.config, data, env));

  auto last_step = std::chrono::steady_clock::now() - kStepEventInterval;
  train::TrainerCallbacks callbacks;
  callbacks.cancelled = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_ || cancel_running_;
  };
  callbacks.stage_started =
      [&](int stage, const train::TrainableSummary& summary, bool cached) {
        JobEvent e;
        e.type = JobEvent::Type::kStageStarted;
        e.stage = stage;
        e.stage_name = job.config.stages[stage].name;
        e.trainable = summary;
        e.uses_feature_cache = cached;
        job.trainable = summary;
        job.progress.stage = stage;
        (void)SaveRunState(job);
        (void)Append(job.id, e);
      };
  callbacks.step = [&](const train::StepReport& step) {
    job.progress.epoch = step.epoch;
    job.progress.step = step.step;
    job.progress.steps = step.steps;
    job.progress.eta_seconds = step.eta_seconds;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_step < kStepEventInterval && step.step != step.steps) return;
    last_step = now;
    JobEvent e;
    e.type = JobEvent::Type::kStep;
    e.step = step;
    (void)Append(job.id, e);
  };
  callbacks.epoch_end = [&](const train::EpochReport& epoch) {
    // A resumed run repeats no epoch, but keep the history free of
    // duplicates in any case.
    while (!job.history.empty() && job.history.back().epoch >= epoch.epoch) {
      job.history.pop_back();
    }
    job.history.push_back(epoch);
    (void)SaveRunState(job);
    JobEvent e;
    e.type = JobEvent::Type::kEpochEnd;
    e.epoch = epoch;
    (void)Append(job.id, e);
  };
  callbacks.checkpoint_saved = [&](int epoch, int64_t bytes) {
    JobEvent e;
    e.type = JobEvent::Type::kCheckpointSaved;
    e.checkpoint_epoch = epoch;
    e.checkpoint_bytes = bytes;
    (void)Append(job.id, e);
  };

  TRANSFERD_ASSIGN_OR_RETURN(train::TrainResult result,
                             trainer->Run(callbacks));
  job.history = result.history;
  job.trainable = result.trainable;
  job.evaluations = result.evaluations;
  job.resumes = std::max(job.resumes, result.resumes);

  ModelInfo model;
  model.id = job.id;
  model.source_job = absl::StrCat("jobs/", job.id);
  model.parent =
      job.base_model.empty() ? "" : absl::StrCat("models/", job.base_model);
  model.spec_blob = job.resolved_blob;
  model.model = job.config.model;
  model.model.init_weights_file.clear();
  model.classes = data.classes;
  model.history = result.history;
  model.best_epoch = result.best_epoch;
  model.evaluations = result.evaluations;
  TRANSFERD_ASSIGN_OR_RETURN(model.preprocessing,
                             PreprocessingFor(job.config.model));
  model.parameters = job.trainable.trainable_parameters +
                     job.trainable.non_trainable_parameters;
  absl::StatusOr<ModelInfo> registered =
      env_.models->Register(model, result.weights_file);
  if (absl::IsAlreadyExists(registered.status())) {
    registered = env_.models->Get(job.id);  // registered before a crash
  }
  TRANSFERD_RETURN_IF_ERROR(registered.status());
  job.result_model = registered->id;
  TRANSFERD_RETURN_IF_ERROR(SaveRunState(job));
  for (const train::EvaluationReport& r : result.evaluations) {
    JobEvent e;
    e.type = JobEvent::Type::kEvaluation;
    e.evaluation = r;
    TRANSFERD_RETURN_IF_ERROR(Append(job.id, e));
  }
  return absl::OkStatus();
}

// ---- PREDICT jobs
// ------------------------------------------------------------

namespace {

absl::StatusOr<common::Split> SplitFromName(const std::string& name) {
  if (name == "train") return common::Split::kTrain;
  if (name == "validation") return common::Split::kValidation;
  if (name == "test") return common::Split::kTest;
  return absl::InvalidArgumentError(
      absl::StrCat("spec.predict.splits: \"", name,
                   "\" is not a split (train, validation, test)"));
}

absl::Status ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  out->assign(std::istreambuf_iterator<char>(in), {});
  return absl::OkStatus();
}

constexpr int kPredictBatch = 32;

}  // namespace

absl::StatusOr<JobRecord> JobQueue::CreatePredict(NewJob job) {
  absl::StatusOr<DatasetInfo> dataset = env_.datasets->Get(job.dataset_id);
  if (!dataset.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.dataset: ", dataset.status().message()));
  }
  absl::StatusOr<ModelInfo> model = env_.models->Get(job.base_model);
  if (!model.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.base_model: ", model.status().message()));
  }
  std::vector<common::Split> splits;
  for (const std::string& name : job.config.predict_splits) {
    TRANSFERD_ASSIGN_OR_RETURN(common::Split split, SplitFromName(name));
    splits.push_back(split);
  }
  int64_t files = 0;
  for (const SplitCounts& c : dataset->splits) {
    if (splits.empty() ||
        std::find(splits.begin(), splits.end(), c.split) != splits.end()) {
      files += c.files;
    }
  }
  if (files == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.predict.splits: dataset \"", job.dataset_id,
                     "\" has no files in the chosen splits"));
  }
  job.config.model = model->model;
  job.config.model.init_weights_file.clear();
  job.config.stages.clear();
  job.config.predict_classes = model->classes;
  return Insert(std::move(job));
}

absl::Status JobQueue::RunPrediction(JobRecord& job) {
  TRANSFERD_ASSIGN_OR_RETURN(ModelInfo model, env_.models->Get(job.base_model));
  std::vector<common::Split> splits;
  for (const std::string& name : job.config.predict_splits) {
    TRANSFERD_ASSIGN_OR_RETURN(common::Split split, SplitFromName(name));
    splits.push_back(split);
  }
  TRANSFERD_ASSIGN_OR_RETURN(DatasetInfo dataset,
                             env_.datasets->Get(job.dataset_id));
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<DatasetFile> files,
                             env_.datasets->Files(job.dataset_id, splits));
  const int64_t n = static_cast<int64_t>(files.size());
  // Rows stored before a restart are kept; the job continues after them.
  int64_t done = 0;
  TRANSFERD_RETURN_IF_ERROR(
      env_.store->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT COALESCE(MAX(idx) + 1, 0) FROM job_predictions "
                        "WHERE job_id = ?"));
        q.Bind(1, job.id);
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) done = q.ColumnInt(0);
        return absl::OkStatus();
      }));
  TRANSFERD_ASSIGN_OR_RETURN(
      std::unique_ptr<ModelRunner> runner,
      ModelRunner::Load(model, env_.device, env_.weights));
  const int size = runner->input_size();
  const int k = runner->num_classes();
  const size_t image_bytes = static_cast<size_t>(size) * size * 3;
  const bool tta = job.config.predict_flip_tta;
  const int64_t steps = (n + kPredictBatch - 1) / kPredictBatch;
  job.progress.stages = 1;
  job.progress.epochs = 1;
  job.progress.epoch = 1;
  job.progress.steps = steps;
  if (done > 0) {
    JobEvent e;
    e.type = JobEvent::Type::kLog;
    e.level = "info";
    e.message = absl::StrCat("continuing after ", done, " of ", n,
                             " files already predicted");
    (void)Append(job.id, e);
  }
  ImageLimits limits;  // files were validated at upload; this bounds a decode
  auto last_step = std::chrono::steady_clock::now() - kStepEventInterval;
  const auto started = std::chrono::steady_clock::now();
  const int64_t first = done;
  for (int64_t begin = done; begin < n; begin += kPredictBatch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || cancel_running_)
        return absl::CancelledError("prediction cancelled");
    }
    const int64_t end = std::min<int64_t>(begin + kPredictBatch, n);
    const int64_t count = end - begin;
    std::vector<uint8_t> pixels(image_bytes * static_cast<size_t>(count));
    std::vector<absl::Status> status(static_cast<size_t>(count));
    // Two decoders: this thread takes the even files, a helper the odd ones.
    auto decode = [&](int64_t parity) {
      std::string bytes;
      for (int64_t i = parity; i < count; i += 2) {
        absl::Status st = ReadWholeFile(files[begin + i].path, &bytes);
        if (st.ok()) {
          st = DecodeResized(bytes, limits, size,
                             pixels.data() + i * image_bytes);
        }
        status[i] = st;
      }
    };
    std::thread helper(decode, 1);
    decode(0);
    helper.join();
    // The decodable ones, packed.
    std::vector<int64_t> ok;
    for (int64_t i = 0; i < count; ++i) {
      if (!status[i].ok()) continue;
      if (static_cast<int64_t>(ok.size()) != i) {
        std::memmove(pixels.data() + ok.size() * image_bytes,
                     pixels.data() + i * image_bytes, image_bytes);
      }
      ok.push_back(i);
    }
    std::vector<float> probs;
    if (!ok.empty()) {
      DeviceArbiter::Turn turn(env_.arbiter,
                               DeviceArbiter::Priority::kBackground);
      TRANSFERD_ASSIGN_OR_RETURN(
          probs,
          runner->Run(pixels.data(), static_cast<int64_t>(ok.size()), tta));
    }
    std::vector<FilePredictionRecord> rows(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const DatasetFile& f = files[begin + i];
      FilePredictionRecord& r = rows[i];
      r.client_path = f.client_path;
      r.split = common::SplitName(f.split);
      if (f.label >= 0 &&
          f.label < static_cast<int64_t>(dataset.classes.size())) {
        r.true_label = dataset.classes[f.label];
      }
      if (!status[i].ok()) {
        r.status_code = static_cast<int>(status[i].code());
        r.status_message = std::string(status[i].message());
      }
    }
    for (size_t j = 0; j < ok.size(); ++j) {
      FilePredictionRecord& r = rows[ok[j]];
      r.probabilities.assign(probs.begin() + static_cast<int64_t>(j) * k,
                             probs.begin() + static_cast<int64_t>(j + 1) * k);
      const auto best =
          std::max_element(r.probabilities.begin(), r.probabilities.end());
      r.label = model.classes[best - r.probabilities.begin()];
    }
    TRANSFERD_RETURN_IF_ERROR(env_.store->Transaction([&](StoreTxn& txn)
                                                          -> absl::Status {
      TRANSFERD_ASSIGN_OR_RETURN(
          Statement q,
          txn.Prepare(
              "INSERT OR REPLACE INTO job_predictions (job_id, idx, "
              "client_path, split, "
              "true_label, label, probabilities, status_code, status_message) "
              "VALUES (?,?,?,?,?,?,?,?,?)"));
      for (int64_t i = 0; i < count; ++i) {
        const FilePredictionRecord& r = rows[i];
        q.Reset();
        q.Bind(1, job.id)
            .Bind(2, begin + i)
            .Bind(3, r.client_path)
            .Bind(4, static_cast<int64_t>(files[begin + i].split))
            .Bind(5, r.true_label)
            .Bind(6, r.label)
            .Bind(7, nlohmann::json(r.probabilities).dump())
            .Bind(8, static_cast<int64_t>(r.status_code))
            .Bind(9, r.status_message);
        TRANSFERD_RETURN_IF_ERROR(q.Run());
      }
      return absl::OkStatus();
    }));
    const int64_t step = end == n ? steps : end / kPredictBatch;
    job.progress.step = step;
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - started)
                               .count();
    const double rate =
        static_cast<double>(end - first) / std::max(seconds, 1e-9);
    job.progress.eta_seconds =
        static_cast<double>(n - end) / std::max(rate, 1e-9);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_step >= kStepEventInterval || end == n) {
      last_step = now;
      JobEvent e;
      e.type = JobEvent::Type::kStep;
      e.step.epoch = 1;
      e.step.step = step;
      e.step.steps = steps;
      e.step.images_per_second = rate;
      e.step.eta_seconds = job.progress.eta_seconds;
      (void)Append(job.id, e);
      (void)SaveRunState(job);
    }
  }

  // Metrics per split over every stored row, when the dataset's labels are
  // classes of the model.
  TRANSFERD_ASSIGN_OR_RETURN(PredictionsPage all,
                             Predictions(job.id, 10000, ""));
  std::vector<FilePredictionRecord> rows = std::move(all.predictions);
  while (!all.next_page_token.empty()) {
    TRANSFERD_ASSIGN_OR_RETURN(all,
                               Predictions(job.id, 10000, all.next_page_token));
    for (auto& r : all.predictions) rows.push_back(std::move(r));
  }
  job.evaluations.clear();
  for (const char* split : {"train", "validation", "test"}) {
    train::EvaluationReport report;
    report.split = split;
    report.confusion.assign(k, std::vector<int64_t>(k, 0));
    std::vector<double> scores;
    std::vector<int64_t> labels;
    double loss = 0;
    int64_t correct = 0;
    bool comparable = true;
    for (const FilePredictionRecord& r : rows) {
      if (r.split != split || r.status_code != 0) continue;
      const auto t =
          std::find(model.classes.begin(), model.classes.end(), r.true_label);
      if (t == model.classes.end()) {
        comparable = false;
        break;
      }
      const int64_t truth = t - model.classes.begin();
      const int64_t pred =
          std::find(model.classes.begin(), model.classes.end(), r.label) -
          model.classes.begin();
      ++report.examples;
      correct += pred == truth;
      ++report.confusion[truth][pred];
      loss -= std::log(
          std::clamp<double>(r.probabilities[truth], 1e-7, 1.0 - 1e-7));
      if (k == 2) {
        scores.push_back(r.probabilities[1]);
        labels.push_back(truth);
      }
    }
    if (!comparable || report.examples == 0) continue;
    report.loss = loss / static_cast<double>(report.examples);
    report.accuracy =
        static_cast<double>(correct) / static_cast<double>(report.examples);
    if (k == 2) report.roc_auc = train::RocAuc(scores, labels);
    job.evaluations.push_back(report);
  }
  TRANSFERD_RETURN_IF_ERROR(SaveRunState(job));
  for (const train::EvaluationReport& r : job.evaluations) {
    JobEvent e;
    e.type = JobEvent::Type::kEvaluation;
    e.evaluation = r;
    TRANSFERD_RETURN_IF_ERROR(Append(job.id, e));
  }
  return absl::OkStatus();
}

absl::StatusOr<PredictionsPage> JobQueue::Predictions(
    const std::string& id, int page_size, const std::string& page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord job, Get(id));
  if (job.kind != JobKind::kPredict) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job \"", id,
        "\" is not a PREDICT job; it has no per-file predictions"));
  }
  if (page_size < 0)
    return absl::InvalidArgumentError("page_size must be >= 0");
  const int limit = page_size == 0 ? 500 : std::min(page_size, 10000);
  TRANSFERD_ASSIGN_OR_RETURN(int64_t after, ParsePageToken(page_token));
  PredictionsPage page;
  page.classes = job.config.predict_classes;
  int64_t last = -1;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(env_.store->Transaction([&](StoreTxn& txn)
                                                        -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "SELECT idx, client_path, split, true_label, label, probabilities, "
            "status_code, status_message FROM job_predictions WHERE job_id = ? "
            "AND idx >= ? ORDER BY idx LIMIT ?"));
    q.Bind(1, id).Bind(2, after).Bind(3, static_cast<int64_t>(limit) + 1);
    while (true) {
      TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      if (static_cast<int>(page.predictions.size()) == limit) {
        more = true;
        break;
      }
      FilePredictionRecord r;
      last = q.ColumnInt(0);
      r.client_path = q.ColumnText(1);
      r.split = common::SplitName(static_cast<common::Split>(q.ColumnInt(2)));
      r.true_label = q.ColumnText(3);
      r.label = q.ColumnText(4);
      try {
        r.probabilities =
            nlohmann::json::parse(q.ColumnText(5)).get<std::vector<float>>();
      } catch (const std::exception& e) {
        return absl::DataLossError(
            absl::StrCat("job ", id, ": stored prediction is malformed"));
      }
      r.status_code = static_cast<int>(q.ColumnInt(6));
      r.status_message = q.ColumnText(7);
      page.predictions.push_back(std::move(r));
    }
    return absl::OkStatus();
  }));
  if (more) page.next_page_token = std::to_string(last + 1);
  return page;
}

}  // namespace transferd::core
