// TrainingRunner (training_runner.h): TRAIN and FINE_TUNE jobs.
#include "server/core/jobs/training_runner.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/backbones/backbone.h"
#include "server/core/cluster.h"
#include "server/core/datasets.h"
#include "server/core/registry.h"
#include "server/core/train/collective.h"
#include "server/core/train/train_json.h"
#include "server/core/train/trainer.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/metrics.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/torch_util.h"

namespace transferd::core {
namespace {

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

// The dataset's classes and the examples of each split.
absl::StatusOr<train::TrainData> LoadData(DatasetCatalog& datasets,
                                          const std::string& dataset_id) {
  train::TrainData data;
  data.dataset_id = dataset_id;
  TRANSFERD_ASSIGN_OR_RETURN(DatasetInfo dataset, datasets.Get(dataset_id));
  data.classes = dataset.classes;
  TRANSFERD_ASSIGN_OR_RETURN(
      data.train, datasets.Examples(dataset_id, common::Split::kTrain));
  TRANSFERD_ASSIGN_OR_RETURN(
      data.validation,
      datasets.Examples(dataset_id, common::Split::kValidation));
  TRANSFERD_ASSIGN_OR_RETURN(
      data.test, datasets.Examples(dataset_id, common::Split::kTest));
  return data;
}

// When the callbacks last saw things happen (steady clock).
struct RunTimes {
  using Time = std::chrono::steady_clock::time_point;
  Time last_event;  // the last stored step event
  Time epoch_end;   // the epoch_end callback returned (the checkpoint follows)
};

double SecondsSince(RunTimes::Time t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t)
      .count();
}

// Callbacks that keep `job`'s run state and report through `ctx` (events,
// and metrics when it has them). They refer to `job`, `ctx` and `times`,
// which must outlive the run.
train::TrainerCallbacks MakeCallbacks(JobRecord& job, JobContext& ctx,
                                      RunTimes& times) {
  train::TrainerCallbacks callbacks;
  callbacks.cancelled = [&ctx] { return ctx.Cancelled(); };
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
        (void)ctx.SaveRunState(job);
        (void)ctx.Append(e);
      };
  callbacks.step = [&](const train::StepReport& step) {
    job.progress.epoch = step.epoch;
    job.progress.step = step.step;
    job.progress.steps = step.steps;
    job.progress.eta_seconds = step.eta_seconds;
    const auto now = std::chrono::steady_clock::now();
    if (JobSeries* series = ctx.series()) {
      series->Progress(step.stage + 1, step.epoch, step.step);
      series->ImagesPerSecond(step.images_per_second);
    }
    if (now - times.last_event < kStepEventInterval && step.step != step.steps)
      return;
    times.last_event = now;
    JobEvent e;
    e.type = JobEvent::Type::kStep;
    e.step = step;
    (void)ctx.Append(e);
  };
  callbacks.epoch_end = [&](const train::EpochReport& epoch) {
    // A resumed run repeats no epoch, but keep the history free of
    // duplicates in any case.
    while (!job.history.empty() && job.history.back().epoch >= epoch.epoch) {
      job.history.pop_back();
    }
    job.history.push_back(epoch);
    (void)ctx.SaveRunState(job);
    JobEvent e;
    e.type = JobEvent::Type::kEpochEnd;
    e.epoch = epoch;
    (void)ctx.Append(e);
    if (JobSeries* series = ctx.series()) {
      series->Epoch(epoch.loss, epoch.accuracy,
                    epoch.has_validation ? epoch.val_loss : -1,
                    epoch.has_validation ? epoch.val_accuracy : -1);
    }
    times.epoch_end = std::chrono::steady_clock::now();
  };
  if (Metrics* metrics = ctx.metrics()) {
    callbacks.step_duration = [metrics](double seconds) {
      metrics->TrainingStep(seconds);
    };
  }
  callbacks.checkpoint_saved = [&](int epoch, int64_t bytes) {
    // The trainer writes the checkpoint right after epoch_end returns.
    if (ctx.metrics() != nullptr) {
      ctx.metrics()->CheckpointWritten(SecondsSince(times.epoch_end));
    }
    JobEvent e;
    e.type = JobEvent::Type::kCheckpointSaved;
    e.checkpoint_epoch = epoch;
    e.checkpoint_bytes = bytes;
    (void)ctx.Append(e);
  };
  return callbacks;
}

// Registers the run's best weights as model `job.id` (or finds the one
// registered before a crash) and returns its id.
absl::StatusOr<std::string> RegisterModel(ModelRegistry& models,
                                          const JobRecord& job,
                                          const train::TrainData& data,
                                          const train::TrainResult& result) {
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
      models.Register(model, result.weights_file);
  if (absl::IsAlreadyExists(registered.status())) {
    registered = models.Get(job.id);  // registered before a crash
  }
  TRANSFERD_RETURN_IF_ERROR(registered.status());
  return registered->id;
}

