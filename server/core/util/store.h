// The metadata store: one SQLite database in WAL mode inside the data
// directory. The schema is versioned (PRAGMA user_version) and brought up to
// date by ordered migrations when the store opens; each migration runs in a
// transaction, so a crash mid-migration leaves the previous version intact.
//
// Components (dataset catalog, job queue, model registry) keep their tables
// here and reach SQLite through Store::Transaction, which serialises writers
// inside the process.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace transferd::core {

// A prepared statement bound to one connection. Bind* indices are 1-based
// like SQLite's. Not thread-safe; use inside Store::Transaction.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, std::string_view bytes);
  Statement& BindNull(int index);

  // Advances to the next row: true with a row, false when done.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows.
  absl::Status Run();
  // Makes the statement runnable again (bindings are kept until rebound).
  Statement& Reset();

  int64_t ColumnInt(int column) const;
  double ColumnDouble(int column) const;
  std::string ColumnText(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  friend class StoreTxn;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  absl::Status BindError() const;

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_error_ = 0;
};

// The connection handed to a transaction body.
class StoreTxn {
 public:
  absl::StatusOr<Statement> Prepare(std::string_view sql);
  // Runs one or more statements without parameters.
  absl::Status Exec(std::string_view sql);
  int64_t LastInsertRowId() const;
  int Changes() const;

 private:
  friend class Store;
  explicit StoreTxn(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

class Store {
 public:
  struct Options {
    std::filesystem::path path;
    // How long a statement waits on a lock held by another connection.
    int busy_timeout_ms = 5000;
    // How long Open waits for such a lock (another process, a backup).
    int open_timeout_ms = 5000;
    // Polled while waiting on a lock; returning true gives up at once.
    std::function<bool()> cancelled;
  };

  // Opens (creating if missing) and migrates the database. FAILED_PRECONDITION
  // when the file's schema is newer than this binary knows, DATA_LOSS when
  // the file is not a SQLite database or fails its quick check.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const Options& options);

  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The schema version this binary migrates to.
  static int LatestSchemaVersion();
  int schema_version() const { return schema_version_; }
  const std::filesystem::path& path() const { return path_; }

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT; a non-OK status (or an
  // exception) rolls back. Calls are serialised.
  absl::Status Transaction(const std::function<absl::Status(StoreTxn&)>& body);

  // Small key/value table for server-wide facts (instance id, creation time).
  absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key);
  absl::Status SetMeta(std::string_view key, std::string_view value);

  // Checkpoints the WAL into the main file and closes the connection; later
  // calls fail with FAILED_PRECONDITION. Called at shutdown.
  absl::Status Close();

 private:
  Store(std::filesystem::path path, sqlite3* db)
      : path_(std::move(path)), db_(db) {}
  absl::Status Migrate();
  static int BusyHandler(void* self, int attempt);

  std::filesystem::path path_;
  std::atomic<int> wait_ms_{0};
  std::function<bool()> cancelled_;
  std::chrono::steady_clock::time_point busy_since_;
  std::mutex mu_;
  sqlite3* db_;
  int schema_version_ = 0;
};

}  // namespace transferd::core
