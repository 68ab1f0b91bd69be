// transferctl_lib: a thin, synchronous wrapper over the transferd.v1 stubs.
// All logic lives on the server; this only connects, sets deadlines and turns
// gRPC statuses into absl::Status with messages a person can act on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "transferd/v1/datasets.pb.h"
#include "transferd/v1/inference.pb.h"
#include "transferd/v1/jobs.pb.h"
#include "transferd/v1/models.pb.h"
#include "transferd/v1/server.pb.h"

namespace transferd::client {

struct ClientOptions {
  // HOST:PORT of transferd.
  std::string address = "127.0.0.1:50051";
  // Deadline of each unary call.
  std::chrono::milliseconds timeout{30000};
  // Bearer token sent with every call ("authorization: Bearer TOKEN");
  // empty = none.
  std::string token;
  // TLS: used when `tls` is set or any file is given. The server's
  // certificate is checked against tls_ca_file (PEM), or the system's roots
  // when empty, for the host of `address` or tls_server_name.
  bool tls = false;
  std::string tls_ca_file;
  // Client certificate and key (PEM) for servers that require one (mTLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
};

enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };
const char* HealthStatusName(HealthStatus status);

// What UploadDataset sends.
struct UploadOptions {
  // Local folder whose regular files are uploaded (recursively; names
  // starting with '.' are skipped, as are the folders they name).
  std::filesystem::path directory;
  // Requested id; empty lets the server choose.
  std::string dataset_id;
  // Free-form name shown in listings.
  std::string display_name;
  // LABEL_SOURCE_UNSPECIFIED lets the server detect it.
  transferd::v1::LabelSource label_source =
      transferd::v1::LABEL_SOURCE_UNSPECIFIED;
  // Unset lets the server choose (split folders when the paths carry them).
  std::optional<transferd::v1::SplitPolicy> split_policy;
  // Import this folder of the server's --import-root instead of sending
  // files (admin role); `directory` is then not read.
  std::string server_path;
  // Relative path -> class (LABEL_SOURCE_EXPLICIT, e.g. from a CSV file):
  // when not empty, only these files are sent, each with its label.
  std::map<std::string, std::string> explicit_labels;
  // Deadline of the whole upload; 0 = none. Uploads are long, so the
  // client's per-call timeout does not apply to them.
  std::chrono::milliseconds deadline{0};
  // When set and it turns true, the upload is cancelled before the next
  // chunk. The dataset is not created; the files that reached the server
  // stay staged there, and the next upload of them does not send them again.
  const std::atomic<bool>* cancel = nullptr;
  // Where file hashes are cached between runs (keyed by path, size and
  // modification time), so a resumed upload of a large folder does not hash
  // it all again; empty: $XDG_CACHE_HOME/transferctl (or ~/.cache/...), no
  // cache when neither is set.
  std::filesystem::path hash_cache_dir;
};

// Progress of an upload, reported after every chunk sent.
struct UploadProgress {
  // Done so far, the files the server already held included.
  int64_t files_sent = 0;
  int64_t files_total = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_total = 0;
  // Of those, already on the server (an earlier, interrupted upload of the
  // same files, or another dataset with them): not sent again.
  int64_t files_held = 0;
  int64_t bytes_held = 0;
  double elapsed_seconds = 0;
};
using ProgressCallback = std::function<void(const UploadProgress&)>;

// How a local dataset folder looks, guessed from its paths (display and CLI
// defaults only: the server applies the actual label and split rules).
struct DatasetLayout {
  // Top-level split folders present, in the order train, validation (or
  // val), test; empty when there are none.
  std::vector<std::string> split_folders;
  // LABEL_SOURCE_FILENAME when the images sit directly in the split folders
  // (or the root), Kaggle style; LABEL_SOURCE_FOLDER for class folders.
  transferd::v1::LabelSource label_source =
      transferd::v1::LABEL_SOURCE_UNSPECIFIED;
  // One image path as found, to illustrate the rule ("train/cat.0.jpg").
  std::string example_path;
  // The label the rule derives from example_path ("cat").
  std::string example_label;
  // Image files (.jpg, .jpeg, .png) and all files, hidden ones excluded.
  int64_t image_files = 0;
  int64_t files = 0;
};
absl::StatusOr<DatasetLayout> DetectLayout(const std::filesystem::path& dir);
// The relative, '/'-separated paths UploadDataset would send from `dir`.
absl::StatusOr<std::vector<std::string>> UploadPaths(
    const std::filesystem::path& dir);
