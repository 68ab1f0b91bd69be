#include "server/rpc/conversions.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"

namespace transferd::rpc {

namespace train = core::train;
using common::LabelSource;
using common::Split;
using common::SplitPolicy;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Ts(std::chrono::system_clock::time_point t) {
  return TimeUtil::MillisecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          t.time_since_epoch())
          .count());
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

void EvaluationToProto(const train::EvaluationReport& e,
                       const std::vector<std::string>& classes,
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

void SummaryToProto(const train::TrainableSummary& s,
                    v1::TrainableSummary* out) {
  out->set_trainable_tensors(s.trainable_tensors);
  out->set_trainable_parameters(s.trainable_parameters);
  out->set_non_trainable_parameters(s.non_trainable_parameters);
}

v1::JobState StateToProto(core::JobState state) {
  switch (state) {
    case core::JobState::kQueued:
      return v1::JOB_STATE_QUEUED;
    case core::JobState::kRunning:
      return v1::JOB_STATE_RUNNING;
    case core::JobState::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case core::JobState::kFailed:
      return v1::JOB_STATE_FAILED;
    case core::JobState::kCancelled:
      return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

v1::JobKind KindToProto(core::JobKind kind) {
  switch (kind) {
    case core::JobKind::kTrain:
      return v1::JOB_KIND_TRAIN;
    case core::JobKind::kFineTune:
      return v1::JOB_KIND_FINE_TUNE;
    case core::JobKind::kPredict:
      return v1::JOB_KIND_PREDICT;
  }
  return v1::JOB_KIND_UNSPECIFIED;
}

absl::StatusOr<core::JobState> StateFromProto(v1::JobState state,
                                              const char* field) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return core::JobState::kQueued;
    case v1::JOB_STATE_RUNNING:
      return core::JobState::kRunning;
    case v1::JOB_STATE_SUCCEEDED:
      return core::JobState::kSucceeded;
    case v1::JOB_STATE_FAILED:
      return core::JobState::kFailed;
    case v1::JOB_STATE_CANCELLED:
      return core::JobState::kCancelled;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": unknown job state ", static_cast<int>(state)));
}

absl::StatusOr<core::JobKind> KindFromProto(v1::JobKind kind,
                                            const char* field) {
  switch (kind) {
    case v1::JOB_KIND_TRAIN:
      return core::JobKind::kTrain;
    case v1::JOB_KIND_FINE_TUNE:
      return core::JobKind::kFineTune;
    case v1::JOB_KIND_PREDICT:
      return core::JobKind::kPredict;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": unknown job kind ", static_cast<int>(kind)));
}

void ToProto(const core::JobRecord& in, v1::Job* out) {
  out->set_name(absl::StrCat("jobs/", in.id));
  out->mutable_spec()->ParseFromString(in.spec_blob);
  out->mutable_resolved_spec()->ParseFromString(in.resolved_blob);
  out->set_state(StateToProto(in.state));
  out->set_failure_reason(in.failure_reason);
  *out->mutable_create_time() = Ts(in.create_time);
  if (in.start_time.time_since_epoch().count() != 0)
    *out->mutable_start_time() = Ts(in.start_time);
  if (in.end_time.time_since_epoch().count() != 0)
    *out->mutable_end_time() = Ts(in.end_time);
  v1::JobProgress* p = out->mutable_progress();
  p->set_stage(in.progress.stage);
  p->set_stages(in.progress.stages);
  p->set_epoch(in.progress.epoch);
  p->set_epochs(in.progress.epochs);
  p->set_step(in.progress.step);
  p->set_steps(in.progress.steps);
  p->set_eta_seconds(in.progress.eta_seconds);
  for (const train::EpochReport& e : in.history)
    EpochToProto(e, out->add_history());
  SummaryToProto(in.trainable, out->mutable_trainable());
  if (!in.result_model.empty())
    out->set_result_model(absl::StrCat("models/", in.result_model));
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
  for (const train::EpochReport& e : in.history)
    EpochToProto(e, out->add_history());
  out->set_best_epoch(in.best_epoch);
  for (const train::EvaluationReport& e : in.evaluations) {
    EvaluationToProto(e, in.classes, out->add_evaluations());
  }
  out->set_size_bytes(in.size_bytes);
  out->set_parameters(in.parameters);
  for (const std::string& a : in.aliases)
    out->add_aliases(absl::StrCat("aliases/", a));
}

void ToProto(const core::AliasInfo& in, v1::Alias* out) {
  out->set_name(absl::StrCat("aliases/", in.alias));
  out->set_model(absl::StrCat("models/", in.model_id));
  *out->mutable_update_time() = Ts(in.update_time);
}

// ---- Datasets
// -----------------------------------------------------------------

v1::Split SplitToProto(Split split) {
  switch (split) {
    case Split::kTrain:
      return v1::SPLIT_TRAIN;
    case Split::kValidation:
      return v1::SPLIT_VALIDATION;
    case Split::kTest:
      return v1::SPLIT_TEST;
    case Split::kNone:
      break;
  }
  return v1::SPLIT_UNSPECIFIED;
}

