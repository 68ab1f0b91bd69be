#include "server/core/util/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>

#include "absl/strings/str_split.h"

namespace transferd::core {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Seconds from 1 ms to 60 s: RPCs, requests, queueing.
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
      0.5,   1,      2.5,   5,    10,    30,   60};
  return b;
}

// Seconds from 1 ms to 10 min: steps, checkpoints, device turns.
const Histogram::BucketBoundaries& LongBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 600};
  return b;
}

const Histogram::BucketBoundaries& BatchBuckets() {
  static const Histogram::BucketBoundaries b = {1,  2,  4,   8,  16,
                                                32, 64, 128, 256};
  return b;
}

// The running job's gauges, in JobSeries::gauges_ order.
constexpr const char* kJobGauges[][2] = {
    {"transferd_job_stage", "Stage the running job is in (1-based)."},
    {"transferd_job_epoch",
     "Epoch the job is in, counted over the whole job (1-based)."},
    {"transferd_job_step", "Step within the epoch."},
    {"transferd_job_images_per_second",
     "Training images per second since the current epoch began."},
    {"transferd_job_loss", "Training loss of the last finished epoch."},
    {"transferd_job_accuracy", "Training accuracy of the last finished epoch."},
    {"transferd_job_val_loss", "Validation loss of the last finished epoch."},
    {"transferd_job_val_accuracy",
     "Validation accuracy of the last finished epoch."},
};
constexpr size_t kJobGaugeCount = sizeof(kJobGauges) / sizeof(kJobGauges[0]);

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(c));
  return s;
}

}  // namespace

std::string OutcomeLabel(absl::StatusCode code) {
  if (code == absl::StatusCode::kOk) return "ok";
  return Lower(absl::StatusCodeToString(code));
}

