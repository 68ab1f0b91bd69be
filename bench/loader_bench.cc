// Loader throughput (images/s) on a folder of JPEGs at 150 px, batch 20, with
// and without the keras-book augmentation, 1 and 2 threads. Prints JSON lines;
// bench/run_loader_bench.sh puts them next to a torchvision DataLoader.
//
//   loader_bench DIR [--epochs N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "server/core/data/loader.h"

int main(int argc, char** argv) {
  using namespace transferd::core;
  constexpr char kUsage[] =
      "usage: loader_bench DIR [--epochs N]\n"
      "Loader throughput (images/s) on DIR's JPEGs at 150 px, batch 20, with "
      "and without\nthe keras-book augmentation, 1 and 2 threads, as JSON "
      "lines (default: 2 epochs).\n";
  if (argc >= 2 &&
      (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-' ||
      !std::filesystem::is_directory(argv[1])) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  int epochs = 2;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) {
      epochs = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "loader_bench: unknown argument \"%s\"\n%s", argv[i],
                   kUsage);
      return 2;
    }
  }
  std::vector<data::Example> examples;
  for (const auto& e : std::filesystem::directory_iterator(argv[1])) {
    examples.push_back(
        {e.path().string(),
         e.path().filename().string().rfind("dog", 0) == 0 ? 1 : 0});
  }
  std::sort(examples.begin(), examples.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  for (bool augment : {false, true}) {
    for (int threads : {1, 2}) {
      data::LoaderOptions o;
      o.image_size = 150;
      o.batch_size = 20;
      o.threads = threads;
      o.prefetch_batches = 8;
      o.preprocessing = backbones::Preprocessing::Caffe();
      if (augment) o.augment = data::AugmentOptions::KerasBook();
      auto loader = data::Loader::Create(examples, o);
      if (!loader.ok()) {
        std::fprintf(stderr, "%s\n", loader.status().ToString().c_str());
        return 1;
      }
      int64_t images = 0;
      double seconds = 0;
      for (int epoch = 0; epoch <= epochs;
           ++epoch) {  // epoch 0 warms the page cache
        const auto start = std::chrono::steady_clock::now();
        (*loader)->StartEpoch(epoch);
        int64_t n = 0;
        while (true) {
          auto batch = (*loader)->Next();
          if (!batch.ok()) {
            std::fprintf(stderr, "%s\n", batch.status().ToString().c_str());
            return 1;
          }
          if (!batch->has_value()) break;
          n += (**batch).images.size(0);
        }
        if (epoch > 0) {
          images += n;
          seconds += std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
        }
      }
      std::printf(
          "{\"impl\":\"c++\",\"augment\":%s,\"workers\":%d,\"images_per_"
          "second\":%.1f}\n",
          augment ? "true" : "false", threads, images / seconds);
      std::fflush(stdout);
    }
  }
  return 0;
}
