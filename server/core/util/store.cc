#include "server/core/util/store.h"

#include <exception>
#include <utility>

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "server/core/util/status_macros.h"

namespace transferd::core {
namespace {

struct Migration {
  int version;
  const char* sql;
};

// Append only: never edit a migration that has shipped. Each entry moves the
// schema from version - 1 to version.
constexpr Migration kMigrations[] = {
    {1, R"sql(
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;
    )sql"},
    // The dataset catalog (server/core/datasets.cc). Files are stored under
    // datasets/<id>/<sha256>.<ext>; `classes` and `rejects` are JSON arrays.
    {2, R"sql(
      CREATE TABLE datasets (
        id              TEXT PRIMARY KEY,
        display_name    TEXT NOT NULL,
        create_time_ms  INTEGER NOT NULL,
        label_source    INTEGER NOT NULL,
        classes         TEXT NOT NULL,
        files           INTEGER NOT NULL,
        bytes           INTEGER NOT NULL,
        min_width       INTEGER NOT NULL,
        max_width       INTEGER NOT NULL,
        mean_width      REAL NOT NULL,
        min_height      INTEGER NOT NULL,
        max_height      INTEGER NOT NULL,
        mean_height     REAL NOT NULL,
        rejected_files  INTEGER NOT NULL,
        duplicate_files INTEGER NOT NULL,
        rejects         TEXT NOT NULL
      ) STRICT;
      CREATE INDEX datasets_by_time ON datasets (create_time_ms DESC, id);
      CREATE TABLE dataset_files (
        dataset_id  TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        client_path TEXT NOT NULL,
        label       INTEGER NOT NULL,
        split       INTEGER NOT NULL,
        file        TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        width       INTEGER NOT NULL,
        height      INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, idx)
      ) STRICT, WITHOUT ROWID;
    )sql"},
    // The job queue (server/core/jobs.cc) and the model registry
    // (server/core/registry.cc). JSON columns hold the engine's own types;
    // *_blob columns hold the API's messages, opaque to the engine.
    {3, R"sql(
      CREATE TABLE jobs (
        id                  TEXT PRIMARY KEY,
        ord                 INTEGER NOT NULL UNIQUE,
        kind                INTEGER NOT NULL,
        state               INTEGER NOT NULL,
        failure_reason      TEXT NOT NULL,
        dataset_id          TEXT NOT NULL,
        base_model          TEXT NOT NULL,
        spec_blob           BLOB NOT NULL,
        resolved_blob       BLOB NOT NULL,
        config              TEXT NOT NULL,
        create_time_ms      INTEGER NOT NULL,
        start_time_ms       INTEGER NOT NULL,
        end_time_ms         INTEGER NOT NULL,
        progress            TEXT NOT NULL,
        history             TEXT NOT NULL,
        trainable           TEXT NOT NULL,
        evaluations         TEXT NOT NULL,
        result_model        TEXT NOT NULL,
        last_event_sequence INTEGER NOT NULL,
        resumes             INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX jobs_by_state ON jobs (state, ord);
      CREATE TABLE job_events (
        job_id  TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        body    TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE models (
        id             TEXT PRIMARY KEY,
        display_name   TEXT NOT NULL,
        create_time_ms INTEGER NOT NULL,
        source_job     TEXT NOT NULL,
        parent         TEXT NOT NULL,
        spec_blob      BLOB NOT NULL,
        config         TEXT NOT NULL,
        classes        TEXT NOT NULL,
        preprocessing  TEXT NOT NULL,
        history        TEXT NOT NULL,
        best_epoch     INTEGER NOT NULL,
        evaluations    TEXT NOT NULL,
        size_bytes     INTEGER NOT NULL,
        parameters     INTEGER NOT NULL
      ) STRICT;
    )sql"},
    // Model aliases (server/core/registry.cc): a stable name that points at
    // one model and can be moved to another.
    {4, R"sql(
      CREATE TABLE aliases (
        alias          TEXT PRIMARY KEY,
        model_id       TEXT NOT NULL,
        update_time_ms INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX aliases_by_model ON aliases (model_id, alias);
    )sql"},
    // Per-file results of PREDICT jobs (server/core/jobs.cc).
    {5, R"sql(
      CREATE TABLE job_predictions (
        job_id         TEXT NOT NULL,
        idx            INTEGER NOT NULL,
        client_path    TEXT NOT NULL,
        split          INTEGER NOT NULL,
        true_label     TEXT NOT NULL,
        label          TEXT NOT NULL,
        probabilities  TEXT NOT NULL,
        status_code    INTEGER NOT NULL,
        status_message TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
      ) STRICT, WITHOUT ROWID;
    )sql"},
    // The W3C trace id of the call that created a job (server/core/jobs),
    // carried into its events and logs; "" for none.
    {6, R"sql(
      ALTER TABLE jobs ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
    )sql"},
    // Stored files by content, for de-duplicating uploads
    // (DatasetCatalog::HasContent).
    {7, R"sql(
      CREATE INDEX dataset_files_by_file ON dataset_files (file);
    )sql"},
};

absl::Status SqliteError(sqlite3* db, int rc, const std::string& what) {
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  std::string text = absl::StrCat("sqlite: ", what, ": ", msg);
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(text);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(text);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(text);
    case SQLITE_CONSTRAINT:
      return absl::AlreadyExistsError(text);
    default:
      return absl::InternalError(text);
  }
}

}  // namespace

// ---- Statement --------------------------------------------------------------

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_error_(other.bind_error_) {}

Statement::~Statement() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Statement& Statement::Bind(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::Bind(int index, std::string_view text) {
  int rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(),
                               SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::BindBlob(int index, std::string_view bytes) {
  int rc = sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(),
                               SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::BindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

absl::Status Statement::BindError() const {
  return SqliteError(db_, bind_error_, "bind");
}

absl::StatusOr<bool> Statement::Step() {
  if (bind_error_ != 0) return BindError();
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, sqlite3_sql(stmt_));
}

absl::Status Statement::Run() {
  TRANSFERD_ASSIGN_OR_RETURN(bool row, Step());
  (void)row;
  return absl::OkStatus();
}

Statement& Statement::Reset() {
  sqlite3_reset(stmt_);
  bind_error_ = 0;
  return *this;
}

int64_t Statement::ColumnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

double Statement::ColumnDouble(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string Statement::ColumnText(int column) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr || size <= 0) return {};
  return std::string(static_cast<const char*>(data), size);
}

bool Statement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

// ---- StoreTxn ---------------------------------------------------------------

absl::StatusOr<Statement> StoreTxn::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()),
                              &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return SqliteError(db_, rc,
                       absl::StrCat("prepare \"", std::string(sql), "\""));
  }
  return Statement(db_, stmt);
}

