// The evaluation metrics for many classes: GAP, top-k and macro accuracy,
// the sparse confusion matrix and its top confusions, the default k, top
// classes, and the class weights of the training loss.
#include "server/core/train/eval_metrics.h"

#include <gtest/gtest.h>

#include "server/core/train/train_json.h"
#include "server/core/train/train_util.h"

namespace transferd::core::train {
namespace {

TEST(GapTest, RanksByConfidence) {
  // Right at ranks 1 and 3 of 4: (1/1 + 2/3) / 4.
  EXPECT_NEAR(
      GlobalAveragePrecision({0.6, 0.9, 0.8, 0.7}, {false, true, false, true}),
      (1.0 + 2.0 / 3.0) / 4.0, 1e-12);
  // The same answers, ranked the other way round, score lower: GAP rewards
  // being sure of the right ones.
  EXPECT_NEAR(
      GlobalAveragePrecision({0.9, 0.6, 0.7, 0.8}, {false, true, false, true}),
      (1.0 / 2.0 + 2.0 / 4.0) / 4.0, 1e-12);
  EXPECT_DOUBLE_EQ(GlobalAveragePrecision({0.5, 0.4}, {true, true}), 1.0);
  EXPECT_DOUBLE_EQ(GlobalAveragePrecision({0.5, 0.4}, {false, false}), 0.0);
  EXPECT_DOUBLE_EQ(GlobalAveragePrecision({}, {}), 0.0);
}

TEST(EvalAccumulatorTest, ManyClassMetrics) {
  // 4 classes, top-2. Class 0 has 3 examples (2 right), class 1 one (right),
  // class 3 two (none right); class 2 has none.
  EvalAccumulator acc("validation", 4, 2);
  acc.Add(0, 0, 0.9, true);
  acc.Add(0, 0, 0.8, true);
  acc.Add(0, 3, 0.7, true);  // runner-up right
  acc.Add(1, 1, 0.6, true);
  acc.Add(3, 0, 0.95, false);
  acc.Add(3, 0, 0.5, true);
  const EvaluationReport r = acc.Finish(1.25);
  EXPECT_EQ(r.split, "validation");
  EXPECT_EQ(r.examples, 6);
  EXPECT_DOUBLE_EQ(r.loss, 1.25);
  EXPECT_DOUBLE_EQ(r.accuracy, 3.0 / 6.0);
  EXPECT_EQ(r.top_k, 2);
  EXPECT_DOUBLE_EQ(r.top_k_accuracy, 5.0 / 6.0);
  // (2/3 + 1/1 + 0/2) / 3 classes present.
  EXPECT_DOUBLE_EQ(r.macro_accuracy, (2.0 / 3.0 + 1.0) / 3.0);
  // Ranked: 0.95 x, 0.9 v, 0.8 v, 0.7 x, 0.6 v, 0.5 x.
  EXPECT_NEAR(r.gap, (1.0 / 2 + 2.0 / 3 + 3.0 / 5) / 6, 1e-12);
  EXPECT_EQ(r.num_classes, 4);
  EXPECT_EQ(r.roc_auc, -1);
  // Non-zero cells only, row-major.
  ASSERT_EQ(r.confusion.size(), 4u);
  EXPECT_EQ(r.confusion[0].truth, 0);
  EXPECT_EQ(r.confusion[0].predicted, 0);
  EXPECT_EQ(r.confusion[0].count, 2);
  EXPECT_EQ(r.confusion[1].predicted, 3);
  EXPECT_EQ(r.confusion[3].truth, 3);
  EXPECT_EQ(r.confusion[3].predicted, 0);
  EXPECT_EQ(r.confusion[3].count, 2);
  const std::vector<ConfusionCell> top = TopConfusions(r, 10);
  ASSERT_EQ(top.size(), 2u);  // the diagonal is not a confusion
  EXPECT_EQ(top[0].truth, 3);
  EXPECT_EQ(top[0].count, 2);
  EXPECT_EQ(top[1].truth, 0);
  EXPECT_EQ(TopConfusions(r, 1).size(), 1u);
}

TEST(EvalAccumulatorTest, TwoClassesGetRocAucAndNoTopK) {
  EvalAccumulator acc("test", 2, EffectiveTopK(0, 2));
  acc.Add(1, 1, 0.9, true, 2.0);
  acc.Add(0, 0, 0.8, true, -1.0);
  acc.Add(1, 0, 0.6, false, -1.5);
  acc.Add(0, 0, 0.7, true, -2.0);
  const EvaluationReport r = acc.Finish(0.3);
  EXPECT_EQ(r.top_k, 0);
  // Positive scores 2.0, -1.5 against negatives -1.0, -2.0: 3 of 4 pairs.
  EXPECT_DOUBLE_EQ(r.roc_auc, 0.75);
}

TEST(EvalAccumulatorTest, EmptyIsZero) {
  const EvaluationReport r = EvalAccumulator("validation", 5, 3).Finish(0);
  EXPECT_EQ(r.examples, 0);
  EXPECT_TRUE(r.confusion.empty());
}

TEST(TopKTest, DefaultsAndClamping) {
  EXPECT_EQ(EffectiveTopK(0, 2), 1);
  EXPECT_EQ(EffectiveTopK(0, 1049), kDefaultTopK);
  EXPECT_EQ(EffectiveTopK(0, 3), 3);
  EXPECT_EQ(EffectiveTopK(10, 4), 4);
  EXPECT_EQ(EffectiveTopK(3, 1049), 3);
  const float p[] = {0.1f, 0.4f, 0.1f, 0.4f};
  const std::vector<ClassProbability> top = TopClasses(p, 4, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].index, 1);  // equal probabilities: class order
  EXPECT_EQ(top[1].index, 3);
  EXPECT_EQ(top[2].index, 0);
  EXPECT_FLOAT_EQ(top[2].probability, 0.1f);
  EXPECT_TRUE(TopClasses(p, 4, 0).empty());
}

TEST(EvaluationJsonTest, CellsRoundTripAndOldDenseMatricesStillRead) {
  EvalAccumulator acc("validation", 3, 2);
  acc.Add(0, 0, 0.9, true);
  acc.Add(2, 1, 0.6, true);
  const EvaluationReport r = acc.Finish(0.5);
  absl::StatusOr<std::vector<EvaluationReport>> back =
      EvaluationsFromJson(EvaluationsToJson({r}));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 1u);
  const EvaluationReport& b = (*back)[0];
  EXPECT_EQ(b.num_classes, 3);
  EXPECT_EQ(b.top_k, 2);
  EXPECT_DOUBLE_EQ(b.top_k_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(b.gap, r.gap);
  EXPECT_DOUBLE_EQ(b.macro_accuracy, r.macro_accuracy);
  ASSERT_EQ(b.confusion.size(), 2u);
  EXPECT_EQ(b.confusion[1].truth, 2);
  EXPECT_EQ(b.confusion[1].predicted, 1);

  // A record written before cells existed: a dense matrix.
  back = EvaluationsFromJson(
      R"([{"split":"test","loss":0.1,"accuracy":0.5,"roc_auc":-1,)"
      R"("examples":4,"confusion":[[1,2],[0,1]]}])");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)[0].num_classes, 2);
  ASSERT_EQ((*back)[0].confusion.size(), 3u);
  EXPECT_EQ((*back)[0].confusion[1].predicted, 1);
  EXPECT_EQ((*back)[0].confusion[1].count, 2);
  EXPECT_EQ((*back)[0].top_k, 0);

  // A cell outside the matrix is data loss, not a crash later.
  back = EvaluationsFromJson(
      R"([{"split":"test","loss":0.1,"accuracy":0.5,"roc_auc":-1,)"
      R"("examples":4,"classes":2,"confusion_cells":[[0,5,1]]}])");
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ClassLossWeightsTest, BalancedAndSqrtAverageOneOverTheExamples) {
  EXPECT_TRUE(ClassLossWeights("none", {1, 3}).empty());
  std::vector<double> w = ClassLossWeights("balanced", {1, 3, 0});
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[0], 4.0 / (2 * 1), 1e-12);  // n / (K * n_c)
  EXPECT_NEAR(w[1], 4.0 / (2 * 3), 1e-12);
  EXPECT_EQ(w[2], 0);
  EXPECT_NEAR((1 * w[0] + 3 * w[1]) / 4, 1.0, 1e-12);
  w = ClassLossWeights("balanced-sqrt", {1, 4});
  EXPECT_NEAR(w[0] / w[1], 2.0, 1e-12);  // sqrt(4 / 1)
  EXPECT_NEAR((1 * w[0] + 4 * w[1]) / 5, 1.0, 1e-12);
}

}  // namespace
}  // namespace transferd::core::train
