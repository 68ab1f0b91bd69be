#include "server/rpc/jobs_service.h"

#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/catalog_util.h"
#include "server/core/jobs.h"
#include "server/core/model_archive.h"
#include "server/core/registry.h"
#include "server/core/sha256.h"
#include "server/core/train/train_config.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/job_spec.h"
#include "server/rpc/service_util.h"

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

// ExportModel: the archive is written to tmp/ first, then streamed a chunk
// at a time (one write in flight); the file is removed when the call ends,
// however it ends.
class ExportReactor final : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  static constexpr int64_t kChunkBytes = 1 << 20;

  ExportReactor(core::Engine& engine, const core::ModelInfo& model) : engine_(engine) {
    path_ = engine.data_dir().tmp_dir() / ("export-" + core::RandomHex(8) + ".tar");
    absl::StatusOr<int64_t> size = core::WriteModelArchive(model, path_);
    std::lock_guard<std::mutex> lock(mu_);
    if (!size.ok()) {
      FinishLocked(ToGrpcStatus(size.status()));
      return;
    }
    total_ = *size;
    in_.open(path_, std::ios::binary);
    if (!in_) {
      FinishLocked(grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the archive back"));
      return;
    }
    buffer_.resize(static_cast<size_t>(std::min(kChunkBytes, total_)));
    NextLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    NextLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    in_.close();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    delete this;
  }

 private:
  void NextLocked() {
    if (finished_) return;
    if (cancelled_) {
      FinishLocked(grpc::Status::CANCELLED);
      return;
    }
    if (offset_ >= total_) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (engine_.shutting_down()) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "the server is shutting down; export again later"));
      return;
    }
    const int64_t n = std::min<int64_t>(kChunkBytes, total_ - offset_);
    if (!in_.read(buffer_.data(), n)) {
      FinishLocked(grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the archive back"));
      return;
    }
    hash_.Update(buffer_.data(), static_cast<size_t>(n));
    chunk_.Clear();
    chunk_.set_data(buffer_.data(), static_cast<size_t>(n));
    chunk_.set_offset(offset_);
    chunk_.set_total_bytes(total_);
    offset_ += n;
    if (offset_ == total_) chunk_.set_sha256(hash_.HexDigest());
    writing_ = true;
    StartWrite(&chunk_);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  core::Engine& engine_;
  std::filesystem::path path_;
  std::mutex mu_;
  std::ifstream in_;
  std::vector<char> buffer_;
  core::Sha256 hash_;
  v1::ExportModelChunk chunk_;
  int64_t total_ = 0;
  int64_t offset_ = 0;
  bool writing_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
};