absl::Status Log(JobContext& ctx, const std::string& level,
                 const std::string& message) {
  JobEvent e;
  e.type = JobEvent::Type::kLog;
  e.level = level;
  e.message = message;
  return ctx.Append(e);
}

// Every file of the data as the content workers fetch: stored dataset files
// are named <sha256><extension>.
absl::StatusOr<std::vector<ShardFile>> ShardFiles(
    const train::TrainData& data) {
  std::vector<ShardFile> out;
  const std::pair<const std::vector<data::Example>*, common::Split> splits[] = {
      {&data.train, common::Split::kTrain},
      {&data.validation, common::Split::kValidation},
      {&data.test, common::Split::kTest}};
  for (const auto& [examples, split] : splits) {
    for (const data::Example& e : *examples) {
      const std::filesystem::path path(e.path);
      ShardFile f;
      f.sha256 = path.stem().string();
      f.extension = path.extension().string();
      if (f.sha256.size() != 64) {
        return absl::InternalError(
            absl::StrCat("dataset file ", e.path, " is not content-addressed"));
      }
      f.label = e.label;
      f.split = split;
      std::error_code ec;
      f.bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
      out.push_back(std::move(f));
    }
  }
  return out;
}

// A run failed without losing a rank: not worth another try.
bool RankLost(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
}

}  // namespace

// Runs after run: reserve workers, send their ranks, wait until they hold
// the data, join the process group as rank 0 and train; a run that loses a
// rank ends (the collective fails within collective_timeout) and the next
// run resumes from the last checkpoint with the workers left (at least
// min_replicas ranks) or, failing that, once enough return.
absl::StatusOr<train::TrainResult> TrainingRunner::RunReplicated(
    JobRecord& job, JobContext& ctx, const train::TrainData& data,
    train::TrainerEnv env, const train::TrainerCallbacks& callbacks) {
  const train::TrainConfig& config = job.config;
  if (env_.cluster == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.replicas is ", config.replicas,
        " but this server takes no workers (a worker cannot coordinate)"));
  }
  if (!train::HasDistributedBackend()) {
    return absl::UnimplementedError(
        "this build has no torch c10d (Gloo): replicas must be 1");
  }
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<ShardFile> files, ShardFiles(data));
  const std::string config_json = train::ConfigToJson(config);
  const int want = config.replicas - 1;
  int tries_without_progress = 0;
  absl::Status last_failure;
  for (int attempt = 1;; ++attempt) {
    const int need =
        (attempt == 1
             ? config.replicas
             : std::max(1, std::min(config.min_replicas, config.replicas))) -
        1;
    auto waiting = [&](int idle) {
      (void)Log(ctx, "info",
                absl::StrCat("waiting for workers: ", idle, " idle, ", need,
                             " needed (", config.replicas, " replicas, ",
                             config.min_replicas, " at least)"));
    };
    TRANSFERD_ASSIGN_OR_RETURN(
        std::vector<std::string> reserved,
        env_.cluster->Reserve(
            job.id, need, want, [&ctx] { return ctx.Cancelled(); }, waiting));
    const int world = 1 + static_cast<int>(reserved.size());
    const std::string run_id = absl::StrCat(job.id, "-run", attempt);
    std::vector<std::string> names;
    int assigned = 0;
    bool assign_failed = false;
    for (size_t i = 0; i < reserved.size(); ++i) {
      RankAssignment a;
      a.job_id = job.id;
      a.run_id = run_id;
      a.dataset_id = data.dataset_id;
      a.rank = static_cast<int>(i) + 1;
      a.world_size = world;
      a.master_addr = env_.rendezvous_address;
      a.master_port = env_.rendezvous_port;
      a.config_json = config_json;
      a.classes = data.classes;
      a.files = files;
      a.timeout_seconds = static_cast<int>(env_.collective_timeout.count());
      if (!env_.cluster->Assign(reserved[i], a)) {
        assign_failed = true;
        env_.cluster->Unreserve(
            std::vector<std::string>(reserved.begin() + i + 1, reserved.end()));
        break;
      }
      ++assigned;
    }
    for (const ClusterWorker& w : env_.cluster->Workers()) {
      if (w.run == run_id) names.push_back(w.name);
    }
    absl::Status status;
    absl::StatusOr<train::TrainResult> result;
    const size_t epochs_before = job.history.size();
    if (assign_failed) {
      status = absl::UnavailableError("a worker left while ranks were sent");
    } else {
      (void)Log(
          ctx, "info",
          world == 1
              ? absl::StrCat("run ", attempt, ": 1 rank: this server alone")
              : absl::StrCat("run ", attempt, ": ", world,
                             " ranks: this server (rank 0) and ",
                             absl::StrJoin(names, ", "),
                             "; the workers fetch the data they lack"));
      status = env_.cluster->WaitReady(run_id, assigned, env_.ready_timeout,
                                       [&ctx] { return ctx.Cancelled(); });
    }
    if (status.ok()) {
      train::RendezvousOptions r;
      r.master_addr = env_.rendezvous_address;
      r.local_addr = env_.rendezvous_address;
      r.master_port = env_.rendezvous_port;
      r.rank = 0;
      r.world_size = world;
      r.run_id = run_id;
      r.timeout = env_.collective_timeout;
      absl::StatusOr<std::shared_ptr<train::Collective>> group =
          train::JoinProcessGroup(r, ToTorchDevice(env.device));
      status = group.status();
      if (group.ok()) {
        env.collective = *group;
        absl::StatusOr<std::unique_ptr<train::Trainer>> trainer =
            train::Trainer::Create(config, data, env);
        status = trainer.status();
        if (trainer.ok()) {
          result = (*trainer)->Run(callbacks);
          status = result.status();
        }
        env.collective.reset();
      }
    }
    // The workers' accounts (a failed run ends theirs within the timeout).
    const std::vector<RankReport> reports = env_.cluster->WaitFinal(
        run_id, assigned,
        status.ok() ? std::chrono::seconds(60) : env_.collective_timeout * 2);
    int64_t fetched = 0, fetched_bytes = 0, cached = 0;
    for (const RankReport& r : reports) {
      fetched += r.files_fetched;
      fetched_bytes += r.bytes_fetched;
      cached += r.files_cached;
    }
    if (!reports.empty()) {
      (void)Log(ctx, "info",
                absl::StrCat("run ", attempt, ": workers fetched ", fetched,
                             " files (", fetched_bytes, " bytes) and found ",
                             cached, " in their caches"));
    }
    if (status.ok()) return result;
    if (absl::IsCancelled(status) || !RankLost(status)) return status;
    last_failure = status;
    tries_without_progress =
        job.history.size() > epochs_before ? 0 : tries_without_progress + 1;
    if (tries_without_progress >= 3) {
      return absl::UnavailableError(absl::StrCat(
          "the data-parallel run failed 3 times in a row without finishing "
          "an epoch; last: ",
          status.message()));
    }
    (void)Log(ctx, "warning",
              absl::StrCat("run ", attempt, " lost a rank: ", status.message(),
                           "; resuming from the last checkpoint with the "
                           "workers left (at least ",
                           config.min_replicas, " ranks)"));
  }
}

