// The Open Inference Protocol's tensors <-> Predict calls: input checks with
// the tensor named, raw BYTES framing, outputs and the classification
// extension's strings.
#include "server/rpc/oip_conversions.h"

#include <cstring>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::rpc::oip {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

inference::ModelInferRequest Images(std::vector<std::string> files, bool raw) {
  inference::ModelInferRequest r;
  auto* t = r.add_inputs();
  t->set_name("images");
  t->set_datatype("BYTES");
  t->add_shape(static_cast<int64_t>(files.size()));
  if (raw) {
    std::string data;
    for (const std::string& f : files) AppendBytesElement(f, &data);
    r.add_raw_input_contents(data);
  } else {
    for (const std::string& f : files)
      t->mutable_contents()->add_bytes_contents(f);
  }
  return r;
}

TEST(OipConversionsTest, RawAndContentImagesReadTheSame) {
  for (bool raw : {true, false}) {
    absl::StatusOr<InferCall> call =
        ParseInferRequest(Images({"ab", "", "xyz"}, raw));
    ASSERT_TRUE(call.ok()) << call.status();
    EXPECT_THAT(call->images, ElementsAre("ab", "", "xyz"));
    EXPECT_EQ(call->pixel_size, 0);
    ASSERT_EQ(call->outputs.size(), 2u);  // all outputs when none is named
    EXPECT_EQ(call->outputs[0].name, kProbabilities);
  }
}

TEST(OipConversionsTest, BadInputsNameTheTensorAndTheProblem) {
  auto message = [](inference::ModelInferRequest r) {
    return std::string(ParseInferRequest(r).status().message());
  };
  inference::ModelInferRequest r = Images({"a", "b"}, true);
  r.mutable_raw_input_contents(0)->pop_back();
  EXPECT_THAT(message(r), HasSubstr("images: raw BYTES element 1 claims 1"));
  r = Images({"a", "b"}, false);
  r.mutable_inputs(0)->set_shape(0, 3);
  EXPECT_THAT(message(r),
              HasSubstr("2 elements in bytes_contents for shape [3]"));
  r = Images({"a"}, true);
  r.mutable_inputs(0)->set_datatype("FP32");
  EXPECT_THAT(message(r), HasSubstr("images: datatype FP32"));
  r = Images({"a"}, true);
  r.mutable_inputs(0)->set_name("x");
  EXPECT_THAT(message(r), HasSubstr("input \"x\": unknown input"));
  r = Images({}, true);
  EXPECT_THAT(message(r), HasSubstr("at least one image"));
  r = Images({"a"}, true);
  auto* output = r.add_outputs();
  output->set_name("probabilities");
  (*output->mutable_parameters())["classification"].set_string_param("2");
  EXPECT_THAT(message(r), HasSubstr("must be an integer"));

  inference::ModelInferRequest p;
  auto* t = p.add_inputs();
  t->set_name("pixels");
  t->set_datatype("UINT8");
  for (int64_t d : {1, 4, 4, 3}) t->add_shape(d);
  p.add_raw_input_contents(std::string(47, '\0'));
  EXPECT_THAT(message(p),
              HasSubstr("47 bytes of raw data for shape [1,4,4,3]"));
  p.set_raw_input_contents(0, std::string(48, '\x07'));
  absl::StatusOr<InferCall> call = ParseInferRequest(p);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->pixel_size, 4);
  t->set_shape(2, 5);
  EXPECT_THAT(message(p), HasSubstr("pixels take [N,S,S,3]"));
}

TEST(OipConversionsTest, OutputsAndTheClassificationStrings) {
  InferCall call;
  call.outputs = {{kProbabilities, 2}, {kLabels, 0}, {kProbabilities, 0}};
  core::PredictOutcome outcome;
  outcome.classes = {"cat", "dog", "fox"};
  core::ImageResult r;
  r.label = 1;
  r.probabilities = {0.25f, 0.5f, 0.25f};
  outcome.images = {r};
  inference::ModelInferResponse out;
  ASSERT_TRUE(
      InferResponseFromOutcome(call, outcome, /*raw=*/false, &out).ok());
  ASSERT_EQ(out.outputs_size(), 3);
  EXPECT_EQ(out.outputs(0).datatype(), "BYTES");
  EXPECT_THAT(out.outputs(0).shape(), ElementsAre(1, 2));
  EXPECT_THAT(out.outputs(0).contents().bytes_contents(),
              ElementsAre("0.500000:1:dog", "0.250000:0:cat"));
  EXPECT_THAT(out.outputs(1).contents().bytes_contents(), ElementsAre("dog"));
  EXPECT_THAT(out.outputs(2).contents().fp32_contents(),
              ElementsAre(0.25f, 0.5f, 0.25f));

  inference::ModelInferResponse raw;
  ASSERT_TRUE(InferResponseFromOutcome(call, outcome, /*raw=*/true, &raw).ok());
  ASSERT_EQ(raw.raw_output_contents_size(), 3);
  float back[3];
  ASSERT_EQ(raw.raw_output_contents(2).size(), sizeof(back));
  std::memcpy(back, raw.raw_output_contents(2).data(), sizeof(back));
  EXPECT_THAT(back, ElementsAre(0.25f, 0.5f, 0.25f));
  EXPECT_THAT(*SplitBytes(raw.raw_output_contents(1), 1, "labels"),
              ElementsAre("dog"));

  call.outputs = {{kProbabilities, 4}};
  EXPECT_THAT(
      std::string(
          InferResponseFromOutcome(call, outcome, true, &raw).message()),
      HasSubstr("classification 4 > the 3 classes"));
  outcome.images[0].status = absl::InvalidArgumentError("not a JPEG");
  EXPECT_EQ(InferResponseFromOutcome(call, outcome, true, &raw).message(),
            "images[0]: not a JPEG");
}

}  // namespace
}  // namespace transferd::rpc::oip
