#include "server/core/device.h"

#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "server/core/util/cpu_features.h"

namespace transferd::core {
namespace {

using ::testing::HasSubstr;

DeviceOptions Opts(const std::string& device, int threads,
                   const std::string& precision = "auto") {
  DeviceOptions o;
  o.device = device;
  o.threads = threads;
  o.precision = precision;
  return o;
}

TEST(DeviceTest, CpuWithExplicitThreads) {
  auto device = SelectDevice(Opts("cpu", 1));
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->kind, ComputeDevice::Kind::kCpu);
  EXPECT_EQ(device->name, "cpu");
  EXPECT_EQ(device->threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_GT(device->memory_bytes, 0);
}

TEST(DeviceTest, ZeroThreadsMeansEveryAvailableCpu) {
  auto device = SelectDevice(Opts("cpu", 0));
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->threads, GetCpuFeatures().logical_cpus);
}

TEST(DeviceTest, AutoPicksCudaOnlyWhenLibTorchSeesIt) {
  auto device = SelectDevice(Opts("auto", 1));
  ASSERT_TRUE(device.ok()) << device.status();
  if (torch::cuda::is_available()) {
    EXPECT_EQ(device->name, "cuda:0");
  } else {
    EXPECT_EQ(device->name, "cpu");
  }
}

TEST(DeviceTest, CudaWithoutCudaIsFailedPrecondition) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "CUDA present";
  auto device = SelectDevice(Opts("cuda:0", 1));
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(device.status().message()),
              HasSubstr("--device cpu"));
}

TEST(DeviceTest, MalformedSpecsAreInvalidArgument) {
  for (const char* spec : {"gpu", "cuda:", "cuda:-1", "cuda:one", ""}) {
    auto device = SelectDevice(Opts(spec, 1));
    ASSERT_FALSE(device.ok()) << spec;
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument)
        << spec;
  }
  EXPECT_EQ(SelectDevice(Opts("cpu", -2)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeviceTest, PrecisionAutoFollowsNativeBf16) {
  auto device = SelectDevice(Opts("cpu", 1, "auto"));
  ASSERT_TRUE(device.ok());
  const CpuFeatures& f = GetCpuFeatures();
  EXPECT_EQ(device->precision, f.avx512_bf16 || f.amx_bf16 ? "bf16" : "fp32");
  EXPECT_EQ(SelectDevice(Opts("cpu", 1, "fp32"))->precision, "fp32");
  EXPECT_EQ(SelectDevice(Opts("cpu", 1, "fp16")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CpuFeaturesTest, DescribesWhatItDetected) {
  const CpuFeatures& f = GetCpuFeatures();
  EXPECT_GE(f.logical_cpus, 1);
  const std::string text = DescribeCpuFeatures(f);
  EXPECT_EQ(text.find("amx_bf16") != std::string::npos, f.amx_bf16);
  EXPECT_EQ(text.find("avx512f") != std::string::npos, f.avx512f);
}

}  // namespace
}  // namespace transferd::core
