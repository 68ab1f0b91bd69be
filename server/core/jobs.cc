// JobQueue (jobs.h): the scheduler. Validates and creates jobs, runs them one
// at a time on the worker thread through the runner for their kind, and wakes
// watchers from the notifier thread; the job tables are JobStore's.
#include "server/core/jobs.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/backbones/weights.h"
#include "server/core/datasets.h"
#include "server/core/jobs/job_store.h"
#include "server/core/jobs/prediction_runner.h"
#include "server/core/jobs/training_runner.h"
#include "server/core/registry.h"
#include "server/core/train/trainer.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"
#include "server/core/util/status_macros.h"

namespace transferd::core {
namespace fs = std::filesystem;
namespace {

bool NeedsValidation(const std::string& metric) {
  return absl::StartsWith(metric, "val_");
}

// Layer names and sizes of every stage, checked on a randomly initialised
// model; errors name the field from the request.
absl::Status CheckStages(const train::TrainConfig& config, int num_classes) {
  for (size_t i = 0; i < config.stages.size(); ++i) {
    absl::StatusOr<train::TrainableSummary> summary =
        train::DescribeStage(config.model, config.stages[i], num_classes);
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
  return absl::OkStatus();
}

}  // namespace

// The running job's view of the queue.
class JobQueue::RunContext : public JobContext {
 public:
  RunContext(JobQueue* queue, std::string id)
      : queue_(queue), id_(std::move(id)) {}

  absl::Status Append(JobEvent event) override {
    return queue_->Append(id_, std::move(event));
  }
  absl::Status SaveRunState(const JobRecord& job) override {
    return queue_->store_->SaveRunState(job);
  }
  bool Cancelled() override {
    std::lock_guard<std::mutex> lock(queue_->mu_);
    return queue_->stopping_ || queue_->cancel_running_;
  }
  DeviceArbiter* arbiter() override { return queue_->env_.arbiter; }
  JobStore& store() override { return *queue_->store_; }
  Metrics* metrics() override { return queue_->env_.metrics; }
  JobSeries* series() override { return series_; }
  void set_series(JobSeries* series) { series_ = series; }

 private:
  JobQueue* queue_;
  std::string id_;
  JobSeries* series_ = nullptr;
};

JobQueue::JobQueue(Env env)
    : env_(std::move(env)),
      store_(std::make_unique<JobStore>(env_.store, env_.clock)) {
  RunnerEnv runner_env;
  runner_env.data_dir = env_.data_dir;
  runner_env.datasets = env_.datasets;
  runner_env.models = env_.models;
  runner_env.device = env_.device;
  runner_env.weights = env_.weights;
  runner_env.loader_threads = env_.loader_threads;
  runner_env.decoded_cache_bytes = env_.decoded_cache_bytes;
  runner_env.cluster = env_.cluster;
  runner_env.rendezvous_address = env_.rendezvous_address;
  runner_env.rendezvous_port = env_.rendezvous_port;
  runner_env.collective_timeout = env_.collective_timeout;
  std::shared_ptr<JobRunner>& train = env_.runners[JobKind::kTrain];
  std::shared_ptr<JobRunner>& fine_tune = env_.runners[JobKind::kFineTune];
  std::shared_ptr<JobRunner>& predict = env_.runners[JobKind::kPredict];
  if (train == nullptr || fine_tune == nullptr) {
    auto training = std::make_shared<TrainingRunner>(runner_env);
    if (train == nullptr) train = training;
    if (fine_tune == nullptr) fine_tune = training;
  }
  if (predict == nullptr) {
    predict = std::make_shared<PredictionRunner>(runner_env);
  }
}

absl::StatusOr<std::unique_ptr<JobQueue>> JobQueue::Open(Env env) {
  std::unique_ptr<JobQueue> queue(new JobQueue(std::move(env)));
  JobQueue* q = queue.get();
  TRANSFERD_ASSIGN_OR_RETURN(const std::vector<std::string> interrupted,
                             q->store_->Load());
  // RUNNING jobs stay RUNNING: the worker picks them first and resumes them.
  for (const std::string& id : interrupted) {
    spdlog::info("job {} was interrupted; it resumes from its last checkpoint",
                 id);
  }
  q->env_.datasets->SetInUseCheck([q](const std::string& id) {
    return q->store_->UserOf("dataset_id", id);
  });
  q->env_.models->SetInUseCheck([q](const std::string& id) {
    return q->store_->UserOf("base_model", id);
  });
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
  if (dataset->label_source == common::LabelSource::kNone) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.dataset: dataset \"", job.dataset_id,
        "\" is unlabelled (uploaded without labels); only PREDICT jobs can "
        "use it"));
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
  TRANSFERD_RETURN_IF_ERROR(
      CheckStages(config, static_cast<int>(dataset->classes.size())));
  // The pretrained weights a new model starts from must be there (or may be
  // downloaded): refused now, not failed once the job runs.
  if (job.config.model.init_weights_file.empty()) {
    const train::ModelConfig& m = job.config.model;
    TRANSFERD_RETURN_IF_ERROR(backbones::CheckWeightsObtainable(
        m.backbone, m.alpha, m.weights, m.input_size, env_.weights));
  }

  return Insert(std::move(job));
}

absl::StatusOr<JobRecord> JobQueue::Insert(NewJob job) {
  TRANSFERD_RETURN_IF_ERROR(store_->Insert(job));  // with its "queued" event
  WakeWatchers(job.id);
  work_cv_.notify_all();
  return Get(job.id);
}

