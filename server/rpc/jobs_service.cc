#include "server/rpc/jobs_service.h"

#include <deque>
#include <memory>
#include <mutex>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/jobs.h"
#include "server/core/registry.h"
#include "server/core/train/train_config.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/job_spec.h"
#include "server/rpc/service_util.h"
#include "server/rpc/unimplemented_services.h"

namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;
namespace train = core::train;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Ts(std::chrono::system_clock::time_point t) {
  return TimeUtil::MillisecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

void EpochToProto(const train::EpochReport& e, v1::EpochMetrics* out) {
  out->set_stage(e.stage);
  out->set_epoch(e.epoch);
  out->set_loss(e.loss);
  out->set_accuracy(e.accuracy);
  if (e.has_validation) {
    out->set_val_loss(e.val_loss);
    out->set_val_accuracy(e.val_accuracy);
  }
  out->set_learning_rate(e.learning_rate);
  out->set_seconds(e.seconds);
}

void EvaluationToProto(const train::EvaluationReport& e, const std::vector<std::string>& classes,
                       v1::Evaluation* out) {
  out->set_split(e.split);
  out->set_examples(e.examples);
  out->set_loss(e.loss);
  out->set_accuracy(e.accuracy);
  out->set_roc_auc(e.roc_auc);
  v1::ConfusionMatrix* m = out->mutable_confusion_matrix();
  for (const std::string& c : classes) m->add_classes(c);
  for (const auto& row : e.confusion) {
    for (int64_t v : row) m->add_counts(v);
  }
}

void SummaryToProto(const train::TrainableSummary& s, v1::TrainableSummary* out) {
  out->set_trainable_tensors(s.trainable_tensors);
  out->set_trainable_parameters(s.trainable_parameters);
  out->set_non_trainable_parameters(s.non_trainable_parameters);
}

v1::JobState StateToProto(core::JobState s) { return static_cast<v1::JobState>(static_cast<int>(s)); }

// Streams a job's events from the store: a page at a time, one write in
// flight, then (with follow) waits for the queue's notifier to say more were
// stored. Memory per watcher is one page, whatever the watcher's speed.
class WatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(core::Engine& engine, std::string id, int64_t after, bool follow)
      : jobs_(engine.jobs()), id_(std::move(id)), after_(after), follow_(follow) {
    if (follow_) {
      handle_ = jobs_.Subscribe(id_, [this] { Pump(); });
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away"));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      after_ = pending_.front().sequence();
      pending_.pop_front();
      writing_ = false;
    }
    Pump();
  }

  void OnCancel() override { End(grpc::Status::CANCELLED); }

  void OnDone() override {
    if (handle_ != 0) jobs_.Unsubscribe(handle_);
    delete this;
  }

 private:
  static constexpr int kPage = 100;

  void Pump() {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    if (jobs_.stopping()) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "the server is shutting down; reconnect with after_sequence = "
                                "the last sequence received"));
      return;
    }
    // Two rounds at most: a job can finish between reading its events and
    // reading its state; then its last events are read once more.
    for (int round = 0; round < 2 && pending_.empty(); ++round) {
      absl::StatusOr<std::vector<core::JobEvent>> events = jobs_.Events(id_, after_, kPage);
      if (!events.ok()) {
        FinishLocked(ToGrpcStatus(events.status()));
        return;
      }
      for (const core::JobEvent& e : *events) {
        v1::JobEvent out;
        ToProto(e, &out);
        pending_.push_back(std::move(out));
      }
      if (!pending_.empty()) break;
      // Caught up: done unless following a job that can still change.
      absl::StatusOr<core::JobRecord> job = jobs_.Get(id_);
      if (!job.ok()) {
        FinishLocked(ToGrpcStatus(job.status()));
        return;
      }
      const bool terminal = core::IsTerminal(job->state);
      if (terminal && job->last_event_sequence > after_) continue;
      if (!follow_ || terminal) FinishLocked(grpc::Status::OK);
      return;  // following: the notifier calls Pump when events arrive
    }
    if (pending_.empty()) return;
    writing_ = true;
    StartWrite(&pending_.front());
  }

  void End(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(status);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  core::JobQueue& jobs_;
  const std::string id_;
  std::mutex mu_;
  int64_t after_;
  const bool follow_;
  int64_t handle_ = 0;
  bool writing_ = false;
  bool finished_ = false;
  std::deque<v1::JobEvent> pending_;
};

