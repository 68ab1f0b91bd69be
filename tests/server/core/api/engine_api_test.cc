// The engine API over a real engine (SQLite file, dataset catalog, model
// registry, predictor), as every front end calls it: resource names parsed
// with the field in the message, aliases resolved when a job is created,
// class names in every job view, the readiness gate, and Predict independent
// of the executor that front ends load with slow work (a stalled watcher, a
// slow upload).
#include "server/core/api/engine_api.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/train/classifier.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"

namespace transferd::core::api {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

train::ModelConfig SmallConfig() {
  train::ModelConfig m;
  m.backbone = "mobilenet";
  m.alpha = 0.25;
  m.weights = "none";
  m.input_size = 32;
  m.head.pooling = train::Pooling::kGlobalAverage;
  m.head.hidden_units = 8;
  m.head.dropout = 0;
  return m;
}

class EngineApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Engine::Options o;
    o.data_dir.root = fs::path(temp_.path()) / "data";
    o.device.device = "cpu";
    o.device.precision = "fp32";
    o.run_jobs = false;  // jobs stay QUEUED: this tests the API, not runs
    auto engine = Engine::Create(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    api_ = std::make_unique<EngineApi>(*engine_);
  }

  void TearDown() override {
    if (engine_ != nullptr) {
      engine_->BeginShutdown();
      EXPECT_TRUE(engine_->Shutdown().ok());
    }
  }

  void Start() { ASSERT_TRUE(engine_->Start().ok()); }

  // A two-class dataset "pets" with train and validation splits.
  void Upload() {
    UploadSpec spec;
    spec.id = "pets";
    auto upload = api_->BeginUpload(spec);
    ASSERT_TRUE(upload.ok()) << upload.status();
    int seed = 0;
    for (const char* split : {"train", "validation"}) {
      for (const char* label : {"cat", "dog"}) {
        for (int i = 0; i < 2; ++i, ++seed) {
          const std::string path =
              absl::StrCat(split, "/", label, ".", seed, ".png");
          const std::string bytes =
              testing::EncodeTestImage(40, 40, ".png", seed);
          UploadChunk chunk;
          chunk.path = path;
          chunk.size = static_cast<int64_t>(bytes.size());
          chunk.data = bytes;
          chunk.last = true;
          ASSERT_TRUE((*upload)->Add(chunk).ok());
        }
      }
    }
    ASSERT_TRUE((*upload)->Commit().ok());
  }

  // A model "m-1" (classes cat, dog), randomly initialised.
  void Register() {
    torch::manual_seed(1);
    auto classifier = train::BuildClassifier(
        SmallConfig(), 2, backbones::WeightsCacheOptions(), false);
    ASSERT_TRUE(classifier.ok()) << classifier.status();
    const fs::path weights = fs::path(temp_.path()) / "m-1.safetensors";
    ASSERT_TRUE((*classifier)->Save(weights).ok());
    ModelInfo info;
    info.id = "m-1";
    info.model = SmallConfig();
    info.classes = {"cat", "dog"};
    info.preprocessing.mode = "tf";
    info.preprocessing.scale = 1.0f / 127.5f;
    info.preprocessing.mean = {1, 1, 1};
    info.preprocessing.std = {1, 1, 1};
    info.preprocessing.input_size = 32;
    ASSERT_TRUE(engine_->models().Register(info, weights).ok());
  }

  // A submission whose encoder records what the engine resolved.
  JobSubmission Submission(train::RequestKind kind, const std::string& id,
                           const std::string& base_model_name) {
    JobSubmission s;
    s.job_id = id;
    s.request.kind = kind;
    s.request.dataset_id = "pets";
    s.request.base_model_name = base_model_name;
    if (kind != train::RequestKind::kPredict) {
      s.request.stages.resize(1);
      s.request.stages[0].epochs = 1;
    }
    if (kind == train::RequestKind::kTrain) {
      s.request.model.backbone = "mobilenet";
      s.request.model.alpha = 0.25;
      s.request.model.weights = "none";
      s.request.model.input_size = 32;
    }
    s.spec_blob = "submitted";
    s.encode_resolved = [this](const train::ResolvedJob& r,
                               const std::string& base_model) {
      resolved_base_ = base_model;
      return absl::StrCat("resolved:", r.dataset_id);
    };
    return s;
  }

