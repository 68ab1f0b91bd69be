// PredictionRunner (prediction_runner.h): PREDICT jobs.
#include "server/core/jobs/prediction_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/data/images.h"
#include "server/core/datasets.h"
#include "server/core/device_arbiter.h"
#include "server/core/jobs/job_store.h"
#include "server/core/predictor.h"
#include "server/core/registry.h"
#include "server/core/train/eval_metrics.h"
#include "server/core/train/train_util.h"
#include "server/core/util/status_macros.h"

namespace transferd::core {
namespace {

using SteadyClock = std::chrono::steady_clock;

absl::StatusOr<common::Split> SplitFromName(const std::string& name) {
  if (name == "train") return common::Split::kTrain;
  if (name == "validation") return common::Split::kValidation;
  if (name == "test") return common::Split::kTest;
  return absl::InvalidArgumentError(
      absl::StrCat("spec.predict.splits: \"", name,
                   "\" is not a split (train, validation, test)"));
}

absl::Status ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  out->assign(std::istreambuf_iterator<char>(in), {});
  return absl::OkStatus();
}

constexpr int kPredictBatch = 32;

// One batch of files decoded: the decodable ones' pixels packed at the front
// of `pixels`, in the order of `ok` (their indices in the batch).
struct DecodedBatch {
  std::vector<uint8_t> pixels;
  std::vector<absl::Status> status;  // per file of the batch
  std::vector<int64_t> ok;
};

DecodedBatch DecodeBatch(const std::vector<DatasetFile>& files, int64_t begin,
                         int64_t count, int size, size_t image_bytes) {
  ImageLimits limits;  // files were validated at upload; this bounds a decode
  DecodedBatch b;
  b.pixels.resize(image_bytes * static_cast<size_t>(count));
  b.status.resize(static_cast<size_t>(count));
  // Two decoders: this thread takes the even files, a helper the odd ones.
  auto decode = [&](int64_t parity) {
    std::string bytes;
    for (int64_t i = parity; i < count; i += 2) {
      absl::Status st = ReadWholeFile(files[begin + i].path, &bytes);
      if (st.ok()) {
        st = DecodeResized(bytes, limits, size,
                           b.pixels.data() + i * image_bytes);
      }
      b.status[i] = st;
    }
  };
  std::thread helper(decode, 1);
  decode(0);
  helper.join();
  // The decodable ones, packed.
  for (int64_t i = 0; i < count; ++i) {
    if (!b.status[i].ok()) continue;
    if (static_cast<int64_t>(b.ok.size()) != i) {
      std::memmove(b.pixels.data() + b.ok.size() * image_bytes,
                   b.pixels.data() + i * image_bytes, image_bytes);
    }
    b.ok.push_back(i);
  }
  return b;
}

// Every stored row of the job, in dataset order.
absl::StatusOr<std::vector<FilePredictionRecord>> AllRows(
    JobStore& store, const std::string& id) {
  TRANSFERD_ASSIGN_OR_RETURN(PredictionsPage all,
                             store.Predictions(id, 10000, ""));
  std::vector<FilePredictionRecord> rows = std::move(all.predictions);
  while (!all.next_page_token.empty()) {
    TRANSFERD_ASSIGN_OR_RETURN(
        all, store.Predictions(id, 10000, all.next_page_token));
    for (auto& r : all.predictions) rows.push_back(std::move(r));
  }
  return rows;
}

// Metrics of one split over its decoded rows; nullopt when it has none or a
// true label is not one of the model's classes.
std::optional<train::EvaluationReport> EvaluateSplit(
    const std::vector<FilePredictionRecord>& rows, const char* split,
    const std::vector<std::string>& classes, int k, int top_k) {
  train::EvalAccumulator acc(split, k, top_k);
  double loss = 0;
  for (const FilePredictionRecord& r : rows) {
    if (std::string_view(common::SplitName(r.split)) != split ||
        r.status_code != 0 || r.top.empty())
      continue;
    const auto t = std::find(classes.begin(), classes.end(), r.true_label);
    if (t == classes.end()) return std::nullopt;
    const int64_t truth = t - classes.begin();
    const bool in_top = std::any_of(
        r.top.begin(), r.top.end(),
        [&](const train::ClassProbability& c) { return c.index == truth; });
    acc.Add(truth, r.top[0].index, r.top[0].probability, in_top,
            k == 2 && r.probabilities.size() == 2 ? r.probabilities[1] : 0);
    loss -= std::log(std::clamp<double>(r.true_probability, 1e-7, 1.0 - 1e-7));
  }
  if (acc.examples() == 0) return std::nullopt;
  return acc.Finish(loss / static_cast<double>(acc.examples()));
}

// One pass over a PREDICT job's files, from the first one not yet stored.
class PredictionPass {
 public:
  PredictionPass(JobRecord& job, JobContext& ctx, const ModelInfo& model,
                 const DatasetInfo& dataset,
                 const std::vector<DatasetFile>& files, ModelRunner& runner,
                 int64_t done)
      : job_(job),
        ctx_(ctx),
        model_(model),
        dataset_(dataset),
        files_(files),
        runner_(runner),
        n_(static_cast<int64_t>(files.size())),
        steps_((n_ + kPredictBatch - 1) / kPredictBatch),
        first_(done),
        size_(runner.input_size()),
        k_(runner.num_classes()),
        top_k_(train::EffectiveTopK(job.config.top_k, k_)),
        image_bytes_(static_cast<size_t>(size_) * size_ * 3) {
    for (const std::string& c : dataset.classes) {
      const auto t = std::find(model.classes.begin(), model.classes.end(), c);
      const int64_t at = t - model.classes.begin();
      truth_index_.push_back(t != model.classes.end() && at < k_ ? at : -1);
    }
  }

