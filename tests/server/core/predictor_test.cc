// The predictor over a real registry (SQLite file, safetensors weights):
// dynamic batching by size, the bounded queue, deadlines and cancellation
// answered without computing, per-image errors, identical results to a
// direct forward pass, LRU unloading under a memory budget, and the device
// arbiter's turn order.
#include "server/core/predictor.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/core/registry.h"
#include "server/core/train/classifier.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/store.h"
#include "server/core/util/torch_util.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

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

struct Answer {
  absl::Status status;
  PredictOutcome outcome;
};

class PredictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DataDir::Options o;
    o.root = fs::path(temp_.path()) / "data";
    auto dir = DataDir::Open(o);
    ASSERT_TRUE(dir.ok()) << dir.status();
    data_dir_ = std::move(*dir);
    Store::Options so;
    so.path = data_dir_->database_path();
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto registry = ModelRegistry::Open(*store_, *data_dir_);
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
  }

  void TearDown() override {
    if (predictor_) predictor_->Stop();
  }

  void Register(const std::string& id, uint64_t seed) {
    torch::manual_seed(seed);
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
    ASSERT_TRUE(registry_->Register(info, weights).ok());
  }

  void StartPredictor(PredictorOptions options) {
    predictor_ = std::make_unique<Predictor>(
        options, *registry_, ComputeDevice(), backbones::WeightsCacheOptions(),
        &arbiter_);
    predictor_->Start();
  }

  // Submits and returns a future for the answer.
  std::future<Answer> Submit(
      const std::string& model, std::vector<std::string> images,
      Clock::time_point deadline = Clock::time_point::max(),
      std::shared_ptr<std::atomic<bool>> cancelled = nullptr) {
    auto promise = std::make_shared<std::promise<Answer>>();
    PredictCall call;
    call.model_id = model;
    call.images = std::move(images);
    call.deadline = deadline;
    call.cancelled = std::move(cancelled);
    call.done = [promise](absl::Status s, PredictOutcome o) {
      promise->set_value(Answer{std::move(s), std::move(o)});
    };
    std::future<Answer> f = promise->get_future();
    predictor_->Submit(std::move(call));
    return f;
  }

  static std::string Png(int seed) {
    return testing::EncodeTestImage(40, 40, ".png", seed);
  }

  testing::TempDir temp_;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ModelRegistry> registry_;
  DeviceArbiter arbiter_;
  std::unique_ptr<Predictor> predictor_;
};

TEST_F(PredictorTest, BatchesConcurrentRequestsUpToMaxBatchSize) {
  Register("m1", 1);
  PredictorOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = std::chrono::seconds(30);  // only a full batch runs
  StartPredictor(o);
  std::vector<std::future<Answer>> answers;
  for (int i = 0; i < 4; ++i) answers.push_back(Submit("m1", {Png(i)}));
  for (auto& f : answers) {
    Answer a = f.get();
    ASSERT_TRUE(a.status.ok()) << a.status;
    ASSERT_EQ(a.outcome.images.size(), 1u);
    EXPECT_TRUE(a.outcome.images[0].status.ok());
    ASSERT_EQ(a.outcome.images[0].probabilities.size(), 2u);
    EXPECT_NEAR(a.outcome.images[0].probabilities[0] +
                    a.outcome.images[0].probabilities[1],
                1.0, 1e-5);
    EXPECT_EQ(a.outcome.classes, (std::vector<std::string>{"cat", "dog"}));
  }
  const Predictor::Stats s = predictor_->stats();
  EXPECT_EQ(s.batches, 1);
  EXPECT_EQ(s.images, 4);
  EXPECT_EQ(s.loads, 1);
}

TEST_F(PredictorTest, MatchesADirectForwardPassOfTheSameWeights) {
  Register("m1", 3);
  PredictorOptions o;
  o.max_queue_delay = std::chrono::microseconds(0);
  StartPredictor(o);
  const std::vector<std::string> images = {Png(1), Png(2), Png(3)};
  Answer a = Submit("m1", images).get();
  ASSERT_TRUE(a.status.ok()) << a.status;

  auto info = registry_->Get("m1");
  ASSERT_TRUE(info.ok());
  auto runner = ModelRunner::Load(*info, ComputeDevice(),
                                  backbones::WeightsCacheOptions());
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::vector<uint8_t> pixels(3 * 32 * 32 * 3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(DecodeResized(images[i], ImageLimits(), 32,
                              pixels.data() + i * 32 * 32 * 3)
                    .ok());
  }
  auto probs = (*runner)->Run(pixels.data(), 3, false);
  ASSERT_TRUE(probs.ok());
  for (int i = 0; i < 3; ++i) {
    for (int c = 0; c < 2; ++c) {
      EXPECT_NEAR(a.outcome.images[i].probabilities[c], (*probs)[i * 2 + c],
                  1e-5);
    }
  }
}