class FinishedExport final : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  explicit FinishedExport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// ImportModel: the header, then the archive's bytes into a file in tmp/
// (bounded by the dataset size limit and the free-disk floor); at the end of
// the stream the registry checks and registers it. The file is removed when
// the call ends, however it ends.
class ImportReactor final : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  ImportReactor(core::Engine& engine, grpc::CallbackServerContext* ctx, v1::Model* response)
      : engine_(engine), ctx_(ctx), response_(response) {
    max_bytes_ = engine.options().datasets.max_dataset_bytes;
    min_free_ = engine.options().datasets.min_free_disk_bytes;
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed (or went away: then Finish is a no-op).
      Done(ctx_->IsCancelled() ? grpc::Status::CANCELLED : Commit());
      return;
    }
    if (engine_.shutting_down()) {
      Done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down; the import was discarded"));
      return;
    }
    absl::Status status = Handle();
    if (!status.ok()) {
      Done(ToGrpcStatus(status));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override {
    Discard();
    delete this;
  }

 private:
  static constexpr int64_t kDiskCheckEvery = 64ll << 20;

  absl::Status CheckDisk(int64_t more) {
    std::error_code ec;
    const std::filesystem::space_info space = std::filesystem::space(path_.parent_path(), ec);
    if (ec) return absl::OkStatus();
    if (static_cast<int64_t>(space.available) - more < min_free_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the import would leave less than min_free_disk_bytes (", min_free_,
          ") free on the data directory's disk"));
    }
    return absl::OkStatus();
  }

  absl::Status Handle() {
    if (request_.has_header()) {
      if (started_) {
        return absl::InvalidArgumentError("header: sent twice (it must come once, first)");
      }
      started_ = true;
      header_ = request_.header();
      if (header_.total_bytes() < 0) {
        return absl::InvalidArgumentError("header.total_bytes must not be negative");
      }
      if (header_.total_bytes() > max_bytes_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("header.total_bytes: ", header_.total_bytes(),
                         " is above the limit of ", max_bytes_, " bytes (max_dataset_bytes)"));
      }
      if (!header_.model_id().empty()) {
        if (absl::Status s = core::ValidateResourceId("header.model_id", header_.model_id());
            !s.ok()) {
          return s;
        }
        if (engine_.models().Get(header_.model_id()).ok()) {
          return absl::AlreadyExistsError(
              absl::StrCat("model \"", header_.model_id(), "\" already exists"));
        }
      }
      path_ = engine_.data_dir().tmp_dir() / ("import-" + core::RandomHex(8) + ".tar");
      out_.open(path_, std::ios::binary | std::ios::trunc);
      if (!out_) return absl::InternalError("cannot create the import's temporary file");
      return CheckDisk(header_.total_bytes());
    }
    if (request_.payload_case() != v1::ImportModelRequest::kData) {
      return absl::InvalidArgumentError("request carries neither a header nor data");
    }
    if (!started_) return absl::InvalidArgumentError("header: the first message must be the header");
    const std::string& data = request_.data();
    const int64_t after = received_ + static_cast<int64_t>(data.size());
    if (after > max_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the archive is larger than the limit of ", max_bytes_, " bytes (max_dataset_bytes)"));
    }
    if (header_.total_bytes() > 0 && after > header_.total_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data: more than header.total_bytes (", header_.total_bytes(), ") bytes sent"));
    }
    if (after / kDiskCheckEvery != received_ / kDiskCheckEvery) {
      if (absl::Status s = CheckDisk(0); !s.ok()) return s;
    }
    out_.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out_) return absl::InternalError("cannot write the import's temporary file");
    received_ = after;
    return absl::OkStatus();
  }

  grpc::Status Commit() {
    if (!started_) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: the stream ended before the header");
    }
    if (header_.total_bytes() > 0 && received_ != header_.total_bytes()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("the stream ended after ", received_, " of the ",
                                       header_.total_bytes(), " bytes header.total_bytes announced"));
    }
    out_.close();
    if (!out_) return grpc::Status(grpc::StatusCode::INTERNAL, "cannot write the archive");
    absl::StatusOr<core::ModelInfo> model =
        engine_.models().Import(path_, header_.model_id(), header_.display_name());
    if (!model.ok()) return ToGrpcStatus(model.status());
    ToProto(*model, response_);
    return grpc::Status::OK;
  }

  void Discard() {
    if (out_.is_open()) out_.close();
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove(path_, ec);
      path_.clear();
    }
  }

  void Done(const grpc::Status& status) {
    Discard();  // the temporary file goes before the answer
    Finish(status);
  }

  core::Engine& engine_;
  grpc::CallbackServerContext* ctx_;
  v1::Model* response_;
  v1::ImportModelRequest request_;
  v1::ImportModelHeader header_;
  bool started_ = false;
  std::filesystem::path path_;
  std::ofstream out_;
  int64_t received_ = 0;
  int64_t max_bytes_ = 0;
  int64_t min_free_ = 0;
};

class FinishedImport final : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  explicit FinishedImport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

void AliasToProto(const core::AliasInfo& in, v1::Alias* out) {
  out->set_name(absl::StrCat("aliases/", in.alias));
  out->set_model(absl::StrCat("models/", in.model_id));
  *out->mutable_update_time() = Ts(in.update_time);
}

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
  for (const std::string& a : in.aliases) out->add_aliases(absl::StrCat("aliases/", a));
}

// ---- Jobs ---------------------------------------------------------------------

grpc::ServerUnaryReactor* JobsService::CreateJob(grpc::CallbackServerContext* ctx,
                                                 const v1::CreateJobRequest* request,
                                                 v1::Job* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kTrainer, "Jobs.CreateJob"); !s.ok()) return Answer(ctx, s);
  v1::JobSpec spec = request->spec();
  // FINE_TUNE and PREDICT take the base model's network; an alias is
  // resolved now, so the job keeps the model it was given.
  std::optional<train::ModelConfig> base;
  if ((spec.kind() == v1::JOB_KIND_FINE_TUNE || spec.kind() == v1::JOB_KIND_PREDICT) &&
      !spec.base_model().empty()) {
    absl::StatusOr<std::string> id =
        ModelIdFromName(engine_.models(), "spec.base_model", spec.base_model());
    if (absl::IsNotFound(id.status())) {
      id = absl::InvalidArgumentError(absl::StrCat("spec.base_model: ", id.status().message()));
    }
    if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
    absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
    if (!model.ok()) {
      return Answer(ctx, ToGrpcStatus(absl::InvalidArgumentError(
                             absl::StrCat("spec.base_model: ", model.status().message()))));
    }
    base = model->model;
    spec.set_base_model(absl::StrCat("models/", *id));
  }
  absl::StatusOr<ResolvedJob> resolved =
      ResolveJobSpec(spec, engine_.device().precision, base ? &*base : nullptr);
  if (!resolved.ok()) return Answer(ctx, ToGrpcStatus(resolved.status()));

  core::NewJob job;
  job.id = request->job_id();
  job.kind = spec.kind() == v1::JOB_KIND_FINE_TUNE ? core::JobKind::kFineTune
             : spec.kind() == v1::JOB_KIND_PREDICT ? core::JobKind::kPredict
                                                   : core::JobKind::kTrain;
  job.dataset_id = resolved->dataset_id;
  job.base_model = resolved->base_model;
  job.spec_blob = request->spec().SerializeAsString();
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
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.GetJob"); !s.ok()) return Answer(ctx, s);
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
  } else if (absl::StatusOr<core::DatasetInfo> d = engine_.datasets().Get(job->dataset_id);
             d.ok()) {
    for (v1::Evaluation& e : *response->mutable_evaluations()) {
      for (const std::string& c : d->classes) e.mutable_confusion_matrix()->add_classes(c);
    }
  }
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::ListJobs(grpc::CallbackServerContext* ctx,
                                                const v1::ListJobsRequest* request,
                                                v1::ListJobsResponse* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.ListJobs"); !s.ok()) return Answer(ctx, s);
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
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kTrainer, "Jobs.CancelJob"); !s.ok()) return Answer(ctx, s);
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
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.WatchJob"); !s.ok()) {
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
  return new WatchReactor(engine_, *id, request->after_sequence(), request->follow());
}

