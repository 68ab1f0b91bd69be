#include "server/core/data/images.h"

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tests/support/shared_data.h"
#include "tests/support/test_images.h"

namespace transferd::core {
namespace {

using ::testing::HasSubstr;

// A 64x48 test card: left half red, right half blue (BGR in OpenCV).
cv::Mat Card(int width = 64, int height = 48) {
  cv::Mat bgr(height, width, CV_8UC3, cv::Scalar(255, 0, 0));
  bgr(cv::Rect(0, 0, width / 2, height)).setTo(cv::Scalar(0, 0, 255));
  return bgr;
}

std::string Encode(const cv::Mat& bgr, const std::string& ext) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf));
  return std::string(buf.begin(), buf.end());
}

void ExpectRefused(const absl::Status& status, ImageError error,
                   const std::string& mentions) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  ASSERT_TRUE(ImageErrorOf(status).has_value()) << status;
  EXPECT_EQ(*ImageErrorOf(status), error) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(mentions));
}

using testing::JpegHeader;
using testing::PngHeader;

TEST(ImagesTest, DecodesJpegAndPngToRgb) {
  for (const char* ext : {".jpg", ".png"}) {
    auto image = DecodeImage(Encode(Card(), ext));
    ASSERT_TRUE(image.ok()) << ext << ": " << image.status();
    EXPECT_EQ(image->width, 64);
    EXPECT_EQ(image->height, 48);
    ASSERT_EQ(image->rgb.size(), 64u * 48 * 3);
    // Pixel (row 10, col 5) is red, (row 10, col 60) blue, in RGB order.
    const uint8_t* left = &image->rgb[(10 * 64 + 5) * 3];
    const uint8_t* right = &image->rgb[(10 * 64 + 60) * 3];
    EXPECT_GT(left[0], 200) << ext;
    EXPECT_LT(left[2], 50) << ext;
    EXPECT_GT(right[2], 200) << ext;
    EXPECT_LT(right[0], 50) << ext;
  }
}

TEST(ImagesTest, ProbeReadsDimensionsFromTheHeader) {
  auto jpeg = ProbeImage(Encode(Card(640, 480), ".jpg"));
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  EXPECT_EQ(jpeg->format, ImageFormat::kJpeg);
  EXPECT_EQ(jpeg->width, 640);
  EXPECT_EQ(jpeg->height, 480);
  auto png = ProbeImage(Encode(Card(33, 17), ".png"));
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->format, ImageFormat::kPng);
  EXPECT_EQ(png->width, 33);
  EXPECT_EQ(png->height, 17);
}

TEST(ImagesTest, ReducedJpegDecodeKeepsAtLeastTheTargetSize) {
  const std::string big = Encode(Card(800, 600), ".jpg");
  auto half = DecodeImage(big, {}, 300);  // 600 >= 2 * 300: 1/2
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->width, 400);
  EXPECT_EQ(half->height, 300);
  EXPECT_EQ(half->original_width, 800);
  auto eighth = DecodeImage(big, {}, 70);  // 600 >= 8 * 70: 1/8
  ASSERT_TRUE(eighth.ok());
  EXPECT_EQ(eighth->height, 75);
  auto full = DecodeImage(big, {}, 301);  // 600 < 2 * 301: full size
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->height, 600);
}

TEST(ImagesTest, EmptyAndWrongMagicAreRefused) {
  ExpectRefused(DecodeImage("").status(), ImageError::kEmpty, "0 bytes");
  ExpectRefused(DecodeImage("GIF89a\x01\x00\x01\x00").status(),
                ImageError::kUnsupportedFormat, "47 49 46 38");
  ExpectRefused(DecodeImage(std::string(100, '\0')).status(),
                ImageError::kUnsupportedFormat, "not a JPEG or PNG");
}

TEST(ImagesTest, TruncatedImagesAreCorrupt) {
  const std::string jpeg = Encode(Card(256, 256), ".jpg");
  ExpectRefused(DecodeImage(jpeg.substr(0, jpeg.size() / 2)).status(),
                ImageError::kCorrupt, "truncated JPEG");
  ExpectRefused(DecodeImage(jpeg.substr(0, 40)).status(), ImageError::kCorrupt,
                "JPEG");
  const std::string png = Encode(Card(256, 256), ".png");
  ExpectRefused(DecodeImage(png.substr(0, png.size() - 20)).status(),
                ImageError::kCorrupt, "PNG");
  ExpectRefused(DecodeImage(png.substr(0, 20)).status(), ImageError::kCorrupt,
                "PNG header");
}

TEST(ImagesTest, HeaderBombsAreRefusedBeforeAnyDecode) {
  // 60000 x 60000 = 3.6e9 pixels would need 10.8 GB decoded.
  ExpectRefused(ProbeImage(PngHeader(60000, 60000)).status(),
                ImageError::kTooManyPixels, "60000x60000");
  ExpectRefused(DecodeImage(PngHeader(60000, 60000)).status(),
                ImageError::kTooManyPixels, "60000x60000");
  ExpectRefused(DecodeImage(JpegHeader(60000, 60000)).status(),
                ImageError::kTooManyPixels, "JPEG header declares 60000x60000");
  // 2^20 + 1 wide, one row: few pixels but beyond the side cap.
  ExpectRefused(DecodeImage(PngHeader((1u << 20) + 1, 1)).status(),
                ImageError::kTooManyPixels, "1048577x1");
  ExpectRefused(DecodeImage(PngHeader(0, 10)).status(), ImageError::kCorrupt,
                "0x10");
}

TEST(ImagesTest, ByteCapIsChecked) {
  ImageLimits limits;
  limits.max_bytes = 100;
  ExpectRefused(DecodeImage(Encode(Card(), ".png"), limits).status(),
                ImageError::kTooLarge, "exceed the cap of 100");
}

TEST(ImagesTest, EverySharedImageDecodes) {
  auto data = testing::TestDataDir();
  if (!data) GTEST_SKIP() << "TRANSFERD_TEST_DATA not set";
  int decoded = 0;
  for (const char* split : {"train", "validation"}) {
    for (const auto& entry :
         std::filesystem::directory_iterator(*data / split)) {
      std::ifstream in(entry.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), {});
      auto image = DecodeImage(bytes, {}, 150);
      EXPECT_TRUE(image.ok()) << entry.path() << ": " << image.status();
      decoded += image.ok();
    }
  }
  EXPECT_EQ(decoded, 3000);
}

}  // namespace
}  // namespace transferd::core