// Every family, registered once.
struct Metrics::Families {
  explicit Families(prometheus::Registry& r)
      : build(BuildGauge()
                  .Name("transferd_build_info")
                  .Help("Build of the running server (value 1).")
                  .Register(r)),
        ready(BuildGauge()
                  .Name("transferd_ready")
                  .Help("1 when the engine is ready, 0 while it starts or "
                        "shuts down.")
                  .Register(r)),
        device(BuildGauge()
                   .Name("transferd_device_info")
                   .Help("The compute device (value 1).")
                   .Register(r)),
        device_allocated(
            BuildGauge()
                .Name("transferd_device_memory_allocated_bytes")
                .Help("Bytes the CUDA caching allocator holds for live "
                      "tensors on the device (CUDA devices only).")
                .Register(r)),
        device_total(BuildGauge()
                         .Name("transferd_device_memory_total_bytes")
                         .Help("The CUDA device's memory (CUDA devices only).")
                         .Register(r)),
        turn_wait(BuildHistogram()
                      .Name("transferd_device_turn_wait_seconds")
                      .Help("Time waited for the device: interactive turns "
                            "(Predict) and background turns (training steps, "
                            "feature extraction, evaluation, PREDICT jobs).")
                      .Register(r)),
        disk_free(BuildGauge()
                      .Name("transferd_data_dir_free_bytes")
                      .Help("Free bytes on the data directory's file system.")
                      .Register(r)),
        disk_floor(BuildGauge()
                       .Name("transferd_data_dir_min_free_bytes")
                       .Help("The free-disk floor below which uploads and "
                             "imports are refused.")
                       .Register(r)),
        cpu(BuildCounter()
                .Name("process_cpu_seconds_total")
                .Help("Total user and system CPU time spent in seconds.")
                .Register(r)),
        rss(BuildGauge()
                .Name("process_resident_memory_bytes")
                .Help("Resident memory size in bytes.")
                .Register(r)),
        vsize(BuildGauge()
                  .Name("process_virtual_memory_bytes")
                  .Help("Virtual memory size in bytes.")
                  .Register(r)),
        open_fds(BuildGauge()
                     .Name("process_open_fds")
                     .Help("Number of open file descriptors.")
                     .Register(r)),
        max_fds(BuildGauge()
                    .Name("process_max_fds")
                    .Help("Maximum number of open file descriptors.")
                    .Register(r)),
        start_time(BuildGauge()
                       .Name("process_start_time_seconds")
                       .Help("Start time of the process since unix epoch in "
                             "seconds.")
                       .Register(r)),
        threads(BuildGauge()
                    .Name("process_threads")
                    .Help("Number of OS threads in the process.")
                    .Register(r)),
        rpc_requests(BuildCounter()
                         .Name("transferd_rpc_requests_total")
                         .Help("gRPC calls finished, by method and status "
                               "code.")
                         .Register(r)),
        rpc_duration(BuildHistogram()
                         .Name("transferd_rpc_duration_seconds")
                         .Help("gRPC call duration, by method.")
                         .Register(r)),
        rpc_in_flight(BuildGauge()
                          .Name("transferd_rpc_in_flight")
                          .Help("gRPC calls in progress, by method.")
                          .Register(r)),
        inf_requests(BuildCounter()
                         .Name("transferd_inference_requests_total")
                         .Help("Predict requests answered, by model and "
                               "outcome.")
                         .Register(r)),
        inf_images(BuildCounter()
                       .Name("transferd_inference_images_total")
                       .Help("Images answered, by model and outcome.")
                       .Register(r)),
        inf_queue(BuildHistogram()
                      .Name("transferd_inference_queue_duration_seconds")
                      .Help("Time an image waited in its model's queue.")
                      .Register(r)),
        inf_compute(BuildHistogram()
                        .Name("transferd_inference_compute_duration_seconds")
                        .Help("Time of one batch's forward pass.")
                        .Register(r)),
        inf_request(BuildHistogram()
                        .Name("transferd_inference_request_duration_seconds")
                        .Help("Time from submission to answer of a Predict "
                              "request.")
                        .Register(r)),
        inf_batch(BuildHistogram()
                      .Name("transferd_inference_batch_size")
                      .Help("Images per batch.")
                      .Register(r)),
        inf_depth(BuildGauge()
                      .Name("transferd_inference_queue_depth")
                      .Help("Images waiting in a model's queue.")
                      .Register(r)),
        inf_capacity(BuildGauge()
                         .Name("transferd_inference_queue_capacity")
                         .Help("Images all models' queues may hold together.")
                         .Register(r)),
        model_loaded(BuildGauge()
                         .Name("transferd_model_loaded")
                         .Help("1 while the model is loaded for Predict.")
                         .Register(r)),
        model_loads(BuildCounter()
                        .Name("transferd_model_loads_total")
                        .Help("Times the model was loaded and warmed.")
                        .Register(r)),
        model_unloads(BuildCounter()
                          .Name("transferd_model_unloads_total")
                          .Help("Times the model was unloaded.")
                          .Register(r)),
        model_warmup(BuildGauge()
                         .Name("transferd_model_warmup_seconds")
                         .Help("Time of the model's last load and warm-up.")
                         .Register(r)),
        model_memory(BuildGauge()
                         .Name("transferd_model_memory_bytes")
                         .Help("Parameters and buffers of the loaded model.")
                         .Register(r)),
        jobs(BuildGauge()
                 .Name("transferd_jobs")
                 .Help("Jobs in the store, by state.")
                 .Register(r)),
        queue_length(BuildGauge()
                         .Name("transferd_job_queue_length")
                         .Help("Jobs waiting to run (QUEUED).")
                         .Register(r)),
        jobs_finished(BuildCounter()
                          .Name("transferd_jobs_finished_total")
                          .Help("Jobs that ended, by kind and final state.")
                          .Register(r)),
        step(BuildHistogram()
                 .Name("transferd_training_step_duration_seconds")
                 .Help("Duration of one training step (batch).")
                 .Register(r)),
        checkpoint(BuildHistogram()
                       .Name("transferd_checkpoint_write_duration_seconds")
                       .Help("Duration of one checkpoint write.")
                       .Register(r)),
        resumes(BuildCounter()
                    .Name("transferd_job_resumes_total")
                    .Help("Jobs resumed from a checkpoint after a restart.")
                    .Register(r)),
        upload_bytes(BuildCounter()
                         .Name("transferd_dataset_upload_bytes_total")
                         .Help("File bytes received by dataset uploads.")
                         .Register(r)),
        upload_files(BuildCounter()
                         .Name("transferd_dataset_upload_files_total")
                         .Help("Uploaded files that passed the per-file "
                               "checks (format, size, decoding).")
                         .Register(r)),
        upload_rejects(BuildCounter()
                           .Name("transferd_dataset_upload_rejects_total")
                           .Help("Files rejected by dataset uploads, by "
                                 "reason.")
                           .Register(r)),
        stored(BuildGauge()
                   .Name("transferd_datasets_stored_bytes")
                   .Help("Bytes of all stored datasets.")
                   .Register(r)),
        replica_up(BuildGauge()
                       .Name("transferd_replica_primary_up")
                       .Help("Serving replica: 1 while its watch on the "
                             "primary is open.")
                       .Register(r)),
        replica_in_sync(BuildGauge()
                            .Name("transferd_replica_in_sync")
                            .Help("Serving replica: 1 when every alias is "
                                  "served at the primary's model.")
                            .Register(r)),
        replica_contact(
            BuildGauge()
                .Name("transferd_replica_last_contact_timestamp_seconds")
                .Help("Serving replica: when it last heard from the primary "
                      "(Unix time; 0 = never).")
                .Register(r)),
        replica_sync(
            BuildGauge()
                .Name("transferd_replica_last_sync_timestamp_seconds")
                .Help("Serving replica: when it was last in sync with the "
                      "primary (Unix time; 0 = never).")
                .Register(r)),
        replica_pulls(BuildCounter()
                          .Name("transferd_replica_pulls_total")
                          .Help("Serving replica: model archives pulled from "
                                "the primary, by result (ok, refused: hash or "
                                "archive check failed, failed: the transfer "
                                "broke).")
                          .Register(r)),
        replica_bytes(BuildCounter()
                          .Name("transferd_replica_pulled_bytes_total")
                          .Help("Serving replica: archive bytes received "
                                "from the primary.")
                          .Register(r)) {
    for (const auto& [name, help] : kJobGauges) {
      job_gauges.push_back(&BuildGauge().Name(name).Help(help).Register(r));
    }
  }