TEST_F(PredictorTest, BadImagesFailAloneAndUnknownModelsFailTheCall) {
  Register("m1", 1);
  PredictorOptions o;
  o.max_queue_delay = std::chrono::microseconds(0);
  StartPredictor(o);
  std::string truncated = testing::EncodeTestImage(64, 64, ".jpg", 5);
  truncated.resize(truncated.size() / 2);
  Answer a =
      Submit("m1", {Png(1), "not an image at all", truncated, "", Png(2)})
          .get();
  ASSERT_TRUE(a.status.ok()) << a.status;
  ASSERT_EQ(a.outcome.images.size(), 5u);
  EXPECT_TRUE(a.outcome.images[0].status.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(a.outcome.images[1].status));
  EXPECT_TRUE(absl::IsInvalidArgument(a.outcome.images[2].status));
  EXPECT_TRUE(absl::IsInvalidArgument(a.outcome.images[3].status));
  EXPECT_TRUE(a.outcome.images[4].status.ok());
  EXPECT_GE(a.outcome.images[4].label, 0);

  Answer unknown = Submit("nope", {Png(1)}).get();
  EXPECT_TRUE(absl::IsNotFound(unknown.status)) << unknown.status;
  Answer empty = Submit("m1", {}).get();
  EXPECT_TRUE(absl::IsInvalidArgument(empty.status)) << empty.status;
  Answer all_bad = Submit("m1", {"x"}).get();
  ASSERT_TRUE(all_bad.status.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(all_bad.outcome.images[0].status));
}

TEST_F(PredictorTest, FullQueueIsResourceExhaustedAndStopAnswersTheRest) {
  Register("m1", 1);
  PredictorOptions o;
  o.max_batch_size = 8;
  o.max_queued_images = 2;
  o.max_queue_delay = std::chrono::seconds(30);
  StartPredictor(o);
  std::future<Answer> queued = Submit("m1", {Png(1), Png(2)});
  Answer refused = Submit("m1", {Png(3)}).get();
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status)) << refused.status;
  EXPECT_THAT(std::string(refused.status.message()),
              HasSubstr("--predict-queue-images"));
  predictor_->Stop();
  Answer stopped = queued.get();
  EXPECT_TRUE(absl::IsUnavailable(stopped.status)) << stopped.status;
  EXPECT_EQ(predictor_->stats().images, 0);
}

TEST_F(PredictorTest, ExpiredAndCancelledRequestsAreNotComputed) {
  Register("m1", 1);
  PredictorOptions o;
  o.max_batch_size = 3;
  o.max_queue_delay = std::chrono::seconds(30);
  StartPredictor(o);
  // Answered at its deadline, long before the batch would have run.
  Answer expired =
      Submit("m1", {Png(1)}, Clock::now() + std::chrono::milliseconds(50))
          .get();
  EXPECT_TRUE(absl::IsDeadlineExceeded(expired.status)) << expired.status;
  EXPECT_EQ(predictor_->stats().expired, 1);

  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::future<Answer> gone =
      Submit("m1", {Png(2)}, Clock::time_point::max(), cancelled);
  cancelled->store(true);
  std::future<Answer> a = Submit("m1", {Png(3)});
  std::future<Answer> b = Submit("m1", {Png(4)});  // fills the batch of 3
  EXPECT_TRUE(absl::IsCancelled(gone.get().status));
  EXPECT_TRUE(a.get().status.ok());
  EXPECT_TRUE(b.get().status.ok());
  // The batch ran without the cancelled image.
  const Predictor::Stats s = predictor_->stats();
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(s.images, 2);
  EXPECT_EQ(s.batches, 1);
}

