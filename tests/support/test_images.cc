#include "tests/support/test_images.h"

#include <fstream>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace transferd::testing {
namespace {

std::string Be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
          static_cast<char>(v >> 8), static_cast<char>(v)};
}

}  // namespace

std::string EncodeTestImage(int width, int height, const std::string& ext,
                            int seed) {
  cv::Mat bgr(height, width, CV_8UC3);
  cv::RNG rng(static_cast<uint64_t>(seed) * 7919 + 17);
  // Smooth colour blocks plus a little noise: compresses like a photo.
  bgr.setTo(cv::Scalar(rng.uniform(0, 256), rng.uniform(0, 256),
                       rng.uniform(0, 256)));
  cv::rectangle(
      bgr, cv::Rect(0, 0, width / 2, height / 2),
      cv::Scalar(rng.uniform(0, 256), rng.uniform(0, 256), rng.uniform(0, 256)),
      cv::FILLED);
  cv::Mat noise(height, width, CV_8UC3);
  rng.fill(noise, cv::RNG::UNIFORM, 0, 16);
  bgr += noise;
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf));
  return std::string(buf.begin(), buf.end());
}

std::string PngHeader(uint32_t width, uint32_t height) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  s += Be32(13) + "IHDR" + Be32(width) + Be32(height);
  s += std::string("\x08\x02\x00\x00\x00", 5) + Be32(0);  // depth, colour, CRC
  return s;
}

std::string JpegHeader(uint16_t width, uint16_t height) {
  std::string s("\xFF\xD8\xFF\xC0\x00\x11\x08", 7);
  s += static_cast<char>(height >> 8);
  s += static_cast<char>(height & 0xff);
  s += static_cast<char>(width >> 8);
  s += static_cast<char>(width & 0xff);
  s += std::string("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  return s;
}

void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

}  // namespace transferd::testing
