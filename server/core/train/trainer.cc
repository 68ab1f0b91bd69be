// The trainer: stages, epochs, feature cache, checkpoints. See trainer.h.
//
// Determinism: the example order of every epoch comes from (seed, epoch)
// (EpochOrder, the same order data::Loader uses), augmentation from
// (seed, epoch, example) inside the loader, and the torch generator (dropout)
// is reseeded from (seed, epoch) at every epoch start. So a run resumed from
// a checkpoint continues exactly as an uninterrupted one would.
//
// Files in the checkpoint folder:
//   checkpoint-NNNNNN.tdc       after global epoch NNNNNN: meta (JSON), model
//                               tensors, optimizer state; the newest two kept
//   best-epoch-NNNNNN.safetensors  best weights so far (referenced by meta)
//   best.safetensors            the final best weights (Run's weights_file)
// Feature cache: <cache_dir>/features/<key>/<split>.feat, key = hash of
// dataset, backbone, alpha, weights, input size, preprocessing, precision.
#include "server/core/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/hash.h"
#include "server/core/data/loader.h"
#include "server/core/train/classifier.h"
#include "server/core/train/collective.h"
#include "server/core/train/eval_metrics.h"
#include "server/core/train/rmsprop.h"
#include "server/core/train/train_json.h"
#include "server/core/train/train_util.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/torch_util.h"

namespace transferd::core::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kEvalBatch = 32;
constexpr double kStepReportInterval = 0.5;  // seconds

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

bool HigherIsBetter(const std::string& metric) {
  return absl::EndsWith(metric, "accuracy");
}

double MetricOf(const EpochReport& e, const std::string& metric) {
  if (metric == "val_loss") return e.val_loss;
  if (metric == "val_accuracy") return e.val_accuracy;
  if (metric == "accuracy") return e.accuracy;
  return e.loss;
}

absl::Status CheckMetric(const std::string& field, const std::string& metric,
                         bool has_validation) {
  if (metric != "val_loss" && metric != "val_accuracy" && metric != "loss" &&
      metric != "accuracy") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unknown metric \"", metric,
                     "\"; expected val_accuracy, val_loss, accuracy or loss"));
  }
  if (!has_validation && absl::StartsWith(metric, "val_")) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": \"", metric,
        "\" needs validation data, and the dataset has none; use \"",
        metric.substr(4), "\""));
  }
  return absl::OkStatus();
}

// Field checks of one stage that need no model. `prefix` is "stages[i]." or
// empty.
absl::Status ValidateStage(const StageConfig& s, const std::string& prefix,
                           std::optional<bool> has_validation) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, what));
  };
  if (s.epochs < 1)
    return bad(absl::StrCat("epochs must be > 0 (got ", s.epochs, ")"));
  if (s.epochs > 100000) return bad("epochs must be <= 100000");
  if (s.batch_size < 1) {
    return bad(absl::StrCat("batch_size must be > 0 (got ", s.batch_size, ")"));
  }
  if (s.batch_size > 65536) return bad("batch_size must be <= 65536");
  const OptimizerConfig& o = s.optimizer;
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return bad("optimizer.learning_rate must be > 0");
  }
  if (!(o.momentum >= 0)) return bad("optimizer.momentum must be >= 0");
  if (!(o.weight_decay >= 0)) return bad("optimizer.weight_decay must be >= 0");
  if (!(o.epsilon >= 0)) return bad("optimizer.epsilon must be >= 0");
  if (!(o.rho >= 0 && o.rho < 1)) return bad("optimizer.rho must be in [0, 1)");
  if (!(o.beta1 >= 0 && o.beta1 < 1))
    return bad("optimizer.beta1 must be in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1))
    return bad("optimizer.beta2 must be in [0, 1)");
  if (o.nesterov && (o.kind != OptimizerKind::kSgd || !(o.momentum > 0))) {
    return bad("optimizer.nesterov needs the SGD optimizer with momentum > 0");
  }
  if (!s.early_stopping.monitor.empty()) {
    if (has_validation.has_value()) {
      TRANSFERD_RETURN_IF_ERROR(CheckMetric(prefix + "early_stopping.monitor",
                                            s.early_stopping.monitor,
                                            *has_validation));
    } else {
      TRANSFERD_RETURN_IF_ERROR(CheckMetric(prefix + "early_stopping.monitor",
                                            s.early_stopping.monitor, true));
    }
    if (s.early_stopping.patience < 0)
      return bad("early_stopping.patience must be >= 0");
    if (!(s.early_stopping.min_delta >= 0))
      return bad("early_stopping.min_delta must be >= 0");
  }
  const LrSchedule& l = s.lr_schedule;
  if (l.kind == LrSchedule::Kind::kStep ||
      l.kind == LrSchedule::Kind::kReduceOnPlateau) {
    if (!(l.factor > 0 && l.factor <= 1))
      return bad("lr_schedule.factor must be in (0, 1]");
  }
  if (l.kind == LrSchedule::Kind::kStep && l.step_epochs < 1) {
    return bad("lr_schedule.step_epochs must be > 0");
  }
  if (l.kind == LrSchedule::Kind::kReduceOnPlateau && l.patience < 0) {
    return bad("lr_schedule.patience must be >= 0");
  }
  if (!(l.min_lr >= 0)) return bad("lr_schedule.min_lr must be >= 0");
  return absl::OkStatus();
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(
    const OptimizerConfig& o, std::vector<torch::Tensor> params) {
  switch (o.kind) {
    case OptimizerKind::kRmsprop:
      return std::make_unique<FusedRMSprop>(
          std::move(params), torch::optim::RMSpropOptions(o.learning_rate)
                                 .alpha(o.rho)
                                 .eps(o.epsilon)
                                 .weight_decay(o.weight_decay)
                                 .momentum(o.momentum));
    case OptimizerKind::kAdam:
      return std::make_unique<torch::optim::Adam>(
          std::move(params), torch::optim::AdamOptions(o.learning_rate)
                                 .betas({o.beta1, o.beta2})
                                 .eps(o.epsilon)
                                 .weight_decay(o.weight_decay));
    case OptimizerKind::kSgd:
      break;
  }
  return std::make_unique<torch::optim::SGD>(
      std::move(params), torch::optim::SGDOptions(o.learning_rate)
                             .momentum(o.momentum)
                             .nesterov(o.nesterov)
                             .weight_decay(o.weight_decay));
}

std::string ExamplesDigest(const std::vector<data::Example>& examples) {
  common::Sha256 sha;
  for (const auto& e : examples) {
    sha.Update(e.path);
    const std::string label = absl::StrCat("\t", e.label, "\n");
    sha.Update(label);
  }
  return sha.HexDigest();
}

std::string CheckpointName(int epoch) {
  return absl::StrFormat("checkpoint-%06d.tdc", epoch);
}
std::string BestName(int epoch) {
  return absl::StrFormat("best-epoch-%06d.safetensors", epoch);
}

// Epoch number of "<prefix>NNNNNN<suffix>", or -1.
int NumberedFile(const std::string& name, const std::string& prefix,
                 const std::string& suffix) {
  if (!absl::StartsWith(name, prefix) || !absl::EndsWith(name, suffix))
    return -1;
  int n = -1;
  if (!absl::SimpleAtoi(name.substr(prefix.size(), name.size() - prefix.size() -
                                                       suffix.size()),
                        &n)) {
    return -1;
  }
  return n;
}

// Per-run bookkeeping that a checkpoint carries.
struct RunState {
  int stage = 0;              // stage in progress (or next)
  int stage_epochs_done = 0;  // epochs of `stage` done
  int global_epoch = 0;       // epochs done over the job
  int64_t steps_done = 0;
  std::vector<EpochReport> history;
  int best_epoch = 0;
  double best_value = 0;
  std::string best_file;       // file name in the checkpoint folder
  bool best_pristine = false;  // best weights' backbone is the initial one
  int resumes = 0;
  // Early stopping and reduce-on-plateau of the current stage.
  bool es_init = false;
  double es_best = 0;
  int es_wait = 0;
  bool rop_init = false;
  double rop_best = 0;
  int rop_wait = 0;
  double lr = 0;
};

json StateToJson(const RunState& s) {
  return {{"stage", s.stage},
          {"stage_epochs_done", s.stage_epochs_done},
          {"global_epoch", s.global_epoch},
          {"steps_done", s.steps_done},
          {"history", HistoryToJson(s.history)},
          {"best_epoch", s.best_epoch},
          {"best_value", s.best_value},
          {"best_file", s.best_file},
          {"best_pristine", s.best_pristine},
          {"resumes", s.resumes},
          {"es_init", s.es_init},
          {"es_best", s.es_best},
          {"es_wait", s.es_wait},
          {"rop_init", s.rop_init},
          {"rop_best", s.rop_best},
          {"rop_wait", s.rop_wait},
          {"lr", s.lr}};
}

absl::StatusOr<RunState> StateFromJson(const json& j) {
  try {
    RunState s;
    s.stage = j.at("stage").get<int>();
    s.stage_epochs_done = j.at("stage_epochs_done").get<int>();
    s.global_epoch = j.at("global_epoch").get<int>();
    s.steps_done = j.at("steps_done").get<int64_t>();
    TRANSFERD_ASSIGN_OR_RETURN(
        s.history, HistoryFromJson(j.at("history").get<std::string>()));
    s.best_epoch = j.at("best_epoch").get<int>();
    s.best_value = j.at("best_value").get<double>();
    s.best_file = j.at("best_file").get<std::string>();
    s.best_pristine = j.at("best_pristine").get<bool>();
    s.resumes = j.at("resumes").get<int>();
    s.es_init = j.at("es_init").get<bool>();
    s.es_best = j.at("es_best").get<double>();
    s.es_wait = j.at("es_wait").get<int>();
    s.rop_init = j.at("rop_init").get<bool>();
    s.rop_best = j.at("rop_best").get<double>();
    s.rop_wait = j.at("rop_wait").get<int>();
    s.lr = j.at("lr").get<double>();
    return s;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("checkpoint meta: ", e.what()));
  }
}

