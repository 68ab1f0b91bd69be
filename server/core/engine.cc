#include "server/core/engine.h"

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/core/backbones/backbone.h"
#include "server/core/util/build_info.h"
#include "server/core/util/status_macros.h"

namespace transferd::core {
namespace {

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    absl::StrAppendFormat(&out, "%02x", rd() & 0xff);
  }
  return out;
}

// The catalog with each base's Keras parameter count at its default width
// (built once: a second or two of start-up, while health is NOT_SERVING).
std::vector<BackboneDescription> DescribeBackbones() {
  std::vector<BackboneDescription> out;
  for (const backbones::BackboneCatalogEntry& entry :
       backbones::BackboneCatalog()) {
    BackboneDescription d;
    d.name = entry.name;
    d.keras_name = entry.keras_name;
    d.alphas = entry.alphas;
    d.default_input_size = entry.default_input_size;
    backbones::BackboneSpec spec;
    spec.name = entry.name;
    spec.alpha = entry.default_alpha;
    auto backbone = backbones::CreateBackbone(spec);
    if (backbone.ok()) {
      d.min_input_size = (*backbone)->min_input_size();
      d.parameters = (*backbone)->KerasParameterCount();
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options) {
  std::unique_ptr<Engine> engine(new Engine);
  engine->options_ = options;
  TRANSFERD_ASSIGN_OR_RETURN(engine->device_, SelectDevice(options.device));
  DataDir::Options data_dir = options.data_dir;
  data_dir.lock_wait = options.startup_timeout;
  TRANSFERD_ASSIGN_OR_RETURN(engine->data_dir_, DataDir::Open(data_dir));
  Executor::Options executor;
  executor.threads = options.executor_threads;
  executor.name = "engine-exec";
  engine->executor_ = std::make_unique<Executor>(executor);
  Executor::Options decode;
  decode.threads = options.predict_decode_threads;
  decode.name = "predict-decode";
  engine->decode_executor_ = std::make_unique<Executor>(decode);
  engine->start_time_ = std::chrono::system_clock::now();
  if (options.metrics) {
    const BuildInfo& build = GetBuildInfo();
    engine->metrics_ = std::make_unique<Metrics>(Metrics::BuildLabels{
        build.version, build.revision, build.torch_version});
    Metrics& m = *engine->metrics_;
    const ComputeDevice& d = engine->device_;
    m.SetDevice(d.kind == ComputeDevice::Kind::kCuda ? "cuda" : "cpu", d.name,
                d.precision);
    m.SetQueueCapacity(options.predictor.max_queued_images);
    engine->arbiter_.SetWaitObserver([&m](bool interactive, double seconds) {
      m.TurnWaited(interactive, seconds);
    });
    Engine* raw = engine.get();
    m.AddScrapeHook([raw](Metrics& metrics) { raw->ScrapeInto(metrics); });
  }
  return engine;
}

absl::Status Engine::Start() {
  if (ready()) return absl::OkStatus();
  Store::Options store_options;
  store_options.path = data_dir_->database_path();
  store_options.busy_timeout_ms = options_.store_busy_timeout_ms;
  store_options.open_timeout_ms =
      static_cast<int>(options_.startup_timeout.count());
  store_options.cancelled = [this] { return shutting_down(); };
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_options);
  if (shutting_down()) {
    return absl::CancelledError("start-up abandoned: shutting down");
  }
  if (!store.ok()) return store.status();

  TRANSFERD_ASSIGN_OR_RETURN(std::optional<std::string> id,
                             (*store)->GetMeta("instance_id"));
  if (!id.has_value()) {
    id = RandomHex(8);
    TRANSFERD_RETURN_IF_ERROR((*store)->SetMeta("instance_id", *id));
    TRANSFERD_RETURN_IF_ERROR((*store)->SetMeta(
        "created_at",
        absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())));
  }
  instance_id_ = *id;
  TRANSFERD_ASSIGN_OR_RETURN(
      datasets_, DatasetCatalog::Open(**store, *data_dir_, options_.datasets));
  datasets_->SetMetrics(metrics_.get());
  TRANSFERD_ASSIGN_OR_RETURN(models_, ModelRegistry::Open(**store, *data_dir_));
  JobQueue::Env jobs_env;
  jobs_env.store = store->get();
  jobs_env.data_dir = data_dir_.get();
  jobs_env.datasets = datasets_.get();
  jobs_env.models = models_.get();
  jobs_env.device = device_;
  jobs_env.weights = weights_cache();
  jobs_env.loader_threads = options_.loader_threads;
  jobs_env.decoded_cache_bytes = options_.decoded_cache_bytes;
  if (!options_.worker && options_.follow_primary.empty()) {
    cluster_ = std::make_unique<ClusterRegistry>();
    jobs_env.cluster = cluster_.get();
  }
  jobs_env.rendezvous_address = options_.rendezvous_address;
  jobs_env.rendezvous_port = options_.rendezvous_port;
  jobs_env.collective_timeout = options_.collective_timeout;
  arbiter_.SetYielding(options_.training_yields);
  arbiter_.SetInteractiveShare(options_.interactive_share,
                               options_.interactive_burst);
  jobs_env.arbiter = &arbiter_;
  jobs_env.metrics = metrics_.get();
  TRANSFERD_ASSIGN_OR_RETURN(jobs_, JobQueue::Open(jobs_env));
  PredictorOptions predictor_options = options_.predictor;
  predictor_options.image_limits = options_.datasets.image;
  predictor_ = std::make_unique<Predictor>(predictor_options, *models_, device_,
                                           weights_cache(), &arbiter_);
  predictor_->SetDecodeExecutor(decode_executor_.get());
  predictor_->SetMetrics(metrics_.get());
  predictor_->Start();
  if (read_only()) {
    Replica::Options replica;
    replica.primary = options_.follow_primary;
    replica.keep_models = options_.replica_keep_models;
    replica_ = std::make_unique<Replica>(*this, replica);
  } else if (options_.run_jobs) {
    jobs_->Start();
  }
  backbones_ = DescribeBackbones();
  store_ = std::move(*store);
  ready_.store(true);
  return absl::OkStatus();
}

