// Listings stay lean with many classes: a page of 50 models, or of 50 jobs,
// trained on 1,049 classes (the landmark exercise) with 30 epochs of history
// and validation and test evaluations each, stays under 1 MiB on gRPC and as
// the HTTP API's JSON, while Get keeps everything (one model alone, with its
// two 1,049 x 1,049 confusion matrices, is over 1 MiB).
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "server/core/api/engine_api.h"
#include "server/core/model_info.h"
#include "server/core/train/eval_metrics.h"
#include "server/rpc/conversions.h"
#include "transferd/v1/jobs.pb.h"
#include "transferd/v1/models.pb.h"

namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;
constexpr int kClasses = 1049;
constexpr int kPage = 50;
constexpr int64_t kMiB = 1 << 20;

std::vector<std::string> Classes() {
  std::vector<std::string> out;
  // Landmark names as the contest's mapping file gives them: a number and a
  // Korean name (UTF-8, three bytes a character).
  for (int i = 0; i < kClasses; ++i) {
    out.push_back(absl::StrFormat("%04d_경복궁_근정전_%d", i, i % 97));
  }
  return out;
}

// A plausible evaluation: most examples right, some confused with a
// neighbour.
core::train::EvaluationReport Evaluation(const std::string& split) {
  core::train::EvaluationReport e;
  e.split = split;
  e.accuracy = 0.8;
  e.loss = 0.7;
  e.examples = 20000;
  e.num_classes = kClasses;
  std::vector<std::vector<int64_t>> dense(kClasses,
                                          std::vector<int64_t>(kClasses, 0));
  for (int i = 0; i < kClasses; ++i) {
    dense[i][i] = 15 + i % 180;
    dense[i][(i + 1) % kClasses] = 2 + i % 7;
    dense[i][(i * 31) % kClasses] += 1;
  }
  e.confusion = core::train::CellsOfDense(dense);
  return e;
}

std::vector<core::train::EpochReport> History() {
  std::vector<core::train::EpochReport> h(30);
  for (int i = 0; i < 30; ++i) {
    h[i].epoch = i + 1;
    h[i].loss = 1.0 / (i + 1);
    h[i].has_validation = true;
    h[i].val_accuracy = 0.5 + i / 100.0;
  }
  return h;
}

core::ModelInfo Model(int i) {
  core::ModelInfo m;
  m.id = absl::StrFormat("m-%08x", i);  // one model, listed 50 times
  m.display_name = "landmarks";
  m.classes = Classes();
  m.history = History();
  m.best_epoch = 30;
  m.evaluations = {Evaluation("validation"), Evaluation("test")};
  m.preprocessing.mode = "tf";
  m.preprocessing.input_size = 224;
  m.aliases = {"landmarks"};
  return m;
}

int64_t JsonBytes(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(m, &json, o).ok());
  return static_cast<int64_t>(json.size());
}

TEST(ListingSizeTest, APageOfFiftyThousandClassModelsStaysUnderOneMiB) {
  const core::ModelInfo model = Model(0);
  v1::Model full;
  ToProto(model, &full);
  // What Get returns: everything, and more than a page may hold.
  EXPECT_EQ(full.classes_size(), kClasses);
  EXPECT_EQ(full.class_count(), kClasses);
  EXPECT_EQ(full.history_size(), 30);
  ASSERT_EQ(full.evaluations_size(), 2);
  // The matrix goes out as its non-zero cells, not 1.1 million counts,
  // with the largest confusions named.
  const v1::Evaluation& ev = full.evaluations(0);
  EXPECT_EQ(ev.confusion_matrix().counts_size(), 0);
  EXPECT_EQ(ev.confusion_matrix().cells_size(),
            static_cast<int>(model.evaluations[0].confusion.size()));
  ASSERT_EQ(ev.top_confusions_size(), 10);
  for (int i = 1; i < ev.top_confusions_size(); ++i) {
    EXPECT_GE(ev.top_confusions(i - 1).count(), ev.top_confusions(i).count());
  }
  EXPECT_NE(ev.top_confusions(0).true_label(),
            ev.top_confusions(0).predicted_label());
  EXPECT_LT(static_cast<int64_t>(full.ByteSizeLong()), kMiB / 4);

  v1::ListModelsResponse page;
  for (int i = 0; i < kPage; ++i) {
    ToListingProto(model, page.add_models());
  }
  const v1::Model& lean = page.models(0);
  EXPECT_EQ(lean.classes_size(), 0);
  EXPECT_EQ(lean.class_count(), kClasses);
  EXPECT_EQ(lean.history_size(), 0);
  ASSERT_EQ(lean.evaluations_size(), 2);
  EXPECT_FALSE(lean.evaluations(0).has_confusion_matrix());
  EXPECT_DOUBLE_EQ(lean.evaluations(0).accuracy(), 0.8);
  EXPECT_EQ(lean.aliases_size(), 1);
  EXPECT_LT(static_cast<int64_t>(page.ByteSizeLong()), kMiB);
  EXPECT_LT(JsonBytes(page), kMiB);
}

TEST(ListingSizeTest, APageOfFiftyThousandClassJobsStaysUnderOneMiB) {
  core::api::JobView view;
  view.job.id = "train-landmarks";
  view.job.history = History();
  view.job.evaluations = {Evaluation("validation"), Evaluation("test")};
  view.classes = Classes();
  v1::Job full;
  ToProto(view, &full);
  EXPECT_EQ(full.evaluations(0).confusion_matrix().cells_size(),
            static_cast<int>(view.job.evaluations[0].confusion.size()));
  EXPECT_LT(static_cast<int64_t>(full.ByteSizeLong()), kMiB / 4);
  EXPECT_LT(JsonBytes(full), kMiB);

  v1::ListJobsResponse page;
  for (int i = 0; i < kPage; ++i) {
    ToListingProto(view, page.add_jobs());
  }
  EXPECT_EQ(page.jobs(0).history_size(), 0);
  EXPECT_FALSE(page.jobs(0).evaluations(0).has_confusion_matrix());
  EXPECT_FALSE(page.jobs(0).has_resolved_spec());
  EXPECT_LT(static_cast<int64_t>(page.ByteSizeLong()), kMiB);
  EXPECT_LT(JsonBytes(page), kMiB);
}

TEST(ListingSizeTest, FewClassesAlsoGetTheDenseMatrix) {
  core::train::EvaluationReport e;
  e.split = "validation";
  e.num_classes = 3;
  e.examples = 9;
  e.confusion = {{0, 0, 3}, {0, 2, 1}, {1, 1, 2}, {2, 0, 2}, {2, 2, 1}};
  v1::Evaluation out;
  EvaluationToProto(e, {"a", "b", "c"}, &out);
  const v1::ConfusionMatrix& m = out.confusion_matrix();
  ASSERT_EQ(m.counts_size(), 9);
  EXPECT_EQ(m.counts(0 * 3 + 2), 1);
  EXPECT_EQ(m.counts(2 * 3 + 0), 2);
  EXPECT_EQ(m.counts(1 * 3 + 0), 0);
  EXPECT_EQ(m.cells_size(), 5);
  ASSERT_EQ(out.top_confusions_size(), 2);
  EXPECT_EQ(out.top_confusions(0).true_label(), "c");
  EXPECT_EQ(out.top_confusions(0).predicted_label(), "a");
  EXPECT_EQ(out.top_confusions(0).count(), 2);
  EXPECT_EQ(out.top_confusions(1).true_label(), "a");
}

}  // namespace
}  // namespace transferd::rpc