struct EvalOut {
  double loss = 0, accuracy = 0;
  int64_t n = 0;
  std::optional<EvalAccumulator> details;  // when asked for
};

// The stage Run is in: its optimizer and where its batches come from.
// (Members are released in reverse order: train data before the optimizer.)
struct StageState {
  int index = 0;
  const StageConfig* config = nullptr;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  bool pristine = false;      // backbone still the initial one
  bool train_cached = false;  // steps train the head on cached features
  torch::Tensor train_feats;  // when train_cached
  torch::Tensor val_feats;    // cached validation features or activations
  std::unique_ptr<data::Loader> loader;  // when !train_cached
  int val_segment = -1;  // val_feats: output of this many segments (-1: all)
  torch::Tensor train_labels;  // when train_cached
  int64_t steps = 0;           // per epoch
};

// The epoch Run is in: its running totals.
struct EpochState {
  int epoch = 0;  // 1-based over the whole job
  Clock::time_point start;
  double lr = 0;
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  // Where the epoch's time goes, for the server log.
  double data_seconds = 0, forward_seconds = 0, backward_seconds = 0,
         optimizer_seconds = 0, allreduce_seconds = 0;
};

// Gradients are averaged over the ranks in buckets of at most this many
// bytes (DDP's default bucket size): fewer, larger collectives.
constexpr int64_t kGradientBucketBytes = int64_t{25} << 20;

// Early stopping (Keras semantics: improvement beyond min_delta resets the
// wait; `patience` epochs without one stop the stage). Whether to stop.
bool EarlyStop(const EarlyStopping& es, const EpochReport& report,
               RunState& st) {
  if (es.monitor.empty()) return false;
  const double v = MetricOf(report, es.monitor);
  const bool up = HigherIsBetter(es.monitor);
  if (!st.es_init ||
      (up ? v - es.min_delta > st.es_best : v + es.min_delta < st.es_best)) {
    st.es_init = true;
    st.es_best = v;
    st.es_wait = 0;
    return false;
  }
  return ++st.es_wait >= std::max(1, es.patience);
}

}  // namespace

struct Trainer::Impl {
  TrainConfig config;
  TrainData data;
  TrainerEnv env;
  torch::Device device{torch::kCPU};
  Classifier model{nullptr};
  backbones::Preprocessing preprocessing;
  std::vector<int> first_trainable;  // per stage
  std::vector<bool> stage_frozen;    // per stage: whole backbone frozen
  std::string feature_key;           // empty: no feature cache possible
  std::string config_digest;
  bool bf16 = false;
  // This rank and its world (SoloCollective for a single process). Rank 0
  // alone writes checkpoints and weights; every rank computes the same
  // updates from the same averaged gradients.
  std::shared_ptr<Collective> coll;
  bool writer() const { return coll->rank() == 0; }
  int world() const { return coll->world_size(); }
  // config.class_weights as float32 per class (device); undefined: none.
  torch::Tensor class_weights;

  std::map<std::string, torch::Tensor>
      features;  // split -> N x C x h x w (device)
  std::map<std::string, torch::Tensor> labels;  // split -> N (device)
  int64_t features_computed = 0, features_loaded = 0, activations_kept = 0;
  int prev_checkpoint_best_epoch =
      -1;  // best epoch of the older kept checkpoint
  Clock::time_point run_start;
  int64_t steps_this_run = 0;
  // The last epoch's time split, set by RunEpoch, logged by FinishEpoch.
  std::string epoch_breakdown;
  int64_t total_steps = 0;

  const std::vector<data::Example>& Split(const std::string& split) const {
    if (split == "train") return data.train;
    if (split == "validation") return data.validation;
    return data.test;
  }

  absl::StatusOr<std::unique_ptr<data::Loader>> MakeLoader(
      const std::vector<data::Example>& examples, int batch_size, bool shuffle,
      const data::AugmentOptions& augment, bool sharded = false) const {
    data::LoaderOptions o;
    if (sharded) {
      o.shard_count = world();
      o.shard_index = coll->rank();
    }
    o.image_size = config.model.input_size;
    o.batch_size = batch_size;
    o.shuffle = shuffle;
    o.seed = config.seed;
    o.threads = std::max(1, env.loader_threads);
    o.augment = augment;
    o.preprocessing = preprocessing;
    // One decoded-image cache per split, shared by every stage's loaders.
    if (env.decoded_cache_bytes > 0) {
      const void* key = &examples;
      auto it = decoded.find(key);
      if (it == decoded.end()) {
        // The budget is shared evenly by the splits that have files.
        const int64_t splits = (data.train.empty() ? 0 : 1) +
                               (data.validation.empty() ? 0 : 1) +
                               (data.test.empty() ? 0 : 1);
        it = decoded
                 .emplace(key, std::make_shared<data::DecodedImageCache>(
                                   env.decoded_cache_bytes /
                                   std::max<int64_t>(1, splits)))
                 .first;
      }
      o.decoded_cache = it->second;
    }
    return data::Loader::Create(examples, o);
  }
  // Decoded images by example list (data.train / validation / test).
  mutable std::map<const void*, std::shared_ptr<data::DecodedImageCache>>
      decoded;

  torch::Tensor LabelsOf(const std::string& split) {
    auto it = labels.find(split);
    if (it != labels.end()) return it->second;
    std::vector<int64_t> l;
    for (const auto& e : Split(split)) l.push_back(e.label);
    torch::Tensor t = torch::tensor(l, torch::kInt64).to(device);
    labels[split] = t;
    return t;
  }

  // Runs `fn` on every batch of `split` in order (no augmentation), with the
  // model in eval mode, without gradients, each batch under a background
  // device turn and autocast; the model's mode is restored afterwards. `fn`
  // returns false to stop early.
  absl::Status ForEachEvalBatch(
      const std::string& split, const TrainerCallbacks& cb,
      const std::function<bool(const data::Batch&)>& fn, bool sharded = false) {
    TRANSFERD_ASSIGN_OR_RETURN(auto loader,
                               MakeLoader(Split(split), kEvalBatch, false,
                                          data::AugmentOptions(), sharded));
    loader->StartEpoch(0);
    const bool was_training = model->is_training();
    model->eval();
    absl::Status status;
    {
      torch::NoGradGuard no_grad;
      while (true) {
        if (cb.cancelled && cb.cancelled()) {
          status = absl::CancelledError("training cancelled");
          break;
        }
        absl::StatusOr<std::optional<data::Batch>> batch = loader->Next();
        if (!batch.ok()) {
          status = batch.status();
          break;
        }
        if (!*batch) break;
        DeviceArbiter::Turn turn(env.arbiter,
                                 DeviceArbiter::Priority::kBackground);
        AutocastScope autocast(bf16, device);
        if (!fn(**batch)) break;
      }
    }
    model->train(was_training);
    return status;
  }