  Family<Gauge>& build;
  Family<Gauge>& ready;
  Family<Gauge>& device;
  Family<Gauge>& device_allocated;
  Family<Gauge>& device_total;
  Family<Histogram>& turn_wait;
  Family<Gauge>& disk_free;
  Family<Gauge>& disk_floor;
  Family<Counter>& cpu;
  Family<Gauge>& rss;
  Family<Gauge>& vsize;
  Family<Gauge>& open_fds;
  Family<Gauge>& max_fds;
  Family<Gauge>& start_time;
  Family<Gauge>& threads;
  Family<Counter>& rpc_requests;
  Family<Histogram>& rpc_duration;
  Family<Gauge>& rpc_in_flight;
  Family<Counter>& inf_requests;
  Family<Counter>& inf_images;
  Family<Histogram>& inf_queue;
  Family<Histogram>& inf_compute;
  Family<Histogram>& inf_request;
  Family<Histogram>& inf_batch;
  Family<Gauge>& inf_depth;
  Family<Gauge>& inf_capacity;
  Family<Gauge>& model_loaded;
  Family<Counter>& model_loads;
  Family<Counter>& model_unloads;
  Family<Gauge>& model_warmup;
  Family<Gauge>& model_memory;
  Family<Gauge>& jobs;
  Family<Gauge>& queue_length;
  Family<Counter>& jobs_finished;
  Family<Histogram>& step;
  Family<Histogram>& checkpoint;
  Family<Counter>& resumes;
  Family<Counter>& upload_bytes;
  Family<Counter>& upload_files;
  Family<Counter>& upload_rejects;
  Family<Gauge>& stored;
  Family<Gauge>& replica_up;
  Family<Gauge>& replica_in_sync;
  Family<Gauge>& replica_contact;
  Family<Gauge>& replica_sync;
  Family<Counter>& replica_pulls;
  Family<Counter>& replica_bytes;
  std::vector<Family<Gauge>*> job_gauges;

