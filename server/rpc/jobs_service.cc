// transferd.v1.Jobs: validates, converts (conversions.h) and calls the
// engine's job queue; WatchJob streams the stored event log.
#include "server/rpc/jobs_service.h"

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/jobs.h"
#include "server/core/train/train_config.h"
#include "server/core/util/catalog_util.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"
namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;
namespace train = core::train;

// Streams a job's events from the store: a page at a time, one write in
// flight, then (with follow) waits for the queue's notifier to say more were
// stored. Memory per watcher is one page, whatever the watcher's speed.
class WatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(core::Engine& engine, std::string id, int64_t after, bool follow)
      : jobs_(engine.jobs()),
        executor_(engine.executor()),
        id_(std::move(id)),
        after_(after),
        follow_(follow) {
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
    // After Unsubscribe the notifier calls Pump no more.
    if (handle_ != 0) jobs_.Unsubscribe(handle_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      if (reading_) return;  // the read in flight deletes this
    }
    delete this;
  }

 private:
  static constexpr int kPage = 100;

  // Called on gRPC's threads and the queue's notifier: writes what is
  // pending, or starts a read of the store on the engine's executor.
  void Pump() {
    bool read = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writing_ || finished_) return;
      if (jobs_.stopping()) {
        FinishLocked(grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            "the server is shutting down; reconnect with after_sequence = "
            "the last sequence received"));
        return;
      }
      if (!pending_.empty()) {
        writing_ = true;
        StartWrite(&pending_.front());
        return;
      }
      if (reading_) {
        read_again_ = true;  // events may have arrived after its query
        return;
      }
      reading_ = true;
      read = true;
    }
    if (read) executor_.Schedule([this, after = after_] { Read(after); });
  }

  // What a read found: events to send, or the end of the stream, or
  // nothing yet (following a job that can still change).
  struct Found {
    std::vector<v1::JobEvent> events;
    bool end = false;
    grpc::Status status;
  };

  // On the executor, without mu_: the store is read here, never on gRPC's
  // threads or the notifier.
  Found ReadStore(int64_t after) const {
    Found found;
    // Two rounds at most: a job can finish between reading its events and
    // reading its state; then its last events are read once more.
    for (int round = 0; round < 2; ++round) {
      absl::StatusOr<std::vector<core::JobEvent>> events =
          jobs_.Events(id_, after, kPage);
      if (!events.ok()) return {{}, true, ToGrpcStatus(events.status())};
      for (const core::JobEvent& e : *events) {
        ToProto(e, &found.events.emplace_back());
      }
      if (!found.events.empty()) return found;
      // Caught up: done unless following a job that can still change.
      absl::StatusOr<core::JobRecord> job = jobs_.Get(id_);
      if (!job.ok()) return {{}, true, ToGrpcStatus(job.status())};
      const bool terminal = core::IsTerminal(job->state);
      if (terminal && job->last_event_sequence > after) continue;
      found.end = !follow_ || terminal;
      return found;
    }
    return found;
  }

  void Read(int64_t after) {
    Found found = ReadStore(after);
    core::Executor& executor = executor_;
    bool read_again = false;
    {
      // StartWrite and Finish are called with mu_ held: OnDone takes mu_
      // before it deletes this, so it cannot run before the lock is let go.
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (done_) {
        // OnDone ran meanwhile and left the deletion to this read.
      } else if (finished_ || writing_) {
        read_again_ = false;
        return;
      } else if (!found.events.empty()) {
        for (v1::JobEvent& e : found.events) pending_.push_back(std::move(e));
        writing_ = true;
        StartWrite(&pending_.front());
        read_again_ = false;
        return;
      } else if (found.end) {
        FinishLocked(found.status);
        return;
      } else {
        read_again = read_again_;
        read_again_ = false;
        reading_ = read_again;
        if (!read_again) return;
      }
    }
    if (read_again) {
      // reading_ is set again: OnDone leaves the deletion to that read.
      executor.Schedule([this, after] { Read(after); });
      return;
    }
    delete this;
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
  core::Executor& executor_;
  const std::string id_;
  std::mutex mu_;
  int64_t after_;
  const bool follow_;
  int64_t handle_ = 0;
  bool writing_ = false;
  bool reading_ = false;     // a Read is scheduled or running
  bool read_again_ = false;  // woken while reading
  bool finished_ = false;
  bool done_ = false;  // OnDone ran while reading
  std::deque<v1::JobEvent> pending_;
};

