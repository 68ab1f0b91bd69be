#include "server/core/util/store.h"

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "server/core/util/status_macros.h"
#include "tests/support/subprocess.h"

namespace transferd::core {
namespace {

using ::testing::HasSubstr;

// Reads one integer/text PRAGMA through a separate raw connection.
std::string Pragma(const std::string& path, const std::string& pragma) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  std::string sql = "PRAGMA " + pragma;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
  std::string value;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

Store::Options At(const std::string& path) {
  Store::Options options;
  options.path = path;
  return options;
}

class StoreTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.path() + "/transferd.db"; }
  std::unique_ptr<Store> Open() {
    auto store = Store::Open(At(path()));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  testing::TempDir dir_;
};

TEST_F(StoreTest, NewDatabaseIsMigratedToLatestInWalMode) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), Store::LatestSchemaVersion());
  EXPECT_EQ(Pragma(path(), "user_version"),
            std::to_string(Store::LatestSchemaVersion()));
  EXPECT_EQ(Pragma(path(), "journal_mode"), "wal");
}

TEST_F(StoreTest, MetaSurvivesReopenAndMigrationsAreIdempotent) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->SetMeta("instance_id", "abc").ok());
    ASSERT_TRUE(store->SetMeta("instance_id", "def").ok());
    ASSERT_TRUE(store->Close().ok());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  auto value = store->GetMeta("instance_id");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->value_or(""), "def");
  auto missing = store->GetMeta("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  EXPECT_EQ(Pragma(path(), "integrity_check"), "ok");
}

TEST_F(StoreTest, FailedTransactionRollsBack) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  absl::Status status = store->Transaction([](StoreTxn& txn) -> absl::Status {
    TRANSFERD_RETURN_IF_ERROR(
        txn.Exec("INSERT INTO meta(key, value) VALUES('k', 'v')"));
    return absl::AbortedError("changed my mind");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  auto value = store->GetMeta("k");
  ASSERT_TRUE(value.ok());
  EXPECT_FALSE(value->has_value());
}

TEST_F(StoreTest, SqlErrorsBecomeStatusesNotCrashes) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  absl::Status status = store->Transaction([](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(Statement s, txn.Prepare("SELEKT 1"));
    return s.Run();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("SELEKT"));
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store
                    ->Transaction([](StoreTxn& txn) {
                      return txn.Exec("PRAGMA user_version=999");
                    })
                    .ok());
  }
  auto store = Store::Open(At(path()));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("schema version 999"));
}

TEST_F(StoreTest, NotADatabaseIsDataLoss) {
  std::ofstream(path()) << std::string(4096, 'x');
  auto store = Store::Open(At(path()));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss)
      << store.status();
}

TEST_F(StoreTest, ClosedStoreRefusesWork) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(store->GetMeta("x").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace transferd::core