  // Unlabelled series, made once.
  Gauge* ready_value = nullptr;
  Histogram* wait_interactive = nullptr;
  Histogram* wait_background = nullptr;
  Gauge* disk_free_value = nullptr;
  Gauge* disk_floor_value = nullptr;
  Gauge* capacity_value = nullptr;
  Gauge* queue_length_value = nullptr;
  Histogram* step_value = nullptr;
  Histogram* checkpoint_value = nullptr;
  Counter* resumes_value = nullptr;
  Counter* upload_bytes_value = nullptr;
  Counter* upload_files_value = nullptr;
  Gauge* stored_value = nullptr;
  Counter* cpu_value = nullptr;
  Gauge *rss_value = nullptr, *vsize_value = nullptr, *open_fds_value = nullptr,
        *max_fds_value = nullptr, *start_value = nullptr,
        *threads_value = nullptr;
};

// ---- Metrics
// -----------------------------------------------------------------

Metrics::Metrics(const BuildLabels& build)
    : registry_(std::make_shared<prometheus::Registry>()),
      f_(std::make_unique<Families>(*registry_)) {
  f_->build
      .Add({{"version", build.version},
            {"revision", build.revision},
            {"libtorch", build.libtorch}})
      .Set(1);
  f_->ready_value = &f_->ready.Add({});
  f_->wait_interactive =
      &f_->turn_wait.Add({{"turn", "interactive"}}, LongBuckets());
  f_->wait_background =
      &f_->turn_wait.Add({{"turn", "background"}}, LongBuckets());
  f_->disk_free_value = &f_->disk_free.Add({});
  f_->disk_floor_value = &f_->disk_floor.Add({});
  f_->capacity_value = &f_->inf_capacity.Add({});
  f_->queue_length_value = &f_->queue_length.Add({});
  f_->step_value = &f_->step.Add({}, LongBuckets());
  f_->checkpoint_value = &f_->checkpoint.Add({}, LongBuckets());
  f_->resumes_value = &f_->resumes.Add({});
  f_->upload_bytes_value = &f_->upload_bytes.Add({});
  f_->upload_files_value = &f_->upload_files.Add({});
  f_->stored_value = &f_->stored.Add({});
  f_->cpu_value = &f_->cpu.Add({});
  f_->rss_value = &f_->rss.Add({});
  f_->vsize_value = &f_->vsize.Add({});
  f_->open_fds_value = &f_->open_fds.Add({});
  f_->max_fds_value = &f_->max_fds.Add({});
  f_->start_value = &f_->start_time.Add({});
  f_->threads_value = &f_->threads.Add({});
  for (const char* state :
       {"queued", "running", "succeeded", "failed", "cancelled"}) {
    f_->jobs.Add({{"state", state}});
  }
  UpdateProcess();
}

Metrics::~Metrics() = default;

void Metrics::AddScrapeHook(std::function<void(Metrics&)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string Metrics::Scrape() {
  std::lock_guard<std::mutex> scrape(scrape_mu_);
  std::vector<std::function<void(Metrics&)>> hooks;
  int64_t scrape_number;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hooks = hooks_;
    scrape_number = ++scrapes_;
  }
  for (const auto& hook : hooks) hook(*this);
  UpdateProcess();
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  // Finished jobs' gauges retired before this scrape began were in it: done.
  std::lock_guard<std::mutex> lock(mu_);
  auto keep = retired_.begin();
  for (Retired& r : retired_) {
    if (r.after_scrape < scrape_number) {
      RemoveJobGauges(r.gauges);
    } else {
      *keep++ = std::move(r);
    }
  }
  retired_.erase(keep, retired_.end());
  return out.str();
}

void Metrics::RetireJob(std::vector<prometheus::Gauge*> gauges) {
  std::lock_guard<std::mutex> lock(mu_);
  retired_.push_back({scrapes_, std::move(gauges)});
  // Nobody scrapes: keep the last few finished jobs, not every one.
  constexpr size_t kMaxRetired = 16;
  if (retired_.size() > kMaxRetired) {
    RemoveJobGauges(retired_.front().gauges);
    retired_.erase(retired_.begin());
  }
}

void Metrics::RemoveJobGauges(const std::vector<prometheus::Gauge*>& gauges) {
  for (size_t i = 0; i < gauges.size() && i < f_->job_gauges.size(); ++i) {
    f_->job_gauges[i]->Remove(gauges[i]);
  }
}