TEST_F(PredictorTest, UnloadsTheLeastRecentlyUsedModelBeyondTheBudget) {
  Register("m1", 1);
  Register("m2", 2);
  PredictorOptions o;
  o.max_queue_delay = std::chrono::microseconds(0);
  o.memory_budget_bytes = 1;  // room for one model only
  StartPredictor(o);
  std::vector<std::pair<std::string, bool>> events;
  std::mutex mu;
  predictor_->AddReadyListener([&](const std::string& id, bool ready) {
    std::lock_guard<std::mutex> lock(mu);
    events.emplace_back(id, ready);
  });
  ASSERT_TRUE(Submit("m1", {Png(1)}).get().status.ok());
  EXPECT_TRUE(predictor_->Ready("m1"));
  ASSERT_TRUE(Submit("m2", {Png(1)}).get().status.ok());
  EXPECT_TRUE(predictor_->Ready("m2"));
  EXPECT_FALSE(predictor_->Ready("m1"));
  const Predictor::Stats s = predictor_->stats();
  EXPECT_EQ(s.loads, 2);
  EXPECT_EQ(s.unloads, 1);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(events, (std::vector<std::pair<std::string, bool>>{
                        {"m1", true}, {"m2", true}, {"m1", false}}));
}

// The order in which threads reached a point.
struct Recorder {
  void Add(const std::string& who) {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(who);
  }
  std::mutex mu;
  std::vector<std::string> order;
};

// A clock that moves only when a turn says so: the arbiter's accounting of
// device time becomes exact.
struct FakeClock {
  DeviceArbiter::Options Options(double share, int burst_ms) {
    DeviceArbiter::Options o;
    o.interactive_share = share;
    o.burst = std::chrono::milliseconds(burst_ms);
    o.now = [this] { return Clock::time_point(Clock::duration(ticks.load())); };
    return o;
  }
  void Advance(int ms) {
    ticks += std::chrono::duration_cast<Clock::duration>(
                 std::chrono::milliseconds(ms))
                 .count();
  }
  std::atomic<Clock::rep> ticks{0};
};

TEST(DeviceArbiterTest, InteractiveTurnsGoFirstUntilTheirCreditIsSpent) {
  // Share 0.2, burst 50 ms: each 20 ms interactive turn taken while
  // background waits costs 0.8 x 20 = 16 ms of credit, so three go first
  // (50 -> 34 -> 18 -> 2) and the fourth spends it (-14); then background
  // goes, and its 100 ms earn 0.2 x 100 = 20 ms back for the last two.
  FakeClock clock;
  DeviceArbiter arbiter(clock.Options(0.2, 50));
  Recorder recorder;
  std::promise<void> holding;
  std::promise<void> release;
  std::thread holder([&] {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
    holding.set_value();
    release.get_future().wait();
    clock.Advance(100);
  });
  holding.get_future().wait();
  std::thread background([&] {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
    recorder.Add("B");
    clock.Advance(100);
  });
  while (arbiter.waiting() < 1) std::this_thread::yield();
  std::vector<std::thread> interactive;
  for (int i = 0; i < 6; ++i) {
    interactive.emplace_back([&] {
      DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kInteractive);
      recorder.Add("I");
      clock.Advance(20);
    });
  }
  while (arbiter.waiting() < 7) std::this_thread::yield();
  release.set_value();
  holder.join();
  background.join();
  for (auto& t : interactive) t.join();
  EXPECT_EQ(recorder.order,
            (std::vector<std::string>{"I", "I", "I", "I", "B", "I", "I"}));
  EXPECT_EQ(arbiter.interactive_turns(), 6);
  EXPECT_EQ(arbiter.background_turns(), 2);
  // Four turns with background waiting; the last two ran with nobody waiting
  // and cost nothing.
  EXPECT_DOUBLE_EQ(arbiter.contended_interactive_seconds(), 0.080);
  EXPECT_NEAR(arbiter.credit_seconds(), 0.006, 1e-12);
}

