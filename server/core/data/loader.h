// The training loader: decodes image files (reduced-resolution JPEG decode
// when an image is at least twice the target size), resizes them to the
// model's square input, augments them (one affine warp each), applies the
// weights' preprocessing and yields channels-last float batches. Worker
// threads fill a bounded prefetch window; batches come out in order. The
// order is reshuffled every epoch from (seed, epoch), and every image's random
// augmentation from (seed, epoch, example), so the output depends on neither
// the thread count nor timing.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "server/core/backbones/preprocessing.h"
#include "server/core/data/augment.h"
#include "server/core/data/example.h"
#include "server/core/data/images.h"

namespace transferd::core::data {

// Resized, not yet augmented images (image_size x image_size x 3 uint8) of
// one example list, kept across epochs and loaders so that each file is read
// and decoded once per job: the output is the same with or without it. Holds
// at most `budget_bytes`; examples beyond it are decoded every time.
// Thread-safe.
class DecodedImageCache {
 public:
  explicit DecodedImageCache(int64_t budget_bytes) : budget_(budget_bytes) {}
  std::shared_ptr<const std::vector<uint8_t>> Get(int64_t example) const;
  // Keeps `pixels` when the budget allows; returns what is now cached.
  void Put(int64_t example, std::vector<uint8_t> pixels);
  int64_t bytes() const;

 private:
  const int64_t budget_;
  mutable std::mutex mu_;
  int64_t used_ = 0;
  std::map<int64_t, std::shared_ptr<const std::vector<uint8_t>>> images_;
};

struct LoaderOptions {
  int image_size = 150;
  int batch_size = 20;
  bool shuffle = true;
  bool drop_last = false;  // drop a final partial batch
  uint64_t seed = 0;
  int threads = 2;
  int prefetch_batches = 4;
  AugmentOptions augment;  // all zero: no augmentation
  backbones::Preprocessing preprocessing;
  ImageLimits limits;
  // Optional, shared between the loaders of one example list and image size.
  std::shared_ptr<DecodedImageCache> decoded_cache;
  // Data-parallel ranks (shard_count > 1): every rank draws the same epoch
  // order, and its batch b is its part of global batch b, which holds
  // shard_count * batch_size examples: rank r takes the r-th run of
  // batch_size. A final partial global batch is cut in the same way, so
  // some ranks' last batch may be smaller or empty (0 rows, never nullopt
  // before the epoch's end).
  int shard_count = 1;
  int shard_index = 0;
};

struct Batch {
  torch::Tensor images;           // N x 3 x S x S float32, channels-last memory
  torch::Tensor labels;           // N int64
  std::vector<int64_t> examples;  // indices into the example list
};

class Loader {
 public:
  // INVALID_ARGUMENT for an empty list or nonsensical options.
  static absl::StatusOr<std::unique_ptr<Loader>> Create(
      std::vector<Example> examples, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Begins epoch `epoch` (any earlier epoch's remaining batches are dropped).
  void StartEpoch(int64_t epoch);
  // The epoch's next batch, nullopt after its last; an unreadable or invalid
  // image fails the batch with its path in the message.
  absl::StatusOr<std::optional<Batch>> Next();

  // Global batches of an epoch (the same number on every rank).
  int64_t batches_per_epoch() const;
  size_t size() const { return examples_.size(); }

 private:
  Loader(std::vector<Example> examples, LoaderOptions options);
  void Work();
  absl::StatusOr<Batch> Build(int64_t epoch, int64_t batch);
  void StopWorkers();

  const std::vector<Example> examples_;
  const LoaderOptions options_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
  int64_t next_to_build_ = 0;
  int64_t next_to_take_ = 0;
  std::map<int64_t, absl::StatusOr<Batch>> ready_;
  std::vector<std::thread> workers_;
};

}  // namespace transferd::core::data
