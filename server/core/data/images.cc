#include "server/core/data/images.h"

#include <cstring>
#include <new>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace transferd::core {
namespace {

constexpr char kPayloadKey[] = "transferd.core/image_error";

absl::Status Refuse(ImageError error, const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kPayloadKey,
                    absl::Cord(std::to_string(static_cast<int>(error))));
  return status;
}

uint32_t Be16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | p[3];
}

constexpr unsigned char kPngSignature[8] = {0x89, 'P',  'N',  'G',
                                            '\r', '\n', 0x1a, '\n'};

// JPEG: walk the marker segments up to the first frame header (SOFn).
absl::StatusOr<ImageHeader> ProbeJpeg(const unsigned char* p, size_t n) {
  size_t i = 2;  // after SOI
  while (true) {
    // Markers may be preceded by fill bytes 0xFF.
    while (i < n && p[i] == 0xFF) ++i;
    if (i >= n)
      return Refuse(ImageError::kCorrupt, "truncated JPEG: no frame header");
    if (p[i - 1] != 0xFF) {
      return Refuse(ImageError::kCorrupt, "corrupt JPEG: marker expected");
    }
    const unsigned char marker = p[i++];
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) ||
        marker == 0x01) {
      continue;  // standalone markers
    }
    if (marker == 0xD9 || marker == 0xDA) {
      return Refuse(ImageError::kCorrupt,
                    "corrupt JPEG: no frame header before the image data");
    }
    if (i + 2 > n) return Refuse(ImageError::kCorrupt, "truncated JPEG header");
    const uint32_t length = Be16(p + i);
    if (length < 2 || i + length > n) {
      return Refuse(ImageError::kCorrupt, "truncated JPEG header segment");
    }
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 &&
                     marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (length < 8)
        return Refuse(ImageError::kCorrupt, "corrupt JPEG frame header");
      ImageHeader h;
      h.format = ImageFormat::kJpeg;
      h.height = static_cast<int>(Be16(p + i + 3));
      h.width = static_cast<int>(Be16(p + i + 5));
      return h;
    }
    i += length;
  }
}

absl::StatusOr<ImageHeader> ProbePng(const unsigned char* p, size_t n) {
  // Signature, then the IHDR chunk: length 13, "IHDR", width, height.
  if (n < 8 + 8 + 13 || Be32(p + 8) != 13 ||
      std::memcmp(p + 12, "IHDR", 4) != 0) {
    return Refuse(ImageError::kCorrupt, "truncated or corrupt PNG header");
  }
  const uint32_t width = Be32(p + 16);
  const uint32_t height = Be32(p + 20);
  if (width == 0 || height == 0 || width > 0x7fffffffu ||
      height > 0x7fffffffu) {
    return Refuse(ImageError::kCorrupt,
                  absl::StrFormat("corrupt PNG header: %ux%u", width, height));
  }
  ImageHeader h;
  h.format = ImageFormat::kPng;
  h.width = static_cast<int>(width);
  h.height = static_cast<int>(height);
  return h;
}

// JPEG data must end with EOI after its scan(s), else libjpeg pads the
// missing rows with grey and reports success.
bool JpegHasEnd(const unsigned char* p, size_t n) {
  for (size_t i = n; i >= 2 && i + 64 * 1024 > n; --i) {
    if (p[i - 2] == 0xFF && p[i - 1] == 0xD9) return true;
  }
  return false;
}