  absl::Status Run();

 private:
  absl::Status Batch(int64_t begin);
  // The rows of files [begin, begin + count): labels, statuses, and the
  // probabilities of the decoded ones.
  std::vector<FilePredictionRecord> Rows(int64_t begin, int64_t count,
                                         const DecodedBatch& batch,
                                         const std::vector<float>& probs) const;
  // Progress after files up to `end` are stored; a step event at most every
  // kStepEventInterval, and at the end.
  void Report(int64_t end);

  JobRecord& job_;
  JobContext& ctx_;
  const ModelInfo& model_;
  const DatasetInfo& dataset_;
  const std::vector<DatasetFile>& files_;
  ModelRunner& runner_;
  const int64_t n_, steps_, first_;
  const int size_, k_, top_k_;
  const size_t image_bytes_;
  // Dataset class index -> the model's class index, -1 when not a class of
  // the model.
  std::vector<int64_t> truth_index_;
  SteadyClock::time_point last_step_ = SteadyClock::now() - kStepEventInterval;
  SteadyClock::time_point started_ = SteadyClock::now();
};

absl::Status PredictionPass::Run() {
  job_.progress.stages = 1;
  job_.progress.epochs = 1;
  job_.progress.epoch = 1;
  job_.progress.steps = steps_;
  if (first_ > 0) {
    JobEvent e;
    e.type = JobEvent::Type::kLog;
    e.level = "info";
    e.message = absl::StrCat("continuing after ", first_, " of ", n_,
                             " files already predicted");
    (void)ctx_.Append(e);
  }
  last_step_ = SteadyClock::now() - kStepEventInterval;
  started_ = SteadyClock::now();
  for (int64_t begin = first_; begin < n_; begin += kPredictBatch) {
    if (ctx_.Cancelled()) return absl::CancelledError("prediction cancelled");
    TRANSFERD_RETURN_IF_ERROR(Batch(begin));
  }
  return absl::OkStatus();
}

absl::Status PredictionPass::Batch(int64_t begin) {
  const int64_t end = std::min<int64_t>(begin + kPredictBatch, n_);
  const int64_t count = end - begin;
  const DecodedBatch batch =
      DecodeBatch(files_, begin, count, size_, image_bytes_);
  std::vector<float> probs;
  if (!batch.ok.empty()) {
    DeviceArbiter::Turn turn(ctx_.arbiter(),
                             DeviceArbiter::Priority::kBackground);
    TRANSFERD_ASSIGN_OR_RETURN(
        probs,
        runner_.Run(batch.pixels.data(), static_cast<int64_t>(batch.ok.size()),
                    job_.config.predict_flip_tta));
  }
  const std::vector<FilePredictionRecord> rows =
      Rows(begin, count, batch, probs);
  std::vector<common::Split> splits(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) splits[i] = files_[begin + i].split;
  TRANSFERD_RETURN_IF_ERROR(
      ctx_.store().PutPredictions(job_.id, begin, rows, splits));
  Report(end);
  return absl::OkStatus();
}

std::vector<FilePredictionRecord> PredictionPass::Rows(
    int64_t begin, int64_t count, const DecodedBatch& batch,
    const std::vector<float>& probs) const {
  std::vector<FilePredictionRecord> rows(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const DatasetFile& f = files_[begin + i];
    FilePredictionRecord& r = rows[i];
    r.client_path = f.client_path;
    r.split = f.split;
    if (f.label >= 0 &&
        f.label < static_cast<int64_t>(dataset_.classes.size())) {
      r.true_label = dataset_.classes[f.label];
    }
    if (!batch.status[i].ok()) {
      r.status_code = static_cast<int>(batch.status[i].code());
      r.status_message = std::string(batch.status[i].message());
    }
  }
  for (size_t j = 0; j < batch.ok.size(); ++j) {
    const int64_t i = batch.ok[j];
    FilePredictionRecord& r = rows[i];
    const float* p = probs.data() + static_cast<int64_t>(j) * k_;
    if (k_ <= kAllProbabilitiesMaxClasses) r.probabilities.assign(p, p + k_);
    r.top = train::TopClasses(p, k_, top_k_);
    r.label = model_.classes[r.top[0].index];
    const int64_t label = files_[begin + i].label;
    if (label >= 0 && label < static_cast<int64_t>(truth_index_.size()) &&
        truth_index_[label] >= 0)
      r.true_probability = p[truth_index_[label]];
  }
  return rows;
}

void PredictionPass::Report(int64_t end) {
  const int64_t step = end == n_ ? steps_ : end / kPredictBatch;
  job_.progress.step = step;
  const double seconds =
      std::chrono::duration<double>(SteadyClock::now() - started_).count();
  const double rate =
      static_cast<double>(end - first_) / std::max(seconds, 1e-9);
  job_.progress.eta_seconds =
      static_cast<double>(n_ - end) / std::max(rate, 1e-9);
  const auto now = SteadyClock::now();
  if (now - last_step_ >= kStepEventInterval || end == n_) {
    last_step_ = now;
    JobEvent e;
    e.type = JobEvent::Type::kStep;
    e.step.epoch = 1;
    e.step.step = step;
    e.step.steps = steps_;
    e.step.images_per_second = rate;
    e.step.eta_seconds = job_.progress.eta_seconds;
    (void)ctx_.Append(e);
    (void)ctx_.SaveRunState(job_);
  }
}

}  // namespace

