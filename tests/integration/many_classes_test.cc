// Many classes end to end against the real binary: a 70-class model trained
// with balanced class weights reports top-k accuracy, macro accuracy, GAP and
// its top confusions, with the confusion matrix sent as its non-zero cells;
// a PREDICT job with top_k lists each file's most probable classes instead
// of every probability, and its metrics agree with its per-file rows.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "tests/support/job_support.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using testing::Channel;
using ::testing::HasSubstr;
using testing::LabelledImage;
using testing::SetDeadline;
using testing::TransferdServer;

constexpr int kClasses = 70;  // above the 64 that still get every number

// Two training images and one validation image per class, in class folders.
std::vector<LabelledImage> ManyClasses() {
  std::vector<LabelledImage> out;
  int seed = 1000;
  for (int c = 0; c < kClasses; ++c) {
    const std::string label = absl::StrFormat("c%02d", c);
    for (const char* split : {"train", "train", "validation"}) {
      out.push_back({absl::StrFormat("%s/%s/%d.png", split, label, seed),
                     testing::EncodeTestImage(40, 40, ".png", seed), label,
                     split});
      ++seed;
    }
  }
  return out;
}

const v1::Evaluation* Find(const v1::Job& job, const std::string& split) {
  for (const v1::Evaluation& e : job.evaluations()) {
    if (e.split() == split) return &e;
  }
  return nullptr;
}

TEST(ManyClassesTest, TopKGapTopConfusionsAndLeanPredictions) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  testing::UploadImages(server, "many", ManyClasses());

  v1::JobSpec train = testing::SmallSpec("many", 1);
  train.set_class_weights("balanced");
  v1::Job created;
  grpc::Status s = testing::CreateJob(server, train, &created, "train-many");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::Job trained = testing::WaitForJob(server, "jobs/train-many");
  ASSERT_EQ(trained.state(), v1::JOB_STATE_SUCCEEDED)
      << trained.failure_reason();
  EXPECT_EQ(trained.resolved_spec().class_weights(), "balanced");
  const v1::Evaluation* val = Find(trained, "validation");
  ASSERT_NE(val, nullptr);
  EXPECT_EQ(val->examples(), kClasses);
  EXPECT_EQ(val->top_k(), 5);  // the default for more than two classes
  EXPECT_GE(val->top_k_accuracy(), val->accuracy());
  EXPECT_GE(val->gap(), 0);
  EXPECT_LE(val->gap(), val->accuracy() + 1e-9);  // precision@i <= 1
  // One validation image per class: macro accuracy is plain accuracy.
  EXPECT_NEAR(val->macro_accuracy(), val->accuracy(), 1e-9);
  const v1::ConfusionMatrix& m = val->confusion_matrix();
  EXPECT_EQ(m.classes_size(), kClasses);
  EXPECT_EQ(m.counts_size(), 0);  // 70 classes: cells only
  int64_t total = 0, diagonal = 0;
  for (const v1::ConfusionCell& c : m.cells()) {
    EXPECT_GT(c.count(), 0);
    total += c.count();
    if (c.true_class() == c.predicted_class()) diagonal += c.count();
  }
  EXPECT_EQ(total, kClasses);
  EXPECT_NEAR(static_cast<double>(diagonal) / kClasses, val->accuracy(), 1e-9);
  EXPECT_LE(val->top_confusions_size(), 10);
  EXPECT_EQ(val->top_confusions_size(),
            std::min<int64_t>(10, kClasses - diagonal));
  for (const v1::Confusion& c : val->top_confusions()) {
    EXPECT_NE(c.true_label(), c.predicted_label());
  }

  // A PREDICT job with top_k 3 over the validation split.
  v1::JobSpec predict;
  predict.set_kind(v1::JOB_KIND_PREDICT);
  predict.set_dataset("datasets/many");
  predict.set_base_model(trained.result_model());
  predict.set_top_k(3);
  predict.mutable_predict()->add_splits(v1::SPLIT_VALIDATION);
  s = testing::CreateJob(server, predict, &created, "predict-many");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::Job done = testing::WaitForJob(server, "jobs/predict-many");
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.failure_reason();
  auto jobs = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ListJobPredictionsRequest req;
  req.set_name("jobs/predict-many");
  req.set_page_size(1000);
  v1::ListJobPredictionsResponse page;
  s = jobs->ListJobPredictions(&ctx, req, &page);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(page.predictions_size(), kClasses);
  int right = 0, in_top = 0;
  for (const v1::FilePrediction& f : page.predictions()) {
    EXPECT_EQ(f.probabilities_size(), 0);  // too many classes for all
    ASSERT_EQ(f.top_size(), 3);
    EXPECT_EQ(f.top(0).label(), f.label());
    EXPECT_GE(f.top(0).probability(), f.top(1).probability());
    EXPECT_GE(f.top(1).probability(), f.top(2).probability());
    right += f.label() == f.true_label() ? 1 : 0;
    in_top += std::any_of(f.top().begin(), f.top().end(),
                          [&](const v1::ClassScore& c) {
                            return c.label() == f.true_label();
                          })
                  ? 1
                  : 0;
  }
  const v1::Evaluation* pe = Find(done, "validation");
  ASSERT_NE(pe, nullptr);
  EXPECT_EQ(pe->top_k(), 3);
  EXPECT_NEAR(pe->accuracy(), static_cast<double>(right) / kClasses, 1e-9);
  EXPECT_NEAR(pe->top_k_accuracy(), static_cast<double>(in_top) / kClasses,
              1e-9);
  // The same model and images: the PREDICT job's numbers are the training
  // job's validation numbers.
  EXPECT_NEAR(pe->accuracy(), val->accuracy(), 1e-9);
  EXPECT_NEAR(pe->loss(), val->loss(), 1e-4);
  EXPECT_NEAR(pe->gap(), val->gap(), 1e-6);

  // top_k out of range is refused naming the field; nothing is queued.
  predict.set_top_k(101);
  s = testing::CreateJob(server, predict, &created, "predict-bad");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.top_k"));
  v1::JobSpec weighted_predict = predict;
  weighted_predict.set_top_k(1);
  weighted_predict.set_class_weights("balanced");
  s = testing::CreateJob(server, weighted_predict, &created, "predict-bad");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.class_weights"));
}

}  // namespace
}  // namespace transferd
