// The job queue and the device worker. Jobs are rows in the store, run one at
// a time in creation order (a persistent FIFO) by one worker thread that owns
// the compute device. Everything a job reports is an event with a per-job
// sequence number, stored before anyone is told about it, so a watcher can
// join late or reconnect from any sequence number and read every event once,
// in order, at its own pace: watchers read from the store, never from the
// worker, so a slow or stalled one costs training nothing.
//
// Durability: the trainer checkpoints each epoch end. A server that stops (or
// dies) while a job runs leaves it RUNNING in the store; the next start puts
// it back at the head of the queue and the trainer resumes from its last good
// checkpoint.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/device.h"
#include "server/core/device_arbiter.h"
#include "server/core/train/train_config.h"

namespace transferd::core {

class DataDir;
class DatasetCatalog;
class ModelRegistry;
class Store;

enum class JobKind { kTrain = 1, kFineTune = 2, kPredict = 3 };
enum class JobState {
  kQueued = 1,
  kRunning = 2,
  kSucceeded = 3,
  kFailed = 4,
  kCancelled = 5
};
bool IsTerminal(JobState state);
const char* JobStateName(JobState state);

struct JobProgress {
  int stage = 0, stages = 0;  // 0-based stage index
  int epoch = 0, epochs = 0;  // over the whole job
  int64_t step = 0, steps = 0;
  double eta_seconds = 0;
};

struct JobEvent {
  enum class Type {
    kStateChanged = 1,
    kStageStarted = 2,
    kStep = 3,
    kEpochEnd = 4,
    kCheckpointSaved = 5,
    kEvaluation = 6,
    kLog = 7,
  };
  int64_t sequence = 0;
  std::chrono::system_clock::time_point time;
  Type type = Type::kLog;
  // kStateChanged: state and message; kLog: level and message.
  JobState state = JobState::kQueued;
  std::string level;
  std::string message;
  // kStageStarted.
  int stage = 0;
  std::string stage_name;
  train::TrainableSummary trainable;
  bool uses_feature_cache = false;
  // kStep, kEpochEnd, kCheckpointSaved (epoch, bytes), kEvaluation.
  train::StepReport step;
  train::EpochReport epoch;
  int checkpoint_epoch = 0;
  int64_t checkpoint_bytes = 0;
  train::EvaluationReport evaluation;
};

// What the API layer hands over: the spec as the client sent it and as
// resolved (both opaque here), and the engine's config.
struct NewJob {
  std::string id;  // empty: "j-<8 hex>"
  JobKind kind = JobKind::kTrain;
  std::string dataset_id;
  std::string base_model;  // FINE_TUNE: the model id to start from
  std::string spec_blob;
  std::string resolved_blob;
  train::TrainConfig config;
};

struct JobRecord {
  std::string id;
  JobKind kind = JobKind::kTrain;
  JobState state = JobState::kQueued;
  std::string failure_reason;
  std::string dataset_id;
  std::string base_model;
  std::string spec_blob;
  std::string resolved_blob;
  train::TrainConfig config;
  std::chrono::system_clock::time_point create_time, start_time,
      end_time;  // 0 = not yet
  JobProgress progress;
  std::vector<train::EpochReport> history;
  train::TrainableSummary trainable;
  std::vector<train::EvaluationReport> evaluations;
  std::string result_model;  // model id
  int64_t last_event_sequence = 0;
  int resumes = 0;
};

// One file's result in a PREDICT job.
struct FilePredictionRecord {
  std::string client_path;
  std::string split;       // "train", "validation", "test"
  std::string true_label;  // the dataset's label
  std::string label;       // predicted class ("" when the file failed)
  std::vector<float> probabilities;  // in the model's class order
  int status_code = 0;               // absl::StatusCode; 0 = OK
  std::string status_message;
};

struct PredictionsPage {
  std::vector<std::string> classes;  // the model's, for probabilities
  std::vector<FilePredictionRecord> predictions;
  std::string next_page_token;
};

class JobQueue {
 public:
  struct Env {
    Store* store = nullptr;
    const DataDir* data_dir = nullptr;
    DatasetCatalog* datasets = nullptr;
    ModelRegistry* models = nullptr;
    ComputeDevice device;
    backbones::WeightsCacheOptions weights;
    int loader_threads = 2;
    int64_t decoded_cache_bytes = 0;
    // Shared with the predictor (null: the worker has the device alone).
    DeviceArbiter* arbiter = nullptr;
  };

