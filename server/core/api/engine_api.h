// The engine API: every operation a front end offers, as one function each,
// over the engine's own structs. The gRPC services (server/rpc) and the HTTP
// front call these and only these, the way TF Serving's gRPC service and
// REST handler share one implementation of Predict: a front end checks the
// caller's role, converts its wire format into the structs below, calls one
// function, and converts the answer back. Resource names ("datasets/{id}",
// "jobs/{id}", "models/{id}", "aliases/{alias}") are parsed here, so every
// front end reports a bad name with the same field and message.
//
// Errors are absl::Status values with the codes of the gRPC contract
// (docs/api.md): INVALID_ARGUMENT naming the field, NOT_FOUND naming the
// resource, UNAVAILABLE while the engine is not ready, ... Each front end maps
// them once at its edge (rpc/grpc_status.h for gRPC).
//
// Threads: unary calls may block on SQLite (short transactions); front ends
// that must not block (gRPC callback threads) hand slow work (exports,
// imports, event reads) to executor().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/datasets.h"
#include "server/core/jobs/job_types.h"
#include "server/core/model_info.h"
#include "server/core/model_transfer.h"
#include "server/core/predictor.h"
#include "server/core/registry.h"
#include "server/core/replica.h"
#include "server/core/train/job_request.h"

namespace transferd::core {
class Engine;
class Executor;
struct EngineInfo;
}  // namespace transferd::core

namespace transferd::core::api {

// "<collection>/{id}" -> id ("datasets/cats" -> "cats"). INVALID_ARGUMENT
// starting with `field` for another form or an invalid id.
absl::StatusOr<std::string> IdFromName(std::string_view field,
                                       std::string_view collection,
                                       const std::string& name);

template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_page_token;  // empty on the last page
};

struct PageRequest {
  int page_size = 0;  // 0: the collection's default
  std::string page_token;
};

// A job with what its views need besides the record: the class names of its
// confusion matrices (the model's for PREDICT, the dataset's otherwise;
// empty when the dataset is gone).
struct JobView {
  JobRecord job;
  std::vector<std::string> classes;
};

struct JobQuery {
  PageRequest page;
  std::optional<JobState> state;
  std::optional<JobKind> kind;
};

// A job to create. The engine stores the spec in the contract's encoding
// (transferd.v1.JobSpec bytes, which GetJob returns as submitted and as
// resolved), so the front end that parsed the request supplies both.
struct JobSubmission {
  std::string job_id;  // empty: chosen by the server
  // W3C trace id of the call (its traceparent), or "": the job's events and
  // log lines carry it.
  std::string trace_id;
  // request.base_model_name ("models/{id}" or "aliases/{alias}") is resolved
  // here: the job keeps the model the alias named when it was created.
  train::JobRequest request;
  std::string spec_blob;  // the spec as submitted
  // The spec as it will run; `base_model` is "models/{id}" or empty.
  std::function<std::string(const train::ResolvedJob& resolved,
                            const std::string& base_model)>
      encode_resolved;
};

// One read of a job's event log (WatchJob, the dashboard's event stream).
struct EventRead {
  std::vector<JobEvent> events;  // sequence > after, in order
  // Nothing more will come: the job is finished and every event was read
  // (or `follow` is false and the reader caught up), or `status` failed.
  bool end = false;
  absl::Status status;
};

// A stateless view of the engine: front ends may hold one each.
class EngineApi {
 public:
  explicit EngineApi(Engine& engine) : engine_(engine) {}

  // ---- Server ----
  bool ready() const;
  bool shutting_down() const;
  // UNAVAILABLE "the server is starting or shutting down; retry shortly"
  // unless ready(). Every call below starts with it (calls in flight when
  // shutdown begins still finish).
  absl::Status CheckReady() const;
  // On a serving replica (--follow), FAILED_PRECONDITION "this server is a
  // read-only serving replica of PRIMARY: <what> on the primary": every
  // write, and the reads of datasets and jobs (a replica has none), start
  // with it after CheckReady.
  absl::Status CheckPrimary(std::string_view what) const;
  EngineInfo Info() const;
  // A serving replica's sync state (--follow); nullopt on a primary or
  // before the engine is ready.
  std::optional<ReplicaStatus> Replica() const;
  // Where front ends run slow work instead of on their own threads.
  Executor& executor();

  // ---- Datasets ----
  absl::StatusOr<std::unique_ptr<DatasetUpload>> BeginUpload(UploadSpec spec);
  // Resumable uploads (DatasetCatalog's staged content): which contents the
  // server holds (at most kMaxContentQuery per call), and staging one.
  static constexpr size_t kMaxContentQuery = 10000;
  absl::StatusOr<std::vector<bool>> HasContent(
      const std::vector<std::string>& sha256);
  absl::Status StageContent(const std::string& sha256, std::string_view bytes);
  // The per-file upload limit (--max-file-bytes).
  absl::StatusOr<int64_t> MaxFileBytes();
  absl::StatusOr<DatasetInfo> GetDataset(const std::string& name);
  absl::StatusOr<Page<DatasetInfo>> ListDatasets(const PageRequest& page);
  absl::Status DeleteDataset(const std::string& name);

