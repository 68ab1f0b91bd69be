// Conv-base forward throughput (images/s, batch 32) of the C++ backbones in
// each precision and memory format, and the feature difference of bf16 against
// fp32. bench/run_backbone_bench.sh runs it next to the same forward in Python
// torch and prints one table.
//
//   backbone_bench [--seconds S] [--threads N] [--batch B] [--no-bf16] [--json]
//
// --no-bf16 skips the bf16 variants (slow emulation on CPUs without native
// bf16); BENCH_MODEL=mobilenet or vgg16 runs one model.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "server/core/backbones/backbone.h"
#include "server/core/backbones/layers.h"
#include "server/core/backbones/weights.h"

namespace {

using transferd::core::backbones::Backbone;
using transferd::core::backbones::BackboneSpec;
using transferd::core::backbones::CreateBackbone;

struct Variant {
  const char* name;
  bool channels_last;
  bool bf16;          // autocast to bfloat16
  bool bf16_weights;  // weights and activations stored in bfloat16
  bool fold = true;   // BatchNorm folded into the convolution (ConvBn)
};

constexpr Variant kVariants[] = {
    {"fp32 NCHW, BN not folded", false, false, false, false},
    {"fp32 NCHW", false, false, false},
    {"fp32 channels-last, BN not folded", true, false, false, false},
    {"fp32 channels-last", true, false, false},
    {"bf16 autocast NCHW", false, true, false},
    {"bf16 autocast channels-last", true, true, false},
    {"bf16 weights channels-last", true, false, true},
};

void ToChannelsLast(Backbone& b) {
  c10::InferenceMode inference;
  for (auto& p : b->parameters()) {
    if (p.dim() == 4)
      p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

torch::Tensor Forward(Backbone& b, const torch::Tensor& x, const Variant& v) {
  c10::InferenceMode inference;
  if (v.bf16_weights) return b->forward(x).to(torch::kFloat32);
  if (!v.bf16) return b->forward(x);
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  torch::Tensor y = b->forward(x).to(torch::kFloat32);
  at::autocast::clear_cache();
  at::autocast::set_cpu_enabled(false);
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 8;
  int threads = 0;
  bool json = false;
  bool bf16 = true;
  int batch = 32;
  constexpr char kUsage[] =
      "usage: backbone_bench [--seconds S] [--threads N] [--batch B] "
      "[--no-bf16] [--json]\n"
      "Conv-base forward throughput (images/s) of VGG16 at 150 px and "
      "MobileNet 0.25 at 224 px\n"
      "in each precision and memory format (default: 8 s each, batch 32).\n"
      "--no-bf16 skips the bf16 variants; BENCH_MODEL=mobilenet or vgg16 "
      "runs one model.\n";
  for (int i = 1; i < argc; ++i) {
    const bool value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (!std::strcmp(argv[i], "--seconds") && value) {
      seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--threads") && value) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--batch") && value) {
      batch = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--no-bf16")) {
      bf16 = false;
    } else if (!std::strcmp(argv[i], "--json")) {
      json = true;
    } else {
      std::fprintf(stderr, "backbone_bench: unknown argument \"%s\"\n%s",
                   argv[i], kUsage);
      return 2;
    }
  }
  if (!(seconds > 0) || batch < 1 || threads < 0) {
    std::fprintf(stderr,
                 "backbone_bench: --seconds must be > 0, --batch >= 1, "
                 "--threads >= 0\n");
    return 2;
  }
  if (threads > 0) torch::set_num_threads(threads);
  struct Model {
    const char* name;
    double alpha;
    int size;
  };
  std::vector<Model> models = {{"vgg16", 1.0, 150}, {"mobilenet", 0.25, 224}};
  if (const char* only = std::getenv("BENCH_MODEL")) {
    models.erase(std::remove_if(models.begin(), models.end(),
                                [&](const Model& m) {
                                  return m.name != std::string(only);
                                }),
                 models.end());
  }
  if (!json) {
    std::printf("%-14s %-30s %10s %14s\n", "model", "variant", "img/s",
                "max|diff|");
  }
  for (const Model& m : models) {
    torch::manual_seed(0);
    BackboneSpec spec;
    spec.name = m.name;
    spec.alpha = m.alpha;
    auto created = CreateBackbone(spec);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
      return 1;
    }
    Backbone base = *created;
    // The real ImageNet weights where the machine has them (../shared), so
    // that the bf16 difference is measured on meaningful features.
    const char* weights_dir = std::getenv("TRANSFERD_TEST_WEIGHTS");
    const std::string weights =
        weights_dir != nullptr && std::string(m.name) == "mobilenet"
            ? std::string(weights_dir) + "/mobilenet_2_5_224_tf_no_top.h5"
            : "";
    if (!weights.empty() && std::filesystem::exists(weights)) {
      absl::Status loaded =
          transferd::core::backbones::LoadKerasH5(*base, weights);
      if (!loaded.ok()) {
        std::fprintf(stderr, "%s\n", loaded.ToString().c_str());
        return 1;
      }
      if (!json)
        std::printf("%s: ImageNet weights from %s\n", m.name, weights.c_str());
    }
    base->eval();
    // Random pixels through the weights' preprocessing.
    torch::Tensor pixels =
        torch::randint(0, 256, {batch, m.size, m.size, 3}).to(torch::kUInt8);
    torch::Tensor x = transferd::core::backbones::ApplyPreprocessing(
        base->DefaultPreprocessing(), pixels);
    torch::Tensor reference = Forward(base, x, kVariants[0]);
    bool channels_last = false;
    for (const Variant& v : kVariants) {
      if (!bf16 && (v.bf16 || v.bf16_weights)) continue;
      transferd::core::backbones::ConvBn::EnableFolding(v.fold);
      if (v.channels_last && !channels_last) {
        ToChannelsLast(base);
        channels_last = true;
      }
      if (v.bf16_weights) {
        c10::InferenceMode inference;
        base->to(torch::kBFloat16);
        ToChannelsLast(base);
      }
      torch::Tensor input =
          v.channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
      if (v.bf16_weights) input = input.to(torch::kBFloat16);
      torch::Tensor out =
          Forward(base, input, v);  // warm-up (oneDNN primitives)
      Forward(base, input, v);
      int iterations = 0;
      const auto start = std::chrono::steady_clock::now();
      double elapsed = 0;
      while (elapsed < seconds || iterations < 2) {
        Forward(base, input, v);
        ++iterations;
        elapsed = std::chrono::duration<double>(
                      std::chrono::steady_clock::now() - start)
                      .count();
      }
      const double ips = iterations * batch / elapsed;
      const double diff =
          (out.contiguous() - reference).abs().max().item<double>();
      const double scale = reference.abs().max().item<double>();
      const double mean_diff =
          (out.contiguous() - reference).abs().mean().item<double>();
      const double mean_abs = reference.abs().mean().item<double>();
      if (json) {
        std::printf(
            "{\"impl\":\"c++\",\"model\":\"%s\",\"variant\":\"%s\","
            "\"images_per_second\":%.2f,\"max_abs_diff\":%.6g,"
            "\"max_abs_output\":%.6g,\"mean_abs_diff\":%.6g,"
            "\"mean_abs_output\":%.6g}\n",
            m.name, v.name, ips, diff, scale, mean_diff, mean_abs);
      } else {
        std::printf("%-14s %-30s %10.2f %14.4g\n", m.name, v.name, ips, diff);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
