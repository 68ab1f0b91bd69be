#include "server/core/util/data_dir.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/subprocess.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(DataDirTest, CreatesLayout) {
  testing::TempDir tmp;
  auto dir = DataDir::Open({tmp.path() + "/d"});
  ASSERT_TRUE(dir.ok()) << dir.status();
  for (const fs::path& p :
       {(*dir)->weights_dir(), (*dir)->datasets_dir(), (*dir)->models_dir(),
        (*dir)->cache_dir(), (*dir)->tmp_dir()}) {
    EXPECT_TRUE(fs::is_directory(p)) << p;
  }
  EXPECT_EQ((*dir)->database_path(), fs::path(tmp.path()) / "d/transferd.db");
}

TEST(DataDirTest, SecondOpenerIsRefusedUntilTheFirstCloses) {
  testing::TempDir tmp;
  auto first = DataDir::Open({tmp.path()});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = DataDir::Open({tmp.path()});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr("in use by another transferd (pid " +
                        std::to_string(getpid()) + ")"));
  first->reset();
  auto third = DataDir::Open({tmp.path()});
  EXPECT_TRUE(third.ok()) << third.status();
}

// --startup-timeout: a second opener waits for the lock, then gives up
// naming the holder; the lock freed meanwhile is taken.
TEST(DataDirTest, SecondOpenerWaitsForTheLockUpToLockWait) {
  testing::TempDir tmp;
  auto first = DataDir::Open({tmp.path()});
  ASSERT_TRUE(first.ok()) << first.status();
  const auto start = std::chrono::steady_clock::now();
  auto refused = DataDir::Open({tmp.path(), std::chrono::milliseconds(300)});
  ASSERT_FALSE(refused.ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(300));
  EXPECT_THAT(refused.status().message(),
              HasSubstr("stayed so for the whole --startup-timeout"));
  EXPECT_THAT(refused.status().message(),
              HasSubstr("(pid " + std::to_string(getpid()) + ")"));

  // Waiting in a thread; the first lets go: the waiter gets the directory.
  absl::StatusOr<std::unique_ptr<DataDir>> waited =
      absl::UnknownError("not run");
  std::thread waiter([&] {
    waited = DataDir::Open({tmp.path(), std::chrono::seconds(60)});
  });
  first->reset();
  waiter.join();
  EXPECT_TRUE(waited.ok()) << waited.status();
}

TEST(DataDirTest, LeftoversInTmpAreRemovedAtOpen) {
  testing::TempDir tmp;
  fs::create_directories(fs::path(tmp.path()) / "tmp/upload-123/part");
  std::ofstream(fs::path(tmp.path()) / "tmp/upload-123/part/a.jpg") << "x";
  std::ofstream(fs::path(tmp.path()) / "tmp/stray") << "x";
  std::ofstream(fs::path(tmp.path()) / "keep.txt") << "x";
  auto dir = DataDir::Open({tmp.path()});
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ((*dir)->stale_tmp_entries_removed(), 2);
  EXPECT_TRUE(fs::is_empty((*dir)->tmp_dir()));
  EXPECT_TRUE(fs::exists(fs::path(tmp.path()) / "keep.txt"));
}

TEST(DataDirTest, UncreatablePathIsAClearError) {
  testing::TempDir tmp;
  std::ofstream(tmp.path() + "/file") << "x";
  auto dir = DataDir::Open({tmp.path() + "/file/sub"});
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(dir.status().message()),
              HasSubstr("cannot create data dir"));
}

}  // namespace
}  // namespace transferd::core