// One line for people: "split folders train/ validation/; labels from file
// names (train/cat.0.jpg -> cat)".
std::string DescribeLayout(const DatasetLayout& layout);
absl::StatusOr<std::string> DescribeLayout(const std::filesystem::path& dir);

// "ID" or "datasets/ID" -> "datasets/ID".
std::string DatasetName(std::string_view id_or_name);
// "ID" or "jobs/ID" -> "jobs/ID".
std::string JobName(std::string_view id_or_name);
// "ID" or "models/ID" -> "models/ID"; "aliases/NAME" is kept as it is.
std::string ModelName(std::string_view id_or_name);
// "NAME" or "aliases/NAME" -> "aliases/NAME".
std::string AliasName(std::string_view alias_or_name);

// Lowercase hex SHA-256 of a file (what ExportModel's last chunk carries).
absl::StatusOr<std::string> FileSha256(const std::filesystem::path& path);

// What ExportModel wrote.
struct ExportResult {
  std::filesystem::path path;
  int64_t bytes = 0;
  std::string sha256;  // checked against the server's
};

// Called for every event of a watched job, in sequence order, each exactly
// once (also across reconnects).
using JobEventCallback = std::function<void(const transferd::v1::JobEvent&)>;

// How WatchJob behaves when the stream breaks.
struct WatchOptions {
  // Reconnect attempts after a dropped stream (UNAVAILABLE or a CANCELLED
  // this client did not ask for: the server restarted, was killed, or the
  // network hiccuped) stop after this long without getting the stream back;
  // then WatchJob returns UNAVAILABLE. Long enough for a restart that loads
  // a large model or a rescheduled Kubernetes pod.
  std::chrono::milliseconds reconnect_for{120000};
  // First pause between attempts; doubled each time up to max_backoff.
  std::chrono::milliseconds initial_backoff{250};
  std::chrono::milliseconds max_backoff{4000};
  // When set and it turns true, the watch ends (within ~50 ms) with
  // CANCELLED; the job itself is not touched.
  const std::atomic<bool>* cancel = nullptr;
  // Told about each reconnect attempt: why the stream broke, and the
  // sequence it resumes after. May be empty.
  std::function<void(const absl::Status& why, int64_t after_sequence)>
      on_reconnect;
};

class Client {
 public:
  // Creates the channel; connecting happens on the first call.
  static std::unique_ptr<Client> Create(const ClientOptions& options);
  ~Client();

  const std::string& address() const { return options_.address; }

  absl::StatusOr<transferd::v1::ServerInfo> GetServerInfo();

  // grpc.health.v1 status of `service` ("" = the whole server). With
  // wait > 0, waits up to `wait` for the server to come up and report
  // SERVING, and returns the last status seen when it does not.
  absl::StatusOr<HealthStatus> CheckHealth(
      const std::string& service,
      std::chrono::milliseconds wait = std::chrono::milliseconds(0));

  absl::StatusOr<transferd::v1::ListDatasetsResponse> ListDatasets(
      const transferd::v1::ListDatasetsRequest& request);
  // `name` is "datasets/{id}".
  absl::StatusOr<transferd::v1::Dataset> GetDataset(const std::string& name);
  absl::Status DeleteDataset(const std::string& name);
  // Streams every file under options.directory (sorted by relative path, so
  // the same folder always makes the same stream) in chunks of the server's
  // upload_chunk_bytes, reading each file piece by piece. No deadline unless
  // options.deadline says so. `progress` may be empty.
  // For each SHA-256, whether the server holds that content (batched).
  absl::StatusOr<std::vector<bool>> FindContent(
      const std::vector<std::string>& sha256);
  // Uploads options.directory. Resumable and de-duplicating: the files are
  // hashed, the server says which contents it lacks, those alone are staged
  // (each kept by the server as it arrives), then the dataset is created
  // from references. A server without FindContent gets the plain stream.
  absl::StatusOr<transferd::v1::UploadDatasetResponse> UploadDataset(
      const UploadOptions& options, const ProgressCallback& progress = {});

