// Serving: "cat or dog?" for encoded images, with dynamic batching on the
// device that also trains.
//
// A request's images are decoded and resized on the caller's thread by the
// same function the training loader uses (DecodeResized), with the size and
// preprocessing recorded in the model's metadata, so serving sees exactly the
// pixels evaluation saw. Decoded images wait in one queue per model; the
// predictor's thread forms batches with Triton's dynamic-batching rules: a
// batch runs when it holds max_batch_size images or when its oldest image has
// waited max_queue_delay. The queue is bounded (RESOURCE_EXHAUSTED when a
// request does not fit); a request whose deadline passes while queued ends
// DEADLINE_EXCEEDED and a cancelled one CANCELLED, and neither is computed.
// Each batch takes an interactive turn of the DeviceArbiter, so it runs
// between two training steps of a running job.
//
// Models load lazily (or ahead of use through Warm) and are warmed with one
// forward pass before they count as ready; loaded models beyond the memory
// budget are unloaded least recently used first.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/data/images.h"
#include "server/core/device.h"
#include "server/core/device_arbiter.h"
#include "server/core/util/executor.h"

namespace transferd::core {

class Metrics;
class ModelRegistry;
class ModelSeries;
struct ModelInfo;

struct PredictorOptions {
  int max_batch_size = 32;
  // 0 (Triton's default): a batch takes what is queued when the device is free;
  // under load, requests gather while the previous batch computes.
  std::chrono::microseconds max_queue_delay{0};
  // Decoded images waiting across all models.
  int max_queued_images = 1024;
  int max_images_per_request = 256;
  // Tensors of loaded models; the least recently used beyond it are unloaded
  // (the model in use always stays).
  int64_t memory_budget_bytes = 2ll << 30;
  ImageLimits image_limits;
};

// One image's answer.
struct ImageResult {
  // OK, or INVALID_ARGUMENT (not an image, truncated, too many pixels).
  absl::Status status;
  int label = -1;                    // index into classes
  std::vector<float> probabilities;  // one per class
};

struct PredictOutcome {
  std::string model_id;
  std::vector<std::string> classes;
  std::vector<ImageResult> images;  // in request order
};

struct PredictCall {
  std::string model_id;
  std::vector<std::string> images;  // encoded JPEG/PNG bytes
  // > 0: `images` hold already-sized pixels instead of encoded files, each
  // pixel_size x pixel_size x 3 RGB bytes, row-major (HWC), used as they are
  // (nothing decoded or resized). It must be the model's input size
  // (INVALID_ARGUMENT, request-level, otherwise; a wrong byte count fails
  // that image alone).
  int pixel_size = 0;
  bool flip_tta = false;
  std::chrono::steady_clock::time_point deadline =
      std::chrono::steady_clock::time_point::max();
  // Optional: set true by the caller when its client went away.
  std::shared_ptr<std::atomic<bool>> cancelled;
  // Called exactly once: a non-OK status is request-level (NOT_FOUND model,
  // RESOURCE_EXHAUSTED queue full, DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE
  // shutting down, INTERNAL); per-image problems are in the outcome. May run
  // on the caller's thread before Submit returns, on the decode executor, or
  // on the predictor's thread.
  std::function<void(absl::Status, PredictOutcome)> done;
};

// A registered model loaded for inference (shared by the predictor and
// predict jobs). Not thread-safe: one user at a time.
class ModelRunner {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Load(
      const ModelInfo& info, const ComputeDevice& device,
      const backbones::WeightsCacheOptions& weights);
  ~ModelRunner();

  int input_size() const;
  int num_classes() const;
  int64_t bytes() const;  // parameters and buffers
  // `n` images of input_size x input_size x 3 RGB bytes, contiguous ->
  // n x num_classes probabilities, row-major. With flip_tta each is averaged
  // with its horizontal mirror.
  absl::StatusOr<std::vector<float>> Run(const uint8_t* pixels, int64_t n,
                                         bool flip_tta);

 private:
  struct Impl;
  explicit ModelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Predictor {
 public:
  Predictor(PredictorOptions options, ModelRegistry& models,
            ComputeDevice device, backbones::WeightsCacheOptions weights,
            DeviceArbiter* arbiter);
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  // Where Submit decodes the images (nullptr, the default: on the caller's
  // thread). The engine passes a pool of its own so that front ends'
  // threads never decode and their slow work never delays a prediction.
  // Set before Start().
  void SetDecodeExecutor(Executor* executor) { decode_executor_ = executor; }
  // Where each model's requests, images, queueing, batches and loads are
  // counted (null, the default: nowhere). Set before Start().
  void SetMetrics(Metrics* metrics);
  // Starts the batching thread.
  void Start();
  // Answers what is queued with UNAVAILABLE and joins the thread.
  // Idempotent.
  void Stop();

  void Submit(PredictCall call);

  // Loads and warms a model in the background (an alias now points at it).
  void Warm(const std::string& model_id);
  // Unloads a model and forgets its metadata (it was deleted).
  void Forget(const std::string& model_id);
  // Loaded and warmed.
  bool Ready(const std::string& model_id);
  // Whether `model_id` names a registered model, from the predictor's cached
  // metadata (a registry read only the first time).
  bool Known(const std::string& model_id);
  // Called on the predictor's thread when a model becomes ready (true), is
  // unloaded or fails to load for a Warm (false); must not block. Listeners
  // are added for the predictor's lifetime.
  void AddReadyListener(
      std::function<void(const std::string& model_id, bool ready)> listener);

  struct Stats {
    int loaded_models = 0;
    int64_t loaded_bytes = 0;
    int64_t batches = 0;
    int64_t images = 0;  // computed
    int64_t queued = 0;  // waiting now
    int64_t rejected_queue_full = 0;
    int64_t expired = 0;    // deadline passed in the queue
    int64_t cancelled = 0;  // client gone while queued
    int64_t loads = 0, unloads = 0;
  };
  Stats stats();
  const PredictorOptions& options() const { return options_; }

 private:
  struct Impl;
  // Decodes `call`'s images and queues them (Submit's slow half); `series`
  // (may be null) counts its answer.
  void DecodeAndQueue(PredictCall call, std::shared_ptr<const ModelInfo> info,
                      std::shared_ptr<ModelSeries> series,
                      std::chrono::steady_clock::time_point submitted);

  const PredictorOptions options_;
  Executor* decode_executor_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

}  // namespace transferd::core
