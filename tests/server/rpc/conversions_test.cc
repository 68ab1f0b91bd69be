// Engine structs -> transferd.v1 messages: a prediction's top-k classes
// (defaults by class count, the order, ties, clamping) and the top_k check.
#include "server/rpc/conversions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::rpc {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> Labels(const v1::ImagePrediction& p) {
  std::vector<std::string> out;
  for (const v1::ClassScore& s : p.top()) out.push_back(s.label());
  return out;
}

TEST(PredictionToProtoTest, TopKIsTheMostProbableClassesFirst) {
  core::ImageResult r;
  r.label = 3;
  r.probabilities = {0.05f, 0.2f, 0.05f, 0.4f, 0.1f, 0.15f, 0.05f};
  const std::vector<std::string> classes = {"a", "b", "c", "d", "e", "f", "g"};
  v1::ImagePrediction p;
  PredictionToProto("x.jpg", r, classes, &p);
  // Seven classes: five by default; all classes still in `scores`.
  EXPECT_THAT(Labels(p), ::testing::ElementsAre("d", "b", "f", "e", "a"));
  EXPECT_EQ(p.top(0).label(), p.label());
  EXPECT_FLOAT_EQ(p.top(1).probability(), 0.2f);
  EXPECT_EQ(p.scores_size(), 7);

  v1::ImagePrediction two;
  PredictionToProto("x.jpg", r, classes, &two, 2);
  EXPECT_THAT(Labels(two), ::testing::ElementsAre("d", "b"));
  // Equal probabilities keep the class order; more than the classes: all.
  v1::ImagePrediction all;
  PredictionToProto("x.jpg", r, classes, &all, 100);
  EXPECT_THAT(Labels(all),
              ::testing::ElementsAre("d", "b", "f", "e", "a", "c", "g"));
}

TEST(PredictionToProtoTest, TwoClassesDefaultToOneAndFailuresToNone) {
  core::ImageResult r;
  r.label = 0;
  r.probabilities = {0.7f, 0.3f};
  v1::ImagePrediction p;
  PredictionToProto("x.jpg", r, {"cat", "dog"}, &p);
  EXPECT_THAT(Labels(p), ::testing::ElementsAre("cat"));

  core::ImageResult failed;
  failed.status = absl::InvalidArgumentError("not an image");
  v1::ImagePrediction f;
  PredictionToProto("x.jpg", failed, {"cat", "dog"}, &f, 2);
  EXPECT_EQ(f.top_size(), 0);
  EXPECT_EQ(f.status().code(), 3);
}

TEST(PredictionToProtoTest, NegativeTopKIsAnInvalidArgument) {
  EXPECT_TRUE(CheckTopK(0).ok());
  EXPECT_TRUE(CheckTopK(5).ok());
  const absl::Status s = CheckTopK(-1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("top_k"));
}

}  // namespace
}  // namespace transferd::rpc