class FinishedWatch final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  explicit FinishedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

void ToProto(const core::JobRecord& in, v1::Job* out) {
  out->set_name(absl::StrCat("jobs/", in.id));
  out->mutable_spec()->ParseFromString(in.spec_blob);
  out->mutable_resolved_spec()->ParseFromString(in.resolved_blob);
  out->set_state(StateToProto(in.state));
  out->set_failure_reason(in.failure_reason);
  *out->mutable_create_time() = Ts(in.create_time);
  if (in.start_time.time_since_epoch().count() != 0) *out->mutable_start_time() = Ts(in.start_time);
  if (in.end_time.time_since_epoch().count() != 0) *out->mutable_end_time() = Ts(in.end_time);
  v1::JobProgress* p = out->mutable_progress();
  p->set_stage(in.progress.stage);
  p->set_stages(in.progress.stages);
  p->set_epoch(in.progress.epoch);
  p->set_epochs(in.progress.epochs);
  p->set_step(in.progress.step);
  p->set_steps(in.progress.steps);
  p->set_eta_seconds(in.progress.eta_seconds);
  for (const train::EpochReport& e : in.history) EpochToProto(e, out->add_history());
  SummaryToProto(in.trainable, out->mutable_trainable());
  if (!in.result_model.empty()) out->set_result_model(absl::StrCat("models/", in.result_model));
  // Class names are the dataset's; the confusion matrix carries them.
  std::vector<std::string> classes;
  for (const train::EvaluationReport& e : in.evaluations) {
    EvaluationToProto(e, classes, out->add_evaluations());
  }
  out->set_last_event_sequence(in.last_event_sequence);
  out->set_resumes(in.resumes);
}

void ToProto(const core::JobEvent& in, v1::JobEvent* out) {
  using Type = core::JobEvent::Type;
  out->set_sequence(in.sequence);
  *out->mutable_time() = Ts(in.time);
  switch (in.type) {
    case Type::kStateChanged:
      out->mutable_state_changed()->set_state(StateToProto(in.state));
      out->mutable_state_changed()->set_message(in.message);
      break;
    case Type::kLog:
      out->mutable_log()->set_level(in.level);
      out->mutable_log()->set_message(in.message);
      break;
    case Type::kStageStarted: {
      v1::StageStarted* s = out->mutable_stage_started();
      s->set_stage(in.stage);
      s->set_name(in.stage_name);
      SummaryToProto(in.trainable, s->mutable_trainable());
      s->set_uses_feature_cache(in.uses_feature_cache);
      break;
    }
    case Type::kStep: {
      v1::StepProgress* s = out->mutable_step();
      s->set_stage(in.step.stage);
      s->set_epoch(in.step.epoch);
      s->set_step(in.step.step);
      s->set_steps(in.step.steps);
      s->set_loss(in.step.loss);
      s->set_accuracy(in.step.accuracy);
      s->set_images_per_second(in.step.images_per_second);
      s->set_eta_seconds(in.step.eta_seconds);
      break;
    }
    case Type::kEpochEnd:
      EpochToProto(in.epoch, out->mutable_epoch_end());
      break;
    case Type::kCheckpointSaved:
      out->mutable_checkpoint_saved()->set_epoch(in.checkpoint_epoch);
      out->mutable_checkpoint_saved()->set_bytes(in.checkpoint_bytes);
      break;
    case Type::kEvaluation:
      EvaluationToProto(in.evaluation, {}, out->mutable_evaluation());
      break;
  }
}

