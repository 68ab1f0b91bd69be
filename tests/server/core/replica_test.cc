// The local half of a serving replica (core::Replica) over a real engine
// started with follow_primary: an alias moves only to a model that is here
// and warm, aliases the primary dropped go, the cache keeps the most
// recently named models up to its size, the status says what is served and
// whether it is in sync, and the engine API refuses writes naming the
// primary.
#include "server/core/replica.h"

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/core/train/classifier.h"
#include "tests/support/subprocess.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

train::ModelConfig SmallConfig() {
  train::ModelConfig m;
  m.backbone = "mobilenet";
  m.alpha = 0.25;
  m.weights = "none";
  m.input_size = 32;
  m.head.pooling = train::Pooling::kGlobalAverage;
  m.head.hidden_units = 0;
  m.head.dropout = 0;
  return m;
}

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Engine::Options o;
    o.data_dir.root = fs::path(temp_.path()) / "data";
    o.device.device = "cpu";
    o.device.precision = "fp32";
    o.follow_primary = "primary.example:50051";
    o.replica_keep_models = 1;
    auto engine = Engine::Create(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    ASSERT_TRUE(engine_->Start().ok());
    ASSERT_NE(engine_->replica(), nullptr);
    for (const char* id : {"m1", "m2", "m3"}) Register(id);
  }

  void TearDown() override {
    engine_->BeginShutdown();
    EXPECT_TRUE(engine_->Shutdown().ok());
  }

  // As a pull would leave it: registered under the primary's id.
  void Register(const std::string& id) {
    torch::manual_seed(1);
    auto classifier = train::BuildClassifier(
        SmallConfig(), 2, backbones::WeightsCacheOptions(), false);
    ASSERT_TRUE(classifier.ok()) << classifier.status();
    const fs::path weights = fs::path(temp_.path()) / (id + ".safetensors");
    ASSERT_TRUE((*classifier)->Save(weights).ok());
    ModelInfo info;
    info.id = id;
    info.model = SmallConfig();
    info.classes = {"cat", "dog"};
    info.preprocessing.mode = "tf";
    info.preprocessing.scale = 1.0f / 127.5f;
    info.preprocessing.mean = {1, 1, 1};
    info.preprocessing.std = {1, 1, 1};
    info.preprocessing.input_size = 32;
    ASSERT_TRUE(engine_->models().Register(info, weights).ok());
  }

  absl::Status Apply(const std::map<std::string, std::string>& target) {
    return engine_->replica()->Apply(target, [] { return false; });
  }

  std::string AliasTarget(const std::string& alias) {
    absl::StatusOr<std::string> id = engine_->models().ResolveAlias(alias);
    return id.ok() ? *id : "";
  }

  testing::TempDir temp_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(ReplicaTest, AliasesMoveToWarmModelsAndTheStatusSaysSo) {
  Replica& replica = *engine_->replica();
  // Whether each model was warm at the moment its alias flipped to it.
  std::mutex mu;
  std::map<std::string, bool> warm_at_flip;
  engine_->models().AddAliasListener(
      [&](const std::string&, const std::string& model_id) {
        if (model_id.empty()) return;
        const bool ready = engine_->predictor().Ready(model_id);
        std::lock_guard<std::mutex> lock(mu);
        warm_at_flip[model_id] = ready;
      });
  EXPECT_FALSE(replica.Status().last_sync.has_value());
  ASSERT_TRUE(Apply({{"catdog", "m1"}, {"other", "m2"}}).ok());
  EXPECT_EQ(AliasTarget("catdog"), "m1");
  EXPECT_EQ(AliasTarget("other"), "m2");
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(warm_at_flip,
              (std::map<std::string, bool>{{"m1", true}, {"m2", true}}));
  }
  ReplicaStatus status = replica.Status();
  EXPECT_EQ(status.primary, "primary.example:50051");
  EXPECT_TRUE(status.in_sync);
  EXPECT_TRUE(status.last_sync.has_value());
  ASSERT_EQ(status.aliases.size(), 2u);
  EXPECT_EQ(status.aliases[0].alias, "catdog");
  EXPECT_EQ(status.aliases[0].model_id, "m1");
  EXPECT_EQ(status.aliases[0].primary_model_id, "m1");
  EXPECT_TRUE(status.aliases[0].ready);

  // The primary dropped "other" and moved "catdog".
  ASSERT_TRUE(Apply({{"catdog", "m2"}}).ok());
  EXPECT_EQ(AliasTarget("catdog"), "m2");
  EXPECT_EQ(AliasTarget("other"), "");
}

TEST_F(ReplicaTest, AnAliasStaysWhereItWasUntilItsModelIsHere) {
  ASSERT_TRUE(Apply({{"catdog", "m1"}}).ok());
  absl::Status s = Apply({{"catdog", "m-not-pulled"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not pulled"));
  EXPECT_EQ(AliasTarget("catdog"), "m1");
  const ReplicaStatus status = engine_->replica()->Status();
  EXPECT_FALSE(status.in_sync);
  EXPECT_THAT(status.last_error, HasSubstr("m-not-pulled"));
  ASSERT_EQ(status.aliases.size(), 1u);
  EXPECT_EQ(status.aliases[0].model_id, "m1");
  EXPECT_EQ(status.aliases[0].primary_model_id, "m-not-pulled");
}

TEST_F(ReplicaTest, TheCacheKeepsTheMostRecentlyNamedModels) {
  Replica& replica = *engine_->replica();
  ASSERT_TRUE(Apply({{"a", "m1"}, {"b", "m2"}, {"c", "m3"}}).ok());
  // keep_models = 1: of the models no alias names now (m1, m2), the one
  // named least recently goes.
  ASSERT_TRUE(Apply({{"a", "m3"}}).ok());
  EXPECT_FALSE(replica.HasModel("m1"));
  EXPECT_TRUE(replica.HasModel("m2"));
  EXPECT_TRUE(replica.HasModel("m3"));
  // Moving back to a cached model needs no pull, and the other one stays
  // as the cache.
  ASSERT_TRUE(Apply({{"a", "m2"}}).ok());
  EXPECT_EQ(AliasTarget("a"), "m2");
  EXPECT_TRUE(replica.HasModel("m3"));
  // A pull of a model that is here is refused by the registry.
  EXPECT_EQ(replica.BeginPull("m2", 0).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(replica.BeginPull("m1", 0).ok());
}

TEST_F(ReplicaTest, TheEngineApiRefusesWritesNamingThePrimary) {
  api::EngineApi api(*engine_);
  absl::StatusOr<AliasInfo> set = api.SetAlias("aliases/x", "models/m1");
  EXPECT_EQ(set.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(set.status().message()),
              HasSubstr("read-only serving replica of primary.example:50051"));
  EXPECT_EQ(api.DeleteModel("models/m1").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(api.ListJobs({}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(api.BeginUpload({}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(api.BeginModelImport({}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Reads of models and predictions are what a replica is for.
  EXPECT_TRUE(api.GetModel("models/m1").ok());
  EXPECT_TRUE(api.ListAliases({}).ok());
  ASSERT_TRUE(api.Replica().has_value());
  EXPECT_EQ(api.Replica()->primary, "primary.example:50051");
}

}  // namespace
}  // namespace transferd::core