absl::Status StoreTxn::Exec(std::string_view sql) {
  std::string copy(sql);
  int rc = sqlite3_exec(db_, copy.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "exec");
  return absl::OkStatus();
}

int64_t StoreTxn::LastInsertRowId() const {
  return sqlite3_last_insert_rowid(db_);
}

int StoreTxn::Changes() const { return sqlite3_changes(db_); }

// ---- Store ------------------------------------------------------------------

int Store::LatestSchemaVersion() {
  return kMigrations[std::size(kMigrations) - 1].version;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const Options& options) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      options.path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status =
        SqliteError(db, rc, absl::StrCat("open ", options.path.string()));
    sqlite3_close(db);
    return status;
  }
  sqlite3_extended_result_codes(db, 1);
  std::unique_ptr<Store> store(new Store(options.path, db));
  store->cancelled_ = options.cancelled;
  store->wait_ms_ = options.open_timeout_ms;
  sqlite3_busy_handler(db, &Store::BusyHandler, store.get());

  StoreTxn conn(db);
  // journal_mode=WAL answers with a row; run it through Step.
  {
    TRANSFERD_ASSIGN_OR_RETURN(Statement wal,
                               conn.Prepare("PRAGMA journal_mode=WAL"));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || wal.ColumnText(0) != "wal") {
      return absl::FailedPreconditionError(absl::StrCat(
          "sqlite: ", options.path.string(),
          " cannot use WAL mode (is the data dir on a network filesystem?)"));
    }
  }
  TRANSFERD_RETURN_IF_ERROR(
      conn.Exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  {
    TRANSFERD_ASSIGN_OR_RETURN(Statement check,
                               conn.Prepare("PRAGMA quick_check"));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, check.Step());
    if (!row || check.ColumnText(0) != "ok") {
      return absl::DataLossError(absl::StrCat(
          "sqlite: ", options.path.string(), " failed its integrity check: ",
          row ? check.ColumnText(0) : "no result"));
    }
  }
  TRANSFERD_RETURN_IF_ERROR(store->Migrate());
  store->wait_ms_ = options.busy_timeout_ms;
  return store;
}