  struct Answer {
    absl::Status status;
    PredictOutcome outcome;
  };

  std::future<Answer> Predict(const std::string& model_name) {
    auto promise = std::make_shared<std::promise<Answer>>();
    PredictCall call;
    call.images = {testing::EncodeTestImage(40, 40, ".png", 7)};
    call.done = [promise](absl::Status s, PredictOutcome o) {
      promise->set_value({std::move(s), std::move(o)});
    };
    std::future<Answer> f = promise->get_future();
    api_->Predict(model_name, std::move(call));
    return f;
  }

  testing::TempDir temp_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<EngineApi> api_;
  std::string resolved_base_ = "unset";
};

TEST(IdFromNameTest, ParsesTheCollectionsNamesAndNamesTheField) {
  absl::StatusOr<std::string> id = IdFromName("name", "jobs", "jobs/j-1");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "j-1");
  id = IdFromName("spec.dataset", "datasets", "models/x");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(id.status().message(),
            "spec.dataset: expected \"datasets/{id}\", got \"models/x\"");
  id = IdFromName("name", "jobs", "jobs/Bad_Id");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(id.status().message()), StartsWith("name: "));
  EXPECT_EQ(IdFromName("name", "jobs", "jobs/").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineApiTest, EveryCallIsUnavailableUntilTheEngineStarted) {
  EXPECT_FALSE(api_->ready());
  EXPECT_EQ(api_->GetJob("jobs/a").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(api_->ListModels({}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_THAT(api_->CheckReady().message(), HasSubstr("retry shortly"));
  std::future<Answer> answer = Predict("models/m-1");
  EXPECT_EQ(answer.get().status.code(), absl::StatusCode::kUnavailable);
  Start();
  EXPECT_TRUE(api_->CheckReady().ok());
}

TEST_F(EngineApiTest, ResolvesModelsAndAliases) {
  Start();
  Register();
  ASSERT_TRUE(api_->SetAlias("aliases/prod", "models/m-1").ok());
  absl::StatusOr<std::string> id = api_->ResolveModel("model", "aliases/prod");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "m-1");
  EXPECT_EQ(api_->GetModel("models/m-1")->id, "m-1");
  EXPECT_EQ(api_->ResolveModel("model", "models/m-2").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(api_->ResolveModel("model", "aliases/none").status().code(),
            absl::StatusCode::kNotFound);
  id = api_->ResolveModel("model", "m-1");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(id.status().message(),
            "model: expected \"models/{id}\" or \"aliases/{alias}\", got "
            "\"m-1\"");
  // Deleting takes the model's own name, never an alias.
  EXPECT_EQ(api_->DeleteModel("aliases/prod").code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<Page<AliasInfo>> aliases = api_->ListAliases({});
  ASSERT_TRUE(aliases.ok()) << aliases.status();
  ASSERT_EQ(aliases->items.size(), 1u);
  EXPECT_EQ(aliases->items[0].model_id, "m-1");
}

TEST_F(EngineApiTest, CreateJobResolvesTheBaseModelAliasOnce) {
  Start();
  Upload();
  Register();
  ASSERT_TRUE(api_->SetAlias("aliases/prod", "models/m-1").ok());

  absl::StatusOr<JobView> job = api_->CreateJob(
      Submission(train::RequestKind::kPredict, "p-1", "aliases/prod"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->job.base_model, "m-1");
  EXPECT_EQ(resolved_base_, "models/m-1");
  EXPECT_EQ(job->job.spec_blob, "submitted");
  EXPECT_EQ(job->job.resolved_blob, "resolved:pets");
  // A PREDICT job's matrices are named by the model's classes.
  EXPECT_THAT(job->classes, ElementsAre("cat", "dog"));

  // An unknown base model is a bad argument of the call.
  absl::StatusOr<JobView> bad = api_->CreateJob(
      Submission(train::RequestKind::kFineTune, "f-1", "aliases/none"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              StartsWith("spec.base_model: "));
  bad = api_->CreateJob(
      Submission(train::RequestKind::kFineTune, "f-1", "models/nope"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  bad =
      api_->CreateJob(Submission(train::RequestKind::kFineTune, "f-1", "m-1"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              StartsWith("spec.base_model: "));
  // Nothing was stored by the failed calls.
  EXPECT_EQ(api_->GetJob("jobs/f-1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EngineApiTest, GetAndListJobsCarryTheClassNames) {
  Start();
  Upload();
  absl::StatusOr<JobView> created =
      api_->CreateJob(Submission(train::RequestKind::kTrain, "t-1", ""));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(resolved_base_, "");
  EXPECT_THAT(created->classes, ElementsAre("cat", "dog"));
  ASSERT_TRUE(
      api_->CreateJob(Submission(train::RequestKind::kTrain, "t-2", "")).ok());

  absl::StatusOr<JobView> got = api_->GetJob("jobs/t-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(got->classes, ElementsAre("cat", "dog"));
  absl::StatusOr<Page<JobView>> page = api_->ListJobs({{1, ""}, {}, {}});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_FALSE(page->next_page_token.empty());
  EXPECT_THAT(page->items[0].classes, ElementsAre("cat", "dog"));
  page = api_->ListJobs({{10, page->next_page_token}, {}, {}});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_THAT(page->items[0].classes, ElementsAre("cat", "dog"));

  absl::StatusOr<JobView> cancelled = api_->CancelJob("jobs/t-2");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->job.state, JobState::kCancelled);
  EXPECT_EQ(api_->JobId("jobs/t-3").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(api_->JobId("t-1").status().code(),
            absl::StatusCode::kInvalidArgument);

  // The event log as watchers read it: the cancelled job ends the read.
  EventRead read = api_->ReadEvents("t-2", 0, 100, /*follow=*/true);
  ASSERT_TRUE(read.status.ok()) << read.status;
  ASSERT_FALSE(read.events.empty());
  read = api_->ReadEvents("t-2", read.events.back().sequence, 100, true);
  EXPECT_TRUE(read.end);
  EXPECT_TRUE(read.events.empty());
  // A queued job can still change: a follower waits, a reader ends.
  read = api_->ReadEvents("t-1", 1000, 100, /*follow=*/true);
  EXPECT_FALSE(read.end);
  read = api_->ReadEvents("t-1", 1000, 100, /*follow=*/false);
  EXPECT_TRUE(read.end);
}

// Front ends hand slow work (event reads of watchers that stall, upload and
// import steps, exports) to the executor; Predict decodes on threads of its
// own and has its own batcher, so a saturated executor does not hold it up.
TEST_F(EngineApiTest, PredictIsAnsweredWhileTheExecutorIsBlocked) {
  Start();
  Register();
  // Every executor thread (Engine::Options::executor_threads, 2) waits
  // until released, and more work is queued behind them.
  // The tasks outlive this body (those queued behind run at TearDown): what
  // they touch is shared, not on this stack.
  struct Gate {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::promise<void> both_blocked;
    std::atomic<int> blocked{0};
  };
  auto gate = std::make_shared<Gate>();
  for (int i = 0; i < 8; ++i) {
    api_->executor().Schedule([gate] {
      if (++gate->blocked == 2) gate->both_blocked.set_value();
      gate->released.wait();
    });
  }
  gate->both_blocked.get_future().wait();

  // Were it decoded on the executor, it would wait for the release below.
  std::future<Answer> pending = Predict("models/m-1");
  const std::future_status waited = pending.wait_for(std::chrono::seconds(60));
  const int blocked_meanwhile = gate->blocked.load();
  gate->release.set_value();
  ASSERT_EQ(waited, std::future_status::ready);
  EXPECT_EQ(blocked_meanwhile, 2);  // nothing queued behind them had run
  Answer a = pending.get();
  EXPECT_TRUE(a.status.ok()) << a.status;
  ASSERT_EQ(a.outcome.images.size(), 1u);
  EXPECT_TRUE(a.outcome.images[0].status.ok());
  EXPECT_EQ(a.outcome.classes, (std::vector<std::string>{"cat", "dog"}));

  // A bad name answers through the same callback.
  Answer bad = Predict("aliases/none").get();
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace transferd::core::api
