#include "server/core/data/augment.h"

#include <cmath>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace transferd::core::data {
namespace {

// 3x3 homogeneous matrices over (row, col) coordinates, as in Keras'
// apply_affine_transform.
cv::Matx33d Rotation(double degrees) {
  const double t = degrees * M_PI / 180.0;
  return {std::cos(t), -std::sin(t), 0, std::sin(t), std::cos(t), 0, 0, 0, 1};
}
cv::Matx33d Shift(double rows, double cols) {
  return {1, 0, rows, 0, 1, cols, 0, 0, 1};
}
cv::Matx33d Shear(double degrees) {
  const double s = degrees * M_PI / 180.0;
  return {1, -std::sin(s), 0, 0, std::cos(s), 0, 0, 0, 1};
}
cv::Matx33d Zoom(double zx, double zy) { return {zx, 0, 0, 0, zy, 0, 0, 0, 1}; }

int BorderMode(AugmentOptions::Fill fill) {
  switch (fill) {
    case AugmentOptions::Fill::kNearest:
      return cv::BORDER_REPLICATE;
    case AugmentOptions::Fill::kReflect:
      return cv::BORDER_REFLECT;
    case AugmentOptions::Fill::kConstant:
      return cv::BORDER_CONSTANT;
    case AugmentOptions::Fill::kWrap:
      return cv::BORDER_WRAP;
  }
  return cv::BORDER_REPLICATE;
}

}  // namespace

AugmentOptions AugmentOptions::KerasBook() {
  AugmentOptions o;
  o.rotation_range = 40;
  o.width_shift_range = 0.2;
  o.height_shift_range = 0.2;
  o.shear_range = 0.2;
  o.zoom_range = 0.2;
  o.horizontal_flip = true;
  o.fill = Fill::kNearest;
  return o;
}

AugmentOptions AugmentOptions::TfTutorial() {
  AugmentOptions o;
  o.rotation_range = 0.2 * 360.0;
  o.horizontal_flip = true;
  o.fill = Fill::kReflect;
  return o;
}

bool AugmentOptions::enabled() const {
  return rotation_range != 0 || width_shift_range != 0 ||
         height_shift_range != 0 || shear_range != 0 || zoom_range != 0 ||
         horizontal_flip || vertical_flip;
}

AffineDraw DrawAffine(const AugmentOptions& o, int height, int width,
                      std::mt19937_64& rng) {
  auto uniform = [&rng](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  AffineDraw d;
  // Always the same number of draws, so a seed gives the same sequence
  // whatever the options.
  const double r_theta = uniform(-1, 1);
  const double r_tx = uniform(-1, 1);
  const double r_ty = uniform(-1, 1);
  const double r_shear = uniform(-1, 1);
  const double r_zx = uniform(-1, 1);
  const double r_zy = uniform(-1, 1);
  const double r_fh = uniform(0, 1);
  const double r_fv = uniform(0, 1);
  d.theta = o.rotation_range * r_theta;
  d.tx = o.height_shift_range * r_tx * height;
  d.ty = o.width_shift_range * r_ty * width;
  d.shear = o.shear_range * r_shear;
  d.zx = 1 + o.zoom_range * r_zx;
  d.zy = 1 + o.zoom_range * r_zy;
  d.flip_horizontal = o.horizontal_flip && r_fh < 0.5;
  d.flip_vertical = o.vertical_flip && r_fv < 0.5;
  return d;
}

void ApplyAffine(const uint8_t* src, int height, int width, const AffineDraw& d,
                 const AugmentOptions& o, uint8_t* dst) {
  // Keras maps each output coordinate to an input coordinate with
  // offset_center(rotation * shift * shear * zoom); flips come after.
  const cv::Matx33d m =
      Rotation(d.theta) * Shift(d.tx, d.ty) * Shear(d.shear) * Zoom(d.zx, d.zy);
  const double cr = height / 2.0 - 0.5;
  const double cc = width / 2.0 - 0.5;
  const cv::Matx33d centered = Shift(cr, cc) * m * Shift(-cr, -cc);
  // (row, col) -> OpenCV's (x = col, y = row).
  cv::Matx23d inverse(centered(1, 1), centered(1, 0), centered(1, 2),
                      centered(0, 1), centered(0, 0), centered(0, 2));
  const cv::Mat in(height, width, CV_8UC3, const_cast<uint8_t*>(src));
  cv::Mat out(height, width, CV_8UC3, dst);
  const cv::Scalar fill(o.cval, o.cval, o.cval);
  cv::warpAffine(in, out, inverse, out.size(),
                 cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, BorderMode(o.fill),
                 fill);
  if (d.flip_horizontal && d.flip_vertical) {
    cv::flip(out, out, -1);
  } else if (d.flip_horizontal) {
    cv::flip(out, out, 1);
  } else if (d.flip_vertical) {
    cv::flip(out, out, 0);
  }
}

}  // namespace transferd::core::data
