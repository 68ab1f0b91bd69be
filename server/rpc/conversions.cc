#include "server/rpc/conversions.h"

#include <algorithm>

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/train/eval_metrics.h"
#include "server/core/util/build_info.h"
#include "server/core/util/status_macros.h"

namespace transferd::rpc {

namespace train = core::train;
using common::LabelSource;
using common::Split;
using common::SplitPolicy;
using core::data::AugmentOptions;
using google::protobuf::util::TimeUtil;

namespace {
// Evaluation.top_confusions' length.
constexpr int kTopConfusions = 10;
// The most classes whose confusion matrix also goes out dense.
constexpr int kDenseConfusionMaxClasses = 64;
}  // namespace

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
  out->set_images_per_second(e.images_per_second);
}

void EvaluationToProto(const train::EvaluationReport& e,
                       const std::vector<std::string>& classes,
                       v1::Evaluation* out, bool lean) {
  out->set_split(e.split);
  out->set_examples(e.examples);
  out->set_loss(e.loss);
  out->set_accuracy(e.accuracy);
  out->set_roc_auc(std::max(0.0, e.roc_auc));
  out->set_top_k(e.top_k);
  out->set_top_k_accuracy(e.top_k_accuracy);
  out->set_macro_accuracy(e.macro_accuracy);
  out->set_gap(e.gap);
  if (lean) return;  // listings: no confusion matrix
  auto name = [&](int32_t c) {
    return c >= 0 && static_cast<size_t>(c) < classes.size()
               ? classes[static_cast<size_t>(c)]
               : absl::StrCat(c);
  };
  for (const train::ConfusionCell& c :
       train::TopConfusions(e, kTopConfusions)) {
    v1::Confusion* t = out->add_top_confusions();
    t->set_true_label(name(c.truth));
    t->set_predicted_label(name(c.predicted));
    t->set_count(c.count);
  }
  v1::ConfusionMatrix* m = out->mutable_confusion_matrix();
  for (const std::string& c : classes) m->add_classes(c);
  const int k = e.num_classes;
  if (k > 0 && k <= kDenseConfusionMaxClasses) {
    m->mutable_counts()->Resize(k * k, 0);
    for (const train::ConfusionCell& c : e.confusion)
      m->set_counts(c.truth * k + c.predicted, c.count);
  }
  for (const train::ConfusionCell& c : e.confusion) {
    v1::ConfusionCell* cell = m->add_cells();
    cell->set_true_class(c.truth);
    cell->set_predicted_class(c.predicted);
    cell->set_count(c.count);
  }
}