grpc::ServerUnaryReactor* JobsService::ListJobPredictions(
    grpc::CallbackServerContext* ctx, const v1::ListJobPredictionsRequest* request,
    v1::ListJobPredictionsResponse* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Jobs.ListJobPredictions"); !s.ok()) return Answer(ctx, s);
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::PredictionsPage> page =
      engine_.jobs().Predictions(*id, request->page_size(), request->page_token());
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

// ---- Models -------------------------------------------------------------------

grpc::ServerUnaryReactor* ModelsService::GetModel(grpc::CallbackServerContext* ctx,
                                                  const v1::GetModelRequest* request,
                                                  v1::Model* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Models.GetModel"); !s.ok()) return Answer(ctx, s);
  absl::StatusOr<std::string> id = ModelIdFromName(engine_.models(), "name", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
  if (!model.ok()) return Answer(ctx, ToGrpcStatus(model.status()));
  ToProto(*model, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::ListModels(grpc::CallbackServerContext* ctx,
                                                    const v1::ListModelsRequest* request,
                                                    v1::ListModelsResponse* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Models.ListModels"); !s.ok()) return Answer(ctx, s);
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
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kAdmin, "Models.DeleteModel"); !s.ok()) return Answer(ctx, s);
  absl::StatusOr<std::string> id = IdFromName("name", "models", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  return Answer(ctx, ToGrpcStatus(engine_.models().Delete(*id)));
}

grpc::ServerUnaryReactor* ModelsService::SetAlias(grpc::CallbackServerContext* ctx,
                                                  const v1::SetAliasRequest* request,
                                                  v1::Alias* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kAdmin, "Models.SetAlias"); !s.ok()) return Answer(ctx, s);
  absl::StatusOr<std::string> alias = IdFromName("alias", "aliases", request->alias());
  if (!alias.ok()) return Answer(ctx, ToGrpcStatus(alias.status()));
  absl::StatusOr<std::string> id = IdFromName("model", "models", request->model());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::AliasInfo> set = engine_.models().SetAlias(*alias, *id);
  if (!set.ok()) return Answer(ctx, ToGrpcStatus(set.status()));
  AliasToProto(*set, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteAlias(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteAliasRequest* request,
                                                     google::protobuf::Empty*) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kAdmin, "Models.DeleteAlias"); !s.ok()) return Answer(ctx, s);
  absl::StatusOr<std::string> alias = IdFromName("alias", "aliases", request->alias());
  if (!alias.ok()) return Answer(ctx, ToGrpcStatus(alias.status()));
  return Answer(ctx, ToGrpcStatus(engine_.models().DeleteAlias(*alias)));
}

grpc::ServerUnaryReactor* ModelsService::ListAliases(grpc::CallbackServerContext* ctx,
                                                     const v1::ListAliasesRequest* request,
                                                     v1::ListAliasesResponse* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Models.ListAliases"); !s.ok()) return Answer(ctx, s);
  std::string next;
  absl::StatusOr<std::vector<core::AliasInfo>> aliases =
      engine_.models().ListAliases(request->page_size(), request->page_token(), &next);
  if (!aliases.ok()) return Answer(ctx, ToGrpcStatus(aliases.status()));
  for (const core::AliasInfo& a : *aliases) AliasToProto(a, response->add_aliases());
  response->set_next_page_token(next);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::ExportModelChunk>* ModelsService::ExportModel(
    grpc::CallbackServerContext* ctx, const v1::ExportModelRequest* request) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kViewer, "Models.ExportModel"); !s.ok()) {
    return new FinishedExport(s);
  }
  absl::StatusOr<std::string> id = ModelIdFromName(engine_.models(), "name", request->name());
  if (!id.ok()) return new FinishedExport(ToGrpcStatus(id.status()));
  absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
  if (!model.ok()) return new FinishedExport(ToGrpcStatus(model.status()));
  return new ExportReactor(engine_, *model);
}

grpc::ServerReadReactor<v1::ImportModelRequest>* ModelsService::ImportModel(
    grpc::CallbackServerContext* ctx, v1::Model* response) {
  if (grpc::Status s = Admit(ctx, engine_, auth_, Role::kTrainer, "Models.ImportModel"); !s.ok()) {
    return new FinishedImport(s);
  }
  return new ImportReactor(engine_, ctx, response);
}

}  // namespace transferd::rpc
