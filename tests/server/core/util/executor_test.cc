// The engine's executor: order, concurrency, and nothing dropped at the end.
#include "server/core/util/executor.h"

#include <future>
#include <memory>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::core {
namespace {

TEST(ExecutorTest, OneThreadRunsInSubmissionOrderAndDrainsOnDestruction) {
  std::vector<int> seen;
  {
    Executor executor({1, "test"});
    for (int i = 0; i < 100; ++i) {
      executor.Schedule([&seen, i] { seen.push_back(i); });
    }
  }  // the destructor runs what is still queued
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
}

TEST(ExecutorTest, ABlockedClosureDoesNotHoldUpTheOtherThread) {
  Executor executor({2, "test"});
  std::promise<void> released;
  std::future<void> release = released.get_future();
  std::promise<void> first_done;
  // The first closure waits for the second: it can only finish when the two
  // run on different threads.
  executor.Schedule([&release, &first_done] {
    release.wait();
    first_done.set_value();
  });
  executor.Schedule([&released] { released.set_value(); });
  first_done.get_future().wait();
  EXPECT_EQ(executor.queued(), 0u);
}

}  // namespace
}  // namespace transferd::core