// /proc/self/stat fields (man 5 proc): utime 14, stime 15, num_threads 20,
// starttime 22, vsize 23, rss 24 (pages).
void Metrics::UpdateProcess() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return;
  // The command name (field 2) may hold spaces: fields follow its ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return;
  std::vector<std::string> fields =
      absl::StrSplit(line.substr(close + 2), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state).
  auto field = [&fields](size_t n) -> double {
    const size_t i = n - 3;
    return i < fields.size() ? std::strtod(fields[i].c_str(), nullptr) : 0;
  };
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double cpu = (field(14) + field(15)) / ticks;
  // A counter only goes up: add what accrued since the last scrape.
  const double counted = f_->cpu_value->Value();
  if (cpu > counted) f_->cpu_value->Increment(cpu - counted);
  f_->threads_value->Set(field(20));
  f_->vsize_value->Set(field(23));
  f_->rss_value->Set(field(24) * page);
  static const double boot_time = [] {
    std::ifstream in("/proc/stat");
    std::string key;
    double value = 0;
    while (in >> key) {
      if (key == "btime") {
        in >> value;
        return value;
      }
      in.ignore(1 << 16, '\n');
    }
    return 0.0;
  }();
  f_->start_value->Set(boot_time + field(22) / ticks);
  std::error_code ec;
  int64_t fds = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++fds;
  }
  f_->open_fds_value->Set(static_cast<double>(fds));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    f_->max_fds_value->Set(static_cast<double>(limit.rlim_cur));
  }
}

std::shared_ptr<ModelSeries> Metrics::Model(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<ModelSeries>& series = models_[id];
  if (series == nullptr) series.reset(new ModelSeries(*this, id));
  return series;
}

void Metrics::RemoveModel(const std::string& id) {
  std::shared_ptr<ModelSeries> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(id);
    if (it == models_.end()) return;
    removed = std::move(it->second);
    models_.erase(it);
  }
  // Destroyed here, or by the last call still using it.
}

void Metrics::ForgetModel(const std::string& id, ModelSeries* series) {
  std::lock_guard<std::mutex> lock(mu_);
  // A model registered again under the same id shares the labels: its new
  // series took over the same metrics.
  if (models_.count(id) != 0) return;
  f_->inf_queue.Remove(series->queue_);
  f_->inf_compute.Remove(series->compute_);
  f_->inf_request.Remove(series->request_);
  f_->inf_batch.Remove(series->batch_);
  f_->inf_depth.Remove(series->depth_);
  f_->model_loaded.Remove(series->loaded_);
  f_->model_loads.Remove(series->loads_);
  f_->model_unloads.Remove(series->unloads_);
  f_->model_warmup.Remove(series->warmup_);
  f_->model_memory.Remove(series->memory_);
  f_->inf_requests.Remove(series->requests_ok_);
  f_->inf_images.Remove(series->images_ok_);
  std::lock_guard<std::mutex> outcomes(series->mu_);
  for (auto& [outcome, c] : series->requests_) f_->inf_requests.Remove(c);
  for (auto& [outcome, c] : series->images_) f_->inf_images.Remove(c);
}

void Metrics::SetQueueCapacity(int64_t images) {
  f_->capacity_value->Set(static_cast<double>(images));
}

std::unique_ptr<JobSeries> Metrics::Job(const std::string& id) {
  std::unique_ptr<JobSeries> series(new JobSeries(*this, id));
  // The same job again while its last run's gauges wait for a scrape: they
  // are this run's now (Family::Add returned them), not to be removed.
  std::lock_guard<std::mutex> lock(mu_);
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [&](const Retired& r) {
                                  return !r.gauges.empty() &&
                                         r.gauges[0] == series->gauges_[0];
                                }),
                 retired_.end());
  return series;
}

void Metrics::JobFinished(const std::string& kind, const std::string& state) {
  f_->jobs_finished.Add({{"kind", kind}, {"state", state}}).Increment();
}

void Metrics::JobResumed() { f_->resumes_value->Increment(); }

void Metrics::TrainingStep(double seconds) { f_->step_value->Observe(seconds); }

void Metrics::CheckpointWritten(double seconds) {
  f_->checkpoint_value->Observe(seconds);
}

