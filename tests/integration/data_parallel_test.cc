// Data-parallel training with real processes on loopback: bench/dist_train
// ranks started as torchrun starts them (MASTER_ADDR, MASTER_PORT,
// WORLD_SIZE, RANK), each running the engine's Trainer over a c10d
// TCPStore + ProcessGroupGloo.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/paths.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::Subprocess;

class DataParallelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two classes of 32 px images, 25 training and 8 validation images
    // each: 50 training images do not divide into global batches of 20,
    // so the last step's batch is partial (10 images: all on rank 0).
    for (const char* split : {"train", "validation"}) {
      const int n = std::string(split) == "train" ? 25 : 8;
      for (int c = 0; c < 2; ++c) {
        for (int i = 0; i < n; ++i) {
          testing::WriteFile(
              data_ / split / (c == 0 ? "dark" : "bright") /
                  (std::to_string(i) + ".png"),
              testing::EncodeTestImage(32, 32, ".png", c * 1000 + i));
        }
      }
    }
  }

  std::vector<std::string> Args(const std::string& work, int batch) const {
    return {testing::BinaryPath("dist_train"),
            "--data",
            data_.string(),
            "--work",
            (root_ / work).string(),
            "--recipe",
            "parity",
            "--batch",
            std::to_string(batch),
            "--epochs",
            "3"};
  }

  static std::vector<std::string> RankEnv(int port, int rank, int world) {
    return {"MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port),
            "WORLD_SIZE=" + std::to_string(world),
            "RANK=" + std::to_string(rank)};
  }

  std::string Log(const std::string& name) const {
    return (root_ / (name + ".log")).string();
  }

  testing::TempDir dir_;
  fs::path root_ = dir_.path();
  fs::path data_ = root_ / "data";
};

nlohmann::json LastJsonLine(const std::string& out) {
  // dist_train prints one JSON line last.
  std::string text = out;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t start = text.rfind('\n');
  return nlohmann::json::parse(
      start == std::string::npos ? text : text.substr(start + 1));
}

TEST_F(DataParallelTest, TwoRanksOfTenMatchOneRankOfTwenty) {
  // The reference: one process, no rendezvous (a world of size 1).
  testing::RunResult solo =
      testing::Run(Args("solo", 20), {"WORLD_SIZE="}, std::chrono::minutes(3));
  ASSERT_TRUE(solo.status.exited && solo.status.code == 0) << solo.err;
  const nlohmann::json one = LastJsonLine(solo.out);
  EXPECT_EQ(one["world_size"], 1);
  EXPECT_EQ(one["backend"], "solo");

  const int port = testing::FreeLoopbackPort();
  Subprocess rank1 =
      Subprocess::Spawn(Args("rank1", 10), RankEnv(port, 1, 2), Log("rank1"));
  testing::RunResult rank0 = testing::Run(
      Args("rank0", 10), RankEnv(port, 0, 2), std::chrono::minutes(3));
  ASSERT_TRUE(rank0.status.exited && rank0.status.code == 0) << rank0.err;
  std::optional<testing::ExitStatus> rank1_status =
      rank1.Wait(std::chrono::minutes(1));
  ASSERT_TRUE(rank1_status && rank1_status->exited && rank1_status->code == 0);

  const nlohmann::json two = LastJsonLine(rank0.out);
  EXPECT_EQ(two["world_size"], 2);
  EXPECT_EQ(two["backend"], "gloo");
  EXPECT_TRUE(two["weights_written"].get<bool>());
  // 3 epochs of ceil(50 / 20) = 3 steps on every rank.
  EXPECT_EQ(two["steps"], 9);
  EXPECT_EQ(one["steps"], 9);
  EXPECT_GT(two["allreduce_seconds"].get<double>(), 0);
  ASSERT_EQ(one["epochs"].size(), 3u);
  ASSERT_EQ(two["epochs"].size(), 3u);
  for (size_t e = 0; e < 3; ++e) {
    const auto& a = one["epochs"][e];
    const auto& b = two["epochs"][e];
    EXPECT_NEAR(a["loss"].get<double>(), b["loss"].get<double>(), 1e-5)
        << "epoch " << e + 1;
    EXPECT_NEAR(a["val_loss"].get<double>(), b["val_loss"].get<double>(), 1e-5)
        << "epoch " << e + 1;
    EXPECT_EQ(a["accuracy"], b["accuracy"]) << "epoch " << e + 1;
    EXPECT_EQ(a["val_accuracy"], b["val_accuracy"]) << "epoch " << e + 1;
  }
  // Training moved the weights: the losses are not all the same.
  EXPECT_NE(one["epochs"][0]["loss"], one["epochs"][2]["loss"]);
}

TEST_F(DataParallelTest, AKilledRankFailsTheOthersCollectiveInsteadOfHanging) {
  const int port = testing::FreeLoopbackPort();
  // Rank 1 kills itself with SIGKILL after its 4th step (in epoch 2).
  std::vector<std::string> dying = Args("rank1", 10);
  dying.insert(dying.end(), {"--die-after-steps", "4"});
  Subprocess rank1 =
      Subprocess::Spawn(dying, RankEnv(port, 1, 2), Log("rank1"));
  const auto start = std::chrono::steady_clock::now();
  testing::RunResult rank0 = testing::Run(
      Args("rank0", 10), RankEnv(port, 0, 2), std::chrono::minutes(2));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::optional<testing::ExitStatus> rank1_status =
      rank1.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(rank1_status.has_value());
  EXPECT_FALSE(rank1_status->exited);
  EXPECT_EQ(rank1_status->signal, SIGKILL);
  // Rank 0 ends with an error naming the collective (not killed by the
  // test's timeout), well within the ranks' 30 s collective timeout.
  ASSERT_TRUE(rank0.status.exited) << rank0.err;
  EXPECT_EQ(rank0.status.code, 1);
  EXPECT_THAT(rank0.err, HasSubstr("across 2 ranks failed (rank 0)"));
  EXPECT_LT(seconds, 60);
}

TEST_F(DataParallelTest, MalformedTorchrunEnvironmentIsRefused) {
  testing::RunResult r = testing::Run(
      Args("bad", 10),
      {"MASTER_ADDR=127.0.0.1", "MASTER_PORT=29500", "WORLD_SIZE=2", "RANK=2"},
      std::chrono::seconds(30));
  ASSERT_TRUE(r.status.exited);
  EXPECT_EQ(r.status.code, 2);
  EXPECT_THAT(r.err, HasSubstr("RANK=2 is not an integer in [0, 1]"));
}

}  // namespace
}  // namespace transferd