  // Validates and queues a job; INVALID_ARGUMENT names the spec field.
  absl::StatusOr<transferd::v1::Job> CreateJob(
      const transferd::v1::CreateJobRequest& request);
  // `name` is "jobs/{id}".
  absl::StatusOr<transferd::v1::Job> GetJob(const std::string& name);
  absl::StatusOr<transferd::v1::ListJobsResponse> ListJobs(
      const transferd::v1::ListJobsRequest& request);
  // Requests cancellation; returns the job as it is now.
  absl::StatusOr<transferd::v1::Job> CancelJob(const std::string& name);
  // Streams the events of job `name` with sequence > after_sequence to
  // `on_event`: the stored ones, then (with follow) live ones until the job
  // ends. Returns OK when the server ended the stream normally (after the
  // terminal state event when following). A dropped stream is resumed after
  // the last sequence delivered, so no event is lost or repeated, for up to
  // options.reconnect_for; a server that cannot be reached at the first
  // attempt is an error at once (UNAVAILABLE). No deadline applies.
  absl::Status WatchJob(const std::string& name, int64_t after_sequence,
                        bool follow, const JobEventCallback& on_event,
                        const WatchOptions& options = {});

  // One page of a PREDICT job's per-file results.
  absl::StatusOr<transferd::v1::ListJobPredictionsResponse> ListJobPredictions(
      const transferd::v1::ListJobPredictionsRequest& request);

  // Classifies request.images with request.model ("models/{id}" or
  // "aliases/{alias}"); each image has its own status in the answer.
  absl::StatusOr<transferd::v1::PredictResponse> Predict(
      const transferd::v1::PredictRequest& request);

  // `name` is "models/{id}" (or "aliases/{alias}").
  absl::StatusOr<transferd::v1::Model> GetModel(const std::string& name);
  absl::StatusOr<transferd::v1::ListModelsResponse> ListModels(
      const transferd::v1::ListModelsRequest& request);
  absl::Status DeleteModel(const std::string& name);

  // `alias` is "aliases/{alias}", `model` "models/{id}".
  absl::StatusOr<transferd::v1::Alias> SetAlias(const std::string& alias,
                                                const std::string& model);
  absl::Status DeleteAlias(const std::string& alias);
  absl::StatusOr<transferd::v1::ListAliasesResponse> ListAliases(
      const transferd::v1::ListAliasesRequest& request);

  // Downloads the archive of model `name` ("models/{id}" or
  // "aliases/{alias}") into `path`: written to "<path>.part" chunk by chunk
  // at each chunk's offset, checked (every byte received once, the total
  // length, the SHA-256 of the last chunk), then renamed to `path`. Nothing
  // is left on error (DATA_LOSS for a length or hash mismatch). No deadline
  // unless `deadline` > 0.
  absl::StatusOr<ExportResult> ExportModel(
      const std::string& name, const std::filesystem::path& path,
      std::chrono::milliseconds deadline = std::chrono::milliseconds(0));
  // Uploads an archive written by ExportModel in chunks of the server's
  // upload_chunk_bytes. `model_id` / `display_name` empty: the server
  // chooses / the archive's. No deadline unless `deadline` > 0.
  absl::StatusOr<transferd::v1::Model> ImportModel(
      const std::filesystem::path& archive, const std::string& model_id,
      const std::string& display_name,
      std::chrono::milliseconds deadline = std::chrono::milliseconds(0));

 private:
  // Data bytes per upload message, as the server asks (its default when it
  // cannot be asked); UNAVAILABLE when the server cannot be reached.
  absl::StatusOr<int64_t> UploadChunkBytes();

  struct Stubs;
  Client(ClientOptions options, std::unique_ptr<Stubs> stubs);

  ClientOptions options_;
  std::unique_ptr<Stubs> stubs_;
};

// True when `status` means the server could not be reached (or is going
// away): the CLI's exit code 3.
bool IsUnreachable(const absl::Status& status);

// Drops gRPC's own log lines ("E1205 ... Handshake failed ..."): every
// failure reaches the user as a status whose message says what went wrong.
// With GRPC_VERBOSITY set in the environment they are kept, for debugging.
// Call once, before the first channel.
void QuietGrpcLogs();

}  // namespace transferd::client
