#include "server/core/predictor.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/core/backbones/preprocessing.h"
#include "server/core/registry.h"
#include "server/core/train/classifier.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/torch_util.h"

namespace transferd::core {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<backbones::Preprocessing> PreprocessingOf(
    const PreprocessingInfo& info) {
  backbones::Preprocessing p;
  if (info.mode == "caffe") {
    p.mode = backbones::Preprocessing::Mode::kCaffe;
  } else if (info.mode == "tf") {
    p.mode = backbones::Preprocessing::Mode::kTf;
  } else if (info.mode == "torch") {
    p.mode = backbones::Preprocessing::Mode::kTorch;
  } else {
    return absl::DataLossError(
        absl::StrCat("unknown preprocessing mode '", info.mode, "'"));
  }
  if (info.mean.size() != 3 || info.std.size() != 3 || info.input_size <= 0) {
    return absl::DataLossError("malformed preprocessing metadata");
  }
  p.bgr = info.bgr;
  p.scale = info.scale;
  std::copy(info.mean.begin(), info.mean.end(), p.mean.begin());
  std::copy(info.std.begin(), info.std.end(), p.std.begin());
  return p;
}

}  // namespace

// ---- ModelRunner ------------------------------------------------------------

struct ModelRunner::Impl {
  train::Classifier model{nullptr};
  backbones::Preprocessing preprocessing;
  torch::Device device{torch::kCPU};
  bool bf16 = false;
  int input_size = 0;
  int num_classes = 0;
  int64_t bytes = 0;
};

ModelRunner::ModelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelRunner::~ModelRunner() = default;

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Load(
    const ModelInfo& info, const ComputeDevice& device,
    const backbones::WeightsCacheOptions& weights) {
  auto impl = std::make_unique<Impl>();
  TRANSFERD_ASSIGN_OR_RETURN(impl->preprocessing,
                             PreprocessingOf(info.preprocessing));
  impl->input_size = info.preprocessing.input_size;
  impl->num_classes = static_cast<int>(info.classes.size());
  impl->bf16 = info.model.precision == "bf16";
  impl->device = ToTorchDevice(device);
  if (impl->num_classes < 2) {
    return absl::DataLossError(
        absl::StrCat("model ", info.id, " has fewer than 2 classes"));
  }
  try {
    train::ModelConfig config = info.model;
    config.init_weights_file.clear();
    TRANSFERD_ASSIGN_OR_RETURN(
        impl->model, train::BuildClassifier(config, impl->num_classes, weights,
                                            /*load_weights=*/false));
    TRANSFERD_RETURN_IF_ERROR(impl->model->Load(info.weights_file));
    impl->model->eval();
    // On CUDA the budget counts what the caching allocator gained while the
    // model moved there (rounding and per-tensor blocks included); work on
    // the device at the same moment can only make that larger. Never less
    // than the parameters and buffers, which is the count on the CPU.
    const int64_t before = DeviceAllocatedBytes(device);
    impl->model->to(impl->device);
    const int64_t after = DeviceAllocatedBytes(device);
    for (const auto& t : impl->model->parameters()) impl->bytes += t.nbytes();
    for (const auto& t : impl->model->buffers()) impl->bytes += t.nbytes();
    if (before >= 0 && after >= 0) {
      impl->bytes = std::max(impl->bytes, after - before);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("loading model ", info.id, ": ", e.what()));
  }
  return std::unique_ptr<ModelRunner>(new ModelRunner(std::move(impl)));
}

int ModelRunner::input_size() const { return impl_->input_size; }
int ModelRunner::num_classes() const { return impl_->num_classes; }
int64_t ModelRunner::bytes() const { return impl_->bytes; }

absl::StatusOr<std::vector<float>> ModelRunner::Run(const uint8_t* pixels,
                                                    int64_t n, bool flip_tta) {
  const int s = impl_->input_size;
  try {
    torch::NoGradGuard no_grad;
    // from_blob does not own or modify the bytes; preprocessing makes a copy.
    const torch::Tensor rgb = torch::from_blob(const_cast<uint8_t*>(pixels),
                                               {n, s, s, 3}, torch::kUInt8);
    torch::Tensor x = backbones::ApplyPreprocessing(impl_->preprocessing, rgb)
                          .contiguous(torch::MemoryFormat::ChannelsLast)
                          .to(impl_->device);
    if (flip_tta) x = torch::cat({x, x.flip({3})}, 0);
    torch::Tensor logits;
    {
      AutocastScope autocast(impl_->bf16, impl_->device);
      logits = impl_->model->forward(x);
    }
    torch::Tensor p = impl_->model->Probabilities(logits).to(torch::kFloat32);
    if (flip_tta) p = (p.slice(0, 0, n) + p.slice(0, n, 2 * n)) / 2;
    p = p.to(torch::kCPU).contiguous();
    return std::vector<float>(p.data_ptr<float>(),
                              p.data_ptr<float>() + p.numel());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("inference failed: ", e.what()));
  }
}

