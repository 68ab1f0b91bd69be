// Spec files in YAML become the JSON protobuf's parser reads.
#include "client/spec_file.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/paths.h"
#include "transferd/v1/jobs.pb.h"

namespace transferd::client {
namespace {

TEST(SpecFileTest, JsonPassesThroughUnchanged) {
  const std::string json = "  {\"recipe\": \"keras-book\"}\n";
  auto out = SpecTextToJson(json);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, json);
}

TEST(SpecFileTest, YamlJobSpecParsesIntoTheProto) {
  const std::string yaml = R"(# the keras-book recipe, changed
recipe: keras-book
seed: 7
model:
  backbone: mobilenet
  alpha: 0.25
  input_size: 224
  precision: PRECISION_BF16
  head: {pooling: POOLING_GLOBAL_AVERAGE, hidden_units: 256, dropout: 0.5}
stages:
  - name: frozen
    trainable_from: none
    optimizer: {kind: KIND_RMSPROP, learning_rate: 2e-5}
    epochs: 15
    batch_size: 20
    augmentation: {enabled: true, preset: keras-book, horizontal_flip: true}
  - trainable_from: "100"
    optimizer:
      kind: KIND_RMSPROP
      learning_rate: 1.0e-5
    epochs: 5
)";
  auto json = SpecTextToJson(yaml);
  ASSERT_TRUE(json.ok()) << json.status();
  transferd::v1::JobSpec spec;
  auto parsed = google::protobuf::util::JsonStringToMessage(*json, &spec);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\n" << *json;
  EXPECT_EQ(spec.recipe(), "keras-book");
  EXPECT_EQ(spec.seed(), 7u);
  EXPECT_EQ(spec.model().backbone(), "mobilenet");
  EXPECT_DOUBLE_EQ(spec.model().alpha(), 0.25);
  EXPECT_EQ(spec.model().input_size(), 224);
  EXPECT_EQ(spec.model().precision(), transferd::v1::PRECISION_BF16);
  EXPECT_EQ(spec.model().head().pooling(),
            transferd::v1::POOLING_GLOBAL_AVERAGE);
  EXPECT_EQ(spec.model().head().hidden_units(), 256);
  ASSERT_EQ(spec.stages_size(), 2);
  EXPECT_EQ(spec.stages(0).name(), "frozen");
  EXPECT_EQ(spec.stages(0).trainable_from(), "none");
  EXPECT_DOUBLE_EQ(spec.stages(0).optimizer().learning_rate(), 2e-5);
  EXPECT_EQ(spec.stages(0).epochs(), 15);
  EXPECT_TRUE(spec.stages(0).augmentation().enabled());
  EXPECT_TRUE(spec.stages(0).augmentation().horizontal_flip());
  // Quoted: a string even though it reads as a number.
  EXPECT_EQ(spec.stages(1).trainable_from(), "100");
  EXPECT_DOUBLE_EQ(spec.stages(1).optimizer().learning_rate(), 1e-5);
}

// The spec files docs/recipes.md points users to parse into a JobSpec with
// no unknown field, and say what the docs say they say.
TEST(SpecFileTest, ExampleSpecsInTheDocsParse) {
  std::map<std::string, transferd::v1::JobSpec> specs;
  for (const auto& entry : std::filesystem::directory_iterator(
           transferd::testing::SourcePath("docs/examples"))) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    auto json = SpecTextToJson(text.str());
    ASSERT_TRUE(json.ok()) << entry.path() << ": " << json.status();
    transferd::v1::JobSpec spec;
    auto parsed = google::protobuf::util::JsonStringToMessage(*json, &spec);
    ASSERT_TRUE(parsed.ok()) << entry.path() << ": " << parsed.ToString();
    specs[entry.path().filename().string()] = spec;
  }
  ASSERT_EQ(specs.count("mobilenet-224.yaml"), 1u);
  ASSERT_EQ(specs.count("mobilenet-288.yaml"), 1u);
  const transferd::v1::JobSpec& base = specs["mobilenet-224.yaml"];
  const transferd::v1::JobSpec& accurate = specs["mobilenet-288.yaml"];
  EXPECT_EQ(base.model().input_size(), 224);
  EXPECT_EQ(accurate.model().input_size(), 288);
  ASSERT_EQ(base.stages_size(), 2);
  ASSERT_EQ(accurate.stages_size(), 2);
  EXPECT_EQ(base.stages(1).trainable_from(), "conv_dw_12");
  EXPECT_EQ(accurate.stages(1).trainable_from(), "conv_dw_8");
  EXPECT_EQ(base.stages(0).epochs() + base.stages(1).epochs(), 20);
  EXPECT_EQ(accurate.stages(0).epochs() + accurate.stages(1).epochs(), 25);
}

TEST(SpecFileTest, ScalarsKeepTheirTypes) {
  auto json = SpecTextToJson(
      "a: 20\nb: 2e-5\nc: true\nd: ~\ne: block5_conv1\nf: '20'\n");
  ASSERT_TRUE(json.ok()) << json.status();
  const auto j = nlohmann::json::parse(*json);
  EXPECT_TRUE(j["a"].is_number_integer());
  EXPECT_TRUE(j["b"].is_number_float());
  EXPECT_EQ(j["c"], true);
  EXPECT_TRUE(j["d"].is_null());
  EXPECT_EQ(j["e"], "block5_conv1");
  EXPECT_EQ(j["f"], "20");
}

TEST(SpecFileTest, BadYamlNamesTheLine) {
  auto out = SpecTextToJson("recipe: keras-book\nstages:\n  - epochs: [1, 2\n");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("line "), absl::string_view::npos)
      << out.status();
}

TEST(SpecFileTest, TopLevelMustBeAMapping) {
  EXPECT_FALSE(SpecTextToJson("- a\n- b\n").ok());
  EXPECT_FALSE(SpecTextToJson("just words\n").ok());
  EXPECT_FALSE(SpecTextToJson("a: 1\na: 2\n").ok());
}

}  // namespace
}  // namespace transferd::client
