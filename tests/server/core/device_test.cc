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

TEST(DeviceTest, SelectedDeviceReportsNativeBf16AndCapability) {
  auto device = SelectDevice(Opts("cpu", 1));
  ASSERT_TRUE(device.ok());
  const CpuFeatures& f = GetCpuFeatures();
  EXPECT_EQ(device->native_bf16, f.avx512_bf16 || f.amx_bf16);
  EXPECT_EQ(device->capability, "");
  EXPECT_EQ(DeviceAllocatedBytes(*device), -1);  // the CPU is not measured
}

// The rule behind "auto", on devices this machine does not have: bf16 only
// where the hardware computes it (Ampere's 8.0 and later, not T4's 7.5 or
// V100's 7.0; AVX512-BF16 or AMX-BF16 CPUs).
TEST(DeviceTest, NativeBf16NeedsComputeCapability8OrABf16Cpu) {
  ComputeDevice gpu;
  gpu.kind = ComputeDevice::Kind::kCuda;
  const CpuFeatures plain_cpu;
  for (const char* cc : {"7.0", "7.5", "6.1", "", "x.y"}) {
    gpu.capability = cc;
    EXPECT_FALSE(HasNativeBf16(gpu, plain_cpu)) << cc;
  }
  for (const char* cc : {"8.0", "8.6", "8.9", "9.0", "10.0", "12.0"}) {
    gpu.capability = cc;
    EXPECT_TRUE(HasNativeBf16(gpu, plain_cpu)) << cc;
  }
  // A GPU's answer does not depend on the host CPU.
  CpuFeatures amx;
  amx.amx_bf16 = true;
  gpu.capability = "7.5";
  EXPECT_FALSE(HasNativeBf16(gpu, amx));

  const ComputeDevice cpu;
  EXPECT_FALSE(HasNativeBf16(cpu, plain_cpu));
  EXPECT_TRUE(HasNativeBf16(cpu, amx));
  CpuFeatures avx512;
  avx512.avx512f = true;
  EXPECT_FALSE(HasNativeBf16(cpu, avx512));
  avx512.avx512_bf16 = true;
  EXPECT_TRUE(HasNativeBf16(cpu, avx512));
}

TEST(DeviceTest, ResolvePrecisionPicksBf16OnlyWhereNative) {
  EXPECT_EQ(*ResolvePrecision("auto", true), "bf16");
  EXPECT_EQ(*ResolvePrecision("auto", false), "fp32");
  // An explicit choice is kept either way (bf16 on a T4 is slow, not wrong).
  EXPECT_EQ(*ResolvePrecision("bf16", false), "bf16");
  EXPECT_EQ(*ResolvePrecision("fp32", true), "fp32");
  absl::StatusOr<std::string> bad = ResolvePrecision("fp16", true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "precision \"fp16\": expected auto, fp32 or bf16");
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