// ---- Predictor --------------------------------------------------------------

namespace {

struct Request {
  PredictCall call;
  PredictOutcome outcome;
  int remaining = 0;  // images still to compute; guarded by Impl::mu
  bool finished = false;
  // The model's metric series (null with metrics off) and when Submit took
  // the call.
  std::shared_ptr<ModelSeries> series;
  Clock::time_point submitted;
  size_t images = 0;  // as submitted
};

struct Item {
  std::shared_ptr<Request> request;
  int index = 0;
  std::vector<uint8_t> pixels;
  Clock::time_point enqueued;
  Clock::time_point taken;  // into a batch
};

struct Meta {
  std::shared_ptr<const ModelInfo> info;
  std::shared_ptr<ModelSeries> series;  // null with metrics off
};

// The answer of `request`, counted in its model's series: the request's
// outcome, each image's (a request-level failure counts for all of them) and
// the time from Submit to here. Then the caller's callback.
void Answer(Request& request, absl::Status status) {
  if (request.series != nullptr) {
    std::vector<absl::StatusCode> codes(request.images, status.code());
    if (status.ok()) {
      for (size_t i = 0; i < codes.size() && i < request.outcome.images.size();
           ++i) {
        codes[i] = request.outcome.images[i].status.code();
      }
    }
    request.series->RequestDone(
        status, codes,
        std::chrono::duration<double>(Clock::now() - request.submitted)
            .count());
  }
  request.call.done(std::move(status), std::move(request.outcome));
}

struct Loaded {
  std::unique_ptr<ModelRunner> runner;
  Clock::time_point last_used;
};

struct Op {
  enum class Kind { kWarm, kForget } kind;
  std::string model_id;
};

// A request that ended, and how: its callback runs outside the lock.
using Finished = std::vector<std::pair<std::shared_ptr<Request>, absl::Status>>;

void RunCallbacks(Finished& finished) {
  for (auto& [request, status] : finished) Answer(*request, std::move(status));
  finished.clear();
}

}  // namespace

struct Predictor::Impl {
  Impl(const PredictorOptions& o, ModelRegistry& m, ComputeDevice d,
       backbones::WeightsCacheOptions w, DeviceArbiter* a)
      : options(o),
        models(m),
        device(std::move(d)),
        weights(std::move(w)),
        arbiter(a) {}

  const PredictorOptions& options;
  ModelRegistry& models;
  const ComputeDevice device;
  const backbones::WeightsCacheOptions weights;
  DeviceArbiter* const arbiter;

  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  bool stopping = false;
  std::map<std::string, std::deque<Item>> queues;
  std::deque<Op> ops;
  std::map<std::string, Meta> meta;
  std::set<std::string> ready;
  Stats stats;
  std::vector<std::function<void(const std::string&, bool)>> ready_listeners;
  std::thread thread;
  Metrics* metrics = nullptr;  // set before Start()

  // `id`'s metric series, kept with its metadata while the model exists
  // (null with metrics off, or for a model not known or forgotten); mu held.
  ModelSeries* SeriesOf(const std::string& id) {
    auto it = meta.find(id);
    return it == meta.end() ? nullptr : it->second.series.get();
  }

  // Worker thread only.
  std::map<std::string, Loaded> loaded;