  // Puts jobs a stopped server left RUNNING back in the queue (they resume
  // from their checkpoints) and registers the in-use checks for datasets and
  // models. The worker starts with Start().
  static absl::StatusOr<std::unique_ptr<JobQueue>> Open(Env env);
  ~JobQueue();

  void Start();
  // Interrupts the running job (it stays RUNNING in the store and resumes at
  // the next start) and joins the threads. Idempotent.
  void Stop();

  // Validates what only the engine can check (dataset and its splits, base
  // model, layer names, sizes), stores the job QUEUED and wakes the worker.
  // INVALID_ARGUMENT naming the field; ALREADY_EXISTS for a taken id.
  absl::StatusOr<JobRecord> Create(NewJob job);
  absl::StatusOr<JobRecord> Get(const std::string& id);
  // Newest first, optionally only one state / kind.
  absl::StatusOr<std::vector<JobRecord>> List(int page_size,
                                              const std::string& page_token,
                                              std::optional<JobState> state,
                                              std::optional<JobKind> kind,
                                              std::string* next_page_token);
  // QUEUED jobs end CANCELLED at once; a RUNNING one stops within one batch.
  // FAILED_PRECONDITION for a finished job.
  absl::StatusOr<JobRecord> Cancel(const std::string& id);

  // A PREDICT job's per-file results in dataset order, paged (0 = 500,
  // capped at 10000). FAILED_PRECONDITION for other kinds of job.
  absl::StatusOr<PredictionsPage> Predictions(const std::string& id,
                                              int page_size,
                                              const std::string& page_token);

  // Up to `limit` events with sequence > after, in order.
  absl::StatusOr<std::vector<JobEvent>> Events(const std::string& id,
                                               int64_t after, int limit);
  // `wake` runs on the queue's notifier thread (never the worker's) after new
  // events of job `id` are stored; it must not block. Returns a handle for
  // Unsubscribe.
  int64_t Subscribe(const std::string& id, std::function<void()> wake);
  // True once Stop() began: watchers end their streams.
  bool stopping();
  void Unsubscribe(int64_t handle);

  // Minimum interval between stored step events.
  static constexpr std::chrono::milliseconds kStepEventInterval{500};

 private:
  explicit JobQueue(Env env) : env_(std::move(env)) {}
  void WorkerLoop();
  void NotifierLoop();
  std::optional<std::string> NextQueued();
  void RunJob(const std::string& id);
  absl::Status RunTraining(JobRecord& job);
  absl::Status RunPrediction(JobRecord& job);
  absl::StatusOr<JobRecord> CreatePredict(NewJob job);
  // Stores a validated job QUEUED and wakes the worker.
  absl::StatusOr<JobRecord> Insert(NewJob job);
  absl::Status Append(const std::string& id, JobEvent event);
  absl::Status SetState(const std::string& id, JobState state,
                        const std::string& message);
  absl::Status SaveRunState(const JobRecord& job);
  std::string UserOf(const char* column, const std::string& value);

  Env env_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  bool stopping_ = false;
  // stopping_ for readers that must not take mu_ (watchers, on the notifier
  // thread, which holds watch_mu_ while Cancel may hold mu_ and want it).
  std::atomic<bool> stopping_flag_{false};
  std::string running_;  // id of the job the worker runs
  bool cancel_running_ = false;
  std::thread worker_;

  // Watchers.
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  std::deque<std::string> dirty_;  // jobs with new events
  std::map<int64_t, std::pair<std::string, std::function<void()>>> watchers_;
  int64_t next_handle_ = 1;
  bool notifier_stopping_ = false;
  std::thread notifier_;

  std::mutex seq_mu_;
  std::map<std::string, int64_t> last_seq_;
};

}  // namespace transferd::core