// A job whose steps yield between blocks, and a Predict caller that asks for
// the device back to back: interactive turns get no more than the share of
// the contended device time (plus the burst and one turn), however the two
// threads interleave, and the job finishes.
TEST(DeviceArbiterTest, AStreamOfInteractiveTurnsTakesNoMoreThanItsShare) {
  constexpr double kShare = 0.25;
  constexpr int kBurstMs = 30, kInteractiveMs = 5, kBlockMs = 2;
  constexpr int kSteps = 60, kBlocks = 5;
  FakeClock clock;
  DeviceArbiter arbiter(clock.Options(kShare, kBurstMs));
  std::atomic<bool> job_done{false};
  std::atomic<int64_t> background_ms{0};
  std::thread job([&] {
    for (int step = 0; step < kSteps; ++step) {
      DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
      // The caller is in the game before the job can finish.
      if (step == 0) {
        while (arbiter.waiting() < 1) std::this_thread::yield();
      }
      for (int block = 0; block < kBlocks; ++block) {
        clock.Advance(kBlockMs);
        background_ms += kBlockMs;
        DeviceArbiter::YieldPoint();
      }
    }
    job_done = true;
  });
  std::thread predict([&] {
    while (!job_done) {
      DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kInteractive);
      clock.Advance(kInteractiveMs);
    }
  });
  job.join();
  predict.join();
  const double background = background_ms.load() / 1e3;
  EXPECT_DOUBLE_EQ(background, kSteps * kBlocks * kBlockMs / 1e3);
  // credit = burst + share x B - (1 - share) x I >= -(1 - share) x one turn
  const double bound = (kBurstMs / 1e3 + kShare * background) / (1 - kShare) +
                       kInteractiveMs / 1e3;
  EXPECT_LE(arbiter.contended_interactive_seconds(), bound + 1e-9);
  EXPECT_GT(arbiter.interactive_turns(), 0);
}

TEST(DeviceArbiterTest, AWaitingInteractiveTurnRunsAtTheHoldersYieldPoint) {
  DeviceArbiter arbiter;
  Recorder recorder;
  auto record = [&](const std::string& who) { recorder.Add(who); };
  const std::vector<std::string>& order = recorder.order;
  std::promise<void> holding;
  std::promise<void> go_on;
  std::thread holder([&] {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
    EXPECT_TRUE(DeviceArbiter::CanYield());
    DeviceArbiter::YieldPoint();  // nobody waits: goes straight on
    record("step, first half");
    holding.set_value();
    go_on.get_future().wait();
    DeviceArbiter::YieldPoint();  // the interactive turn runs here
    record("step, second half");
  });
  holding.get_future().wait();
  std::thread interactive([&] {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kInteractive);
    EXPECT_FALSE(DeviceArbiter::CanYield());
    DeviceArbiter::YieldPoint();  // an interactive turn does not yield
    record("predict");
  });
  while (arbiter.waiting() < 1) std::this_thread::yield();
  go_on.set_value();
  holder.join();
  interactive.join();
  EXPECT_EQ(order, (std::vector<std::string>{"step, first half", "predict",
                                             "step, second half"}));
  EXPECT_EQ(arbiter.yields(), 1);
  EXPECT_EQ(arbiter.interactive_turns(), 1);
  // Outside any turn, YieldPoint does nothing.
  EXPECT_FALSE(DeviceArbiter::CanYield());
  DeviceArbiter::YieldPoint();
  EXPECT_EQ(arbiter.yields(), 1);
}

// A training step's backward reaches a yield point between the backbone's
// segments: an interactive turn that starts waiting during the backward runs
// before the backward ends.
TEST(DeviceArbiterTest, ATrainingBackwardYieldsBetweenBackboneSegments) {
  torch::manual_seed(1);
  auto built = train::BuildClassifier(SmallConfig(), 2,
                                      backbones::WeightsCacheOptions(), false);
  ASSERT_TRUE(built.ok()) << built.status();
  train::Classifier model = *built;
  ASSERT_GT(model->backbone().num_segments(), 2);
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  model->train();
  DeviceArbiter arbiter;
  std::atomic<bool> predicted{false};
  std::thread interactive;
  bool predicted_before_backward_ended = false;
  {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
    const torch::Tensor logits = model->forward(torch::randn({2, 3, 32, 32}));
    EXPECT_EQ(arbiter.yields(), 0);  // nobody waited in the forward
    // The interactive thread starts waiting before the backward begins; the
    // first backward hook between two segments lets it in.
    interactive = std::thread([&] {
      DeviceArbiter::Turn t(&arbiter, DeviceArbiter::Priority::kInteractive);
      predicted = true;
    });
    while (arbiter.waiting() < 1) std::this_thread::yield();
    model->Loss(logits, torch::tensor({0, 1}, torch::kInt64)).backward();
    predicted_before_backward_ended = predicted.load();
  }
  interactive.join();
  EXPECT_TRUE(predicted_before_backward_ended);
  EXPECT_EQ(arbiter.yields(), 1);
}