  // The model's metadata and series, read from the registry once.
  absl::StatusOr<Meta> MetaOf(const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = meta.find(id);
      if (it != meta.end()) return it->second;
    }
    TRANSFERD_ASSIGN_OR_RETURN(ModelInfo info, models.Get(id));
    Meta m{std::make_shared<const ModelInfo>(std::move(info)),
           metrics != nullptr ? metrics->Model(id) : nullptr};
    std::lock_guard<std::mutex> lock(mu);
    return meta.emplace(id, std::move(m)).first->second;
  }

  // Finishes `r` with `status` unless it already ended; mu held.
  void End(const std::shared_ptr<Request>& r, absl::Status status,
           Finished& out) {
    if (r->finished) return;
    r->finished = true;
    out.emplace_back(r, std::move(status));
  }

  absl::StatusOr<ModelRunner*> EnsureLoaded(const std::string& id) {
    auto it = loaded.find(id);
    if (it != loaded.end()) {
      it->second.last_used = Clock::now();
      return it->second.runner.get();
    }
    TRANSFERD_ASSIGN_OR_RETURN(Meta model, MetaOf(id));
    const std::shared_ptr<const ModelInfo>& info = model.info;
    const auto start = Clock::now();
    TRANSFERD_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                               ModelRunner::Load(*info, device, weights));
    {
      // Warm-up: the first forward pass allocates and picks kernels.
      std::vector<uint8_t> zeros(static_cast<size_t>(runner->input_size()) *
                                 runner->input_size() * 3);
      DeviceArbiter::Turn turn(arbiter, DeviceArbiter::Priority::kInteractive);
      TRANSFERD_RETURN_IF_ERROR(runner->Run(zeros.data(), 1, false).status());
    }
    LogFields(
        spdlog::level::info, "model loaded and warmed",
        {{"model", id},
         {"duration_ms",
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                             Clock::now() - start)
                             .count())},
         {"bytes", std::to_string(runner->bytes())}});
    ModelRunner* raw = runner.get();
    const int64_t bytes = runner->bytes();
    loaded[id] = Loaded{std::move(runner), Clock::now()};
    {
      std::lock_guard<std::mutex> lock(mu);
      ready.insert(id);
      ++stats.loads;
      if (ModelSeries* m = SeriesOf(id)) {
        m->Loaded(std::chrono::duration<double>(Clock::now() - start).count(),
                  bytes);
      }
    }
    Notify(id, true);
    EvictBeyondBudget(id);
    return raw;
  }

  void Notify(const std::string& id, bool is_ready) {
    std::vector<std::function<void(const std::string&, bool)>> listeners;
    {
      std::lock_guard<std::mutex> lock(mu);
      listeners = ready_listeners;
    }
    for (const auto& listener : listeners) listener(id, is_ready);
  }

  void Unload(const std::string& id) {
    if (loaded.erase(id) == 0) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      ready.erase(id);
      ++stats.unloads;
      if (ModelSeries* m = SeriesOf(id)) m->Unloaded();
    }
    LogFields(spdlog::level::info, "model unloaded", {{"model", id}});
    Notify(id, false);
  }

  void EvictBeyondBudget(const std::string& keep) {
    while (true) {
      int64_t total = 0;
      for (const auto& [id, l] : loaded) total += l.runner->bytes();
      if (total <= options.memory_budget_bytes || loaded.size() <= 1) return;
      auto victim = loaded.end();
      for (auto it = loaded.begin(); it != loaded.end(); ++it) {
        if (it->first == keep) continue;
        if (victim == loaded.end() ||
            it->second.last_used < victim->second.last_used) {
          victim = it;
        }
      }
      if (victim == loaded.end()) return;
      Unload(victim->first);
    }
  }

  void RunBatch(const std::string& model_id, std::vector<Item>& batch) {
    for (const Item& item : batch) {
      if (item.request->series != nullptr) {
        item.request->series->Queued(
            std::chrono::duration<double>(item.taken - item.enqueued).count());
      }
    }
    Finished finished;
    absl::StatusOr<ModelRunner*> runner = EnsureLoaded(model_id);
    if (!runner.ok()) {
      LogFields(spdlog::level::warn, "model cannot be loaded",
                {{"model", model_id},
                 {"message", std::string(runner.status().message())}});
      std::lock_guard<std::mutex> lock(mu);
      for (Item& item : batch) End(item.request, runner.status(), finished);
    } else {
      ModelRunner& r = **runner;
      const size_t image_bytes =
          static_cast<size_t>(r.input_size()) * r.input_size() * 3;
      for (bool tta : {false, true}) {
        std::vector<Item*> part;
        for (Item& item : batch) {
          if (item.request->call.flip_tta == tta &&
              item.pixels.size() == image_bytes) {
            part.push_back(&item);
          }
        }
        if (part.empty()) continue;
        std::vector<uint8_t> pixels(image_bytes * part.size());
        for (size_t i = 0; i < part.size(); ++i) {
          std::memcpy(pixels.data() + i * image_bytes, part[i]->pixels.data(),
                      image_bytes);
        }
        absl::StatusOr<std::vector<float>> probs;
        double compute_seconds = 0;
        const std::function<void()> compute = [&] {
          const auto start = Clock::now();
          probs = r.Run(pixels.data(), static_cast<int64_t>(part.size()), tta);
          compute_seconds =
              std::chrono::duration<double>(Clock::now() - start).count();
        };
        // Here, or inside a training step at its next yield point.
        if (arbiter != nullptr) {
          arbiter->RunInteractive(compute);
        } else {
          compute();
        }
        std::lock_guard<std::mutex> lock(mu);
        ++stats.batches;
        stats.images += static_cast<int64_t>(part.size());
        if (ModelSeries* m = part.front()->request->series.get()) {
          m->Batch(static_cast<int>(part.size()), compute_seconds);
        }
        for (size_t i = 0; i < part.size(); ++i) {
          Request& req = *part[i]->request;
          if (req.finished) continue;
          if (!probs.ok()) {
            End(part[i]->request, probs.status(), finished);
            continue;
          }
          ImageResult& out = req.outcome.images[part[i]->index];
          const int k = r.num_classes();
          out.probabilities.assign(
              probs->begin() + static_cast<int64_t>(i) * k,
              probs->begin() + static_cast<int64_t>(i + 1) * k);
          out.label =
              static_cast<int>(std::max_element(out.probabilities.begin(),
                                                out.probabilities.end()) -
                               out.probabilities.begin());
          if (--req.remaining == 0)
            End(part[i]->request, absl::OkStatus(), finished);
        }
      }
    }
    RunCallbacks(finished);
  }

  // Loop's steps. With mu held unless said otherwise.

  // A warm or unload request, run without mu.
  void RunOp(const Op& op) {
    if (op.kind == Op::Kind::kWarm) {
      absl::StatusOr<ModelRunner*> r = EnsureLoaded(op.model_id);
      if (!r.ok()) {
        LogFields(spdlog::level::warn, "model cannot be warmed",
                  {{"model", op.model_id},
                   {"message", std::string(r.status().message())}});
        Notify(op.model_id, false);
      }
    } else {
      Unload(op.model_id);
    }
  }

  // Requests whose deadline passed are answered now, not computed: ends
  // them into `expired` and drops finished items; returns the earliest
  // deadline still waiting.
  Clock::time_point ExpireQueued(Finished& expired) {
    Clock::time_point earliest_deadline = Clock::time_point::max();
    const auto now = Clock::now();
    for (auto& [id, q] : queues) {
      for (auto it = q.begin(); it != q.end();) {
        Request& r = *it->request;
        if (!r.finished && now >= r.call.deadline) {
          ++stats.expired;
          End(it->request,
              absl::DeadlineExceededError(
                  "the deadline passed while the request was queued"),
              expired);
        }
        if (r.finished) {
          it = q.erase(it);
          --stats.queued;
        } else {
          earliest_deadline = std::min(earliest_deadline, r.call.deadline);
          ++it;
        }
      }
      if (ModelSeries* m = SeriesOf(id)) {
        m->QueueDepth(static_cast<int64_t>(q.size()));
      }
    }
    return earliest_deadline;
  }

  // The model whose oldest image has waited longest; queues.end() if none.
  std::map<std::string, std::deque<Item>>::iterator OldestQueue() {
    auto next = queues.end();
    for (auto it = queues.begin(); it != queues.end(); ++it) {
      if (it->second.empty()) continue;
      if (next == queues.end() ||
          it->second.front().enqueued < next->second.front().enqueued) {
        next = it;
      }
    }
    return next;
  }

  // Up to max_batch_size live items from the front of `q`; cancelled and
  // expired ones are ended into `finished`.
  std::vector<Item> TakeBatch(const std::string& model_id, std::deque<Item>& q,
                              Finished& finished) {
    std::vector<Item> batch;
    const auto now = Clock::now();
    while (!q.empty() &&
           static_cast<int>(batch.size()) < options.max_batch_size) {
      Item item = std::move(q.front());
      q.pop_front();
      --stats.queued;
      Request& r = *item.request;
      if (r.finished) continue;
      if (r.call.cancelled != nullptr && r.call.cancelled->load()) {
        ++stats.cancelled;
        End(item.request,
            absl::CancelledError("the client cancelled the request"), finished);
        continue;
      }
      if (now >= r.call.deadline) {
        ++stats.expired;
        End(item.request,
            absl::DeadlineExceededError(
                "the deadline passed while the request was queued"),
            finished);
        continue;
      }
      item.taken = now;
      batch.push_back(std::move(item));
    }
    if (ModelSeries* m = SeriesOf(model_id)) {
      m->QueueDepth(static_cast<int64_t>(q.size()));
    }
    return batch;
  }

  // Stopping: whatever waits is answered.
  void AnswerQueuedUnavailable(Finished& finished) {
    for (auto& [id, q] : queues) {
      for (Item& item : q) {
        End(item.request, absl::UnavailableError("the server is shutting down"),
            finished);
      }
    }
    for (const auto& [id, q] : queues) {
      if (ModelSeries* m = SeriesOf(id)) m->QueueDepth(0);
    }
    queues.clear();
    stats.queued = 0;
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      if (!ops.empty()) {
        Op op = std::move(ops.front());
        ops.pop_front();
        lock.unlock();
        RunOp(op);
        lock.lock();
        continue;
      }
      Finished expired;
      const Clock::time_point earliest_deadline = ExpireQueued(expired);
      if (!expired.empty()) {
        lock.unlock();
        RunCallbacks(expired);
        lock.lock();
        continue;
      }
      auto next = OldestQueue();
      if (next == queues.end()) {
        cv.wait(lock);
        continue;
      }
      std::deque<Item>& q = next->second;
      const auto due = q.front().enqueued + options.max_queue_delay;
      if (static_cast<int>(q.size()) < options.max_batch_size &&
          Clock::now() < due) {
        cv.wait_until(lock, std::min(due, earliest_deadline));
        continue;
      }
      const std::string model_id = next->first;
      Finished finished;
      std::vector<Item> batch = TakeBatch(model_id, q, finished);
      if (q.empty()) queues.erase(next);
      lock.unlock();
      RunCallbacks(finished);
      if (!batch.empty()) RunBatch(model_id, batch);
      lock.lock();
    }
    Finished finished;
    AnswerQueuedUnavailable(finished);
    lock.unlock();
    RunCallbacks(finished);
    loaded.clear();
  }
};

