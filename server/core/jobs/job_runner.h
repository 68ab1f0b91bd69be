// The seam between the job queue and what a job does: the queue picks a job,
// marks it RUNNING and hands it to the JobRunner for its kind with a
// JobContext, through which the runner reports (events, run state), notices
// cancellation and shares the device. The real runners train
// (training_runner.h) and predict (prediction_runner.h); tests use fakes.
#pragma once

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/device.h"
#include "server/core/jobs/job_types.h"

namespace transferd::core {

class ClusterRegistry;
class DataDir;
class DatasetCatalog;
class DeviceArbiter;
class JobSeries;
class JobStore;
class Metrics;
class ModelRegistry;

// Minimum interval between stored step events.
inline constexpr std::chrono::milliseconds kStepEventInterval{500};

// What a runner may do while it runs one job. Valid during Run() only.
class JobContext {
 public:
  virtual ~JobContext() = default;

  // Stores an event of the job (numbered and timed) and wakes its watchers.
  virtual absl::Status Append(JobEvent event) = 0;
  // Stores the job's progress, history, trainable summary, evaluations,
  // result model and resume count.
  virtual absl::Status SaveRunState(const JobRecord& job) = 0;
  // True once the job was cancelled or the queue is stopping; the runner then
  // returns CANCELLED (polled between batches).
  virtual bool Cancelled() = 0;
  // Shared with the predictor (null: the runner has the device alone); hold a
  // DeviceArbiter::Turn around each piece of device work.
  virtual DeviceArbiter* arbiter() = 0;
  // The job tables, for runners that keep rows of their own (predictions).
  virtual JobStore& store() = 0;
  // Where the runner records step and checkpoint durations, and this job's
  // gauges (null: metrics are off).
  virtual Metrics* metrics() { return nullptr; }
  virtual JobSeries* series() { return nullptr; }
};

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Runs `job` (RUNNING, possibly resumed: job.resumes > 0) to its end. OK:
  // the queue marks it SUCCEEDED; CANCELLED after ctx.Cancelled(): CANCELLED
  // or, when the queue stops, left RUNNING to resume; else FAILED with the
  // status message. Runs on the queue's worker thread, one job at a time.
  virtual absl::Status Run(JobRecord& job, JobContext& ctx) = 0;
};

// What the real runners need from the engine.
struct RunnerEnv {
  const DataDir* data_dir = nullptr;
  DatasetCatalog* datasets = nullptr;
  ModelRegistry* models = nullptr;
  ComputeDevice device;
  backbones::WeightsCacheOptions weights;
  int loader_threads = 2;
  int64_t decoded_cache_bytes = 0;
  // Data-parallel jobs (replicas > 1): the workers, where they meet rank 0
  // (this server: an address of it they reach, and the TCPStore's port),
  // the collectives' timeout and how long workers may take to get their
  // data. Null cluster: such jobs fail (FAILED_PRECONDITION).
  ClusterRegistry* cluster = nullptr;
  std::string rendezvous_address;
  int rendezvous_port = 0;
  std::chrono::seconds collective_timeout{60};
  std::chrono::seconds ready_timeout{1800};
};

}  // namespace transferd::core