  // Backbone features of every image of `split`, from the cache or computed
  // (with the backbone as it is now, which must be the initial one).
  absl::StatusOr<torch::Tensor> Features(const std::string& split,
                                         const TrainerCallbacks& cb) {
    auto found = features.find(split);
    if (found != features.end()) return found->second;
    const auto& examples = Split(split);
    const std::string digest = ExamplesDigest(examples);
    const fs::path dir = env.cache_dir / "features" / feature_key;
    const fs::path file = dir / (split + ".feat");
    absl::StatusOr<std::map<std::string, std::string>> cached =
        ReadSectionFile(file);
    if (cached.ok() && cached->count("meta") && cached->count("features")) {
      try {
        const json meta = json::parse(cached->at("meta"));
        const auto shape = meta.at("shape").get<std::vector<int64_t>>();
        const std::string& bytes = cached->at("features");
        int64_t numel = 1;
        for (int64_t d : shape) numel *= d;
        if (meta.at("examples").get<std::string>() == digest &&
            shape.size() == 4 &&
            shape[0] == static_cast<int64_t>(examples.size()) &&
            static_cast<int64_t>(bytes.size()) == numel * 4) {
          torch::Tensor t = torch::empty(shape, torch::kFloat32);
          std::memcpy(t.data_ptr<float>(), bytes.data(), bytes.size());
          t = t.to(device);
          features[split] = t;
          features_loaded += shape[0];
          return t;
        }
        spdlog::info("feature cache {}: stale, recomputing", file.string());
      } catch (const json::exception& e) {
        spdlog::warn("feature cache {}: {}; recomputing", file.string(),
                     e.what());
      }
    } else if (!cached.ok() && !absl::IsNotFound(cached.status())) {
      spdlog::warn("feature cache: {}; recomputing",
                   std::string(cached.status().message()));
    }
    std::vector<torch::Tensor> parts;
    TRANSFERD_RETURN_IF_ERROR(
        ForEachEvalBatch(split, cb, [&](const data::Batch& batch) {
          parts.push_back(model->Features(batch.images.to(device))
                              .to(torch::kFloat32)
                              .to(torch::kCPU)
                              .contiguous());
          return true;
        }));
    torch::Tensor all = torch::cat(parts, 0).contiguous();
    features_computed += all.size(0);
    std::error_code ec;
    fs::create_directories(dir, ec);
    json meta = {
        {"examples", digest},
        {"shape", std::vector<int64_t>(all.sizes().begin(), all.sizes().end())},
        {"split", split},
        {"dataset", data.dataset_id}};
    std::string bytes(reinterpret_cast<const char*>(all.data_ptr<float>()),
                      static_cast<size_t>(all.numel()) * 4);
    absl::StatusOr<int64_t> written = WriteSectionFile(
        file, {{"meta", meta.dump()}, {"features", std::move(bytes)}});
    if (!written.ok()) {
      spdlog::warn("feature cache: cannot store {}: {}", file.string(),
                   std::string(written.status().message()));
    }
    torch::Tensor t = all.to(device);
    features[split] = t;
    return t;
  }

  // The output of the backbone's first `segments` segments for every image
  // of `split`, in eval mode, kept in memory (not on disk); undefined when
  // it would exceed env.activation_cache_bytes.
  absl::StatusOr<torch::Tensor> PrefixActivations(const std::string& split,
                                                  int segments,
                                                  const TrainerCallbacks& cb) {
    std::vector<torch::Tensor> parts;
    bool fits = true;
    TRANSFERD_RETURN_IF_ERROR(
        ForEachEvalBatch(split, cb, [&](const data::Batch& batch) {
          parts.push_back(
              model->BackboneSegments(batch.images.to(device), 0, segments));
          if (parts.size() > 1) return true;
          // The first batch tells the size of them all.
          const int64_t bytes = parts.front().nbytes() / parts.front().size(0) *
                                static_cast<int64_t>(Split(split).size());
          if (bytes <= env.activation_cache_bytes) return true;
          spdlog::info(
              "not keeping {} activations: {} bytes exceed the {} allowed",
              split, bytes, env.activation_cache_bytes);
          fits = false;
          return false;
        }));
    if (!fits || parts.empty()) return torch::Tensor();
    torch::Tensor all = torch::cat(parts, 0);
    activations_kept += all.size(0);
    return all;
  }

  // Loss/accuracy (and, when `detailed`, predictions) of the model in eval
  // mode over a split; from `feats` when defined: the output of the
  // backbone's first `segment` segments for every image of the split (all of
  // them by default: cached features).
  absl::StatusOr<EvalOut> Evaluate(const std::string& split,
                                   const torch::Tensor& feats, bool detailed,
                                   const TrainerCallbacks& cb,
                                   int segment = -1) {
    if (segment < 0) segment = model->backbone().num_segments();
    EvalOut out;
    const bool was_training = model->is_training();
    model->eval();
    torch::NoGradGuard no_grad;
    double loss_sum = 0;
    int64_t correct = 0;
    const int classes = model->num_classes();
    const int top_k = EffectiveTopK(config.top_k, classes);
    if (detailed) out.details.emplace(split, classes, top_k);
    // The epochs' validation is shared by the ranks and its sums reduced;
    // the detailed (final) evaluation is rank 0's alone.
    const bool sharded = !detailed && world() > 1;
    auto consume = [&](const torch::Tensor& logits, const torch::Tensor& y) {
      const int64_t n = y.size(0);
      loss_sum +=
          model->Loss(logits, y, config.label_smoothing).item<double>() *
          static_cast<double>(n);
      const torch::Tensor pred = model->Predict(logits);
      correct += pred.eq(y).sum().item<int64_t>();
      out.n += n;
      if (detailed) AddDetails(logits, pred, y, top_k, *out.details);
    };
    if (feats.defined()) {
      const torch::Tensor y_all = LabelsOf(split);
      for (int64_t begin = 0, chunk = 0; begin < feats.size(0);
           begin += kEvalBatch, ++chunk) {
        if (sharded && chunk % world() != coll->rank()) continue;
        if (cb.cancelled && cb.cancelled())
          return absl::CancelledError("training cancelled");
        const int64_t end =
            std::min<int64_t>(begin + kEvalBatch, feats.size(0));
        DeviceArbiter::Turn turn(env.arbiter,
                                 DeviceArbiter::Priority::kBackground);
        AutocastScope autocast(bf16, device);
        consume(model->ForwardFrom(feats.slice(0, begin, end), segment),
                y_all.slice(0, begin, end));
      }
    } else {
      TRANSFERD_RETURN_IF_ERROR(ForEachEvalBatch(
          split, cb,
          [&](const data::Batch& batch) {
            if (batch.labels.size(0) > 0) {
              consume(model->forward(batch.images.to(device)),
                      batch.labels.to(device));
            }
            return true;
          },
          sharded));
    }
    model->train(was_training);
    if (sharded) {
      std::vector<torch::Tensor> sums{torch::tensor(
          {loss_sum, static_cast<double>(correct), static_cast<double>(out.n)},
          torch::kFloat64)};
      TRANSFERD_RETURN_IF_ERROR(coll->AllReduceSum(sums));
      loss_sum = sums[0][0].item<double>();
      correct = static_cast<int64_t>(std::llround(sums[0][1].item<double>()));
      out.n = static_cast<int64_t>(std::llround(sums[0][2].item<double>()));
    }
    if (out.n > 0) {
      out.loss = loss_sum / static_cast<double>(out.n);
      out.accuracy = static_cast<double>(correct) / static_cast<double>(out.n);
    }
    return out;
  }