Predictor::Predictor(PredictorOptions options, ModelRegistry& models,
                     ComputeDevice device,
                     backbones::WeightsCacheOptions weights,
                     DeviceArbiter* arbiter)
    : options_(options),
      impl_(std::make_unique<Impl>(options_, models, std::move(device),
                                   std::move(weights), arbiter)) {}

Predictor::~Predictor() { Stop(); }

void Predictor::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->started || impl_->stopping) return;
  impl_->started = true;
  impl_->thread = std::thread([this] { impl_->Loop(); });
}

void Predictor::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Predictor::SetMetrics(Metrics* metrics) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->metrics = metrics;
}

void Predictor::AddReadyListener(
    std::function<void(const std::string&, bool)> listener) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->ready_listeners.push_back(std::move(listener));
}

void Predictor::Warm(const std::string& model_id) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->ops.push_back({Op::Kind::kWarm, model_id});
  }
  impl_->cv.notify_all();
}

void Predictor::Forget(const std::string& model_id) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->meta.erase(model_id);  // and with it the model's series
    if (impl_->metrics != nullptr) impl_->metrics->RemoveModel(model_id);
    impl_->ops.push_back({Op::Kind::kForget, model_id});
  }
  impl_->cv.notify_all();
}

bool Predictor::Known(const std::string& model_id) {
  return impl_->MetaOf(model_id).ok();
}