void EvaluationToProto(const train::EvaluationReport& e,
                       const std::vector<std::string>& classes,
                       v1::Evaluation* out) {
  EvaluationToProto(e, classes, out, /*lean=*/false);
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

namespace {
// The full form (Get) or the lean one (listings).
void JobToProto(const core::api::JobView& view, v1::Job* out, bool lean);
void ModelToProto(const core::ModelInfo& in, v1::Model* out, bool lean);
}  // namespace

void ToProto(const core::JobRecord& in, v1::Job* out) {
  ToProto(core::api::JobView{in, {}}, out);
}

void ToProto(const core::api::JobView& view, v1::Job* out) {
  JobToProto(view, out, /*lean=*/false);
}

void ToListingProto(const core::api::JobView& view, v1::Job* out) {
  JobToProto(view, out, /*lean=*/true);
}

namespace {

void JobToProto(const core::api::JobView& view, v1::Job* out, bool lean) {
  const core::JobRecord& in = view.job;
  out->set_name(absl::StrCat("jobs/", in.id));
  out->mutable_spec()->ParseFromString(in.spec_blob);
  if (!lean) out->mutable_resolved_spec()->ParseFromString(in.resolved_blob);
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
  if (!lean) {
    for (const train::EpochReport& e : in.history)
      EpochToProto(e, out->add_history());
  }
  SummaryToProto(in.trainable, out->mutable_trainable());
  if (!in.result_model.empty())
    out->set_result_model(absl::StrCat("models/", in.result_model));
  for (const train::EvaluationReport& e : in.evaluations) {
    EvaluationToProto(e, view.classes, out->add_evaluations(), lean);
  }
  out->set_last_event_sequence(in.last_event_sequence);
  out->set_resumes(in.resumes);
  out->set_trace_id(in.trace_id);
}

}  // namespace

void ToProto(const core::FilePredictionRecord& in,
             const std::vector<std::string>& classes, v1::FilePrediction* out) {
  out->set_path(in.client_path);
  out->set_split(SplitToProto(in.split));
  out->set_true_label(in.true_label);
  out->set_label(in.label);
  for (float p : in.probabilities) out->add_probabilities(p);
  for (const train::ClassProbability& c : in.top) {
    if (c.index < 0 || static_cast<size_t>(c.index) >= classes.size()) continue;
    v1::ClassScore* s = out->add_top();
    s->set_label(classes[static_cast<size_t>(c.index)]);
    s->set_probability(c.probability);
  }
  out->mutable_status()->set_code(in.status_code);
  out->mutable_status()->set_message(in.status_message);
}

void ToProto(const core::JobEvent& in, v1::JobEvent* out) {
  using Type = core::JobEvent::Type;
  out->set_sequence(in.sequence);
  *out->mutable_time() = Ts(in.time);
  out->set_trace_id(in.trace_id);
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
  ModelToProto(in, out, /*lean=*/false);
}

void ToListingProto(const core::ModelInfo& in, v1::Model* out) {
  ModelToProto(in, out, /*lean=*/true);
}

namespace {

void ModelToProto(const core::ModelInfo& in, v1::Model* out, bool lean) {
  out->set_name(absl::StrCat("models/", in.id));
  out->set_display_name(in.display_name);
  *out->mutable_create_time() = Ts(in.create_time);
  out->set_source_job(in.source_job);
  out->set_parent(in.parent);
  v1::JobSpec spec;
  if (spec.ParseFromString(in.spec_blob)) *out->mutable_spec() = spec.model();
  if (!lean) {
    for (const std::string& c : in.classes) out->add_classes(c);
  }
  out->set_class_count(static_cast<int32_t>(in.classes.size()));
  v1::Preprocessing* p = out->mutable_preprocessing();
  p->set_mode(in.preprocessing.mode == "caffe" ? v1::Preprocessing::MODE_CAFFE
              : in.preprocessing.mode == "tf"  ? v1::Preprocessing::MODE_TF
                                               : v1::Preprocessing::MODE_TORCH);
  p->set_channel_order(in.preprocessing.bgr ? "BGR" : "RGB");
  for (float v : in.preprocessing.mean) p->add_mean(v);
  for (float v : in.preprocessing.std) p->add_std(v);
  p->set_scale(in.preprocessing.scale);
  p->set_input_size(in.preprocessing.input_size);
  if (!lean) {
    for (const train::EpochReport& e : in.history)
      EpochToProto(e, out->add_history());
  }
  out->set_best_epoch(in.best_epoch);
  for (const train::EvaluationReport& e : in.evaluations) {
    EvaluationToProto(e, in.classes, out->add_evaluations(), lean);
  }
  out->set_size_bytes(in.size_bytes);
  out->set_parameters(in.parameters);
  for (const std::string& a : in.aliases)
    out->add_aliases(absl::StrCat("aliases/", a));
}

}  // namespace

void ToProto(const core::AliasInfo& in, v1::Alias* out) {
  out->set_name(absl::StrCat("aliases/", in.alias));
  out->set_model(absl::StrCat("models/", in.model_id));
  *out->mutable_update_time() = Ts(in.update_time);
}

// ---- Server and inference ---------------------------------------------------

void ServerInfoToProto(const core::EngineInfo& info, v1::ServerInfo* out) {
  const core::BuildInfo& build = core::GetBuildInfo();
  out->set_version(build.version);
  v1::BuildInfo* b = out->mutable_build();
  b->set_revision(build.revision);
  b->set_build_type(build.build_type);
  b->set_compiler(build.compiler);
  b->set_torch_version(build.torch_version);
  b->set_protobuf_version(
      google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION));
  b->set_torch_cuda(build.torch_cuda);
  b->set_allocator(build.allocator);

  DeviceToProto(info.device, out->mutable_device());

  v1::CpuFeatures* c = out->mutable_cpu();
  c->set_avx2(info.cpu.avx2);
  c->set_avx512f(info.cpu.avx512f);
  c->set_avx512_bf16(info.cpu.avx512_bf16);
  c->set_amx_tile(info.cpu.amx_tile);
  c->set_amx_bf16(info.cpu.amx_bf16);
  c->set_onednn(info.cpu.onednn);
  c->set_logical_cpus(info.cpu.logical_cpus);

  out->clear_backbones();
  for (const core::BackboneDescription& bb : info.backbones) {
    v1::BackboneInfo* o = out->add_backbones();
    o->set_name(bb.name);
    o->set_keras_name(bb.keras_name);
    for (double a : bb.alphas) o->add_alphas(a);
    o->set_default_input_size(bb.default_input_size);
    o->set_min_input_size(bb.min_input_size);
    o->set_parameters(bb.parameters);
    for (const std::string& w : bb.weights_available) {
      o->add_weights_available(w);
    }
  }
  *out->mutable_start_time() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
          std::chrono::duration_cast<std::chrono::nanoseconds>(
              info.start_time.time_since_epoch())
              .count());
  out->set_store_schema_version(info.store_schema_version);
  out->clear_replica();
  if (info.replica.has_value()) {
    const core::ReplicaStatus& r = *info.replica;
    v1::ReplicaStatus* o = out->mutable_replica();
    o->set_primary(r.primary);
    o->set_primary_connected(r.primary_connected);
    if (r.last_contact) *o->mutable_last_contact_time() = Ts(*r.last_contact);
    if (r.last_sync) *o->mutable_last_sync_time() = Ts(*r.last_sync);
    o->set_in_sync(r.in_sync);
    o->set_last_error(r.last_error);
    o->set_pulls(r.pulls);
    o->set_pulls_refused(r.pulls_refused);
    o->set_pulls_failed(r.pulls_failed);
    o->set_pulled_bytes(r.pulled_bytes);
    for (const core::ReplicaAliasStatus& a : r.aliases) {
      v1::ReplicaAlias* alias = o->add_aliases();
      alias->set_alias(absl::StrCat("aliases/", a.alias));
      if (!a.model_id.empty()) {
        alias->set_model(absl::StrCat("models/", a.model_id));
      }
      alias->set_primary_model(absl::StrCat("models/", a.primary_model_id));
      alias->set_ready(a.ready);
    }
  }
  out->clear_cluster();
  if (!info.cluster.role.empty()) {
    v1::ClusterStatus* c = out->mutable_cluster();
    c->set_role(info.cluster.role);
    c->set_coordinator(info.cluster.self.coordinator);
    c->set_connected(info.cluster.self.connected);
    c->set_last_error(info.cluster.self.last_error);
    c->set_running(info.cluster.self.running);
    for (const core::ClusterWorker& w : info.cluster.workers) {
      v1::ClusterWorker* o = c->add_workers();
      o->set_id(w.id);
      o->set_name(w.name);
      o->set_peer(w.peer);
      DeviceToProto(w.device, o->mutable_device());
      *o->mutable_join_time() = Ts(w.join_time);
      if (!w.job.empty()) o->set_job(absl::StrCat("jobs/", w.job));
    }
  }
}

