// TrainingRunner (training_runner.h): TRAIN and FINE_TUNE jobs.
#include "server/core/jobs/training_runner.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/backbones/backbone.h"
#include "server/core/datasets.h"
#include "server/core/registry.h"
#include "server/core/train/trainer.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/metrics.h"
#include "server/core/util/status_macros.h"

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

}  // namespace

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
  TRANSFERD_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                             train::Trainer::Create(job.config, data, env));

  RunTimes times;
  times.last_event = std::chrono::steady_clock::now() - kStepEventInterval;
  const train::TrainerCallbacks callbacks = MakeCallbacks(job, ctx, times);
  TRANSFERD_ASSIGN_OR_RETURN(train::TrainResult result,
                             trainer->Run(callbacks));
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
