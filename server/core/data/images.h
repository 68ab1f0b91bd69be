// Untrusted image bytes (uploads, Predict requests): identified by their
// magic bytes, their declared dimensions checked against limits from the
// header alone (a 60000x60000 PNG is refused without allocating anything),
// then decoded once with OpenCV to prove they are whole.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace transferd::core {

enum class ImageFormat { kJpeg, kPng };

// Why an image was refused; carried in the Status (ImageErrorOf) so that
// callers can report a machine-readable reason per file.
enum class ImageError {
  kEmpty,              // zero bytes
  kUnsupportedFormat,  // not JPEG or PNG by magic bytes
  kTooLarge,           // more bytes than max_bytes
  kTooManyPixels,      // header declares more than the pixel or side cap
  kCorrupt,            // malformed header, truncated, or undecodable
};

struct ImageLimits {
  int64_t max_bytes = 32 * 1024 * 1024;
  int64_t max_pixels = 100'000'000;  // width * height
  int max_side = 32768;              // width and height each
};

struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int width = 0;
  int height = 0;
};

struct DecodedImage {
  int width = 0;  // of the decoded (possibly reduced) image
  int height = 0;
  int original_width = 0;
  int original_height = 0;
  std::vector<uint8_t> rgb;  // height x width x 3, row-major
};

// Magic bytes and dimensions from the header; INVALID_ARGUMENT with an
// ImageError otherwise. Reads no pixel data.
absl::StatusOr<ImageHeader> ProbeImage(std::string_view bytes,
                                       const ImageLimits& limits = {});

// ProbeImage, then a full decode to RGB. With min_side > 0, a JPEG at least
// twice that size on its shorter side is decoded at 1/2, 1/4 or 1/8
// resolution (libjpeg's DCT scaling: about twice as fast), never below
// min_side.
absl::StatusOr<DecodedImage> DecodeImage(std::string_view bytes,
                                         const ImageLimits& limits = {},
                                         int min_side = 0);

// DecodeImage (reduced-resolution when the JPEG allows), then resized to
// size x size into `out` (size * size * 3 bytes, RGB): INTER_AREA when either
// side shrinks, INTER_LINEAR otherwise. Training, evaluation and serving all
// feed a model through this one function, so they see the same pixels.
absl::Status DecodeResized(std::string_view bytes, const ImageLimits& limits,
                           int size, uint8_t* out);

// The reason attached to a status from ProbeImage/DecodeImage, if any.
std::optional<ImageError> ImageErrorOf(const absl::Status& status);
const char* ImageErrorName(ImageError error);

}  // namespace transferd::core