  // ---- Jobs ----
  // INVALID_ARGUMENT naming the spec field (an unknown base model or alias
  // is INVALID_ARGUMENT "spec.base_model: ..."), ALREADY_EXISTS for a taken
  // id.
  absl::StatusOr<JobView> CreateJob(const JobSubmission& submission);
  absl::StatusOr<JobView> GetJob(const std::string& name);
  absl::StatusOr<Page<JobView>> ListJobs(const JobQuery& query);
  absl::StatusOr<JobView> CancelJob(const std::string& name);
  absl::StatusOr<PredictionsPage> ListJobPredictions(const std::string& name,
                                                     const PageRequest& page);
  // The id of an existing job ("jobs/{id}"): INVALID_ARGUMENT, NOT_FOUND.
  absl::StatusOr<std::string> JobId(const std::string& name);
  // Up to `limit` events of job `job_id` after `after` (blocks on SQLite:
  // call it on executor()). With `follow`, `end` only once the job finished.
  EventRead ReadEvents(const std::string& job_id, int64_t after, int limit,
                       bool follow);
  // `wake` runs on the job queue's notifier after new events of `job_id`
  // are stored; it must not block. Returns a handle for Unwatch.
  int64_t Watch(const std::string& job_id, std::function<void()> wake);
  void Unwatch(int64_t handle);
  // True once the job queue stops: watchers end their streams.
  bool jobs_stopping();

  // ---- Models and aliases ----
  // "models/{id}" or "aliases/{alias}" -> the model id. INVALID_ARGUMENT
  // starting with `field` for another form; NOT_FOUND for an unknown model
  // or alias.
  absl::StatusOr<std::string> ResolveModel(std::string_view field,
                                           const std::string& name);
  // A model named the Open Inference Protocol's way: `name` is an alias, else
  // a model id; `version`, when not empty, is the model id the name must
  // resolve to. Returns the model id; NOT_FOUND naming what is missing.
  absl::StatusOr<std::string> ResolveServingName(const std::string& name,
                                                 const std::string& version);
  // `name` as for ResolveModel.
  absl::StatusOr<ModelInfo> GetModel(const std::string& name);
  absl::StatusOr<Page<ModelInfo>> ListModels(const PageRequest& page);
  absl::Status DeleteModel(const std::string& name);
  absl::StatusOr<AliasInfo> SetAlias(const std::string& alias_name,
                                     const std::string& model_name);
  absl::Status DeleteAlias(const std::string& alias_name);
  absl::StatusOr<Page<AliasInfo>> ListAliases(const PageRequest& page);
  // Writes the model's archive to the temp area (slow: call it on
  // executor()); the file goes with the returned object.
  absl::StatusOr<std::unique_ptr<ModelExport>> ExportModel(
      const ModelInfo& model);
  // An archive upload bounded by the dataset size limit and the free-disk
  // floor.
  absl::StatusOr<std::unique_ptr<ModelImport>> BeginModelImport(
      ModelImportSpec spec);

  // ---- Inference ----
  // Classifies `call.images` with the model `model_name` names (as for
  // ResolveModel, field "model"): one queue and one batcher per model,
  // whichever front end submits. A bad name or a server that is not ready
  // answers through call.done, like every other failure.
  void Predict(const std::string& model_name, PredictCall call);
  // Loaded and warmed for Predict.
  bool ModelReady(const std::string& model_id);
  // Loads and warms a model in the background.
  void WarmModel(const std::string& model_id);
  // `listener` runs on the predictor's thread when a model becomes ready
  // (true) or is unloaded or cannot be loaded (false); it must not block.
  void AddModelReadyListener(
      std::function<void(const std::string& model_id, bool ready)> listener);
  // `listener` runs after an alias is set, moved or deleted (model_id ""),
  // outside the registry's lock; it must not block.
  void AddAliasListener(
      std::function<void(const std::string& alias, const std::string& model_id)>
          listener);

 private:
  // The model id `name` names: "models/{id}" parsed (not looked up),
  // "aliases/{alias}" resolved; INVALID_ARGUMENT starting with `field`,
  // NOT_FOUND for an unknown alias, UNAVAILABLE when not ready.
  absl::StatusOr<std::string> ModelIdOf(std::string_view field,
                                        const std::string& name);
  // The class names of `job`'s confusion matrices; `datasets` caches the
  // dataset lookups of one listing.
  std::vector<std::string> ClassesOf(
      const JobRecord& job,
      std::vector<std::pair<std::string, std::vector<std::string>>>* datasets);
  JobView View(JobRecord job);

  Engine& engine_;
};

}  // namespace transferd::core::api
