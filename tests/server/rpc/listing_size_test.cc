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
  e.confusion.assign(kClasses, std::vector<int64_t>(kClasses, 0));
  for (int i = 0; i < kClasses; ++i) {
    e.confusion[i][i] = 15 + i % 180;
    e.confusion[i][(i + 1) % kClasses] = 2 + i % 7;
    e.confusion[i][(i * 31) % kClasses] += 1;
  }
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
  EXPECT_EQ(full.evaluations(0).confusion_matrix().counts_size(),
            kClasses * kClasses);
  EXPECT_GT(static_cast<int64_t>(full.ByteSizeLong()), kMiB);

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
  EXPECT_EQ(full.evaluations(0).confusion_matrix().counts_size(),
            kClasses * kClasses);
  EXPECT_GT(static_cast<int64_t>(full.ByteSizeLong()), kMiB);

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

}  // namespace
}  // namespace transferd::rpc