void ToProto(const core::ModelInfo& in, v1::Model* out) {
  out->set_name(absl::StrCat("models/", in.id));
  out->set_display_name(in.display_name);
  *out->mutable_create_time() = Ts(in.create_time);
  out->set_source_job(in.source_job);
  out->set_parent(in.parent);
  v1::JobSpec spec;
  if (spec.ParseFromString(in.spec_blob)) *out->mutable_spec() = spec.model();
  for (const std::string& c : in.classes) out->add_classes(c);
  v1::Preprocessing* p = out->mutable_preprocessing();
  p->set_mode(in.preprocessing.mode == "caffe" ? v1::Preprocessing::MODE_CAFFE
              : in.preprocessing.mode == "tf"  ? v1::Preprocessing::MODE_TF
                                               : v1::Preprocessing::MODE_TORCH);
  p->set_channel_order(in.preprocessing.bgr ? "BGR" : "RGB");
  for (float v : in.preprocessing.mean) p->add_mean(v);
  for (float v : in.preprocessing.std) p->add_std(v);
  p->set_scale(in.preprocessing.scale);
  p->set_input_size(in.preprocessing.input_size);
  for (const train::EpochReport& e : in.history) EpochToProto(e, out->add_history());
  out->set_best_epoch(in.best_epoch);
  for (const train::EvaluationReport& e : in.evaluations) {
    EvaluationToProto(e, in.classes, out->add_evaluations());
  }
  out->set_size_bytes(in.size_bytes);
  out->set_parameters(in.parameters);
}

// ---- Jobs ---------------------------------------------------------------------