Engine::~Engine() { (void)Shutdown(); }

void Engine::ScrapeInto(Metrics& metrics) {
  metrics.SetReady(ready() && !shutting_down());
  if (const int64_t allocated = DeviceAllocatedBytes(device_); allocated >= 0) {
    metrics.SetDeviceMemory(device_.name, allocated, device_.memory_bytes);
  }
  std::error_code ec;
  const std::filesystem::space_info space =
      std::filesystem::space(data_dir_->root(), ec);
  if (!ec) {
    metrics.SetDataDirFree(static_cast<int64_t>(space.available),
                           options_.datasets.min_free_disk_bytes);
  }
  // The catalogs are there while ready (Shutdown clears ready_ first).
  if (!ready()) return;
  if (absl::StatusOr<std::map<JobState, int64_t>> counts =
          jobs_->CountByState();
      counts.ok()) {
    std::map<std::string, int64_t> by_name;
    for (const auto& [state, n] : *counts) {
      by_name[absl::AsciiStrToLower(JobStateName(state))] = n;
    }
    metrics.SetJobsByState(by_name);
  }
  if (absl::StatusOr<int64_t> bytes = datasets_->TotalBytes(); bytes.ok()) {
    metrics.SetStoredBytes(*bytes);
  }
  if (replica_ != nullptr) {
    const ReplicaStatus status = replica_->Status();
    auto seconds = [](const auto& t) {
      return t.has_value()
                 ? std::chrono::duration<double>(t->time_since_epoch()).count()
                 : 0.0;
    };
    metrics.SetReplica(status.primary_connected, status.in_sync,
                       seconds(status.last_contact), seconds(status.last_sync));
  }
}

EngineInfo Engine::Info() const {
  EngineInfo info;
  info.device = device_;
  info.cpu = GetCpuFeatures();
  info.start_time = start_time_;
  if (ready()) {  // written before ready_
    info.store_schema_version = store_->schema_version();
    info.instance_id = instance_id_;
    info.backbones = backbones_;
    if (replica_ != nullptr) info.replica = replica_->Status();
    if (cluster_ != nullptr) {
      info.cluster.role = "coordinator";
      info.cluster.workers = cluster_->Workers();
    } else if (options_.worker) {
      info.cluster.role = "worker";
      info.cluster.self = worker_state_.Get();
    }
    // Files in the weights folder, by the backbone their name starts with.
    for (const std::string& file :
         backbones::CachedWeightFiles(data_dir_->weights_dir())) {
      BackboneDescription* owner = nullptr;
      size_t longest = 0;
      for (BackboneDescription& b : info.backbones) {
        if (file.rfind(b.name, 0) == 0 && b.name.size() > longest) {
          owner = &b;
          longest = b.name.size();
        }
      }
      if (owner != nullptr) owner->weights_available.push_back(file);
    }
  }
  return info;
}

backbones::WeightsCacheOptions Engine::weights_cache() const {
  backbones::WeightsCacheOptions cache;
  cache.dir = data_dir_->weights_dir();
  cache.allow_download = options_.allow_weight_downloads;
  return cache;
}

void Engine::BeginShutdown() {
  shutting_down_.store(true);
  // The running job stops at its next batch and stays RUNNING in the store:
  // the next start resumes it from its last checkpoint.
  if (ready() && jobs_) jobs_->Stop();
}

absl::Status Engine::Shutdown() {
  BeginShutdown();
  ready_.store(false);
  absl::Status status;
  // Work front ends handed over runs to its end while everything it uses is
  // still there.
  executor_.reset();
  jobs_.reset();
  // In-flight predictions finished while the RPC server drained; what is
  // still decoding is queued, then answered as the predictor stops.
  decode_executor_.reset();
  predictor_.reset();
  replica_.reset();
  models_.reset();
  datasets_.reset();
  if (store_) {
    status = store_->Close();
    store_.reset();
  }
  data_dir_.reset();
  return status;
}

}  // namespace transferd::core
