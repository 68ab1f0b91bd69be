#include "server/core/train/collective.h"

#include <cstdlib>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/support/subprocess.h"

namespace transferd::core::train {
namespace {

using ::testing::HasSubstr;

class EnvVars {
 public:
  explicit EnvVars(std::vector<std::pair<const char*, const char*>> vars) {
    for (const auto& [k, v] : vars) {
      names_.push_back(k);
      if (v == nullptr) {
        ::unsetenv(k);
      } else {
        ::setenv(k, v, 1);
      }
    }
  }
  ~EnvVars() {
    for (const char* k : names_) ::unsetenv(k);
  }

 private:
  std::vector<const char*> names_;
};

TEST(CollectiveTest, TorchrunEnvironment) {
  {
    EnvVars env({{"WORLD_SIZE", nullptr}});
    EXPECT_TRUE(absl::IsNotFound(RendezvousFromEnv().status()));
  }
  {
    EnvVars env({{"MASTER_ADDR", "10.0.0.7"},
                 {"MASTER_PORT", "29400"},
                 {"WORLD_SIZE", "4"},
                 {"RANK", "3"},
                 {"TORCHELASTIC_RUN_ID", "job-9"}});
    absl::StatusOr<RendezvousOptions> o = RendezvousFromEnv();
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(o->master_addr, "10.0.0.7");
    EXPECT_EQ(o->master_port, 29400);
    EXPECT_EQ(o->world_size, 4);
    EXPECT_EQ(o->rank, 3);
    EXPECT_EQ(o->run_id, "job-9");
  }
  struct Bad {
    const char *port, *world, *rank, *addr, *message;
  };
  for (const Bad& b : {
           Bad{"29400", "2", "2", "h", "RANK=2 is not an integer in [0, 1]"},
           Bad{"29400", "0", "0", "h", "WORLD_SIZE=0 is not an integer"},
           Bad{"http", "2", "0", "h", "MASTER_PORT=http is not an integer"},
           Bad{"29400", "2", nullptr, "h", "RANK is not set"},
           Bad{"29400", "2", "1", nullptr, "MASTER_ADDR is not set"},
       }) {
    EnvVars env({{"MASTER_PORT", b.port},
                 {"WORLD_SIZE", b.world},
                 {"RANK", b.rank},
                 {"MASTER_ADDR", b.addr}});
    absl::Status s = RendezvousFromEnv().status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(b.message));
  }
}

TEST(CollectiveTest, AWorldOfOneIsSolo) {
  RendezvousOptions o;
  auto c = JoinProcessGroup(o, torch::kCPU);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->backend(), "solo");
  std::vector<torch::Tensor> t{torch::ones({3})};
  ASSERT_TRUE((*c)->AllReduceSum(t).ok());
  EXPECT_TRUE(torch::equal(t[0], torch::ones({3})));
  o.rank = 1;
  EXPECT_TRUE(
      absl::IsInvalidArgument(JoinProcessGroup(o, torch::kCPU).status()));
}

TEST(CollectiveTest, TwoRanksSumBroadcastAndNoticeALeaver) {
  if (!HasDistributedBackend()) GTEST_SKIP() << "built without c10d Gloo";
  const int port = testing::FreeLoopbackPort();
  std::shared_ptr<Collective> ranks[2];
  absl::Status joined[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      RendezvousOptions o;
      o.master_port = port;
      o.rank = r;
      o.world_size = 2;
      o.timeout = std::chrono::seconds(20);
      auto c = JoinProcessGroup(o, torch::kCPU);
      joined[r] = c.status();
      if (c.ok()) ranks[r] = *c;
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(joined[0].ok()) << joined[0];
  ASSERT_TRUE(joined[1].ok()) << joined[1];
  EXPECT_EQ(ranks[1]->rank(), 1);
  EXPECT_EQ(ranks[1]->world_size(), 2);
  EXPECT_EQ(ranks[0]->backend(), "gloo");

  threads.clear();
  std::vector<torch::Tensor> values[2];
  absl::Status done[2];
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      values[r] = {torch::full({4}, r + 1.0), torch::full({2}, 10.0 * r)};
      done[r] = ranks[r]->AllReduceSum(values[r]);
      if (!done[r].ok()) return;
      std::vector<torch::Tensor> b{torch::full({2}, 5.0 + r)};
      done[r] = ranks[r]->Broadcast(b, 1);
      values[r].push_back(b[0]);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(done[r].ok()) << done[r];
    EXPECT_TRUE(torch::equal(values[r][0], torch::full({4}, 3.0)));
    EXPECT_TRUE(torch::equal(values[r][1], torch::full({2}, 10.0)));
    EXPECT_TRUE(torch::equal(values[r][2], torch::full({2}, 6.0)));
  }
  EXPECT_GT(ranks[0]->seconds(), 0);

  // Rank 1 leaves (its connections close): rank 0's next collective fails
  // with UNAVAILABLE instead of waiting for it, and so does any after it.
  ranks[1].reset();
  std::vector<torch::Tensor> t{torch::ones({4})};
  absl::Status lost = ranks[0]->AllReduceSum(t);
  EXPECT_TRUE(absl::IsUnavailable(lost)) << lost;
  EXPECT_THAT(std::string(lost.message()),
              HasSubstr("allreduce across 2 ranks failed (rank 0)"));
  EXPECT_TRUE(absl::IsUnavailable(ranks[0]->AllReduceSum(t)));
}

}  // namespace
}  // namespace transferd::core::train
