// Images made by the tests themselves: small real JPEG/PNG files, and the
// hostile headers (dimension bombs) that must be refused before decoding.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace transferd::testing {

// A width x height image encoded by OpenCV (ext ".jpg" or ".png"); different
// seeds give different pixels, hence different bytes.
std::string EncodeTestImage(int width, int height, const std::string& ext,
                            int seed = 0);

// A PNG signature and IHDR declaring width x height, and nothing else.
std::string PngHeader(uint32_t width, uint32_t height);

// SOI and a baseline frame header declaring width x height.
std::string JpegHeader(uint16_t width, uint16_t height);

// Writes `bytes` to `path`, creating parent folders.
void WriteFile(const std::filesystem::path& path, const std::string& bytes);

}  // namespace transferd::testing
