// EvalAccumulator (eval_metrics.h).
#include "server/core/train/eval_metrics.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <utility>

#include "server/core/train/train_util.h"

namespace transferd::core::train {

int EffectiveTopK(int requested, int num_classes) {
  const int k = requested > 0 ? requested : num_classes <= 2 ? 1 : kDefaultTopK;
  return std::max(1, std::min(k, num_classes));
}

std::vector<ClassProbability> TopClasses(const float* probabilities, int n,
                                         int k) {
  k = std::max(0, std::min(k, n));
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) {
                      return probabilities[a] > probabilities[b] ||
                             (probabilities[a] == probabilities[b] && a < b);
                    });
  std::vector<ClassProbability> out;
  out.reserve(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i)
    out.push_back({order[i], probabilities[order[i]]});
  return out;
}

EvalAccumulator::EvalAccumulator(std::string split, int num_classes, int top_k)
    : split_(std::move(split)), num_classes_(num_classes), top_k_(top_k) {}

void EvalAccumulator::Add(int64_t label, int64_t predicted, double confidence,
                          bool in_top_k, double positive_score) {
  labels_.push_back(label);
  predicted_.push_back(predicted);
  confidence_.push_back(confidence);
  top_k_hits_ += in_top_k ? 1 : 0;
  if (num_classes_ == 2) positive_scores_.push_back(positive_score);
}

EvaluationReport EvalAccumulator::Finish(double mean_loss) const {
  EvaluationReport r;
  r.split = split_;
  r.num_classes = num_classes_;
  r.examples = examples();
  if (r.examples == 0) return r;
  const auto n = static_cast<double>(r.examples);
  r.loss = mean_loss;
  std::map<std::pair<int32_t, int32_t>, int64_t> cells;
  std::vector<int64_t> per_class(static_cast<size_t>(num_classes_), 0);
  std::vector<int64_t> per_class_right(static_cast<size_t>(num_classes_), 0);
  std::vector<bool> correct(labels_.size());
  int64_t right = 0;
  for (size_t i = 0; i < labels_.size(); ++i) {
    const int64_t t = labels_[i];
    const int64_t p = predicted_[i];
    correct[i] = t == p;
    right += correct[i] ? 1 : 0;
    if (t >= 0 && t < num_classes_) {
      ++per_class[static_cast<size_t>(t)];
      per_class_right[static_cast<size_t>(t)] += correct[i] ? 1 : 0;
    }
    ++cells[{static_cast<int32_t>(t), static_cast<int32_t>(p)}];
  }
  r.accuracy = static_cast<double>(right) / n;
  double recall_sum = 0;
  int present = 0;
  for (size_t c = 0; c < per_class.size(); ++c) {
    if (per_class[c] == 0) continue;
    ++present;
    recall_sum += static_cast<double>(per_class_right[c]) /
                  static_cast<double>(per_class[c]);
  }
  r.macro_accuracy = present > 0 ? recall_sum / present : 0;
  if (top_k_ > 1 && top_k_ < num_classes_) {
    r.top_k = top_k_;
    r.top_k_accuracy = static_cast<double>(top_k_hits_) / n;
  }
  r.gap = GlobalAveragePrecision(confidence_, correct);
  for (const auto& [at, count] : cells)
    r.confusion.push_back({at.first, at.second, count});
  if (num_classes_ == 2) r.roc_auc = RocAuc(positive_scores_, labels_);
  return r;
}

double GlobalAveragePrecision(const std::vector<double>& confidence,
                              const std::vector<bool>& correct) {
  const size_t n = std::min(confidence.size(), correct.size());
  if (n == 0) return 0;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  // Most confident first; equal confidences keep the input order, so the
  // result does not depend on the sort's whims.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return confidence[a] > confidence[b];
  });
  double sum = 0;
  int64_t hits = 0;
  for (size_t rank = 0; rank < n; ++rank) {
    if (!correct[order[rank]]) continue;
    ++hits;
    sum += static_cast<double>(hits) / static_cast<double>(rank + 1);
  }
  return sum / static_cast<double>(n);
}

std::vector<ConfusionCell> TopConfusions(const EvaluationReport& report,
                                         int n) {
  std::vector<ConfusionCell> off;
  for (const ConfusionCell& c : report.confusion) {
    if (c.truth != c.predicted && c.count > 0) off.push_back(c);
  }
  std::stable_sort(off.begin(), off.end(),
                   [](const ConfusionCell& a, const ConfusionCell& b) {
                     return a.count > b.count;
                   });
  if (static_cast<int>(off.size()) > n) off.resize(static_cast<size_t>(n));
  return off;
}

std::vector<ConfusionCell> CellsOfDense(
    const std::vector<std::vector<int64_t>>& dense) {
  std::vector<ConfusionCell> out;
  for (size_t t = 0; t < dense.size(); ++t) {
    for (size_t p = 0; p < dense[t].size(); ++p) {
      if (dense[t][p] != 0)
        out.push_back(
            {static_cast<int32_t>(t), static_cast<int32_t>(p), dense[t][p]});
    }
  }
  return out;
}

}  // namespace transferd::core::train
