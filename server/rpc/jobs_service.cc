// transferd.v1.Jobs: converts (conversions.h) and calls the engine API;
// WatchJob streams the stored event log.
#include "server/rpc/jobs_service.h"

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/util/executor.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/request_context.h"
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
  WatchReactor(core::api::EngineApi& api, std::string id, int64_t after,
               bool follow)
      : api_(api),
        executor_(api.executor()),
        id_(std::move(id)),
        after_(after),
        follow_(follow) {
    if (follow_) {
      handle_ = api_.Watch(id_, [this] { Pump(); });
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
    if (handle_ != 0) api_.Unwatch(handle_);
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
      if (api_.jobs_stopping()) {
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

  // What a read found, as messages.
  struct Found {
    std::vector<v1::JobEvent> events;
    bool end = false;
    grpc::Status status;
  };

  // On the executor, without mu_: the store is read here, never on gRPC's
  // threads or the notifier.
  Found ReadStore(int64_t after) const {
    core::api::EventRead read = api_.ReadEvents(id_, after, kPage, follow_);
    Found found;
    found.end = read.end;
    found.status = ToGrpcStatus(read.status);
    for (const core::JobEvent& e : read.events) {
      ToProto(e, &found.events.emplace_back());
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

  core::api::EngineApi& api_;
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
          Admit(ctx, api_, auth_, Role::kTrainer, "Jobs.CreateJob");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<train::JobRequest> job_request =
      JobRequestFromProto(request->spec());
  if (!job_request.ok()) return Answer(ctx, ToGrpcStatus(job_request.status()));
  core::api::JobSubmission submission;
  submission.job_id = request->job_id();
  submission.trace_id = TraceId(*ctx);
  submission.request = *std::move(job_request);
  submission.spec_blob = request->spec().SerializeAsString();
  submission.encode_resolved = [request](const train::ResolvedJob& resolved,
                                         const std::string& base_model) {
    return ToResolvedSpec(request->spec(), resolved, base_model)
        .SerializeAsString();
  };
  absl::StatusOr<core::api::JobView> created = api_.CreateJob(submission);
  if (!created.ok()) return Answer(ctx, ToGrpcStatus(created.status()));
  ToProto(*created, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::GetJob(grpc::CallbackServerContext* ctx,
                                              const v1::GetJobRequest* request,
                                              v1::Job* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kViewer, "Jobs.GetJob");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::api::JobView> job = api_.GetJob(request->name());
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::ListJobs(
    grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kViewer, "Jobs.ListJobs");
      !s.ok())
    return Answer(ctx, s);
  core::api::JobQuery query;
  query.page = {request->page_size(), request->page_token()};
  if (request->state() != v1::JOB_STATE_UNSPECIFIED) {
    absl::StatusOr<core::JobState> s =
        StateFromProto(request->state(), "state");
    if (!s.ok()) return Answer(ctx, ToGrpcStatus(s.status()));
    query.state = *s;
  }
  if (request->kind() != v1::JOB_KIND_UNSPECIFIED) {
    absl::StatusOr<core::JobKind> k = KindFromProto(request->kind(), "kind");
    if (!k.ok()) return Answer(ctx, ToGrpcStatus(k.status()));
    query.kind = *k;
  }
  absl::StatusOr<core::api::Page<core::api::JobView>> jobs =
      api_.ListJobs(query);
  if (!jobs.ok()) return Answer(ctx, ToGrpcStatus(jobs.status()));
  for (const core::api::JobView& j : jobs->items) {
    v1::Job* out = response->add_jobs();
    ToListingProto(j, out);  // GetJob has the rest
  }
  response->set_next_page_token(jobs->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::CancelJob(
    grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* request,
    v1::Job* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Jobs.CancelJob");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::api::JobView> job = api_.CancelJob(request->name());
  if (!job.ok()) return Answer(ctx, ToGrpcStatus(job.status()));
  ToProto(*job, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::JobEvent>* JobsService::WatchJob(
    grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* request) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kViewer, "Jobs.WatchJob");
      !s.ok()) {
    return new FinishedWatch(s);
  }
  absl::StatusOr<std::string> id = api_.JobId(request->name());
  if (!id.ok()) return new FinishedWatch(ToGrpcStatus(id.status()));
  if (request->after_sequence() < 0) {
    return new FinishedWatch(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "after_sequence must be >= 0"));
  }
  return new WatchReactor(api_, *id, request->after_sequence(),
                          request->follow());
}

grpc::ServerUnaryReactor* JobsService::ListJobPredictions(
    grpc::CallbackServerContext* ctx,
    const v1::ListJobPredictionsRequest* request,
    v1::ListJobPredictionsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Jobs.ListJobPredictions");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::PredictionsPage> page = api_.ListJobPredictions(
      request->name(), {request->page_size(), request->page_token()});
  if (!page.ok()) return Answer(ctx, ToGrpcStatus(page.status()));
  for (const std::string& c : page->classes) response->add_classes(c);
  for (const core::FilePredictionRecord& r : page->predictions) {
    ToProto(r, page->classes, response->add_predictions());
  }
  response->set_next_page_token(page->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

}  // namespace transferd::rpc