grpc::ServerUnaryReactor* JobsService::CreateJob(grpc::CallbackServerContext* ctx,
                                                 const v1::CreateJobRequest* request,
                                                 v1::Job* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  const v1::JobSpec& spec = request->spec();
  // FINE_TUNE takes the base model's network.
  std::optional<train::ModelConfig> base;
  if (spec.kind() == v1::JOB_KIND_FINE_TUNE && !spec.base_model().empty()) {
    absl::StatusOr<std::string> id = IdFromName("spec.base_model", "models", spec.base_model());
    if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
    absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
    if (!model.ok()) {
      return Answer(ctx, ToGrpcStatus(absl::InvalidArgumentError(
                             absl::StrCat("spec.base_model: ", model.status().message()))));
    }
    base = model->model;
  }
  absl::StatusOr<ResolvedJob> resolved =
      ResolveJobSpec(spec, engine_.device().precision, base ? &*base : nullptr);
  if (!resolved.ok()) return Answer(ctx, ToGrpcStatus(resolved.status()));

  core::NewJob job;
  job.id = request->job_id();
  job.kind = spec.kind() == v1::JOB_KIND_FINE_TUNE ? core::JobKind::kFineTune
                                                   : core::JobKind::kTrain;
  job.dataset_id = resolved->dataset_id;
  job.base_model = resolved->base_model;
  job.spec_blob = spec.SerializeAsString();
  job.resolved_blob = ToResolvedSpec(spec, *resolved).SerializeAsString();
  job.config = resolved->config;
  absl::StatusOr<core::JobRecord> created = engine_.jobs().Create(std::move(job));
  if (!created.ok()) return Answer(ctx, ToGrpcStatus(created.status()));
  ToProto(*created, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::GetJob(grpc::CallbackServerContext* ctx,
                                              const v1::GetJobRequest* request,
                                              v1::Job* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Get(*id);
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  // Confusion matrices carry the class names, which are the dataset's.
  if (absl::StatusOr<core::DatasetInfo> d = engine_.datasets().Get(job->dataset_id); d.ok()) {
    for (v1::Evaluation& e : *response->mutable_evaluations()) {
      for (const std::string& c : d->classes) e.mutable_confusion_matrix()->add_classes(c);
    }
  }
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::ListJobs(grpc::CallbackServerContext* ctx,
                                                const v1::ListJobsRequest* request,
                                                v1::ListJobsResponse* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  std::optional<core::JobState> state;
  if (request->state() != v1::JOB_STATE_UNSPECIFIED) {
    state = static_cast<core::JobState>(static_cast<int>(request->state()));
  }
  std::optional<core::JobKind> kind;
  if (request->kind() != v1::JOB_KIND_UNSPECIFIED) {
    kind = static_cast<core::JobKind>(static_cast<int>(request->kind()));
  }
  std::string next;
  absl::StatusOr<std::vector<core::JobRecord>> jobs =
      engine_.jobs().List(request->page_size(), request->page_token(), state, kind, &next);
  if (!jobs.ok()) return Answer(ctx, ToGrpcStatus(jobs.status()));
  for (const core::JobRecord& j : *jobs) {
    v1::Job* out = response->add_jobs();
    ToProto(j, out);
    // Listings stay small: GetJob has the history and the resolved spec.
    out->clear_history();
    out->clear_resolved_spec();
  }
  response->set_next_page_token(next);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::CancelJob(grpc::CallbackServerContext* ctx,
                                                 const v1::CancelJobRequest* request,
                                                 v1::Job* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Cancel(*id);
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::JobEvent>* JobsService::WatchJob(grpc::CallbackServerContext* ctx,
                                                              const v1::WatchJobRequest* request) {
  (void)ctx;
  if (!engine_.ready()) return new FinishedWatch(NotReady());
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return new FinishedWatch(ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Get(*id);
  if (!job.ok()) return new FinishedWatch(ToGrpcStatus(job.status()));
  if (request->after_sequence() < 0) {
    return new FinishedWatch(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "after_sequence must be >= 0"));
  }
  return new WatchReactor(engine_, *id, request->after_sequence(), request->follow());
}

grpc::ServerUnaryReactor* JobsService::ListJobPredictions(
    grpc::CallbackServerContext* ctx, const v1::ListJobPredictionsRequest*,
    v1::ListJobPredictionsResponse*) {
  return FinishUnary(ctx, "Jobs.ListJobPredictions");
}

// ---- Models -------------------------------------------------------------------

grpc::ServerUnaryReactor* ModelsService::GetModel(grpc::CallbackServerContext* ctx,
                                                  const v1::GetModelRequest* request,
                                                  v1::Model* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  absl::StatusOr<std::string> id = IdFromName("name", "models", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
  if (!model.ok()) return Answer(ctx, ToGrpcStatus(model.status()));
  ToProto(*model, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::ListModels(grpc::CallbackServerContext* ctx,
                                                    const v1::ListModelsRequest* request,
                                                    v1::ListModelsResponse* response) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  std::string next;
  absl::StatusOr<std::vector<core::ModelInfo>> models =
      engine_.models().List(request->page_size(), request->page_token(), &next);
  if (!models.ok()) return Answer(ctx, ToGrpcStatus(models.status()));
  for (const core::ModelInfo& m : *models) ToProto(m, response->add_models());
  response->set_next_page_token(next);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteModel(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteModelRequest* request,
                                                     google::protobuf::Empty*) {
  if (!engine_.ready()) return Answer(ctx, NotReady());
  absl::StatusOr<std::string> id = IdFromName("name", "models", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  return Answer(ctx, ToGrpcStatus(engine_.models().Delete(*id)));
}

grpc::ServerUnaryReactor* ModelsService::SetAlias(grpc::CallbackServerContext* ctx,
                                                  const v1::SetAliasRequest*, v1::Alias*) {
  return FinishUnary(ctx, "Models.SetAlias");
}
grpc::ServerUnaryReactor* ModelsService::DeleteAlias(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteAliasRequest*,
                                                     google::protobuf::Empty*) {
  return FinishUnary(ctx, "Models.DeleteAlias");
}
grpc::ServerUnaryReactor* ModelsService::ListAliases(grpc::CallbackServerContext* ctx,
                                                     const v1::ListAliasesRequest*,
                                                     v1::ListAliasesResponse*) {
  return FinishUnary(ctx, "Models.ListAliases");
}
grpc::ServerWriteReactor<v1::ExportModelChunk>* ModelsService::ExportModel(
    grpc::CallbackServerContext*, const v1::ExportModelRequest*) {
  return new FinishedWriter<v1::ExportModelChunk>("Models.ExportModel");
}
grpc::ServerReadReactor<v1::ImportModelRequest>* ModelsService::ImportModel(
    grpc::CallbackServerContext*, v1::Model*) {
  return new FinishedReader<v1::ImportModelRequest>("Models.ImportModel");
}

}  // namespace transferd::rpc