int Store::BusyHandler(void* self, int attempt) {
  auto* store = static_cast<Store*>(self);
  const auto now = std::chrono::steady_clock::now();
  if (attempt == 0) store->busy_since_ = now;
  if (store->cancelled_ && store->cancelled_()) return 0;
  if (now - store->busy_since_ >=
      std::chrono::milliseconds(store->wait_ms_.load())) {
    return 0;
  }
  // Another connection holds the lock: back off briefly and retry, as
  // sqlite3_busy_timeout() does, but stay cancellable.
  sqlite3_sleep(attempt < 10 ? 2 : 20);
  return 1;
}

Store::~Store() {
  if (db_ != nullptr) (void)Close();
}

absl::Status Store::Migrate() {
  StoreTxn conn(db_);
  int version = 0;
  {
    TRANSFERD_ASSIGN_OR_RETURN(Statement q,
                               conn.Prepare("PRAGMA user_version"));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) version = static_cast<int>(q.ColumnInt(0));
  }
  if (version > LatestSchemaVersion()) {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path_.string(), " has schema version ",
                     version, " but this transferd supports up to ",
                     LatestSchemaVersion(), "; run a newer transferd"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= version) continue;
    absl::Status status = Transaction([&](StoreTxn& txn) -> absl::Status {
      TRANSFERD_RETURN_IF_ERROR(txn.Exec(m.sql));
      return txn.Exec(absl::StrCat("PRAGMA user_version=", m.version));
    });
    if (!status.ok()) {
      return absl::Status(
          status.code(), absl::StrCat("migration to schema version ", m.version,
                                      " failed: ", status.message()));
    }
    version = m.version;
  }
  schema_version_ = version;
  return absl::OkStatus();
}

absl::Status Store::Transaction(
    const std::function<absl::Status(StoreTxn&)>& body) {
  std::lock_guard<std::mutex> lock(mu_);
  if (db_ == nullptr) {
    return absl::FailedPreconditionError("store is closed");
  }
  StoreTxn txn(db_);
  TRANSFERD_RETURN_IF_ERROR(txn.Exec("BEGIN IMMEDIATE"));
  absl::Status status;
  try {
    status = body(txn);
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("store transaction: ", e.what()));
  }
  if (status.ok()) {
    status = txn.Exec("COMMIT");
    if (status.ok()) return status;
  }
  (void)txn.Exec("ROLLBACK");
  return status;
}

absl::StatusOr<std::optional<std::string>> Store::GetMeta(
    std::string_view key) {
  std::optional<std::string> value;
  TRANSFERD_RETURN_IF_ERROR(Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare("SELECT value FROM meta WHERE key = ?"));
    q.Bind(1, key);
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) value = q.ColumnText(0);
    return absl::OkStatus();
  }));
  return value;
}

absl::Status Store::SetMeta(std::string_view key, std::string_view value) {
  return Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare("INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
    q.Bind(1, key).Bind(2, value);
    return q.Run();
  });
}

absl::Status Store::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (db_ == nullptr) return absl::OkStatus();
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE,
                                     nullptr, nullptr);
  absl::Status status = rc == SQLITE_OK
                            ? absl::OkStatus()
                            : SqliteError(db_, rc, "checkpoint at close");
  rc = sqlite3_close(db_);
  if (rc != SQLITE_OK && status.ok()) {
    status = SqliteError(db_, rc, "close");
  }
  db_ = nullptr;
  return status;
}

}  // namespace transferd::core
