// Training-time augmentation with the semantics of Keras' ImageDataGenerator
// (rotation_range, width/height_shift_range, shear_range, zoom_range,
// horizontal/vertical_flip, fill_mode, cval), all composed into ONE affine
// warp per image, so an augmented image costs one resampling pass. Random
// draws come from a caller-owned, seeded generator: reproducible.
#pragma once

#include <cstdint>
#include <random>

namespace transferd::core::data {

struct AugmentOptions {
  enum class Fill { kNearest, kReflect, kConstant, kWrap };

  double rotation_range = 0;      // degrees: uniform in [-r, r]
  double width_shift_range = 0;   // fraction of the width: uniform in [-s, s]
  double height_shift_range = 0;  // fraction of the height
  double shear_range = 0;         // shear angle in degrees: uniform in [-s, s]
  double zoom_range = 0;          // zx, zy independently uniform in [1-z, 1+z]
  bool horizontal_flip = false;   // with probability 1/2
  bool vertical_flip = false;
  Fill fill = Fill::kNearest;
  double cval = 0;  // fill value for kConstant, 0..255

  // The Keras book: rotation 40, shifts 0.2, shear 0.2, zoom 0.2,
  // horizontal flips, fill 'nearest'.
  static AugmentOptions KerasBook();
  // The TF tutorial: RandomFlip('horizontal') + RandomRotation(0.2), i.e.
  // rotations up to 0.2 * 360 = 72 degrees, filled by reflection.
  static AugmentOptions TfTutorial();

  // False when every parameter is zero: the identity.
  bool enabled() const;
};

// One draw of the transform, in Keras' terms.
struct AffineDraw {
  double theta = 0;  // degrees
  double tx = 0;     // rows (height shift), pixels
  double ty = 0;     // columns (width shift), pixels
  double shear = 0;  // degrees
  double zx = 1;     // zoom along rows
  double zy = 1;     // zoom along columns
  bool flip_horizontal = false;
  bool flip_vertical = false;
};

AffineDraw DrawAffine(const AugmentOptions& options, int height, int width,
                      std::mt19937_64& rng);

// Warps an RGB image (height x width x 3, row-major) by `draw` into `dst`
// (same size), with bilinear sampling and the options' fill mode.
void ApplyAffine(const uint8_t* src, int height, int width,
                 const AffineDraw& draw, const AugmentOptions& options,
                 uint8_t* dst);

}  // namespace transferd::core::data