absl::StatusOr<JobRecord> JobQueue::Get(const std::string& id) {
  return store_->Get(id);
}

absl::StatusOr<std::vector<JobRecord>> JobQueue::List(
    int page_size, const std::string& page_token, std::optional<JobState> state,
    std::optional<JobKind> kind, std::string* next_page_token) {
  return store_->List(page_size, page_token, state, kind, next_page_token);
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
    if (env_.metrics != nullptr) {
      env_.metrics->JobFinished(JobKindLabel(job.kind), "cancelled");
    }
  }
  return Get(id);
}

absl::StatusOr<std::vector<JobEvent>> JobQueue::Events(const std::string& id,
                                                       int64_t after,
                                                       int limit) {
  return store_->Events(id, after, limit);
}

absl::StatusOr<PredictionsPage> JobQueue::Predictions(
    const std::string& id, int page_size, const std::string& page_token) {
  return store_->Predictions(id, page_size, page_token);
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
  TRANSFERD_RETURN_IF_ERROR(store_->Append(id, std::move(event)));
  WakeWatchers(id);
  return absl::OkStatus();
}

void JobQueue::WakeWatchers(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    dirty_.push_back(id);
  }
  watch_cv_.notify_one();
}

absl::Status JobQueue::SetState(const std::string& id, JobState state,
                                const std::string& message) {
  JobEvent e;
  e.type = JobEvent::Type::kStateChanged;
  e.state = state;
  e.message = message;
  return Append(id, std::move(e));
}

void JobQueue::WorkerLoop() {
  while (true) {
    std::optional<std::string> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    next = store_->NextQueued();
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
  absl::StatusOr<JobRecord> job = store_->Get(id);
  if (job.ok() && IsTerminal(job->state)) {  // cancelled just before it started
    std::lock_guard<std::mutex> lock(mu_);
    running_.clear();
    return;
  }
  if (!job.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    running_.clear();
    LogFields(spdlog::level::err, "job cannot be read",
              {{"job", id}, {"message", std::string(job.status().message())}});
    (void)SetState(id, JobState::kFailed, std::string(job.status().message()));
    return;
  }
  const absl::Status status = StartAndRun(*job);
  bool stopping, cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
    cancelled = cancel_running_;
    running_.clear();
  }
  EndRun(*job, status, stopping, cancelled);
}

namespace {

// The job's fields in log lines, and `more`.
std::vector<LogField> JobFields(const JobRecord& job,
                                std::vector<LogField> more = {}) {
  std::vector<LogField> fields = {{"job", job.id},
                                  {"kind", JobKindLabel(job.kind)},
                                  {"dataset", job.dataset_id},
                                  {"model", job.base_model},
                                  {"trace_id", job.trace_id}};
  for (LogField& f : more) fields.push_back(std::move(f));
  return fields;
}

}  // namespace

absl::Status JobQueue::StartAndRun(JobRecord& job) {
  const bool resuming = job.state == JobState::kRunning;
  if (resuming) ++job.resumes;
  TRANSFERD_RETURN_IF_ERROR(
      SetState(job.id, JobState::kRunning,
               resuming ? "resumed after a server restart" : "started"));
  LogFields(spdlog::level::info, resuming ? "job resumed" : "job started",
            JobFields(job));
  // Kinds other than PREDICT and FINE_TUNE train, as they always did.
  auto runner = env_.runners.find(job.kind);
  if (runner == env_.runners.end()) runner = env_.runners.find(JobKind::kTrain);
  RunContext ctx(this, job.id);
  std::unique_ptr<JobSeries> series;
  if (env_.metrics != nullptr) {
    if (resuming) env_.metrics->JobResumed();
    // Training progress gauges; a PREDICT job has no epochs.
    if (job.kind != JobKind::kPredict) {
      series = env_.metrics->Job(job.id);  // they go when the run ends
      ctx.set_series(series.get());
    }
  }
  return runner->second->Run(job, ctx);
}

void JobQueue::EndRun(const JobRecord& job, const absl::Status& status,
                      bool stopping, bool cancelled) {
  auto finished = [&](const char* state) {
    if (env_.metrics != nullptr) {
      env_.metrics->JobFinished(JobKindLabel(job.kind), state);
    }
  };
  if (status.ok()) {
    finished("succeeded");
    (void)SetState(job.id, JobState::kSucceeded, "succeeded");
    LogFields(spdlog::level::info, "job succeeded", JobFields(job));
    std::error_code ec;
    fs::remove_all(env_.data_dir->models_dir() / "jobs" / job.id, ec);
  } else if (absl::IsCancelled(status) && cancelled) {
    finished("cancelled");
    (void)SetState(job.id, JobState::kCancelled, "cancelled");
    LogFields(spdlog::level::info, "job cancelled", JobFields(job));
  } else if (absl::IsCancelled(status) && stopping) {
    LogFields(spdlog::level::info,
              "job interrupted by shutdown; it resumes at the next start",
              JobFields(job));
  } else {
    LogFields(spdlog::level::warn, "job failed",
              JobFields(job, {{"message", std::string(status.message())}}));
    finished("failed");
    (void)SetState(job.id, JobState::kFailed, std::string(status.message()));
  }
}

absl::StatusOr<std::map<JobState, int64_t>> JobQueue::CountByState() {
  return store_->CountByState();
}

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
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<common::Split> splits,
                             PredictSplits(job.config));
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

}  // namespace transferd::core