void DeviceToProto(const core::ComputeDevice& device, v1::DeviceInfo* d) {
  d->set_name(device.name);
  d->set_description(device.description);
  d->set_threads(device.threads);
  d->set_memory_bytes(device.memory_bytes);
  d->set_default_precision(device.precision == "bf16" ? v1::PRECISION_BF16
                                                      : v1::PRECISION_FP32);
  d->set_compute_capability(device.capability);
  d->set_native_bf16(device.native_bf16);
}

core::ComputeDevice DeviceFromProto(const v1::DeviceInfo& d) {
  core::ComputeDevice device;
  device.name = d.name();
  device.kind = absl::StartsWith(d.name(), "cuda")
                    ? core::ComputeDevice::Kind::kCuda
                    : core::ComputeDevice::Kind::kCpu;
  device.description = d.description();
  device.threads = d.threads();
  device.memory_bytes = d.memory_bytes();
  device.precision =
      d.default_precision() == v1::PRECISION_BF16 ? "bf16" : "fp32";
  device.capability = d.compute_capability();
  device.native_bf16 = d.native_bf16();
  return device;
}

int32_t ItemCode(absl::StatusCode code) {
  // absl::StatusCode is google.rpc.Code, number for number (absl's
  // status.h); anything outside it is INTERNAL, as ToGrpcStatus maps it.
  const int n = static_cast<int>(code);
  return n >= 0 && n <= 16 ? n
                           : static_cast<int32_t>(absl::StatusCode::kInternal);
}

