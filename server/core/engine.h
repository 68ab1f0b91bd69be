// The engine: everything transferd does, independent of how it is reached.
// It owns the data directory, the metadata store and the compute device, and
// (as the product grows) the dataset catalog, job queue and device worker,
// model registry and predictor. server/rpc adapts it to gRPC; nothing here
// includes gRPC headers.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/cluster.h"
#include "server/core/datasets.h"
#include "server/core/device.h"
#include "server/core/device_arbiter.h"
#include "server/core/jobs.h"
#include "server/core/predictor.h"
#include "server/core/registry.h"
#include "server/core/replica.h"
#include "server/core/util/cpu_features.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/executor.h"
#include "server/core/util/metrics.h"
#include "server/core/util/store.h"

namespace transferd::core {

// A conv base the engine can build models on (filled by the Models layer).
struct BackboneDescription {
  std::string name;
  std::string keras_name;
  std::vector<double> alphas;
  int default_input_size = 0;
  int min_input_size = 0;
  int64_t parameters = 0;
  std::vector<std::string> weights_available;
};

struct EngineInfo {
  ComputeDevice device;
  CpuFeatures cpu;
  std::vector<BackboneDescription> backbones;
  std::chrono::system_clock::time_point start_time;
  int store_schema_version = 0;
  std::string instance_id;  // random id created with the data directory
  std::optional<ReplicaStatus> replica;  // on a serving replica
  ClusterView cluster;
};

class Engine {
 public:
  struct Options {
    DataDir::Options data_dir;
    DeviceOptions device;
    int store_busy_timeout_ms = 5000;
    // Whether "imagenet" weights missing from <data-dir>/weights/ may be
    // fetched from the official Keras URLs.
    bool allow_weight_downloads = false;
    // How long Start() waits for the store when another process holds it.
    std::chrono::milliseconds startup_timeout{60000};
    // Upload quotas, the free-disk floor and the image caps.
    DatasetLimits datasets;
    // Decode/augment threads of a training job's loader.
    int loader_threads = 2;
    // Memory a training job may use to keep decoded, resized images across
    // epochs.
    int64_t decoded_cache_bytes = 2ll << 30;
    // Dynamic batching and the loaded-model memory budget of Predict.
    PredictorOptions predictor;
    // Start the job worker in Start() (tests of the catalogs turn it off).
    bool run_jobs = true;
    // Count Prometheus metrics (metrics()); off only to measure their cost.
    bool metrics = true;
    // Training (and PREDICT-job) steps give the device to a waiting Predict
    // batch between backbone blocks (DeviceArbiter::YieldPoint); off: only
    // between steps (more job throughput, slower Predict while training).
    bool training_yields = true;
    // While a job waits for the device, Predict batches take at most this
    // share of the device time (plus a burst of interactive_burst); with no
    // job they take all of it (DeviceArbiter).
    double interactive_share = DeviceArbiter::Options().interactive_share;
    std::chrono::microseconds interactive_burst =
        DeviceArbiter::Options().burst;
    // Threads of executor(): slow work that front ends hand to the engine.
    int executor_threads = 2;
    // Threads that decode Predict's images: a pool of their own, so that
    // front ends' slow work on executor() (a stalled watcher's reads, an
    // upload, an export) never holds up a prediction.
    int predict_decode_threads = 2;
    // Non-empty: this server is a read-only serving replica of that primary
    // (transferd --follow): no job worker, every write answers
    // FAILED_PRECONDITION naming the primary, and replica() holds the
    // replica's state (server/replica/ keeps it in sync).
    std::string follow_primary;
    // A replica's model cache: models no alias names that it keeps.
    int replica_keep_models = 8;
    // Data-parallel training (docs/distributed.md). A server that is not a
    // worker (nor a replica) accepts workers (cluster()); its jobs with
    // replicas > 1 host their c10d TCPStore on rendezvous_port, and workers
    // reach this server's ranks at rendezvous_address.
    bool worker = false;
    std::string rendezvous_address = "127.0.0.1";
    int rendezvous_port = 29500;
    std::chrono::seconds collective_timeout{60};
  };

  // Fast and fail-fast: selects the device and takes the data directory.
  // Any failure leaves nothing behind.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Options& options);

  // The slow part of start-up, run while the server already answers health
  // checks with NOT_SERVING: opens and migrates the store (waiting up to
  // startup_timeout for a lock another process holds) and opens the dataset
  // catalog (removing what an interrupted upload or delete left); as the
  // product grows, recovers interrupted jobs. Gives up with CANCELLED once
  // BeginShutdown() is called. ready() is true after it succeeds.
  absl::Status Start();
  bool ready() const { return ready_.load(); }

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  EngineInfo Info() const;
  const Options& options() const { return options_; }
  const ComputeDevice& device() const { return device_; }
  const DataDir& data_dir() const { return *data_dir_; }
  // Where backbones find their weight files (and may download them).
  backbones::WeightsCacheOptions weights_cache() const;
  // Valid once ready().
  Store& store() { return *store_; }
  DatasetCatalog& datasets() { return *datasets_; }
  ModelRegistry& models() { return *models_; }
  JobQueue& jobs() { return *jobs_; }
  Predictor& predictor() { return *predictor_; }
  // A serving replica's state; null on a primary. Valid once ready().
  Replica* replica() { return replica_.get(); }
  // The workers of a coordinator; null on a worker or a replica.
  ClusterRegistry* cluster() { return cluster_.get(); }
  // A worker's own status (set by its connection to the coordinator).
  WorkerState& worker_state() { return worker_state_; }
  bool read_only() const { return !options_.follow_primary.empty(); }
  DeviceArbiter& arbiter() { return arbiter_; }
  // Where front ends run slow work (file I/O, SQLite reads, decoding, model
  // checks) instead of on their own threads; valid from Create() until
  // Shutdown(), which runs what is queued.
  Executor& executor() { return *executor_; }
  // The server's metrics (null when Options::metrics is off); valid from
  // Create() on, and outlives every component that records into it.
  Metrics* metrics() { return metrics_.get(); }

  // First step of shutdown: stop accepting new work; long-running work and
  // streams observe shutting_down() and finish. Idempotent.
  void BeginShutdown();
  bool shutting_down() const { return shutting_down_.load(); }

  // Last step: closes the store (checkpointing its WAL) and releases the
  // data directory lock.
  absl::Status Shutdown();

 private:
  Engine() = default;
  // Values read at each scrape: readiness, jobs by state, stored bytes, free
  // disk.
  void ScrapeInto(Metrics& metrics);

  Options options_;
  std::unique_ptr<Metrics> metrics_;  // first: destroyed last
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Executor> decode_executor_;  // Predict's decoding only
  std::unique_ptr<Store> store_;
  std::unique_ptr<DatasetCatalog> datasets_;
  std::unique_ptr<ModelRegistry> models_;
  DeviceArbiter arbiter_;
  WorkerState worker_state_;
  // Declared before jobs_, whose runners use it: destroyed after them.
  std::unique_ptr<ClusterRegistry> cluster_;
  std::unique_ptr<JobQueue> jobs_;
  std::unique_ptr<Predictor> predictor_;
  std::unique_ptr<Replica> replica_;  // after predictor_: its listener
  ComputeDevice device_;
  std::string instance_id_;
  std::vector<BackboneDescription> backbones_;
  std::chrono::system_clock::time_point start_time_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> shutting_down_{false};
};

}  // namespace transferd::core