void Metrics::SetJobsByState(const std::map<std::string, int64_t>& counts) {
  for (const char* state :
       {"queued", "running", "succeeded", "failed", "cancelled"}) {
    auto it = counts.find(state);
    f_->jobs.Add({{"state", state}})
        .Set(it == counts.end() ? 0 : static_cast<double>(it->second));
  }
  auto queued = counts.find("queued");
  f_->queue_length_value->Set(
      queued == counts.end() ? 0 : static_cast<double>(queued->second));
}

void Metrics::UploadBytes(int64_t bytes) {
  f_->upload_bytes_value->Increment(static_cast<double>(bytes));
}

void Metrics::UploadFileAccepted() { f_->upload_files_value->Increment(); }

void Metrics::UploadRejected(const std::string& reason) {
  prometheus::Counter* counter;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prometheus::Counter*& c = rejects_[reason];
    if (c == nullptr) c = &f_->upload_rejects.Add({{"reason", reason}});
    counter = c;
  }
  counter->Increment();
}

void Metrics::SetStoredBytes(int64_t bytes) {
  f_->stored_value->Set(static_cast<double>(bytes));
}

void Metrics::SetDevice(const std::string& kind, const std::string& name,
                        const std::string& precision) {
  f_->device.Add({{"kind", kind}, {"name", name}, {"precision", precision}})
      .Set(1);
}

void Metrics::SetDeviceMemory(const std::string& name, int64_t allocated_bytes,
                              int64_t total_bytes) {
  // Add returns the existing series for the same labels.
  f_->device_allocated.Add({{"name", name}})
      .Set(static_cast<double>(allocated_bytes));
  if (total_bytes > 0) {
    f_->device_total.Add({{"name", name}})
        .Set(static_cast<double>(total_bytes));
  }
}

void Metrics::TurnWaited(bool interactive, double seconds) {
  (interactive ? f_->wait_interactive : f_->wait_background)->Observe(seconds);
}

void Metrics::SetDataDirFree(int64_t free_bytes, int64_t min_free_bytes) {
  f_->disk_free_value->Set(static_cast<double>(free_bytes));
  f_->disk_floor_value->Set(static_cast<double>(min_free_bytes));
}

void Metrics::SetReady(bool ready) { f_->ready_value->Set(ready ? 1 : 0); }

void Metrics::SetReplica(bool primary_up, bool in_sync,
                         double last_contact_unix, double last_sync_unix) {
  // The series exist on replicas only: a primary never calls this.
  f_->replica_up.Add({}).Set(primary_up ? 1 : 0);
  f_->replica_in_sync.Add({}).Set(in_sync ? 1 : 0);
  f_->replica_contact.Add({}).Set(last_contact_unix);
  f_->replica_sync.Add({}).Set(last_sync_unix);
}

void Metrics::ReplicaPull(const std::string& result, int64_t bytes) {
  for (const char* r : {"ok", "refused", "failed"}) {
    f_->replica_pulls.Add({{"result", r}});  // all three from the first
  }
  f_->replica_pulls.Add({{"result", result}}).Increment();
  f_->replica_bytes.Add({}).Increment(static_cast<double>(bytes));
}

RpcSeries& Metrics::Rpc(const std::string& method) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<RpcSeries>& series = rpcs_[method];
  if (series == nullptr) series.reset(new RpcSeries(*this, method));
  return *series;
}

// ---- ModelSeries
// ---------------------------------------------------------------

ModelSeries::ModelSeries(Metrics& metrics, std::string id)
    : metrics_(metrics), id_(std::move(id)) {
  Metrics::Families& f = *metrics_.f_;
  const prometheus::Labels labels = {{"model", id_}};
  requests_ok_ = &f.inf_requests.Add({{"model", id_}, {"outcome", "ok"}});
  images_ok_ = &f.inf_images.Add({{"model", id_}, {"outcome", "ok"}});
  queue_ = &f.inf_queue.Add(labels, LatencyBuckets());
  compute_ = &f.inf_compute.Add(labels, LatencyBuckets());
  request_ = &f.inf_request.Add(labels, LatencyBuckets());
  batch_ = &f.inf_batch.Add(labels, BatchBuckets());
  depth_ = &f.inf_depth.Add(labels);
  loaded_ = &f.model_loaded.Add(labels);
  loads_ = &f.model_loads.Add(labels);
  unloads_ = &f.model_unloads.Add(labels);
  warmup_ = &f.model_warmup.Add(labels);
  memory_ = &f.model_memory.Add(labels);
}