absl::Status CheckTopK(int32_t top_k) {
  if (top_k >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("top_k: must be >= 0 (0: the default), got ", top_k));
}

void PredictionToProto(const std::string& id, const core::ImageResult& r,
                       const std::vector<std::string>& classes,
                       v1::ImagePrediction* out, int top_k) {
  out->set_id(id);
  out->mutable_status()->set_code(ItemCode(r.status.code()));
  out->mutable_status()->set_message(std::string(r.status.message()));
  if (!r.status.ok() || r.label < 0) return;
  out->set_label(classes[r.label]);
  out->set_probability(r.probabilities[r.label]);
  const int n =
      static_cast<int>(std::min(classes.size(), r.probabilities.size()));
  if (n <= core::kAllProbabilitiesMaxClasses) {
    for (int c = 0; c < n; ++c) {
      v1::ClassScore* s = out->add_scores();
      s->set_label(classes[static_cast<size_t>(c)]);
      s->set_probability(r.probabilities[static_cast<size_t>(c)]);
    }
  }
  for (const train::ClassProbability& c : train::TopClasses(
           r.probabilities.data(), n, train::EffectiveTopK(top_k, n))) {
    v1::ClassScore* s = out->add_top();
    s->set_label(classes[static_cast<size_t>(c.index)]);
    s->set_probability(c.probability);
  }
}

// ---- Jobs: the request and the resolved spec --------------------------------

namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

absl::StatusOr<train::ModelOverrides> ModelFromProto(const v1::ModelSpec& m) {
  train::ModelOverrides out;
  out.backbone = m.backbone();
  if (m.has_alpha()) out.alpha = m.alpha();
  out.weights = m.weights();
  if (m.has_input_size()) out.input_size = m.input_size();
  switch (m.precision()) {
    case v1::PRECISION_UNSPECIFIED:
      break;
    case v1::PRECISION_FP32:
      out.precision = "fp32";
      break;
    case v1::PRECISION_BF16:
      out.precision = "bf16";
      break;
    default:
      return Invalid("spec.model.precision",
                     "must be FP32 or BF16 (FP16 is not supported)");
  }
  switch (m.head().pooling()) {
    case v1::POOLING_FLATTEN:
      out.pooling = train::Pooling::kFlatten;
      break;
    case v1::POOLING_GLOBAL_AVERAGE:
      out.pooling = train::Pooling::kGlobalAverage;
      break;
    default:
      break;  // the recipe's
  }
  if (m.head().has_hidden_units()) out.hidden_units = m.head().hidden_units();
  if (m.head().has_dropout()) out.dropout = m.head().dropout();
  switch (m.head().init()) {
    case v1::HEAD_INIT_UNSPECIFIED:
      break;  // the recipe's
    case v1::HEAD_INIT_GLOROT_UNIFORM:
      out.head_init = train::HeadInit::kGlorotUniform;
      break;
    case v1::HEAD_INIT_TORCH:
      out.head_init = train::HeadInit::kTorch;
      break;
    default:
      return Invalid("spec.model.head.init",
                     absl::StrCat("unknown value ", m.head().init()));
  }
  return out;
}

absl::Status OptimizerFromProto(const v1::OptimizerSpec& o,
                                const std::string& f,
                                train::StageOverrides& out) {
  switch (o.kind()) {
    case v1::OptimizerSpec::KIND_UNSPECIFIED:
      break;
    case v1::OptimizerSpec::KIND_RMSPROP:
      out.optimizer = train::OptimizerKind::kRmsprop;
      break;
    case v1::OptimizerSpec::KIND_ADAM:
      out.optimizer = train::OptimizerKind::kAdam;
      break;
    case v1::OptimizerSpec::KIND_SGD:
      out.optimizer = train::OptimizerKind::kSgd;
      break;
    default:
      return Invalid(f + ".optimizer.kind", "is unknown");
  }
  if (o.has_learning_rate()) out.learning_rate = o.learning_rate();
  if (o.has_momentum()) out.momentum = o.momentum();
  if (o.has_rho()) out.rho = o.rho();
  if (o.has_epsilon()) out.epsilon = o.epsilon();
  if (o.has_beta1()) out.beta1 = o.beta1();
  if (o.has_beta2()) out.beta2 = o.beta2();
  if (o.has_weight_decay()) out.weight_decay = o.weight_decay();
  if (o.has_nesterov()) out.nesterov = o.nesterov();
  return absl::OkStatus();
}

