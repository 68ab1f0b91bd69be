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
//
// The parts (server/core/jobs/): JobStore keeps the job tables, a JobRunner
// per kind does the work (TrainingRunner, PredictionRunner); JobQueue is the
// scheduler: the worker and notifier threads, cancellation and watchers.
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
#include "server/core/jobs/job_runner.h"
#include "server/core/jobs/job_types.h"
#include "server/core/train/train_config.h"

namespace transferd::core {

class DataDir;
class DatasetCatalog;
class JobStore;
class Metrics;
class ModelRegistry;
class Store;

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
    // Data-parallel jobs (RunnerEnv's fields of the same names).
    ClusterRegistry* cluster = nullptr;
    std::string rendezvous_address;
    int rendezvous_port = 0;
    std::chrono::seconds collective_timeout{60};
    // Shared with the predictor (null: the worker has the device alone).
    DeviceArbiter* arbiter = nullptr;
    // Job gauges, finished jobs, resumes, step and checkpoint durations
    // (null: none).
    Metrics* metrics = nullptr;
    // What runs the jobs of each kind; a kind absent or null gets the real
    // runner (TrainingRunner for TRAIN and FINE_TUNE, PredictionRunner for
    // PREDICT). Tests put fakes here.
    std::map<JobKind, std::shared_ptr<JobRunner>> runners;
    // The time of creation, of every event and so of start and end (null:
    // system_clock::now).
    std::function<std::chrono::system_clock::time_point()> clock;
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
  // How many jobs are in each state (metrics).
  absl::StatusOr<std::map<JobState, int64_t>> CountByState();
  void Unsubscribe(int64_t handle);

  // Minimum interval between stored step events.
  static constexpr std::chrono::milliseconds kStepEventInterval =
      ::transferd::core::kStepEventInterval;

 private:
  class RunContext;  // the JobContext of the running job

  explicit JobQueue(Env env);
  void WorkerLoop();
  void NotifierLoop();
  void RunJob(const std::string& id);
  // RunJob's halves: marks `job` RUNNING and runs it; records its end.
  absl::Status StartAndRun(JobRecord& job);
  void EndRun(const JobRecord& job, const absl::Status& status, bool stopping,
              bool cancelled);
  absl::StatusOr<JobRecord> CreatePredict(NewJob job);
  // Stores a validated job QUEUED and wakes the worker.
  absl::StatusOr<JobRecord> Insert(NewJob job);
  // Stores the event and wakes the job's watchers.
  absl::Status Append(const std::string& id, JobEvent event);
  // Has the notifier thread wake the watchers of job `id`.
  void WakeWatchers(const std::string& id);
  absl::Status SetState(const std::string& id, JobState state,
                        const std::string& message);

  Env env_;
  std::unique_ptr<JobStore> store_;
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
};

}  // namespace transferd::core