ModelSeries::~ModelSeries() { metrics_.ForgetModel(id_, this); }

prometheus::Counter& ModelSeries::Requests(const std::string& outcome) {
  if (outcome == "ok") return *requests_ok_;
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Counter*& c = requests_[outcome];
  if (c == nullptr) {
    c = &metrics_.f_->inf_requests.Add({{"model", id_}, {"outcome", outcome}});
  }
  return *c;
}

prometheus::Counter& ModelSeries::Images(const std::string& outcome) {
  if (outcome == "ok") return *images_ok_;
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Counter*& c = images_[outcome];
  if (c == nullptr) {
    c = &metrics_.f_->inf_images.Add({{"model", id_}, {"outcome", outcome}});
  }
  return *c;
}

void ModelSeries::RequestDone(const absl::Status& status,
                              const std::vector<absl::StatusCode>& images,
                              double seconds) {
  Requests(OutcomeLabel(status.code())).Increment();
  request_->Observe(seconds);
  int64_t ok = 0;
  for (absl::StatusCode code : images) {
    if (code == absl::StatusCode::kOk) {
      ++ok;
    } else {
      Images(OutcomeLabel(code)).Increment();
    }
  }
  if (ok > 0) images_ok_->Increment(static_cast<double>(ok));
}

void ModelSeries::Queued(double seconds) { queue_->Observe(seconds); }

void ModelSeries::Batch(int images, double compute_seconds) {
  batch_->Observe(images);
  compute_->Observe(compute_seconds);
}

void ModelSeries::QueueDepth(int64_t images) {
  depth_->Set(static_cast<double>(images));
}

void ModelSeries::Loaded(double warmup_seconds, int64_t bytes) {
  loaded_->Set(1);
  loads_->Increment();
  warmup_->Set(warmup_seconds);
  memory_->Set(static_cast<double>(bytes));
}

void ModelSeries::Unloaded() {
  loaded_->Set(0);
  unloads_->Increment();
  memory_->Set(0);
}

// ---- JobSeries
// -------------------------------------------------------------------

JobSeries::JobSeries(Metrics& metrics, std::string id) : metrics_(metrics) {
  for (size_t i = 0; i < kJobGaugeCount; ++i) {
    gauges_.push_back(&metrics_.f_->job_gauges[i]->Add({{"job_id", id}}));
  }
}

JobSeries::~JobSeries() { metrics_.RetireJob(std::move(gauges_)); }

void JobSeries::Progress(int stage, int epoch, int64_t step) {
  gauges_[0]->Set(stage);
  gauges_[1]->Set(epoch);
  gauges_[2]->Set(static_cast<double>(step));
}

void JobSeries::ImagesPerSecond(double rate) { gauges_[3]->Set(rate); }

void JobSeries::Epoch(double loss, double accuracy, double val_loss,
                      double val_accuracy) {
  const double values[] = {loss, accuracy, val_loss, val_accuracy};
  for (size_t i = 0; i < 4; ++i) {
    if (values[i] >= 0) gauges_[4 + i]->Set(values[i]);
  }
}

// ---- RpcSeries
// -------------------------------------------------------------------

RpcSeries::RpcSeries(Metrics& metrics, std::string method)
    : metrics_(metrics), method_(std::move(method)) {
  in_flight_ = &metrics_.f_->rpc_in_flight.Add({{"method", method_}});
  duration_ =
      &metrics_.f_->rpc_duration.Add({{"method", method_}}, LatencyBuckets());
}

void RpcSeries::Started() { in_flight_->Increment(); }

void RpcSeries::Finished(const std::string& code, double seconds) {
  in_flight_->Decrement();
  duration_->Observe(seconds);
  prometheus::Counter* counter;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prometheus::Counter*& c = codes_[code];
    if (c == nullptr) {
      c = &metrics_.f_->rpc_requests.Add({{"method", method_}, {"code", code}});
    }
    counter = c;
  }
  counter->Increment();
}

}  // namespace transferd::core