absl::Status TrainingRunner::Run(JobRecord& job, JobContext& ctx) {
  TRANSFERD_ASSIGN_OR_RETURN(train::TrainData data,
                             LoadData(*env_.datasets, job.dataset_id));

  train::TrainerEnv env;
  env.device = env_.device;
  env.weights = env_.weights;
  env.cache_dir = env_.data_dir->cache_dir();
  env.checkpoint_dir = env_.data_dir->models_dir() / "jobs" / job.id;
  env.loader_threads = env_.loader_threads;
  env.decoded_cache_bytes = env_.decoded_cache_bytes;
  env.arbiter = ctx.arbiter();
  RunTimes times;
  times.last_event = std::chrono::steady_clock::now() - kStepEventInterval;
  const train::TrainerCallbacks callbacks = MakeCallbacks(job, ctx, times);
  train::TrainResult result;
  if (job.config.replicas > 1) {
    TRANSFERD_ASSIGN_OR_RETURN(result,
                               RunReplicated(job, ctx, data, env, callbacks));
  } else {
    TRANSFERD_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                               train::Trainer::Create(job.config, data, env));
    TRANSFERD_ASSIGN_OR_RETURN(result, trainer->Run(callbacks));
  }
  job.history = result.history;
  job.trainable = result.trainable;
  job.evaluations = result.evaluations;
  job.resumes = std::max(job.resumes, result.resumes);

  TRANSFERD_ASSIGN_OR_RETURN(job.result_model,
                             RegisterModel(*env_.models, job, data, result));
  TRANSFERD_RETURN_IF_ERROR(ctx.SaveRunState(job));
  for (const train::EvaluationReport& r : result.evaluations) {
    JobEvent e;
    e.type = JobEvent::Type::kEvaluation;
    e.evaluation = r;
    TRANSFERD_RETURN_IF_ERROR(ctx.Append(e));
  }
  return absl::OkStatus();
}

}  // namespace transferd::core