  // Each example of a batch into `acc`: label, prediction, confidence,
  // whether the label is among the `top_k` most probable classes.
  void AddDetails(const torch::Tensor& logits, const torch::Tensor& pred,
                  const torch::Tensor& y, int top_k,
                  EvalAccumulator& acc) const {
    const int64_t n = y.size(0);
    const torch::Tensor probs =
        model->Probabilities(logits).to(torch::kCPU).contiguous();
    const torch::Tensor p = pred.to(torch::kCPU).contiguous();
    const torch::Tensor l = y.to(torch::kCPU).contiguous();
    const torch::Tensor conf = probs.gather(1, p.unsqueeze(1)).squeeze(1);
    const torch::Tensor hit =
        top_k > 1 && top_k < model->num_classes()
            ? std::get<1>(probs.topk(top_k, 1)).eq(l.unsqueeze(1)).any(1)
            : p.eq(l);
    const torch::Tensor score =
        model->num_classes() == 2
            ? logits.select(1, 0).to(torch::kFloat64).to(torch::kCPU)
            : torch::zeros({n}, torch::kFloat64);
    const auto* pp = p.data_ptr<int64_t>();
    const auto* lp = l.data_ptr<int64_t>();
    const torch::Tensor conf64 = conf.to(torch::kFloat64).contiguous();
    const auto* cp = conf64.data_ptr<double>();
    const torch::Tensor hit_u8 = hit.to(torch::kUInt8).contiguous();
    const auto* hp = hit_u8.data_ptr<uint8_t>();
    const torch::Tensor score_c = score.contiguous();
    const auto* sp = score_c.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i)
      acc.Add(lp[i], pp[i], cp[i], hp[i] != 0, sp[i]);
  }

  bool StagePristine(int stage) const {
    if (!config.model.init_weights_file.empty() || feature_key.empty())
      return false;
    for (int s = 0; s < stage; ++s) {
      if (!stage_frozen[s]) return false;
    }
    return true;
  }

  double ScheduledLr(const StageConfig& sc, int epoch_in_stage,
                     const RunState& st) const {
    const LrSchedule& l = sc.lr_schedule;
    const double base = sc.optimizer.learning_rate;
    switch (l.kind) {
      case LrSchedule::Kind::kNone:
        return base;
      case LrSchedule::Kind::kStep:
        return std::max(l.min_lr, base * std::pow(l.factor, epoch_in_stage /
                                                                l.step_epochs));
      case LrSchedule::Kind::kCosine:
        return l.min_lr + (base - l.min_lr) * 0.5 *
                              (1 + std::cos(M_PI * epoch_in_stage /
                                            std::max(1, sc.epochs)));
      case LrSchedule::Kind::kReduceOnPlateau:
        return st.lr > 0 ? st.lr : base;
    }
    return base;
  }

  absl::StatusOr<int64_t> SaveCheckpoint(const RunState& st,
                                         torch::optim::Optimizer& opt) {
    json meta = StateToJson(st);
    meta["version"] = 1;
    meta["config_digest"] = config_digest;
    meta["optimizer_params"] = [&] {
      size_t n = 0;
      for (const auto& g : opt.param_groups()) n += g.params().size();
      return n;
    }();
    meta["optimizer_states"] = opt.state().size();
    std::ostringstream model_bytes, opt_bytes;
    {
      torch::serialize::OutputArchive ar;
      for (const auto& [name, t] : model->StateTensors()) ar.write(name, t);
      ar.save_to(model_bytes);
    }
    {
      torch::serialize::OutputArchive ar;
      opt.save(ar);
      ar.save_to(opt_bytes);
    }
    const fs::path path = env.checkpoint_dir / CheckpointName(st.global_epoch);
    TRANSFERD_ASSIGN_OR_RETURN(
        int64_t bytes,
        WriteSectionFile(path, {{"meta", meta.dump()},
                                {"model", model_bytes.str()},
                                {"optimizer", opt_bytes.str()}}));
    // Keep the newest two checkpoints and the best files they name.
    std::vector<std::pair<int, fs::path>> checkpoints;
    std::vector<std::pair<int, fs::path>> bests;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(env.checkpoint_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (int n = NumberedFile(name, "checkpoint-", ".tdc"); n >= 0) {
        checkpoints.emplace_back(n, entry.path());
      } else if (int b = NumberedFile(name, "best-epoch-", ".safetensors");
                 b >= 0) {
        bests.emplace_back(b, entry.path());
      }
    }
    std::sort(checkpoints.rbegin(), checkpoints.rend());
    for (size_t i = 2; i < checkpoints.size(); ++i)
      fs::remove(checkpoints[i].second, ec);
    if (prev_checkpoint_best_epoch >= 0) {
      const int keep_from = std::min(prev_checkpoint_best_epoch, st.best_epoch);
      for (const auto& [n, p] : bests) {
        if (n < keep_from) fs::remove(p, ec);
      }
    }
    prev_checkpoint_best_epoch = st.best_epoch;
    return bytes;
  }

  // The newest readable checkpoint, or nullopt. Fills the model; returns the
  // optimizer bytes through `optimizer`.
  std::optional<RunState> LoadCheckpoint(std::string* optimizer) {
    std::vector<std::pair<int, fs::path>> checkpoints;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(env.checkpoint_dir, ec)) {
      const int n =
          NumberedFile(entry.path().filename().string(), "checkpoint-", ".tdc");
      if (n >= 0) checkpoints.emplace_back(n, entry.path());
    }
    std::sort(checkpoints.rbegin(), checkpoints.rend());
    for (size_t i = 0; i < checkpoints.size(); ++i) {
      const fs::path& path = checkpoints[i].second;
      absl::StatusOr<std::map<std::string, std::string>> sections =
          ReadSectionFile(path);
      if (!sections.ok()) {
        spdlog::warn("skipping checkpoint: {}",
                     std::string(sections.status().message()));
        continue;
      }
      try {
        const json meta = json::parse(sections->at("meta"));
        if (meta.at("config_digest").get<std::string>() != config_digest) {
          spdlog::warn(
              "skipping checkpoint {}: written for another configuration",
              path.string());
          continue;
        }
        absl::StatusOr<RunState> st = StateFromJson(meta);
        if (!st.ok()) {
          spdlog::warn("skipping checkpoint {}: {}", path.string(),
                       std::string(st.status().message()));
          continue;
        }
        if (!st->best_file.empty() &&
            !fs::exists(env.checkpoint_dir / st->best_file, ec)) {
          spdlog::warn(
              "skipping checkpoint {}: its best weights {} are missing",
              path.string(), st->best_file);
          continue;
        }
        const std::string& model_bytes = sections->at("model");
        torch::serialize::InputArchive ar;
        ar.load_from(model_bytes.data(), model_bytes.size());
        backbones::NamedTensors tensors;
        for (const auto& [name, t] : model->StateTensors()) {
          torch::Tensor read;
          ar.read(name, read);
          tensors[name] = read;
        }
        absl::Status loaded = model->LoadStateTensors(tensors);
        if (!loaded.ok()) {
          spdlog::warn("skipping checkpoint {}: {}", path.string(),
                       std::string(loaded.message()));
          continue;
        }
        *optimizer = sections->at("optimizer");
        // The older kept checkpoint's best epoch (for pruning best files).
        prev_checkpoint_best_epoch = st->best_epoch;
        if (i + 1 < checkpoints.size()) {
          absl::StatusOr<std::map<std::string, std::string>> older =
              ReadSectionFile(checkpoints[i + 1].second);
          if (older.ok() && older->count("meta")) {
            prev_checkpoint_best_epoch =
                std::min(prev_checkpoint_best_epoch,
                         json::parse(older->at("meta"))
                             .value("best_epoch", st->best_epoch));
          } else {
            prev_checkpoint_best_epoch = -1;
          }
        }
        spdlog::info("resuming from {} (epoch {})", path.string(),
                     st->global_epoch);
        return *st;
      } catch (const std::exception& e) {
        spdlog::warn("skipping checkpoint {}: {}", path.string(), e.what());
      }
    }
    return std::nullopt;
  }

  // Run: StartRun, then the newest checkpoint, then RunStage for every stage
  // left, then FinishRun. A stage: StartStage, PrepareStageData, then per
  // epoch RunEpoch (TrainSteps of TrainStep, then validation) and
  // FinishEpoch (best weights, early stopping, schedule, checkpoint).
  absl::StatusOr<TrainResult> Run(const TrainerCallbacks& cb);
  absl::Status StartRun();
  absl::Status RunStage(int s, const std::string* resumed_optimizer,
                        RunState& st, const TrainerCallbacks& cb);
  void StartStage(StageState& ss, const std::string* resumed_optimizer,
                  RunState& st);
  absl::Status PrepareStageData(StageState& ss, const TrainerCallbacks& cb);
  absl::StatusOr<EpochReport> RunEpoch(StageState& ss, int e, RunState& st,
                                       const TrainerCallbacks& cb);
  absl::Status TrainSteps(StageState& ss, EpochState& ep, RunState& st,
                          const TrainerCallbacks& cb);
  absl::Status TrainStep(StageState& ss, const torch::Tensor& x,
                         const torch::Tensor& y,
                         const std::vector<int64_t>& examples, int64_t global_n,
                         EpochState& ep);
  absl::Status AverageGradients(StageState& ss, int64_t n, int64_t global_n,
                                EpochState& ep);
  absl::Status SyncStart(RunState& st, std::string& optimizer_bytes,
                         bool& resumed);
  absl::Status BroadcastBytes(std::string& bytes);
  std::vector<uint64_t> DropoutKeys(const std::vector<int64_t>& examples,
                                    int epoch) const;
  StepReport StepReportOf(const StageState& ss, const EpochState& ep,
                          int64_t step, const RunState& st) const;
  absl::StatusOr<bool> FinishEpoch(StageState& ss, int e,
                                   const EpochReport& report, RunState& st,
                                   const TrainerCallbacks& cb);
  absl::Status KeepIfBest(const EpochReport& report, bool pristine,
                          RunState& st);
  void UpdatePlateauLr(const LrSchedule& l, const EpochReport& report,
                       RunState& st) const;
  absl::StatusOr<TrainResult> FinishRun(const RunState& st,
                                        const TrainerCallbacks& cb);
  absl::StatusOr<EvaluationReport> EvaluateSplit(const std::string& split,
                                                 bool cached,
                                                 const TrainerCallbacks& cb);
};