bool Predictor::Ready(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ready.count(model_id) > 0;
}

Predictor::Stats Predictor::stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stats s = impl_->stats;
  s.loaded_models = static_cast<int>(impl_->ready.size());
  return s;
}

void Predictor::Submit(PredictCall call) {
  auto fail = [&call](absl::Status status) {
    call.done(std::move(status), PredictOutcome());
  };
  const int n = static_cast<int>(call.images.size());
  if (n == 0)
    return fail(
        absl::InvalidArgumentError("images: at least one image is required"));
  if (n > options_.max_images_per_request) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("images: ", n, " images in one request; the limit is ",
                     options_.max_images_per_request)));
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping || !impl_->started) {
      return fail(absl::UnavailableError("the predictor is not running"));
    }
  }
  const Clock::time_point submitted = Clock::now();
  absl::StatusOr<Meta> meta = impl_->MetaOf(call.model_id);
  if (!meta.ok()) return fail(meta.status());
  if (decode_executor_ == nullptr) {
    DecodeAndQueue(std::move(call), meta->info, meta->series, submitted);
    return;
  }
  decode_executor_->Schedule([this, call = std::move(call),
                              meta = *std::move(meta), submitted]() mutable {
    DecodeAndQueue(std::move(call), std::move(meta.info),
                   std::move(meta.series), submitted);
  });
}