void AugmentationFromProto(const v1::AugmentationSpec& a,
                           train::StageOverrides& out) {
  using Fill = AugmentOptions::Fill;
  out.augmentation_preset = a.preset();
  if (a.has_enabled()) out.augmentation_enabled = a.enabled();
  if (a.has_rotation_range()) out.rotation_range = a.rotation_range();
  if (a.has_width_shift_range()) out.width_shift_range = a.width_shift_range();
  if (a.has_height_shift_range()) {
    out.height_shift_range = a.height_shift_range();
  }
  if (a.has_shear_range()) out.shear_range = a.shear_range();
  if (a.has_zoom_range()) out.zoom_range = a.zoom_range();
  if (a.has_horizontal_flip()) out.horizontal_flip = a.horizontal_flip();
  if (a.has_vertical_flip()) out.vertical_flip = a.vertical_flip();
  if (a.has_cval()) out.cval = a.cval();
  switch (a.fill_mode()) {
    case v1::FILL_MODE_NEAREST:
      out.fill = Fill::kNearest;
      break;
    case v1::FILL_MODE_REFLECT:
      out.fill = Fill::kReflect;
      break;
    case v1::FILL_MODE_CONSTANT:
      out.fill = Fill::kConstant;
      break;
    case v1::FILL_MODE_WRAP:
      out.fill = Fill::kWrap;
      break;
    default:
      break;  // the preset's (nearest without one)
  }
}

absl::Status ScheduleFromProto(const v1::LrScheduleSpec& l,
                               const std::string& f,
                               train::StageOverrides& out) {
  using K = train::LrSchedule::Kind;
  switch (l.kind()) {
    case v1::LrScheduleSpec::KIND_UNSPECIFIED:
      return absl::OkStatus();
    case v1::LrScheduleSpec::KIND_STEP:
      out.lr_kind = K::kStep;
      break;
    case v1::LrScheduleSpec::KIND_COSINE:
      out.lr_kind = K::kCosine;
      break;
    case v1::LrScheduleSpec::KIND_REDUCE_ON_PLATEAU:
      out.lr_kind = K::kReduceOnPlateau;
      break;
    default:
      return Invalid(f + ".lr_schedule.kind", "is unknown");
  }
  out.lr_factor = l.factor();
  out.lr_step_epochs = l.step_epochs();
  out.lr_patience = l.patience();
  out.lr_min_lr = l.min_lr();
  return absl::OkStatus();
}

absl::StatusOr<train::StageOverrides> StageFromProto(const v1::StageSpec& s,
                                                     const std::string& f) {
  train::StageOverrides out;
  out.name = s.name();
  out.trainable_from = s.trainable_from();
  if (absl::Status st = OptimizerFromProto(s.optimizer(), f, out); !st.ok()) {
    return st;
  }
  if (s.has_epochs()) out.epochs = s.epochs();
  if (s.has_batch_size()) out.batch_size = s.batch_size();
  if (s.has_batch_norm_inference()) {
    out.batch_norm_inference = s.batch_norm_inference();
  }
  AugmentationFromProto(s.augmentation(), out);
  if (!s.early_stopping().monitor().empty()) {
    out.early_stopping.monitor = s.early_stopping().monitor();
    out.early_stopping.patience = s.early_stopping().patience();
    out.early_stopping.min_delta = s.early_stopping().min_delta();
  }
  if (absl::Status st = ScheduleFromProto(s.lr_schedule(), f, out); !st.ok()) {
    return st;
  }
  return out;
}