bool PngHasEnd(const unsigned char* p, size_t n) {
  for (size_t i = n; i >= 8 && i + 1024 > n; --i) {
    if (std::memcmp(p + i - 8, "IEND", 4) == 0) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<ImageHeader> ProbeImage(std::string_view bytes,
                                       const ImageLimits& limits) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  if (n == 0) return Refuse(ImageError::kEmpty, "empty file (0 bytes)");
  if (static_cast<int64_t>(n) > limits.max_bytes) {
    return Refuse(
        ImageError::kTooLarge,
        absl::StrCat(n, " bytes exceed the cap of ", limits.max_bytes));
  }
  absl::StatusOr<ImageHeader> header;
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
    header = ProbeJpeg(p, n);
  } else if (n >= 8 && std::memcmp(p, kPngSignature, 8) == 0) {
    header = ProbePng(p, n);
  } else {
    std::string magic;
    for (size_t i = 0; i < std::min<size_t>(n, 4); ++i) {
      absl::StrAppendFormat(&magic, "%s%02x", i ? " " : "", p[i]);
    }
    return Refuse(
        ImageError::kUnsupportedFormat,
        absl::StrCat("not a JPEG or PNG image (first bytes ", magic, ")"));
  }
  if (!header.ok()) return header;
  const int64_t pixels = int64_t{header->width} * header->height;
  if (header->width == 0 || header->height == 0) {
    return Refuse(ImageError::kCorrupt,
                  "image header declares a zero dimension");
  }
  if (header->width > limits.max_side || header->height > limits.max_side ||
      pixels > limits.max_pixels) {
    return Refuse(
        ImageError::kTooManyPixels,
        absl::StrFormat(
            "%s header declares %dx%d = %.3g pixels; the "
            "caps are %.3g pixels and %d per side",
            header->format == ImageFormat::kPng ? "PNG" : "JPEG", header->width,
            header->height, static_cast<double>(pixels),
            static_cast<double>(limits.max_pixels), limits.max_side));
  }
  return header;
}

absl::StatusOr<DecodedImage> DecodeImage(std::string_view bytes,
                                         const ImageLimits& limits,
                                         int min_side) {
  absl::StatusOr<ImageHeader> header = ProbeImage(bytes, limits);
  if (!header.ok()) return header.status();
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const bool jpeg = header->format == ImageFormat::kJpeg;
  if (jpeg ? !JpegHasEnd(p, bytes.size()) : !PngHasEnd(p, bytes.size())) {
    return Refuse(ImageError::kCorrupt,
                  absl::StrCat("truncated ", jpeg ? "JPEG" : "PNG",
                               ": the end-of-image marker is missing"));
  }
  int flags = cv::IMREAD_COLOR;
  if (jpeg && min_side > 0) {
    const int shorter = std::min(header->width, header->height);
    if (shorter >= 8 * min_side) {
      flags = cv::IMREAD_REDUCED_COLOR_8;
    } else if (shorter >= 4 * min_side) {
      flags = cv::IMREAD_REDUCED_COLOR_4;
    } else if (shorter >= 2 * min_side) {
      flags = cv::IMREAD_REDUCED_COLOR_2;
    }
  }
  cv::Mat bgr;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U,
                      const_cast<char*>(bytes.data()));
    bgr = cv::imdecode(raw, flags);
  } catch (const cv::Exception& e) {
    return Refuse(ImageError::kCorrupt,
                  absl::StrCat("cannot decode: ", e.what()));
  } catch (const std::bad_alloc&) {
    return Refuse(ImageError::kTooManyPixels,
                  "out of memory decoding the image");
  }
  if (bgr.empty()) {
    return Refuse(
        ImageError::kCorrupt,
        absl::StrCat("corrupt ", jpeg ? "JPEG" : "PNG", ": decoding failed"));
  }
  DecodedImage out;
  out.width = bgr.cols;
  out.height = bgr.rows;
  out.original_width = header->width;
  out.original_height = header->height;
  out.rgb.resize(static_cast<size_t>(bgr.cols) * bgr.rows * 3);
  cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, out.rgb.data());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return out;
}

absl::Status DecodeResized(std::string_view bytes, const ImageLimits& limits,
                           int size, uint8_t* out) {
  absl::StatusOr<DecodedImage> image = DecodeImage(bytes, limits, size);
  if (!image.ok()) return image.status();
  const cv::Mat src(image->height, image->width, CV_8UC3, image->rgb.data());
  cv::Mat target(size, size, CV_8UC3, out);
  const bool shrink = image->width > size || image->height > size;
  cv::resize(src, target, cv::Size(size, size), 0, 0,
             shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  return absl::OkStatus();
}

std::optional<ImageError> ImageErrorOf(const absl::Status& status) {
  auto payload = status.GetPayload(kPayloadKey);
  if (!payload.has_value()) return std::nullopt;
  const int value = std::stoi(std::string(*payload));
  return static_cast<ImageError>(value);
}

const char* ImageErrorName(ImageError error) {
  switch (error) {
    case ImageError::kEmpty:
      return "empty";
    case ImageError::kUnsupportedFormat:
      return "unsupported format";
    case ImageError::kTooLarge:
      return "too large";
    case ImageError::kTooManyPixels:
      return "too many pixels";
    case ImageError::kCorrupt:
      return "corrupt";
  }
  return "?";
}

}  // namespace transferd::core
