#include "server/core/data/augment.h"

#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>

namespace transferd::core::data {
namespace {

// A deterministic RGB test image with distinct values everywhere.
std::vector<uint8_t> Gradient(int h, int w) {
  std::vector<uint8_t> img(static_cast<size_t>(h) * w * 3);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      uint8_t* p = &img[(static_cast<size_t>(r) * w + c) * 3];
      p[0] = static_cast<uint8_t>(r * 7);
      p[1] = static_cast<uint8_t>(c * 5);
      p[2] = static_cast<uint8_t>((r * 3 + c * 11) % 256);
    }
  }
  return img;
}

const uint8_t* At(const std::vector<uint8_t>& img, int w, int r, int c) {
  return &img[(static_cast<size_t>(r) * w + c) * 3];
}

TEST(AugmentTest, ZeroParametersAreTheIdentity) {
  const int h = 20, w = 30;
  AugmentOptions none;
  EXPECT_FALSE(none.enabled());
  std::mt19937_64 rng(1);
  AffineDraw d = DrawAffine(none, h, w, rng);
  EXPECT_EQ(d.theta, 0);
  EXPECT_EQ(d.zx, 1);
  EXPECT_FALSE(d.flip_horizontal);
  std::vector<uint8_t> src = Gradient(h, w), dst(src.size());
  ApplyAffine(src.data(), h, w, d, none, dst.data());
  EXPECT_EQ(dst, src);
}

TEST(AugmentTest, HorizontalFlipMirrorsTheImage) {
  const int h = 9, w = 14;
  std::vector<uint8_t> src = Gradient(h, w), dst(src.size());
  AffineDraw d;
  d.flip_horizontal = true;
  ApplyAffine(src.data(), h, w, d, AugmentOptions{}, dst.data());
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      for (int k = 0; k < 3; ++k) {
        ASSERT_EQ(At(dst, w, r, c)[k], At(src, w, r, w - 1 - c)[k])
            << r << "," << c;
      }
    }
  }
}

TEST(AugmentTest, PureRotationKeepsTheCentrePixel) {
  const int h = 31, w = 31;
  std::vector<uint8_t> src = Gradient(h, w), dst(src.size());
  for (double theta : {17.0, 40.0, -72.0, 90.0}) {
    AffineDraw d;
    d.theta = theta;
    ApplyAffine(src.data(), h, w, d, AugmentOptions{}, dst.data());
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(At(dst, w, 15, 15)[k], At(src, w, 15, 15)[k]) << theta;
    }
  }
  // 180 degrees is both flips (up to rounding of the bilinear weights).
  AffineDraw half;
  half.theta = 180;
  ApplyAffine(src.data(), h, w, half, AugmentOptions{}, dst.data());
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      ASSERT_NEAR(At(dst, w, r, c)[1], At(src, w, h - 1 - r, w - 1 - c)[1], 1);
    }
  }
}

TEST(AugmentTest, ShiftMovesContentAndNearestFillRepeatsTheEdge) {
  const int h = 16, w = 12;
  std::vector<uint8_t> src = Gradient(h, w), dst(src.size());
  AffineDraw d;
  d.tx = 5;  // Keras: output row r samples input row r + 5
  ApplyAffine(src.data(), h, w, d, AugmentOptions{}, dst.data());
  for (int r = 0; r < h; ++r) {
    const int from = std::min(r + 5, h - 1);  // nearest fill beyond the edge
    for (int c = 0; c < w; ++c) {
      ASSERT_EQ(At(dst, w, r, c)[0], At(src, w, from, c)[0]) << r;
    }
  }
  AugmentOptions constant;
  constant.fill = AugmentOptions::Fill::kConstant;
  constant.cval = 200;
  ApplyAffine(src.data(), h, w, d, constant, dst.data());
  EXPECT_EQ(At(dst, w, h - 1, 3)[0], 200);
  EXPECT_EQ(At(dst, w, 0, 3)[0], At(src, w, 5, 3)[0]);
}

TEST(AugmentTest, DrawsAreReproducibleBySeedAndWithinRange) {
  const AugmentOptions book = AugmentOptions::KerasBook();
  std::mt19937_64 a(42), b(42), c(43);
  int flips = 0;
  bool differs = false;
  for (int i = 0; i < 2000; ++i) {
    AffineDraw da = DrawAffine(book, 150, 150, a);
    AffineDraw db = DrawAffine(book, 150, 150, b);
    AffineDraw dc = DrawAffine(book, 150, 150, c);
    ASSERT_EQ(da.theta, db.theta);
    ASSERT_EQ(da.tx, db.tx);
    ASSERT_EQ(da.flip_horizontal, db.flip_horizontal);
    differs |= da.theta != dc.theta;
    ASSERT_LE(std::abs(da.theta), 40);
    ASSERT_LE(std::abs(da.tx), 0.2 * 150);
    ASSERT_LE(std::abs(da.ty), 0.2 * 150);
    ASSERT_LE(std::abs(da.shear), 0.2);
    ASSERT_GE(da.zx, 0.8);
    ASSERT_LE(da.zy, 1.2);
    EXPECT_FALSE(da.flip_vertical);
    flips += da.flip_horizontal;
  }
  EXPECT_TRUE(differs);
  EXPECT_GT(flips, 900);
  EXPECT_LT(flips, 1100);
}

TEST(AugmentTest, PresetsMatchTheSources) {
  const AugmentOptions tf = AugmentOptions::TfTutorial();
  EXPECT_DOUBLE_EQ(tf.rotation_range, 72.0);
  EXPECT_TRUE(tf.horizontal_flip);
  EXPECT_EQ(tf.zoom_range, 0);
  EXPECT_TRUE(AugmentOptions::KerasBook().enabled());
}

}  // namespace
}  // namespace transferd::core::data