absl::StatusOr<std::vector<common::Split>> PredictSplitsFromProto(
    const v1::PredictJobOptions& p) {
  std::vector<common::Split> out;
  for (int i = 0; i < p.splits_size(); ++i) {
    switch (p.splits(i)) {
      case v1::SPLIT_TRAIN:
        out.push_back(common::Split::kTrain);
        break;
      case v1::SPLIT_VALIDATION:
        out.push_back(common::Split::kValidation);
        break;
      case v1::SPLIT_TEST:
        out.push_back(common::Split::kTest);
        break;
      default:
        return Invalid(absl::StrCat("spec.predict.splits[", i, "]"),
                       "must be TRAIN, VALIDATION or TEST");
    }
  }
  return out;
}

v1::FillMode FillToProto(AugmentOptions::Fill fill) {
  switch (fill) {
    case AugmentOptions::Fill::kNearest:
      return v1::FILL_MODE_NEAREST;
    case AugmentOptions::Fill::kReflect:
      return v1::FILL_MODE_REFLECT;
    case AugmentOptions::Fill::kConstant:
      return v1::FILL_MODE_CONSTANT;
    case AugmentOptions::Fill::kWrap:
      return v1::FILL_MODE_WRAP;
  }
  return v1::FILL_MODE_UNSPECIFIED;
}