absl::StatusOr<TrainResult> Trainer::Impl::Run(const TrainerCallbacks& cb) {
  TRANSFERD_RETURN_IF_ERROR(StartRun());
  RunState st;
  std::string optimizer_bytes;
  bool resumed = false;
  if (std::optional<RunState> loaded =
          writer() ? LoadCheckpoint(&optimizer_bytes) : std::nullopt) {
    st = std::move(*loaded);
    ++st.resumes;
    resumed = true;
  }
  TRANSFERD_RETURN_IF_ERROR(SyncStart(st, optimizer_bytes, resumed));
  const int num_stages = static_cast<int>(config.stages.size());
  for (int s = st.stage; s < num_stages; ++s) {
    TRANSFERD_RETURN_IF_ERROR(
        RunStage(s, resumed ? &optimizer_bytes : nullptr, st, cb));
    resumed = false;
  }
  return FinishRun(st, cb);
}

// The checkpoint folder, the model on the device and the run's counters.
absl::Status Trainer::Impl::StartRun() {
  std::error_code ec;
  fs::create_directories(env.checkpoint_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create checkpoint folder ",
                                            env.checkpoint_dir.string(), ": ",
                                            ec.message()));
  }
  model->to(device);
  features.clear();
  labels.clear();
  features_computed = features_loaded = activations_kept = 0;
  run_start = Clock::now();
  steps_this_run = 0;

  const int64_t n_train = static_cast<int64_t>(data.train.size());
  total_steps = 0;
  for (const auto& s : config.stages) {
    const int64_t global_batch = int64_t{s.batch_size} * world();
    total_steps += s.epochs * ((n_train + global_batch - 1) / global_batch);
  }
  return absl::OkStatus();
}

// Stage `s`, from the epoch `st` has reached. `resumed_optimizer`: the
// optimizer state of the checkpoint the run resumed from, when this is the
// first stage since.
absl::Status Trainer::Impl::RunStage(int s,
                                     const std::string* resumed_optimizer,
                                     RunState& st, const TrainerCallbacks& cb) {
  StageState ss;
  ss.index = s;
  ss.config = &config.stages[s];
  StartStage(ss, resumed_optimizer, st);
  ss.pristine = StagePristine(s) && stage_frozen[s];
  ss.train_cached = ss.pristine && !ss.config->augment.enabled();
  if (cb.stage_started) cb.stage_started(s, model->Summary(), ss.train_cached);
  TRANSFERD_RETURN_IF_ERROR(PrepareStageData(ss, cb));

  bool stop = false;
  for (int e = st.stage_epochs_done; e < ss.config->epochs && !stop; ++e) {
    TRANSFERD_ASSIGN_OR_RETURN(const EpochReport report,
                               RunEpoch(ss, e, st, cb));
    TRANSFERD_ASSIGN_OR_RETURN(stop, FinishEpoch(ss, e, report, st, cb));
  }
  st.stage = s + 1;
  st.stage_epochs_done = 0;
  return absl::OkStatus();
}

// The stage's trainable layers and optimizer: restored from the checkpoint
// when resuming inside the stage, otherwise with the stage's early stopping
// and schedule started afresh.
void Trainer::Impl::StartStage(StageState& ss,
                               const std::string* resumed_optimizer,
                               RunState& st) {
  const StageConfig& sc = *ss.config;
  model->FreezeBackboneBefore(first_trainable[ss.index]);
  model->SetBatchNormInference(sc.batch_norm_inference);
  ss.optimizer = MakeOptimizer(sc.optimizer, model->TrainableParameters());
  const bool continued = resumed_optimizer != nullptr && ss.index == st.stage &&
                         st.stage_epochs_done > 0;
  if (continued && !resumed_optimizer->empty()) {
    torch::serialize::InputArchive ar;
    ar.load_from(resumed_optimizer->data(), resumed_optimizer->size(), device);
    ss.optimizer->load(ar);
  } else if (!continued) {
    st.es_init = st.rop_init = false;
    st.es_wait = st.rop_wait = 0;
    st.lr = sc.optimizer.learning_rate;
  }
}

// Where the stage's training batches and validation come from.
absl::Status Trainer::Impl::PrepareStageData(StageState& ss,
                                             const TrainerCallbacks& cb) {
  const StageConfig& sc = *ss.config;
  const bool has_val = !data.validation.empty();
  const bool val_cached = ss.pristine && has_val;
  if (ss.train_cached) {
    TRANSFERD_ASSIGN_OR_RETURN(ss.train_feats, Features("train", cb));
  } else {
    TRANSFERD_ASSIGN_OR_RETURN(ss.loader, MakeLoader(data.train, sc.batch_size,
                                                     true, sc.augment, true));
  }
  // Validation from features (whole base frozen and never trained) or,
  // when only the top of the base trains, from the frozen bottom's output.
  if (val_cached) {
    TRANSFERD_ASSIGN_OR_RETURN(ss.val_feats, Features("validation", cb));
  } else if (has_val && env.activation_cache_bytes > 0) {
    const int prefix =
        model->backbone().SegmentsBefore(first_trainable[ss.index]);
    if (prefix > 0) {
      TRANSFERD_ASSIGN_OR_RETURN(ss.val_feats,
                                 PrefixActivations("validation", prefix, cb));
      if (ss.val_feats.defined()) ss.val_segment = prefix;
    }
  }
  ss.train_labels = ss.train_cached ? LabelsOf("train") : torch::Tensor();
  const int64_t n_train = static_cast<int64_t>(data.train.size());
  const int64_t global_batch = int64_t{sc.batch_size} * world();
  ss.steps = (n_train + global_batch - 1) / global_batch;
  return absl::OkStatus();
}