class FinishedWatch final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  explicit FinishedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* JobsService::CreateJob(
    grpc::CallbackServerContext* ctx, const v1::CreateJobRequest* request,
    v1::Job* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kTrainer, "Jobs.CreateJob");
      !s.ok())
    return Answer(ctx, s);
  v1::JobSpec spec = request->spec();
  // FINE_TUNE and PREDICT take the base model's network; an alias is
  // resolved now, so the job keeps the model it was given.
  std::optional<train::ModelConfig> base;
  std::string base_model_id;
  if ((spec.kind() == v1::JOB_KIND_FINE_TUNE ||
       spec.kind() == v1::JOB_KIND_PREDICT) &&
      !spec.base_model().empty()) {
    absl::StatusOr<std::string> id =
        ModelIdFromName(engine_.models(), "spec.base_model", spec.base_model());
    if (absl::IsNotFound(id.status())) {
      id = absl::InvalidArgumentError(
          absl::StrCat("spec.base_model: ", id.status().message()));
    }
    if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
    absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
    if (!model.ok()) {
      return Answer(ctx, ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                             "spec.base_model: ", model.status().message()))));
    }
    base = model->model;
    base_model_id = *id;
    spec.set_base_model(absl::StrCat("models/", *id));
  }
  absl::StatusOr<train::JobRequest> job_request =
      JobRequestFromProto(spec, base_model_id);
  if (!job_request.ok()) return Answer(ctx, ToGrpcStatus(job_request.status()));
  absl::StatusOr<train::ResolvedJob> resolved = train::ResolveJob(
      *job_request, engine_.device().precision, base ? &*base : nullptr);
  if (!resolved.ok()) return Answer(ctx, ToGrpcStatus(resolved.status()));

  core::NewJob job;
  job.id = request->job_id();
  switch (job_request->kind) {
    case train::RequestKind::kTrain:
      job.kind = core::JobKind::kTrain;
      break;
    case train::RequestKind::kFineTune:
      job.kind = core::JobKind::kFineTune;
      break;
    case train::RequestKind::kPredict:
      job.kind = core::JobKind::kPredict;
      break;
  }
  job.dataset_id = resolved->dataset_id;
  job.base_model = resolved->base_model;
  job.spec_blob = request->spec().SerializeAsString();
  job.resolved_blob = ToResolvedSpec(spec, *resolved).SerializeAsString();
  job.config = resolved->config;
  absl::StatusOr<core::JobRecord> created =
      engine_.jobs().Create(std::move(job));
  if (!created.ok()) return Answer(ctx, ToGrpcStatus(created.status()));
  ToProto(*created, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::GetJob(grpc::CallbackServerContext* ctx,
                                              const v1::GetJobRequest* request,
                                              v1::Job* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.GetJob");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Get(*id);
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  // Confusion matrices carry the class names: the model's for a PREDICT job,
  // otherwise the dataset's.
  if (job->kind == core::JobKind::kPredict) {
    for (v1::Evaluation& e : *response->mutable_evaluations()) {
      for (const std::string& c : job->config.predict_classes) {
        e.mutable_confusion_matrix()->add_classes(c);
      }
    }
  } else if (absl::StatusOr<core::DatasetInfo> d =
                 engine_.datasets().Get(job->dataset_id);
             d.ok()) {
    for (v1::Evaluation& e : *response->mutable_evaluations()) {
      for (const std::string& c : d->classes)
        e.mutable_confusion_matrix()->add_classes(c);
    }
  }
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::ListJobs(
    grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.ListJobs");
      !s.ok())
    return Answer(ctx, s);
  std::optional<core::JobState> state;
  if (request->state() != v1::JOB_STATE_UNSPECIFIED) {
    absl::StatusOr<core::JobState> s =
        StateFromProto(request->state(), "state");
    if (!s.ok()) return Answer(ctx, ToGrpcStatus(s.status()));
    state = *s;
  }
  std::optional<core::JobKind> kind;
  if (request->kind() != v1::JOB_KIND_UNSPECIFIED) {
    absl::StatusOr<core::JobKind> k = KindFromProto(request->kind(), "kind");
    if (!k.ok()) return Answer(ctx, ToGrpcStatus(k.status()));
    kind = *k;
  }
  std::string next;
  absl::StatusOr<std::vector<core::JobRecord>> jobs = engine_.jobs().List(
      request->page_size(), request->page_token(), state, kind, &next);
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

grpc::ServerUnaryReactor* JobsService::CancelJob(
    grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* request,
    v1::Job* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kTrainer, "Jobs.CancelJob");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Cancel(*id);
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::JobEvent>* JobsService::WatchJob(
    grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* request) {
  (void)ctx;
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.WatchJob");
      !s.ok()) {
    return new FinishedWatch(s);
  }
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return new FinishedWatch(ToGrpcStatus(id.status()));
  absl::StatusOr<core::JobRecord> job = engine_.jobs().Get(*id);
  if (!job.ok()) return new FinishedWatch(ToGrpcStatus(job.status()));
  if (request->after_sequence() < 0) {
    return new FinishedWatch(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "after_sequence must be >= 0"));
  }
  return new WatchReactor(engine_, *id, request->after_sequence(),
                          request->follow());
}

grpc::ServerUnaryReactor* JobsService::ListJobPredictions(
    grpc::CallbackServerContext* ctx,
    const v1::ListJobPredictionsRequest* request,
    v1::ListJobPredictionsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.ListJobPredictions");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::PredictionsPage> page = engine_.jobs().Predictions(
      *id, request->page_size(), request->page_token());
  if (!page.ok()) return Answer(ctx, ToGrpcStatus(page.status()));
  for (const std::string& c : page->classes) response->add_classes(c);
  for (const core::FilePredictionRecord& r : page->predictions) {
    v1::FilePrediction* out = response->add_predictions();
    out->set_path(r.client_path);
    out->set_split(r.split == "train"        ? v1::SPLIT_TRAIN
                   : r.split == "validation" ? v1::SPLIT_VALIDATION
                   : r.split == "test"       ? v1::SPLIT_TEST
                                             : v1::SPLIT_UNSPECIFIED);
    out->set_true_label(r.true_label);
    out->set_label(r.label);
    for (float p : r.probabilities) out->add_probabilities(p);
    out->mutable_status()->set_code(r.status_code);
    out->mutable_status()->set_message(r.status_message);
  }
  response->set_next_page_token(page->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

}  // namespace transferd::rpc