v1::LabelSource LabelSourceToProto(LabelSource source) {
  switch (source) {
    case LabelSource::kFilename:
      return v1::LABEL_SOURCE_FILENAME;
    case LabelSource::kFolder:
      return v1::LABEL_SOURCE_FOLDER;
    case LabelSource::kExplicit:
      return v1::LABEL_SOURCE_EXPLICIT;
    case LabelSource::kAuto:
      break;
  }
  return v1::LABEL_SOURCE_UNSPECIFIED;
}

absl::StatusOr<LabelSource> LabelSourceFromProto(v1::LabelSource source) {
  switch (source) {
    case v1::LABEL_SOURCE_UNSPECIFIED:
      return LabelSource::kAuto;
    case v1::LABEL_SOURCE_FILENAME:
      return LabelSource::kFilename;
    case v1::LABEL_SOURCE_FOLDER:
      return LabelSource::kFolder;
    case v1::LABEL_SOURCE_EXPLICIT:
      return LabelSource::kExplicit;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "header.label_source: unknown value ", static_cast<int>(source)));
}

v1::RejectReason RejectReasonToProto(core::RejectReason reason) {
  switch (reason) {
    case core::RejectReason::kBadPath:
      return v1::REJECT_REASON_BAD_PATH;
    case core::RejectReason::kUnsupportedFormat:
      return v1::REJECT_REASON_UNSUPPORTED_FORMAT;
    case core::RejectReason::kTooManyPixels:
      return v1::REJECT_REASON_TOO_MANY_PIXELS;
    case core::RejectReason::kCorrupt:
      return v1::REJECT_REASON_CORRUPT;
    case core::RejectReason::kEmpty:
      return v1::REJECT_REASON_EMPTY;
    case core::RejectReason::kTooLarge:
      return v1::REJECT_REASON_TOO_LARGE;
    case core::RejectReason::kNoLabel:
      return v1::REJECT_REASON_NO_LABEL;
    case core::RejectReason::kNoSplit:
      return v1::REJECT_REASON_NO_SPLIT;
    case core::RejectReason::kSizeMismatch:
      return v1::REJECT_REASON_SIZE_MISMATCH;
  }
  return v1::REJECT_REASON_UNSPECIFIED;
}

absl::StatusOr<core::UploadSpec> SpecFromHeader(const v1::UploadHeader& h) {
  core::UploadSpec spec;
  spec.id = h.dataset_id();
  spec.display_name = h.display_name();
  spec.expected_files = h.expected_files();
  spec.expected_bytes = h.expected_bytes();
  absl::StatusOr<LabelSource> source = LabelSourceFromProto(h.label_source());
  if (!source.ok()) return source.status();
  spec.label_source = *source;
  const v1::SplitPolicy& p = h.split_policy();
  SplitPolicy policy;
  switch (p.policy_case()) {
    case v1::SplitPolicy::kFolders:
      policy.kind = SplitPolicy::Kind::kFolders;
      spec.split = policy;
      break;
    case v1::SplitPolicy::kRatios:
      policy.kind = SplitPolicy::Kind::kRatios;
      policy.train = p.ratios().train();
      policy.validation = p.ratios().validation();
      policy.test = p.ratios().test();
      policy.seed = p.ratios().seed();
      spec.split = policy;
      break;
    case v1::SplitPolicy::kPerClassCounts:
      policy.kind = SplitPolicy::Kind::kPerClassCounts;
      policy.train_count = p.per_class_counts().train();
      policy.validation_count = p.per_class_counts().validation();
      policy.test_count = p.per_class_counts().test();
      policy.seed = p.per_class_counts().seed();
      spec.split = policy;
      break;
    case v1::SplitPolicy::POLICY_NOT_SET:
      break;
  }
  return spec;
}

void ToProto(const core::RejectedFile& in, v1::RejectedFile* out) {
  out->set_path(in.path);
  out->set_reason(RejectReasonToProto(in.reason));
  out->set_message(in.message);
}

void ToProto(const core::DatasetInfo& in, v1::Dataset* out) {
  out->set_name(absl::StrCat("datasets/", in.id));
  out->set_display_name(in.display_name);
  *out->mutable_create_time() = Ts(in.create_time);
  out->set_label_source(LabelSourceToProto(in.label_source));
  for (const std::string& c : in.classes) out->add_classes(c);
  for (const core::SplitCounts& s : in.splits) {
    v1::SplitSummary* split = out->add_splits();
    split->set_split(SplitToProto(s.split));
    split->set_files(s.files);
    for (size_t i = 0; i < in.classes.size() && i < s.per_class.size(); ++i) {
      v1::ClassCount* count = split->add_classes();
      count->set_label(in.classes[i]);
      count->set_files(s.per_class[i]);
    }
  }
  out->set_files(in.files);
  out->set_bytes(in.bytes);
  v1::ImageSizeStats* size = out->mutable_image_size();
  size->set_min_width(in.image_size.min_width);
  size->set_max_width(in.image_size.max_width);
  size->set_mean_width(in.image_size.mean_width);
  size->set_min_height(in.image_size.min_height);
  size->set_max_height(in.image_size.max_height);
  size->set_mean_height(in.image_size.mean_height);
  out->set_rejected_files(in.rejected_files);
  out->set_duplicate_files(in.duplicate_files);
  for (const core::RejectedFile& r : in.rejects) ToProto(r, out->add_rejects());
}

}  // namespace transferd::rpc