// Epoch `e` of the stage (0-based within it): its training steps and
// validation.
absl::StatusOr<EpochReport> Trainer::Impl::RunEpoch(
    StageState& ss, int e, RunState& st, const TrainerCallbacks& cb) {
  EpochState ep;
  ep.epoch = st.global_epoch + 1;
  ep.start = Clock::now();
  torch::manual_seed(EpochTorchSeed(config.seed, ep.epoch));
  ep.lr = ScheduledLr(*ss.config, e, st);
  for (auto& group : ss.optimizer->param_groups()) {
    group.options().set_lr(ep.lr);
  }
  model->train();
  TRANSFERD_RETURN_IF_ERROR(TrainSteps(ss, ep, st, cb));
  if (world() > 1) {
    std::vector<torch::Tensor> sums{
        torch::tensor({ep.loss_sum, static_cast<double>(ep.correct),
                       static_cast<double>(ep.seen)},
                      torch::kFloat64)};
    TRANSFERD_RETURN_IF_ERROR(coll->AllReduceSum(sums));
    ep.loss_sum = sums[0][0].item<double>();
    ep.correct = static_cast<int64_t>(std::llround(sums[0][1].item<double>()));
    ep.seen = static_cast<int64_t>(std::llround(sums[0][2].item<double>()));
  }

  const auto validation_start = Clock::now();
  EpochReport report;
  report.images_per_second =
      static_cast<double>(ep.seen) / std::max(1e-9, Seconds(ep.start));
  report.stage = ss.index;
  report.epoch = ep.epoch;
  report.loss = ep.seen ? ep.loss_sum / static_cast<double>(ep.seen) : 0;
  report.accuracy =
      ep.seen ? static_cast<double>(ep.correct) / static_cast<double>(ep.seen)
              : 0;
  report.learning_rate = ep.lr;
  if (!data.validation.empty()) {
    TRANSFERD_ASSIGN_OR_RETURN(EvalOut v, Evaluate("validation", ss.val_feats,
                                                   false, cb, ss.val_segment));
    report.has_validation = true;
    report.val_loss = v.loss;
    report.val_accuracy = v.accuracy;
  }
  report.seconds = Seconds(ep.start);
  // Logged by FinishEpoch, with the checkpoint's time.
  epoch_breakdown = absl::StrFormat(
      "epoch %d: %.1fs = data wait %.1fs + forward %.1fs + backward %.1fs + "
      "optimizer %.1fs + validation %.1fs%s",
      ep.epoch, report.seconds, ep.data_seconds, ep.forward_seconds,
      ep.backward_seconds, ep.optimizer_seconds, Seconds(validation_start),
      world() > 1 ? absl::StrFormat(
                        " (rank %d of %d: allreduce %.1fs in %d steps)",
                        coll->rank(), world(), ep.allreduce_seconds, ss.steps)
                  : std::string());
  return report;
}

// The epoch's training steps, each on a batch from the cached features (in
// the epoch's order) or the loader, under a background device turn.
absl::Status Trainer::Impl::TrainSteps(StageState& ss, EpochState& ep,
                                       RunState& st,
                                       const TrainerCallbacks& cb) {
  const int64_t batch_size = ss.config->batch_size;
  const int64_t global_batch = batch_size * world();
  const int64_t n_train = static_cast<int64_t>(data.train.size());
  std::vector<int64_t> order;
  if (ss.train_cached) {
    order = EpochOrder(static_cast<size_t>(n_train), config.seed, ep.epoch);
  } else {
    ss.loader->StartEpoch(ep.epoch);
  }
  auto last_report = Clock::now() - std::chrono::seconds(10);
  for (int64_t step = 1; step <= ss.steps; ++step) {
    if (cb.cancelled && cb.cancelled())
      return absl::CancelledError("training cancelled");
    // This step's global batch; this rank's part of it is the rank-th run
    // of batch_size examples (data::LoaderOptions::shard_index).
    const int64_t global_begin = (step - 1) * global_batch;
    const int64_t global_n =
        std::min<int64_t>(global_batch, n_train - global_begin);
    torch::Tensor x, y;
    std::vector<int64_t> examples;
    const auto phase_start = Clock::now();
    if (ss.train_cached) {
      const int64_t begin =
          std::min<int64_t>(n_train, global_begin + coll->rank() * batch_size);
      const int64_t end = std::min<int64_t>(
          {begin + batch_size, global_begin + global_batch, n_train});
      examples.assign(order.begin() + begin, order.begin() + end);
      const torch::Tensor idx =
          torch::tensor(examples, torch::kInt64).to(device);
      x = ss.train_feats.index_select(0, idx);
      y = ss.train_labels.index_select(0, idx);
    } else {
      TRANSFERD_ASSIGN_OR_RETURN(std::optional<data::Batch> batch,
                                 ss.loader->Next());
      if (!batch) break;
      x = batch->images.to(device);
      y = batch->labels.to(device);
      examples = std::move(batch->examples);
    }
    DeviceArbiter::Turn turn(env.arbiter, DeviceArbiter::Priority::kBackground);
    ep.data_seconds += Seconds(phase_start);
    TRANSFERD_RETURN_IF_ERROR(TrainStep(ss, x, y, examples, global_n, ep));
    if (cb.step_duration) cb.step_duration(Seconds(phase_start));
    ++st.steps_done;
    ++steps_this_run;
    if (cb.step && ep.seen > 0 &&
        (step == ss.steps ||
         std::chrono::duration<double>(Clock::now() - last_report).count() >=
             kStepReportInterval)) {
      last_report = Clock::now();
      cb.step(StepReportOf(ss, ep, step, st));
    }
  }
  return absl::OkStatus();
}

// One optimizer step on this rank's part (x, y) of a global batch of
// `global_n` examples: with several ranks the gradients are averaged over
// the global batch before the step, so every rank takes the same step one
// process would take on the whole batch.
absl::Status Trainer::Impl::TrainStep(StageState& ss, const torch::Tensor& x,
                                      const torch::Tensor& y,
                                      const std::vector<int64_t>& examples,
                                      int64_t global_n, EpochState& ep) {
  auto phase_start = Clock::now();
  // Gradients dropped rather than zeroed: backward then hands its
  // fresh gradient tensors over instead of adding them into zeros.
  for (auto& group : ss.optimizer->param_groups()) {
    for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
  }
  const int64_t n = y.size(0);
  torch::Tensor logits;
  if (n > 0) {
    model->SetDropoutKeys(DropoutKeys(examples, ep.epoch));
    {
      AutocastScope autocast(bf16, device);
      logits = ss.train_cached ? model->Head(x) : model->forward(x);
    }
    torch::Tensor loss =
        model->Loss(logits, y, config.label_smoothing, class_weights);
    ep.loss_sum += loss.item<double>() * static_cast<double>(n);
    ep.forward_seconds += Seconds(phase_start);
    phase_start = Clock::now();
    loss.backward();
    ep.backward_seconds += Seconds(phase_start);
  }
  if (world() > 1) {
    TRANSFERD_RETURN_IF_ERROR(AverageGradients(ss, n, global_n, ep));
  }
  phase_start = Clock::now();
  ss.optimizer->step();
  ep.optimizer_seconds += Seconds(phase_start);
  if (n > 0) {
    ep.correct += model->Predict(logits.detach()).eq(y).sum().item<int64_t>();
  }
  ep.seen += n;
  return absl::OkStatus();
}

// Each rank's gradient is the mean over its n examples; scaled by
// n / global_n and summed over the ranks it becomes the mean over the
// global batch (exactly what one process computes on it, a partial last
// batch included). Flattened into buckets, one allreduce per bucket.
absl::Status Trainer::Impl::AverageGradients(StageState& ss, int64_t n,
                                             int64_t global_n, EpochState& ep) {
  const auto start = Clock::now();
  torch::NoGradGuard no_grad;
  const double scale =
      global_n > 0 ? static_cast<double>(n) / static_cast<double>(global_n)
                   : 0.0;
  std::vector<torch::Tensor> params;
  for (auto& group : ss.optimizer->param_groups()) {
    for (auto& p : group.params()) params.push_back(p);
  }
  size_t first = 0;
  while (first < params.size()) {
    // [first, last): one bucket of float32 gradients.
    size_t last = first;
    int64_t bytes = 0;
    std::vector<torch::Tensor> parts;
    while (last < params.size() &&
           (last == first ||
            bytes + params[last].numel() * 4 <= kGradientBucketBytes)) {
      const torch::Tensor& p = params[last];
      const torch::Tensor& g = p.grad();
      parts.push_back(
          n > 0 && g.defined()
              ? (g.to(torch::kFloat32) * scale).reshape(-1)
              : torch::zeros({p.numel()}, p.options().dtype(torch::kFloat32)));
      bytes += p.numel() * 4;
      ++last;
    }
    std::vector<torch::Tensor> bucket{torch::cat(parts)};
    TRANSFERD_RETURN_IF_ERROR(coll->AllReduceSum(bucket));
    int64_t offset = 0;
    for (size_t i = first; i < last; ++i) {
      torch::Tensor& p = params[i];
      p.mutable_grad() = bucket[0]
                             .slice(0, offset, offset + p.numel())
                             .view(p.sizes())
                             .to(p.scalar_type());
      offset += p.numel();
    }
    first = last;
  }
  ep.allreduce_seconds += Seconds(start);
  return absl::OkStatus();
}

