// Classification metrics of one evaluated split, shared by the trainer's
// final evaluations and PREDICT jobs: loss, top-1 and top-k accuracy,
// macro-averaged accuracy, Global Average Precision, ROC AUC (two classes)
// and the confusion matrix kept as its non-zero cells, so that 1,049 classes
// cost what their mistakes cost, not 1.1 million zeros.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/core/train/train_config.h"

namespace transferd::core::train {

// The k of top-k accuracy when a job sets none.
inline constexpr int kDefaultTopK = 5;

// What a job reports per prediction and measures as top-k accuracy: the
// job's `top_k` when set, else 1 for two classes and kDefaultTopK otherwise;
// never more than the classes.
int EffectiveTopK(int requested, int num_classes);

// One class and its probability.
struct ClassProbability {
  int32_t index = 0;
  float probability = 0;
};

// The `k` most probable of `n` classes, most probable first; equal
// probabilities keep the class order.
std::vector<ClassProbability> TopClasses(const float* probabilities, int n,
                                         int k);

// Adds examples one at a time, then Finish() makes the report.
class EvalAccumulator {
 public:
  // `top_k`: the k of the top-k accuracy; it is measured only when
  // 1 < top_k < num_classes.
  EvalAccumulator(std::string split, int num_classes, int top_k);

  // One example: its true class, the predicted (most probable) class, that
  // class's probability (the confidence GAP ranks by), whether the true
  // class is among the `top_k` most probable, and for two classes the
  // positive class's score (for ROC AUC).
  void Add(int64_t label, int64_t predicted, double confidence, bool in_top_k,
           double positive_score = 0);

  int64_t examples() const { return static_cast<int64_t>(labels_.size()); }
  // The report, with `mean_loss` as its loss (the caller owns the loss
  // function: label smoothing, binary or categorical).
  EvaluationReport Finish(double mean_loss) const;

 private:
  std::string split_;
  int num_classes_, top_k_;
  int64_t top_k_hits_ = 0;
  std::vector<int64_t> labels_, predicted_;
  std::vector<double> confidence_, positive_scores_;
};

// Global Average Precision (Kaggle's landmark-recognition metric, micro
// AP): predictions ranked by confidence, GAP = (1/N) * sum over ranks i of
// precision@i * correct(i). 0 for no examples.
double GlobalAveragePrecision(const std::vector<double>& confidence,
                              const std::vector<bool>& correct);

// The `n` largest off-diagonal cells, largest first (ties: by true class,
// then predicted class).
std::vector<ConfusionCell> TopConfusions(const EvaluationReport& report, int n);

// Non-zero cells of a dense [true][predicted] matrix, row-major.
std::vector<ConfusionCell> CellsOfDense(
    const std::vector<std::vector<int64_t>>& dense);

}  // namespace transferd::core::train
