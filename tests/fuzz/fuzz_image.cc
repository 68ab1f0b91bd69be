// libFuzzer target: the untrusted-image wrapper every upload and Predict
// image passes (ProbeImage, DecodeImage, DecodeResized). Besides crashes and
// leaks (AddressSanitizer), it checks the wrapper's promises: nothing the
// header check refuses is ever decoded, what decodes respects the limits,
// and the resized output is fully written.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "server/core/data/images.h"

using transferd::core::DecodeImage;
using transferd::core::DecodeResized;
using transferd::core::ImageLimits;
using transferd::core::ProbeImage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ImageLimits limits;
  limits.max_pixels = 1 << 20;  // small, so decodes stay fast
  limits.max_side = 4096;
  const auto header = ProbeImage(bytes, limits);
  if (header.ok()) {
    if (header->width <= 0 || header->height <= 0 ||
        header->width > limits.max_side || header->height > limits.max_side ||
        int64_t{header->width} * header->height > limits.max_pixels) {
      std::abort();  // the header check let through what it promises to refuse
    }
  }
  const auto decoded = DecodeImage(bytes, limits, /*min_side=*/16);
  if (decoded.ok()) {
    if (!header.ok()) std::abort();  // decoded what the header check refused
    if (decoded->rgb.size() !=
        static_cast<size_t>(decoded->width) * decoded->height * 3) {
      std::abort();
    }
  }
  constexpr int kSide = 24;
  std::vector<uint8_t> out(kSide * kSide * 3 + 1, 0xA5);
  const auto resized = DecodeResized(bytes, limits, kSide, out.data());
  if (resized.ok() != decoded.ok()) std::abort();  // the two paths must agree
  if (out.back() != 0xA5) std::abort();            // wrote past the buffer
  return 0;
}