// Per example of a training batch, the key of its dropout mask: the same
// for an example in an epoch whatever batch or rank it is in.
std::vector<uint64_t> Trainer::Impl::DropoutKeys(
    const std::vector<int64_t>& examples, int epoch) const {
  const uint64_t epoch_seed = EpochTorchSeed(config.seed, epoch);
  std::vector<uint64_t> keys;
  keys.reserve(examples.size());
  for (int64_t e : examples) {
    keys.push_back(MixSeed(epoch_seed ^ MixSeed(static_cast<uint64_t>(e) + 1)));
  }
  return keys;
}

// With several ranks: every rank starts where rank 0 does. Rank 0's resumed
// run state and optimizer state (from its checkpoint) and then its weights
// (the checkpoint's, or its freshly built ones) go to every rank.
absl::Status Trainer::Impl::SyncStart(RunState& st,
                                      std::string& optimizer_bytes,
                                      bool& resumed) {
  if (world() == 1) return absl::OkStatus();
  std::string state;
  if (writer()) {
    json j = StateToJson(st);
    j["resumed"] = resumed;
    state = j.dump();
  }
  TRANSFERD_RETURN_IF_ERROR(BroadcastBytes(state));
  TRANSFERD_RETURN_IF_ERROR(BroadcastBytes(optimizer_bytes));
  if (!writer()) {
    json j;
    try {
      j = json::parse(state);
      resumed = j.at("resumed").get<bool>();
    } catch (const json::exception& e) {
      return absl::DataLossError(
          absl::StrCat("run state from rank 0: ", e.what()));
    }
    TRANSFERD_ASSIGN_OR_RETURN(st, StateFromJson(j));
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors, targets;
  for (const torch::Tensor& t : model->parameters()) targets.push_back(t);
  for (const torch::Tensor& t : model->buffers()) targets.push_back(t);
  for (const torch::Tensor& t : targets) tensors.push_back(t.contiguous());
  TRANSFERD_RETURN_IF_ERROR(coll->Broadcast(tensors, 0));
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!tensors[i].is_same(targets[i])) targets[i].copy_(tensors[i]);
  }
  return absl::OkStatus();
}

// Rank 0's `bytes` to every rank.
absl::Status Trainer::Impl::BroadcastBytes(std::string& bytes) {
  std::vector<torch::Tensor> size{
      torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64)};
  TRANSFERD_RETURN_IF_ERROR(coll->Broadcast(size, 0));
  const int64_t n = size[0][0].item<int64_t>();
  if (n == 0) {
    bytes.clear();
    return absl::OkStatus();
  }
  std::vector<torch::Tensor> data{torch::empty({n}, torch::kUInt8)};
  if (writer()) std::memcpy(data[0].data_ptr<uint8_t>(), bytes.data(), n);
  TRANSFERD_RETURN_IF_ERROR(coll->Broadcast(data, 0));
  bytes.assign(reinterpret_cast<const char*>(data[0].data_ptr<uint8_t>()),
               static_cast<size_t>(n));
  return absl::OkStatus();
}

StepReport Trainer::Impl::StepReportOf(const StageState& ss,
                                       const EpochState& ep, int64_t step,
                                       const RunState& st) const {
  StepReport r;
  r.stage = ss.index;
  r.epoch = ep.epoch;
  r.step = step;
  r.steps = ss.steps;
  r.loss = ep.loss_sum / static_cast<double>(ep.seen);
  r.accuracy = static_cast<double>(ep.correct) / static_cast<double>(ep.seen);
  r.images_per_second =
      static_cast<double>(ep.seen) / std::max(1e-9, Seconds(ep.start));
  r.eta_seconds =
      Seconds(run_start) / static_cast<double>(steps_this_run) *
      static_cast<double>(std::max<int64_t>(0, total_steps - st.steps_done));
  return r;
}

// After epoch `e` of the stage: its report into `st`, the best weights,
// early stopping and the schedule, then the epoch_end event and a
// checkpoint. Whether the stage stops early.
absl::StatusOr<bool> Trainer::Impl::FinishEpoch(StageState& ss, int e,
                                                const EpochReport& report,
                                                RunState& st,
                                                const TrainerCallbacks& cb) {
  const StageConfig& sc = *ss.config;
  const auto finish_start = Clock::now();
  st.history.push_back(report);
  st.global_epoch = report.epoch;
  st.stage_epochs_done = e + 1;
  TRANSFERD_RETURN_IF_ERROR(KeepIfBest(report, ss.pristine, st));
  const bool stop = EarlyStop(sc.early_stopping, report, st);
  UpdatePlateauLr(sc.lr_schedule, report, st);
  if (stop || e + 1 == sc.epochs) {
    st.stage = ss.index + 1;
    st.stage_epochs_done = 0;
  }
  if (cb.epoch_end) cb.epoch_end(report);
  int64_t bytes = 0;
  if (writer()) {
    TRANSFERD_ASSIGN_OR_RETURN(bytes, SaveCheckpoint(st, *ss.optimizer));
  }
  spdlog::info("{}; then best weights and checkpoint {:.2f}s", epoch_breakdown,
               Seconds(finish_start));
  if (cb.checkpoint_saved) cb.checkpoint_saved(report.epoch, bytes);
  return stop;
}

// Saves the weights as the best so far when the epoch beats the best on the
// selection metric. `pristine`: the backbone is still the initial one.
absl::Status Trainer::Impl::KeepIfBest(const EpochReport& report, bool pristine,
                                       RunState& st) {
  // "last" keeps every epoch's weights in turn (its value is the epoch).
  const bool last = config.selection_metric == "last";
  const double value =
      last ? report.epoch : MetricOf(report, config.selection_metric);
  const bool higher = last || HigherIsBetter(config.selection_metric);
  if (st.best_epoch == 0 ||
      (higher ? value > st.best_value : value < st.best_value)) {
    st.best_epoch = report.epoch;
    st.best_value = value;
    st.best_file = BestName(report.epoch);
    st.best_pristine = pristine;
    if (!writer()) return absl::OkStatus();
    TRANSFERD_RETURN_IF_ERROR(
        model->Save(env.checkpoint_dir / st.best_file,
                    {{"epoch", std::to_string(report.epoch)}}));
  }
  return absl::OkStatus();
}

// Reduce on plateau (val_loss, or loss without validation): the learning
// rate of the next epoch.
void Trainer::Impl::UpdatePlateauLr(const LrSchedule& l,
                                    const EpochReport& report,
                                    RunState& st) const {
  if (l.kind != LrSchedule::Kind::kReduceOnPlateau) return;
  const double lr = report.learning_rate;
  const double v = !data.validation.empty() ? report.val_loss : report.loss;
  if (!st.rop_init || v < st.rop_best - 1e-4) {
    st.rop_init = true;
    st.rop_best = v;
    st.rop_wait = 0;
  } else if (++st.rop_wait >= std::max(1, l.patience)) {
    st.lr = std::max(l.min_lr, lr * l.factor);
    st.rop_wait = 0;
  }
  if (st.lr <= 0) st.lr = lr;
}