absl::StatusOr<std::vector<common::Split>> PredictSplits(
    const train::TrainConfig& config) {
  std::vector<common::Split> splits;
  for (const std::string& name : config.predict_splits) {
    TRANSFERD_ASSIGN_OR_RETURN(common::Split split, SplitFromName(name));
    splits.push_back(split);
  }
  return splits;
}

absl::Status PredictionRunner::Run(JobRecord& job, JobContext& ctx) {
  TRANSFERD_ASSIGN_OR_RETURN(ModelInfo model, env_.models->Get(job.base_model));
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<common::Split> splits,
                             PredictSplits(job.config));
  TRANSFERD_ASSIGN_OR_RETURN(DatasetInfo dataset,
                             env_.datasets->Get(job.dataset_id));
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<DatasetFile> files,
                             env_.datasets->Files(job.dataset_id, splits));
  // Rows stored before a restart are kept; the job continues after them.
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t done,
                             ctx.store().NextPredictionIndex(job.id));
  TRANSFERD_ASSIGN_OR_RETURN(
      std::unique_ptr<ModelRunner> runner,
      ModelRunner::Load(model, env_.device, env_.weights));
  PredictionPass pass(job, ctx, model, dataset, files, *runner, done);
  TRANSFERD_RETURN_IF_ERROR(pass.Run());

  // Metrics per split over every stored row, when the dataset's labels are
  // classes of the model.
  TRANSFERD_ASSIGN_OR_RETURN(std::vector<FilePredictionRecord> rows,
                             AllRows(ctx.store(), job.id));
  job.evaluations.clear();
  for (const char* split : {"train", "validation", "test"}) {
    std::optional<train::EvaluationReport> report = EvaluateSplit(
        rows, split, model.classes, runner->num_classes(),
        train::EffectiveTopK(job.config.top_k, runner->num_classes()));
    if (report.has_value()) job.evaluations.push_back(*std::move(report));
  }
  TRANSFERD_RETURN_IF_ERROR(ctx.SaveRunState(job));
  for (const train::EvaluationReport& r : job.evaluations) {
    JobEvent e;
    e.type = JobEvent::Type::kEvaluation;
    e.evaluation = r;
    TRANSFERD_RETURN_IF_ERROR(ctx.Append(e));
  }
  return absl::OkStatus();
}

}  // namespace transferd::core