// Work handed over with RunInteractive runs inside the training step, on
// the step's own thread, at the first yield point of its backward. It
// finds the step's thread-local state (bf16 autocast on) and sets its own (no
// grad, autocast off, as ModelRunner::Run does through AutocastScope), so it
// gives the same result as alone, and the step's gradients are exactly what
// they are without it.
TEST(DeviceArbiterTest, InteractiveWorkRunsOnTheTrainingThreadAtItsYieldPoint) {
  auto build = [] {
    torch::manual_seed(1);
    auto built = train::BuildClassifier(
        SmallConfig(), 2, backbones::WeightsCacheOptions(), false);
    EXPECT_TRUE(built.ok()) << built.status();
    train::Classifier model = *built;
    for (auto& p : model->parameters()) p.set_requires_grad(true);
    model->train();
    return model;
  };
  train::Classifier served = build();
  served->eval();
  torch::manual_seed(2);
  const torch::Tensor image = torch::rand({1, 3, 32, 32});
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  const torch::Tensor y = torch::tensor({0, 1}, torch::kInt64);
  const torch::Device cpu(torch::kCPU);
  auto predict = [&] {
    torch::NoGradGuard no_grad;
    AutocastScope autocast(false, cpu);
    return served->forward(image);
  };
  const torch::Tensor alone = predict();
  // Gradients of one step with nobody waiting.
  auto step_gradients = [&](DeviceArbiter* arbiter,
                            const std::function<void()>& in_backward) {
    train::Classifier model = build();
    DeviceArbiter::Turn turn(arbiter, DeviceArbiter::Priority::kBackground);
    AutocastScope autocast(true, cpu);
    const torch::Tensor logits = model->forward(x);
    in_backward();
    model->Loss(logits, y).backward();
    std::vector<torch::Tensor> grads;
    for (auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  DeviceArbiter quiet;
  const std::vector<torch::Tensor> expected = step_gradients(&quiet, [] {});

  DeviceArbiter arbiter;
  std::thread::id ran_on;
  bool step_autocast_seen = false;
  torch::Tensor inside;
  std::thread caller;
  const std::vector<torch::Tensor> grads = step_gradients(&arbiter, [&] {
    caller = std::thread([&] {
      arbiter.RunInteractive([&] {
        ran_on = std::this_thread::get_id();
        // The step's autocast is still on here: predict() turns it off.
        step_autocast_seen = at::autocast::is_cpu_enabled();
        inside = predict();
      });
    });
    while (arbiter.waiting() < 1) std::this_thread::yield();
  });
  const std::thread::id step_thread = std::this_thread::get_id();
  caller.join();
  EXPECT_EQ(ran_on, step_thread);
  EXPECT_TRUE(step_autocast_seen);
  EXPECT_EQ(arbiter.yields(), 1);
  EXPECT_EQ(arbiter.interactive_turns(), 1);
  EXPECT_TRUE(torch::equal(inside, alone));
  ASSERT_EQ(grads.size(), expected.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_TRUE(torch::equal(grads[i], expected[i])) << "parameter " << i;
  }
}

// What the work throws reaches RunInteractive's caller, whichever thread ran
// it, and the device is free again afterwards.
TEST(DeviceArbiterTest, WhatInteractiveWorkThrowsReachesItsCaller) {
  DeviceArbiter arbiter;
  EXPECT_THROW(arbiter.RunInteractive([] { throw std::runtime_error("x"); }),
               std::runtime_error);
  std::promise<void> holding;
  std::promise<void> go_on;
  std::thread holder([&] {
    DeviceArbiter::Turn turn(&arbiter, DeviceArbiter::Priority::kBackground);
    holding.set_value();
    go_on.get_future().wait();
    DeviceArbiter::YieldPoint();  // runs the work, which throws
  });
  holding.get_future().wait();
  std::thread caller([&] {
    EXPECT_THROW(
        arbiter.RunInteractive([] { throw std::runtime_error("inside"); }),
        std::runtime_error);
  });
  while (arbiter.waiting() < 1) std::this_thread::yield();
  go_on.set_value();
  holder.join();
  caller.join();
  EXPECT_EQ(arbiter.yields(), 1);
  bool ran = false;
  arbiter.RunInteractive([&] { ran = true; });
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace transferd::core