v1::LrScheduleSpec::Kind LrKindToProto(train::LrSchedule::Kind kind) {
  using K = train::LrSchedule::Kind;
  switch (kind) {
    case K::kNone:
      return v1::LrScheduleSpec::KIND_UNSPECIFIED;
    case K::kStep:
      return v1::LrScheduleSpec::KIND_STEP;
    case K::kCosine:
      return v1::LrScheduleSpec::KIND_COSINE;
    case K::kReduceOnPlateau:
      return v1::LrScheduleSpec::KIND_REDUCE_ON_PLATEAU;
  }
  return v1::LrScheduleSpec::KIND_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<train::JobRequest> JobRequestFromProto(const v1::JobSpec& spec) {
  train::JobRequest out;
  switch (spec.kind()) {
    case v1::JOB_KIND_TRAIN:
      out.kind = train::RequestKind::kTrain;
      break;
    case v1::JOB_KIND_FINE_TUNE:
      out.kind = train::RequestKind::kFineTune;
      break;
    case v1::JOB_KIND_PREDICT:
      out.kind = train::RequestKind::kPredict;
      break;
    default:
      return Invalid("spec.kind", "must be TRAIN, FINE_TUNE or PREDICT");
  }
  absl::StatusOr<std::string> dataset =
      core::api::IdFromName("spec.dataset", "datasets", spec.dataset());
  if (!dataset.ok()) return dataset.status();
  out.dataset_id = *std::move(dataset);
  out.recipe = spec.recipe();
  out.base_model_name = spec.base_model();
  if (out.kind == train::RequestKind::kPredict) {
    TRANSFERD_ASSIGN_OR_RETURN(out.predict_splits,
                               PredictSplitsFromProto(spec.predict()));
    out.predict_flip_tta = spec.predict().horizontal_flip_tta();
  }
  TRANSFERD_ASSIGN_OR_RETURN(out.model, ModelFromProto(spec.model()));
  for (int i = 0; i < spec.stages_size(); ++i) {
    TRANSFERD_ASSIGN_OR_RETURN(
        train::StageOverrides stage,
        StageFromProto(spec.stages(i), absl::StrCat("spec.stages[", i, "]")));
    out.stages.push_back(std::move(stage));
  }
  if (spec.has_seed()) out.seed = spec.seed();
  out.selection_metric = spec.selection_metric();
  if (spec.has_label_smoothing()) out.label_smoothing = spec.label_smoothing();
  out.class_weights = spec.class_weights();
  if (spec.has_top_k()) out.top_k = spec.top_k();
  if (spec.has_replicas()) out.replicas = spec.replicas();
  if (spec.has_min_replicas()) out.min_replicas = spec.min_replicas();
  return out;
}

v1::JobSpec ToResolvedSpec(const v1::JobSpec& spec, const train::ResolvedJob& r,
                           const std::string& base_model) {
  v1::JobSpec out;
  out.set_kind(spec.kind());
  out.set_dataset(spec.dataset());
  out.set_recipe(spec.recipe());
  out.set_base_model(base_model);
  out.set_seed(r.config.seed);
  out.set_selection_metric(r.config.selection_metric);
  out.set_label_smoothing(r.config.label_smoothing);
  out.set_top_k(r.config.top_k);
  if (spec.kind() != v1::JOB_KIND_PREDICT) {
    out.set_class_weights(r.config.class_weights);
    out.set_replicas(r.config.replicas);
    out.set_min_replicas(r.config.min_replicas);
  }
  const train::ModelConfig& m = r.config.model;
  v1::ModelSpec* model = out.mutable_model();
  model->set_backbone(m.backbone);
  model->set_alpha(m.alpha);
  model->set_weights(m.weights);
  model->set_input_size(m.input_size);
  model->set_precision(m.precision == "bf16" ? v1::PRECISION_BF16
                                             : v1::PRECISION_FP32);
  if (spec.kind() == v1::JOB_KIND_PREDICT)
    *out.mutable_predict() = spec.predict();
  model->mutable_head()->set_pooling(m.head.pooling == train::Pooling::kFlatten
                                         ? v1::POOLING_FLATTEN
                                         : v1::POOLING_GLOBAL_AVERAGE);
  model->mutable_head()->set_hidden_units(m.head.hidden_units);
  model->mutable_head()->set_dropout(m.head.dropout);
  model->mutable_head()->set_init(m.head.init == train::HeadInit::kTorch
                                      ? v1::HEAD_INIT_TORCH
                                      : v1::HEAD_INIT_GLOROT_UNIFORM);
  for (const train::StageConfig& s : r.config.stages) {
    v1::StageSpec* st = out.add_stages();
    st->set_name(s.name);
    st->set_trainable_from(s.trainable_from);
    v1::OptimizerSpec* o = st->mutable_optimizer();
    o->set_kind(s.optimizer.kind == train::OptimizerKind::kRmsprop
                    ? v1::OptimizerSpec::KIND_RMSPROP
                : s.optimizer.kind == train::OptimizerKind::kAdam
                    ? v1::OptimizerSpec::KIND_ADAM
                    : v1::OptimizerSpec::KIND_SGD);
    o->set_learning_rate(s.optimizer.learning_rate);
    o->set_momentum(s.optimizer.momentum);
    o->set_rho(s.optimizer.rho);
    o->set_epsilon(s.optimizer.epsilon);
    o->set_beta1(s.optimizer.beta1);
    o->set_beta2(s.optimizer.beta2);
    o->set_weight_decay(s.optimizer.weight_decay);
    o->set_nesterov(s.optimizer.nesterov);
    st->set_epochs(s.epochs);
    st->set_batch_size(s.batch_size);
    st->set_batch_norm_inference(s.batch_norm_inference);
    v1::AugmentationSpec* a = st->mutable_augmentation();
    a->set_enabled(s.augment.enabled());
    a->set_rotation_range(s.augment.rotation_range);
    a->set_width_shift_range(s.augment.width_shift_range);
    a->set_height_shift_range(s.augment.height_shift_range);
    a->set_shear_range(s.augment.shear_range);
    a->set_zoom_range(s.augment.zoom_range);
    a->set_horizontal_flip(s.augment.horizontal_flip);
    a->set_vertical_flip(s.augment.vertical_flip);
    a->set_fill_mode(FillToProto(s.augment.fill));
    a->set_cval(s.augment.cval);
    if (!s.early_stopping.monitor.empty()) {
      st->mutable_early_stopping()->set_monitor(s.early_stopping.monitor);
      st->mutable_early_stopping()->set_patience(s.early_stopping.patience);
      st->mutable_early_stopping()->set_min_delta(s.early_stopping.min_delta);
    }
    if (s.lr_schedule.kind != train::LrSchedule::Kind::kNone) {
      v1::LrScheduleSpec* l = st->mutable_lr_schedule();
      l->set_kind(LrKindToProto(s.lr_schedule.kind));
      l->set_factor(s.lr_schedule.factor);
      l->set_step_epochs(s.lr_schedule.step_epochs);
      l->set_patience(s.lr_schedule.patience);
      l->set_min_lr(s.lr_schedule.min_lr);
    }
  }
  return out;
}

// ---- Datasets ----
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
    case LabelSource::kNone:
      return v1::LABEL_SOURCE_NONE;
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
    case v1::LABEL_SOURCE_NONE:
      return LabelSource::kNone;
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
      policy.up_to = p.per_class_counts().up_to();
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
