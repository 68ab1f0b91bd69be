#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/core/cluster.h"

namespace transferd::core {
namespace {

using ::testing::HasSubstr;

// A member whose stream takes assignments (or refuses them: gone).
struct FakeStream {
  std::vector<RankAssignment> received;
  bool open = true;
  ClusterRegistry::Deliver deliver() {
    return [this](const RankAssignment& a) {
      if (!open) return false;
      received.push_back(a);
      return true;
    };
  }
};

ClusterWorker Named(const std::string& name) {
  ClusterWorker w;
  w.name = name;
  w.peer = "ipv4:10.0.0.1:1";
  return w;
}

RankAssignment Rank(const std::string& run, int rank) {
  RankAssignment a;
  a.job_id = "j1";
  a.run_id = run;
  a.rank = rank;
  a.world_size = 3;
  return a;
}

RankReport Said(const std::string& worker, const std::string& run, int rank,
                bool ready, const std::string& error = "") {
  RankReport r;
  r.worker_id = worker;
  r.run_id = run;
  r.rank = rank;
  r.ready = ready;
  r.ok = !ready && error.empty();
  r.error = error;
  return r;
}

TEST(ClusterRegistryTest, NamesAreUniqueAndWorkersAreListedByName) {
  ClusterRegistry cluster;
  FakeStream a, b;
  ASSERT_TRUE(cluster.Join(Named("b"), b.deliver()).ok());
  absl::StatusOr<std::string> id = cluster.Join(Named("a"), a.deliver());
  ASSERT_TRUE(id.ok());
  const absl::Status twin = cluster.Join(Named("a"), a.deliver()).status();
  EXPECT_TRUE(absl::IsAlreadyExists(twin)) << twin;
  EXPECT_THAT(std::string(twin.message()), HasSubstr("--worker-name"));
  ASSERT_EQ(cluster.Workers().size(), 2u);
  EXPECT_EQ(cluster.Workers()[0].name, "a");
  cluster.Leave(*id);
  EXPECT_EQ(cluster.Workers().size(), 1u);
  // The name is free again.
  EXPECT_TRUE(cluster.Join(Named("a"), a.deliver()).ok());
}

TEST(ClusterRegistryTest, ARunIsReadyWhenEveryRankSaysSoAndFailsWhenOneLeaves) {
  ClusterRegistry cluster;
  FakeStream s1, s2;
  const std::string w1 = *cluster.Join(Named("w1"), s1.deliver());
  const std::string w2 = *cluster.Join(Named("w2"), s2.deliver());
  absl::StatusOr<std::vector<std::string>> got =
      cluster.Reserve("j1", 2, 2, nullptr, nullptr);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 2u);
  ASSERT_TRUE(cluster.Assign(w1, Rank("r1", 1)));
  ASSERT_TRUE(cluster.Assign(w2, Rank("r1", 2)));
  EXPECT_EQ(s1.received.size(), 1u);
  EXPECT_EQ(cluster.Workers()[0].job, "j1");
  // Busy workers are not idle: nothing to reserve now.
  std::atomic<int> polls{0};
  EXPECT_TRUE(absl::IsCancelled(
      cluster
          .Reserve(
              "j2", 1, 1, [&] { return ++polls > 1; }, nullptr)
          .status()));

  ASSERT_TRUE(cluster.Report(Said(w1, "r1", 1, true)).ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      cluster.WaitReady("r1", 2, std::chrono::milliseconds(10), nullptr)));
  ASSERT_TRUE(cluster.Report(Said(w2, "r1", 2, true)).ok());
  EXPECT_TRUE(
      cluster.WaitReady("r1", 2, std::chrono::seconds(5), nullptr).ok());
  // A report for a run the worker is not on is refused.
  EXPECT_TRUE(absl::IsNotFound(cluster.Report(Said(w1, "other", 1, false))));

  // w2 leaves mid-run: the run has failed; w1's final report frees it.
  cluster.Leave(w2);
  const absl::Status lost =
      cluster.WaitReady("r1", 2, std::chrono::seconds(5), nullptr);
  EXPECT_TRUE(absl::IsUnavailable(lost)) << lost;
  EXPECT_THAT(std::string(lost.message()), HasSubstr("w2"));
  ASSERT_TRUE(cluster.Report(Said(w1, "r1", 1, false, "peer gone")).ok());
  const std::vector<RankReport> finals =
      cluster.WaitFinal("r1", 2, std::chrono::seconds(5));
  ASSERT_EQ(finals.size(), 1u);
  EXPECT_EQ(finals[0].error, "peer gone");
  EXPECT_EQ(cluster.Workers()[0].job, "");
  EXPECT_TRUE(cluster.Reserve("j2", 1, 1, nullptr, nullptr).ok());
}

TEST(ClusterRegistryTest, ReserveWaitsForEnoughWorkersAndSaysSo) {
  ClusterRegistry cluster;
  FakeStream s1;
  std::vector<int> idle_seen;
  std::thread joiner;
  absl::StatusOr<std::vector<std::string>> got =
      cluster.Reserve("j1", 1, 3, nullptr, [&](int idle) {
        idle_seen.push_back(idle);
        // The first report (0 idle) brings a worker in.
        if (!joiner.joinable()) {
          joiner = std::thread(
              [&] { (void)cluster.Join(Named("late"), s1.deliver()); });
        }
      });
  joiner.join();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 1u);  // as many as were idle, at least `need`
  EXPECT_EQ(idle_seen, std::vector<int>{0});
  // A reserved worker that leaves before its assignment cannot take it.
  FakeStream gone;
  gone.open = false;
  const std::string w = *cluster.Join(Named("flaky"), gone.deliver());
  ASSERT_TRUE(cluster.Reserve("j2", 1, 1, nullptr, nullptr).ok());
  EXPECT_FALSE(cluster.Assign(w, Rank("r9", 1)));
  EXPECT_EQ(cluster.Workers().size(), 1u);
}

}  // namespace
}  // namespace transferd::core