// The best weights, evaluated and saved as best.safetensors.
absl::StatusOr<TrainResult> Trainer::Impl::FinishRun(
    const RunState& st, const TrainerCallbacks& cb) {
  TrainResult result;
  if (st.best_file.empty())
    return absl::InternalError("training produced no epoch");
  result.history = st.history;
  result.best_epoch = st.best_epoch;
  result.resumes = st.resumes;
  // The other ranks are done: rank 0 evaluates and writes the model.
  if (!writer()) return result;
  TRANSFERD_RETURN_IF_ERROR(model->Load(env.checkpoint_dir / st.best_file));
  model->FreezeBackboneBefore(first_trainable.back());
  result.trainable = model->Summary();
  for (const char* split : {"validation", "test"}) {
    if (Split(split).empty()) continue;
    TRANSFERD_ASSIGN_OR_RETURN(EvaluationReport r,
                               EvaluateSplit(split, st.best_pristine, cb));
    result.evaluations.push_back(std::move(r));
  }
  result.weights_file = env.checkpoint_dir / "best.safetensors";
  TRANSFERD_RETURN_IF_ERROR(
      model->Save(result.weights_file,
                  {{"epoch", std::to_string(st.best_epoch)},
                   {"selection_metric", config.selection_metric},
                   {"preprocessing",
                    backbones::Preprocessing::ModeName(preprocessing.mode)}}));
  result.features_computed = features_computed;
  result.activations_kept = activations_kept;
  result.features_loaded = features_loaded;
  return result;
}

// The final evaluation of `split`, from cached features when `cached` (the
// best weights' backbone is the initial one).
absl::StatusOr<EvaluationReport> Trainer::Impl::EvaluateSplit(
    const std::string& split, bool cached, const TrainerCallbacks& cb) {
  torch::Tensor feats;
  if (cached) {
    TRANSFERD_ASSIGN_OR_RETURN(feats, Features(split, cb));
  }
  TRANSFERD_ASSIGN_OR_RETURN(EvalOut out, Evaluate(split, feats, true, cb));
  return out.details->Finish(out.loss);
}

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

namespace {

// Create's checks of the config and the data, before anything is built.
absl::Status CheckConfigAndData(const TrainConfig& config,
                                const TrainData& data) {
  const bool has_val = !data.validation.empty();
  if (config.stages.empty()) {
    return absl::InvalidArgumentError("stages: at least one stage is required");
  }
  if (data.train.empty()) {
    return absl::InvalidArgumentError("dataset: no training examples");
  }
  const int num_classes = static_cast<int>(data.classes.size());
  for (const auto* split : {&data.train, &data.validation, &data.test}) {
    for (const auto& e : *split) {
      if (e.label < 0 || e.label >= num_classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("dataset: example ", e.path, " has label ", e.label,
                         " outside 0..", num_classes - 1));
      }
    }
  }
  if (config.selection_metric != "last") {
    TRANSFERD_RETURN_IF_ERROR(
        CheckMetric("selection_metric", config.selection_metric, has_val));
  }
  if (!(config.label_smoothing >= 0 && config.label_smoothing < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label_smoothing: must be in [0, 1), got ", config.label_smoothing));
  }
  for (size_t i = 0; i < config.stages.size(); ++i) {
    TRANSFERD_RETURN_IF_ERROR(ValidateStage(
        config.stages[i], absl::StrCat("stages[", i, "]."), has_val));
  }
  return absl::OkStatus();
}

// Feature cache key: everything that determines a backbone feature.
std::string FeatureKey(const TrainConfig& config, const TrainData& data,
                       const TrainerEnv& env,
                       const backbones::Preprocessing& p) {
  const ModelConfig& m = config.model;
  std::string weights_id = m.weights;
  if (m.weights != "none" && m.weights != "imagenet") {
    struct stat sb {};
    const fs::path file = env.weights.dir / m.weights;
    if (::stat(file.c_str(), &sb) == 0) {
      weights_id = absl::StrCat(m.weights, ":", sb.st_size, ":",
                                sb.st_mtim.tv_sec, ".", sb.st_mtim.tv_nsec);
    }
  }
  // Random weights are only reproducible from the seed.
  if (m.weights == "none") weights_id = absl::StrCat("none:seed=", config.seed);
  common::Sha256 sha;
  sha.Update(absl::StrCat(
      "transferd-features-v1\n", data.dataset_id, "\n", m.backbone, "\n",
      absl::StrFormat("%.6f", m.alpha), "\n", weights_id, "\n", m.input_size,
      "\n", backbones::Preprocessing::ModeName(p.mode), p.bgr ? ":bgr" : ":rgb",
      absl::StrFormat(":%.9g:%.9g,%.9g,%.9g:%.9g,%.9g,%.9g", p.scale, p.mean[0],
                      p.mean[1], p.mean[2], p.std[0], p.std[1], p.std[2]),
      "\n", m.precision, "\n",
      env.device.kind == ComputeDevice::Kind::kCuda ? "cuda" : "cpu"));
  return data.dataset_id.empty() || !env.use_feature_cache
             ? ""
             : sha.HexDigest().substr(0, 32);
}

// The digest a checkpoint must match to be resumed.
std::string ConfigDigest(const TrainConfig& config, const TrainData& data) {
  common::Sha256 sha;
  sha.Update(ConfigToJson(config));
  sha.Update(absl::StrCat("\n", data.dataset_id, "\n", data.train.size(), "/",
                          data.validation.size(), "/", data.test.size(), "\n",
                          ExamplesDigest(data.train)));
  return sha.HexDigest();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainConfig config,
                                                         TrainData data,
                                                         TrainerEnv env) {
  TRANSFERD_RETURN_IF_ERROR(CheckConfigAndData(config, data));
  const int num_classes = static_cast<int>(data.classes.size());
  auto impl = std::make_unique<Impl>();
  try {
    torch::manual_seed(config.seed);
    ModelConfig build = config.model;
    if (env.weights_from_rank0) {
      build.weights = "none";
      build.init_weights_file.clear();
    }
    TRANSFERD_ASSIGN_OR_RETURN(
        impl->model, BuildClassifier(build, num_classes, env.weights));
    for (size_t i = 0; i < config.stages.size(); ++i) {
      absl::StatusOr<int> index =
          impl->model->ResolveTrainableFrom(config.stages[i].trainable_from);
      if (!index.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "stages[", i, "].trainable_from: ", index.status().message()));
      }
      impl->first_trainable.push_back(*index);
      impl->model->FreezeBackboneBefore(*index);
      impl->stage_frozen.push_back(impl->model->backbone_frozen());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the model: ", e.what()));
  }
  impl->device = ToTorchDevice(env.device);
  impl->preprocessing = impl->model->backbone().DefaultPreprocessing();
  impl->bf16 = config.model.precision == "bf16";
  impl->feature_key = FeatureKey(config, data, env, impl->preprocessing);
  impl->config_digest = ConfigDigest(config, data);
  impl->config = std::move(config);
  impl->data = std::move(data);
  {
    std::vector<int64_t> counts(static_cast<size_t>(num_classes), 0);
    for (const auto& e : impl->data.train) ++counts[e.label];
    const std::vector<double> w =
        ClassLossWeights(impl->config.class_weights, counts);
    if (!w.empty()) {
      impl->class_weights = torch::tensor(w, torch::kFloat64)
                                .to(torch::kFloat32)
                                .to(impl->device);
    }
  }
  impl->coll = env.collective ? env.collective : SoloCollective();
  impl->env = std::move(env);
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

absl::StatusOr<TrainResult> Trainer::Run(const TrainerCallbacks& callbacks) {
  try {
    return impl_->Run(callbacks);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("training failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

absl::StatusOr<TrainableSummary> DescribeStage(const ModelConfig& model,
                                               const StageConfig& stage,
                                               int num_classes) {
  TRANSFERD_RETURN_IF_ERROR(ValidateStage(stage, "", std::nullopt));
  try {
    TRANSFERD_ASSIGN_OR_RETURN(
        Classifier classifier,
        BuildClassifier(model, num_classes, backbones::WeightsCacheOptions(),
                        false));
    absl::Status s = classifier->SetTrainableFrom(stage.trainable_from);
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("trainable_from: ", s.message()));
    }
    return classifier->Summary();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the model: ", e.what()));
  }
}

}  // namespace transferd::core::train
