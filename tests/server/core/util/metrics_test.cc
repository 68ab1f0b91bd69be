// Metrics' device series without a server: the CUDA memory gauges exist only
// once a device reports memory (never on the CPU), with the device's name,
// and a scrape hook sets them at each scrape.
#include "server/core/util/metrics.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::core {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, DeviceMemorySeriesExistOnlyWhenADeviceReportsThem) {
  Metrics metrics({"1.0", "abc", "1.13"});
  metrics.SetDevice("cpu", "cpu", "fp32");
  const std::string cpu = metrics.Scrape();
  EXPECT_THAT(cpu, HasSubstr("transferd_device_info{"));
  EXPECT_THAT(cpu,
              Not(HasSubstr("\ntransferd_device_memory_allocated_bytes{")));
  EXPECT_THAT(cpu, Not(HasSubstr("\ntransferd_device_memory_total_bytes{")));

  int64_t allocated = 1000;
  metrics.AddScrapeHook([&allocated](Metrics& m) {
    m.SetDeviceMemory("cuda:0", allocated, int64_t{80} << 30);
  });
  EXPECT_THAT(
      metrics.Scrape(),
      HasSubstr(
          "\ntransferd_device_memory_allocated_bytes{name=\"cuda:0\"} 1000\n"));
  allocated = 123456789;
  const std::string later = metrics.Scrape();
  EXPECT_THAT(later, HasSubstr("\ntransferd_device_memory_allocated_bytes{"
                               "name=\"cuda:0\"} 123456789\n"));
  EXPECT_THAT(later, HasSubstr("\ntransferd_device_memory_total_bytes{"
                               "name=\"cuda:0\"} 85899345920\n"));
}

}  // namespace
}  // namespace transferd::core