namespace {

// One image's model input: an encoded file decoded and resized to
// size x size, or (`raw`) pixels of that size taken as they are.
absl::Status PixelsOf(const std::string& image, bool raw,
                      const ImageLimits& limits, int size,
                      std::vector<uint8_t>* out) {
  const size_t image_bytes = static_cast<size_t>(size) * size * 3;
  if (!raw) {
    out->resize(image_bytes);
    return DecodeResized(image, limits, size, out->data());
  }
  if (image.size() != image_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("pixels: ", image.size(), " bytes, not ", image_bytes,
                     " (", size, "x", size, "x3)"));
  }
  out->assign(image.begin(), image.end());
  return absl::OkStatus();
}

}  // namespace

void Predictor::DecodeAndQueue(PredictCall call,
                               std::shared_ptr<const ModelInfo> info,
                               std::shared_ptr<ModelSeries> series,
                               Clock::time_point submitted) {
  const int n = static_cast<int>(call.images.size());
  const int size = info->preprocessing.input_size;

  if (call.pixel_size > 0 && call.pixel_size != size) {
    call.done(
        absl::InvalidArgumentError(absl::StrCat(
            "pixels: model ", call.model_id, " takes ", size, "x", size,
            "x3 images, not ", call.pixel_size, "x", call.pixel_size, "x3")),
        PredictOutcome());
    return;
  }
  auto request = std::make_shared<Request>();
  request->series = std::move(series);
  request->submitted = submitted;
  request->images = static_cast<size_t>(n);
  request->outcome.model_id = call.model_id;
  request->outcome.classes = info->classes;
  request->outcome.images.resize(n);
  std::vector<Item> items;
  const auto now = Clock::now();
  for (int i = 0; i < n; ++i) {
    Item item;
    absl::Status decoded = PixelsOf(call.images[i], call.pixel_size > 0,
                                    options_.image_limits, size, &item.pixels);
    if (!decoded.ok()) {
      request->outcome.images[i].status = decoded;
      continue;
    }
    item.request = request;
    item.index = i;
    item.enqueued = now;
    items.push_back(std::move(item));
  }
  call.images.clear();
  call.images.shrink_to_fit();
  request->remaining = static_cast<int>(items.size());
  request->call = std::move(call);
  if (items.empty()) {
    request->finished = true;
    Answer(*request, absl::OkStatus());
    return;
  }
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    absl::Status refused;
    if (impl_->stopping) {
      refused = absl::UnavailableError("the server is shutting down");
    } else if (impl_->stats.queued + static_cast<int64_t>(items.size()) >
               options_.max_queued_images) {
      ++impl_->stats.rejected_queue_full;
      refused = absl::ResourceExhaustedError(
          absl::StrCat("the predict queue is full (", impl_->stats.queued,
                       " images waiting, limit ", options_.max_queued_images,
                       " set by --predict-queue-images); retry later"));
    }
    if (!refused.ok()) {
      lock.unlock();
      request->finished = true;
      request->outcome = PredictOutcome();
      Answer(*request, refused);
      return;
    }
    std::deque<Item>& q = impl_->queues[request->call.model_id];
    for (Item& item : items) q.push_back(std::move(item));
    impl_->stats.queued += static_cast<int64_t>(items.size());
    if (request->series != nullptr) {
      request->series->QueueDepth(static_cast<int64_t>(q.size()));
    }
  }
  impl_->cv.notify_all();
}

}  // namespace transferd::core
