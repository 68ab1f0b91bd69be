// The server's Prometheus metrics (docs/observability.md lists each one),
// kept in one prometheus-cpp registry. The engine's components record into it
// through the small classes below, so that no header the rest of the code
// includes pulls in prometheus-cpp, and every metric is named in one file
// (metrics.cc). A component given no Metrics (nullptr) records nothing: tests
// and the "metrics off" side of bench/predict_bench.
//
// Labels stay bounded: a model's series exist while the model exists, a
// job's while it runs; no request ids, file names or free text.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace transferd::core {

class Metrics;

// "ok", or the lower-case name of a status code ("not_found").
std::string OutcomeLabel(absl::StatusCode code);

// One model's inference series. Shared by the calls in flight; the series
// leave the exposition when the model is removed and the last user is gone.
class ModelSeries {
 public:
  ~ModelSeries();
  ModelSeries(const ModelSeries&) = delete;
  ModelSeries& operator=(const ModelSeries&) = delete;

  // A request answered: its outcome, its images' outcomes and the time from
  // submission to answer.
  void RequestDone(const absl::Status& status,
                   const std::vector<absl::StatusCode>& images, double seconds);
  void Queued(double seconds);  // one image, decoded -> taken into a batch
  void Batch(int images, double compute_seconds);
  void QueueDepth(int64_t images);
  void Loaded(double warmup_seconds, int64_t bytes);
  void Unloaded();

 private:
  friend class Metrics;
  ModelSeries(Metrics& metrics, std::string id);
  prometheus::Counter& Requests(const std::string& outcome);
  prometheus::Counter& Images(const std::string& outcome);

  Metrics& metrics_;
  const std::string id_;
  prometheus::Counter* requests_ok_;
  prometheus::Counter* images_ok_;
  prometheus::Histogram* queue_;
  prometheus::Histogram* compute_;
  prometheus::Histogram* request_;
  prometheus::Histogram* batch_;
  prometheus::Gauge* depth_;
  prometheus::Gauge* loaded_;
  prometheus::Counter* loads_;
  prometheus::Counter* unloads_;
  prometheus::Gauge* warmup_;
  prometheus::Gauge* memory_;
  std::mutex mu_;  // the outcome counters other than ok
  std::map<std::string, prometheus::Counter*> requests_, images_;
};

// A running job's gauges. When it is destroyed (the job ended, or the server
// stops) they stay for one more scrape, so that every scraper that polls
// while the server runs sees the job's final values once, then leave the
// exposition.
class JobSeries {
 public:
  ~JobSeries();
  JobSeries(const JobSeries&) = delete;
  JobSeries& operator=(const JobSeries&) = delete;

  void Progress(int stage, int epoch, int64_t step);
  void ImagesPerSecond(double rate);
  // The latest finished epoch; a negative value is left unset.
  void Epoch(double loss, double accuracy, double val_loss,
             double val_accuracy);

 private:
  friend class Metrics;
  JobSeries(Metrics& metrics, std::string id);

  Metrics& metrics_;
  std::vector<prometheus::Gauge*> gauges_;  // in the order of kJobGauges
};

// One RPC method's series (the front end keeps one per method).
class RpcSeries {
 public:
  void Started();
  // `code` as the front end names it ("OK", "NOT_FOUND").
  void Finished(const std::string& code, double seconds);

 private:
  friend class Metrics;
  RpcSeries(Metrics& metrics, std::string method);

  Metrics& metrics_;
  const std::string method_;
  prometheus::Gauge* in_flight_;
  prometheus::Histogram* duration_;
  std::mutex mu_;
  std::map<std::string, prometheus::Counter*> codes_;
};

class Metrics {
 public:
  struct BuildLabels {
    std::string version, revision, libtorch;
  };
  explicit Metrics(const BuildLabels& build);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The exposition in Prometheus' text format (version 0.0.4), after the
  // scrape hooks ran.
  std::string Scrape();
  // Runs at each scrape, before serialising, to set values that are read
  // rather than counted (jobs by state, bytes stored, free disk, readiness).
  // `hook` must not block for long; it may use the setters below.
  void AddScrapeHook(std::function<void(Metrics&)> hook);

  // ---- Inference ----
  std::shared_ptr<ModelSeries> Model(const std::string& id);
  void RemoveModel(const std::string& id);
  void SetQueueCapacity(int64_t images);

  // ---- Jobs ----
  std::unique_ptr<JobSeries> Job(const std::string& id);
  // kind: train|fine_tune|predict; state: succeeded|failed|cancelled.
  void JobFinished(const std::string& kind, const std::string& state);
  void JobResumed();
  void TrainingStep(double seconds);
  void CheckpointWritten(double seconds);
  void SetJobsByState(const std::map<std::string, int64_t>& counts);

  // ---- Datasets ----
  void UploadBytes(int64_t bytes);
  void UploadFileAccepted();
  void UploadRejected(const std::string& reason);
  void SetStoredBytes(int64_t bytes);

  // ---- Device, data directory, readiness ----
  void SetDevice(const std::string& kind, const std::string& name,
                 const std::string& precision);
  // A CUDA device's allocated and total memory (at scrape time); never
  // called for the CPU, whose series therefore do not exist.
  void SetDeviceMemory(const std::string& name, int64_t allocated_bytes,
                       int64_t total_bytes);
  // interactive: Predict's turns; else training's.
  void TurnWaited(bool interactive, double seconds);
  void SetDataDirFree(int64_t free_bytes, int64_t min_free_bytes);
  void SetReady(bool ready);

  // ---- Serving replica (transferd --follow) ----
  // At each scrape: the watch on the primary, the sync, and when each last
  // happened (Unix seconds, 0 = never).
  void SetReplica(bool primary_up, bool in_sync, double last_contact_unix,
                  double last_sync_unix);
  // A pull from the primary ended: result ok|refused|failed.
  void ReplicaPull(const std::string& result, int64_t bytes);

  // ---- RPCs ----
  RpcSeries& Rpc(const std::string& method);

 private:
  friend class ModelSeries;
  friend class JobSeries;
  friend class RpcSeries;
  struct Families;

  void UpdateProcess();
  void ForgetModel(const std::string& id, ModelSeries* series);
  // A finished job's gauges, removed after the next scrape.
  void RetireJob(std::vector<prometheus::Gauge*> gauges);
  void RemoveJobGauges(const std::vector<prometheus::Gauge*>& gauges);  // mu_

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> f_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<ModelSeries>> models_;
  std::map<std::string, std::unique_ptr<RpcSeries>> rpcs_;
  std::map<std::string, prometheus::Counter*> rejects_;
  std::vector<std::function<void(Metrics&)>> hooks_;
  int64_t scrapes_ = 0;  // scrapes begun
  struct Retired {
    int64_t after_scrape;  // scrapes_ when retired
    std::vector<prometheus::Gauge*> gauges;
  };
  std::vector<Retired> retired_;
  std::mutex scrape_mu_;  // one scrape at a time
};

}  // namespace transferd::core
