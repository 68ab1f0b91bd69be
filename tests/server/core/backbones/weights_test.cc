// Weight loaders against reference files written by make_reference.py
// (python3-torch / torchvision / h5py): torchvision safetensors through the
// torchvision flavour, the same weights in Keras .h5 layout through the Keras
// flavour, and broken files that must fail cleanly.
#include "server/core/backbones/weights.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/core/backbones/safetensors.h"
#include "tests/support/subprocess.h"

namespace transferd::core::backbones {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Directory the reference files were generated into (ctest fixture).
fs::path ReferenceDir() {
  const char* dir = std::getenv("TRANSFERD_MODEL_REFERENCES");
  if (dir == nullptr || *dir == '\0') {
    ADD_FAILURE()
        << "TRANSFERD_MODEL_REFERENCES is not set (run through ctest)";
    return {};
  }
  if (!fs::exists(fs::path(dir) / "vgg16.keras.h5")) {
    ADD_FAILURE() << "TRANSFERD_MODEL_REFERENCES=" << dir
                  << " holds no reference files (make_reference.py failed?)";
  }
  return dir;
}

Backbone Make(const std::string& name, Flavor flavor, double alpha = 1.0) {
  BackboneSpec spec;
  spec.name = name;
  spec.flavor = flavor;
  spec.alpha = alpha;
  auto b = CreateBackbone(spec);
  EXPECT_TRUE(b.ok()) << b.status();
  return *b;
}

// max |a - b| relative to max(1, max |b|).
double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(1.0, b.abs().max().item<double>());
  return (a - b).abs().max().item<double>() / scale;
}

void ExpectMatchesReference(BackboneImpl& backbone, const fs::path& reference) {
  auto ref = ReadSafetensors(reference);
  ASSERT_TRUE(ref.ok()) << ref.status();
  torch::NoGradGuard no_grad;
  backbone.eval();
  for (const char* size : {"64", "75"}) {
    const torch::Tensor& input = ref->at(std::string("input_") + size);
    const torch::Tensor& expected = ref->at(std::string("output_") + size);
    torch::Tensor output = backbone.forward(input);
    ASSERT_EQ(output.sizes(), expected.sizes()) << size;
    EXPECT_LT(RelativeError(output, expected), 1e-4)
        << backbone.spec().name << " at " << size << " px";
  }
}

class TorchvisionParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchvisionParityTest, SafetensorsMatchTorchvision) {
  const fs::path dir = ReferenceDir();
  const std::string& name = GetParam();
  Backbone b = Make(name, Flavor::kTorchvision);
  absl::Status loaded =
      LoadTorchvisionSafetensors(*b, dir / (name + ".torchvision.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded;
  ExpectMatchesReference(*b,
                         dir / (name + ".torchvision.reference.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(Models, TorchvisionParityTest,
                         ::testing::Values("vgg16", "vgg19", "resnet50",
                                           "mobilenet_v2"));

// The same kind of weights in Keras .h5 layout, through the Keras graph
// (TensorFlow padding, ResNet v1): proves the layout mapping.
class KerasParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasParityTest, H5MatchesTheKerasGraph) {
  const fs::path dir = ReferenceDir();
  const std::string& name = GetParam();
  Backbone b = Make(name, Flavor::kKeras, name == "mobilenet" ? 0.25 : 1.0);
  absl::Status loaded = LoadKerasH5(*b, dir / (name + ".keras.h5"));
  ASSERT_TRUE(loaded.ok()) << loaded;
  ExpectMatchesReference(*b, dir / (name + ".keras.reference.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(Models, KerasParityTest,
                         ::testing::Values("vgg16", "vgg19", "resnet50",
                                           "mobilenet_v2", "mobilenet"));

// A failed load must leave every tensor as it was.
class BrokenFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ReferenceDir();
    backbone_ = Make("mobilenet", Flavor::kKeras, 0.25);
    before_ = Snapshot();
  }
  std::vector<torch::Tensor> Snapshot() {
    std::vector<torch::Tensor> out;
    for (const auto& p : backbone_->named_parameters())
      out.push_back(p.value().clone());
    for (const auto& p : backbone_->named_buffers())
      out.push_back(p.value().clone());
    return out;
  }
  void ExpectUntouched() {
    auto after = Snapshot();
    ASSERT_EQ(after.size(), before_.size());
    for (size_t i = 0; i < after.size(); ++i) {
      EXPECT_TRUE(torch::equal(after[i], before_[i]))
          << "tensor " << i << " changed";
    }
  }
  fs::path Write(const std::string& name, const std::string& bytes) {
    fs::path p = fs::path(tmp_.path()) / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  std::string Read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
  testing::TempDir tmp_;
  Backbone backbone_;
  std::vector<torch::Tensor> before_;
};

TEST_F(BrokenFilesTest, TruncatedH5) {
  const std::string full = Read(dir_ / "mobilenet.keras.h5");
  absl::Status s =
      LoadKerasH5(*backbone_, Write("t.h5", full.substr(0, full.size() / 2)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  ExpectUntouched();
}

TEST_F(BrokenFilesTest, NotAnH5File) {
  absl::Status s =
      LoadKerasH5(*backbone_, Write("x.h5", std::string(5000, 'x')));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not an HDF5 file"));
  EXPECT_EQ(LoadKerasH5(*backbone_, dir_ / "absent.h5").code(),
            absl::StatusCode::kNotFound);
  ExpectUntouched();
}

TEST_F(BrokenFilesTest, WrongArchitectureNamesTheMissingLayer) {
  absl::Status s = LoadKerasH5(*backbone_, dir_ / "vgg16.keras.h5");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("layer \"conv1\""));
  EXPECT_THAT(std::string(s.message()), HasSubstr("another architecture"));
  ExpectUntouched();
}

TEST_F(BrokenFilesTest, WrongWidthNamesExpectedAndFoundShapes) {
  Backbone wider = Make("mobilenet", Flavor::kKeras, 0.5);
  absl::Status s = LoadKerasH5(*wider, dir_ / "mobilenet.keras.h5");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("conv1.weight has shape [8,3,3,3]"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("expects [16,3,3,3]"));
}

TEST_F(BrokenFilesTest, TruncatedAndCorruptSafetensors) {
  Backbone tv = Make("vgg16", Flavor::kTorchvision);
  const std::string full = Read(dir_ / "vgg16.torchvision.safetensors");
  absl::Status truncated = LoadTorchvisionSafetensors(
      *tv, Write("t.safetensors", full.substr(0, full.size() - 1000)));
  EXPECT_EQ(truncated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(truncated.message()), HasSubstr("outside"));

  std::string garbage = full;
  garbage[10] = '\x01';  // inside the JSON header
  EXPECT_EQ(
      LoadTorchvisionSafetensors(*tv, Write("g.safetensors", garbage)).code(),
      absl::StatusCode::kInvalidArgument);
  std::string huge_header = full;
  huge_header[7] = '\x7f';  // header length far beyond the file
  EXPECT_EQ(LoadTorchvisionSafetensors(*tv, Write("h.safetensors", huge_header))
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadTorchvisionSafetensors(*tv, Write("e.safetensors", "")).code(),
            absl::StatusCode::kInvalidArgument);
  // Another architecture's torchvision file.
  absl::Status other = LoadTorchvisionSafetensors(
      *tv, dir_ / "mobilenet_v2.torchvision.safetensors");
  EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(other.message()), HasSubstr("features."));
}

TEST(SafetensorsTest, RoundTripKeepsNamesDtypesAndValues) {
  testing::TempDir tmp;
  NamedTensors tensors;
  tensors["a.weight"] = torch::randn({3, 4});
  tensors["b"] = torch::arange(5, torch::kInt64);
  tensors["c"] = torch::randn({2}).to(torch::kBFloat16);
  const fs::path path = fs::path(tmp.path()) / "x.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());
  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 3u);
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(torch::equal(back->at(name), t)) << name;
  }
}

}  // namespace
}  // namespace transferd::core::backbones

namespace transferd::core::backbones {
namespace {

TEST(BuildBackboneTest, WeightsNameTheFlavourAndTheFile) {
  const fs::path refs = ReferenceDir();
  testing::TempDir tmp;
  WeightsCacheOptions cache;
  cache.dir = tmp.path();
  fs::copy_file(refs / "mobilenet.keras.h5", cache.dir / "mine.h5");
  fs::copy_file(refs / "vgg16.torchvision.safetensors",
                cache.dir / "tv.safetensors");

  auto keras = BuildBackbone("mobilenet", 0.25, "mine.h5", 224, cache);
  ASSERT_TRUE(keras.ok()) << keras.status();
  EXPECT_EQ((*keras)->spec().flavor, Flavor::kKeras);
  EXPECT_EQ((*keras)->DefaultPreprocessing().mode, Preprocessing::Mode::kTf);

  auto tv = BuildBackbone("vgg16", 1.0, "tv.safetensors", 150, cache);
  ASSERT_TRUE(tv.ok()) << tv.status();
  EXPECT_EQ((*tv)->spec().flavor, Flavor::kTorchvision);
  EXPECT_EQ((*tv)->DefaultPreprocessing().mode, Preprocessing::Mode::kTorch);

  EXPECT_TRUE(BuildBackbone("vgg16", 1.0, "none", 150, cache).ok());
  for (const char* bad : {"../mine.h5", "/etc/passwd", "mine.bin", "", ".."}) {
    EXPECT_EQ(BuildBackbone("vgg16", 1.0, bad, 150, cache).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(
      BuildBackbone("vgg16", 1.0, "absent.h5", 150, cache).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(BuildBackbone("vgg16", 1.0, "none", 16, cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  // imagenet without the file and without downloads: a precise refusal.
  auto imagenet = BuildBackbone("vgg16", 1.0, "imagenet", 150, cache);
  EXPECT_EQ(imagenet.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(imagenet.status().message()),
              HasSubstr("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"));
}

}  // namespace
}  // namespace transferd::core::backbones
