#include "server/core/md5.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace transferd::core {
namespace {

// RFC 1321 section 3.4: T[i] = floor(2^32 * abs(sin(i + 1))).
constexpr std::array<uint32_t, 64> kSineTable = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};

// Per-round left rotations, four per round.
constexpr int kShifts[4][4] = {
    {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

constexpr std::array<uint32_t, 4> kInitialState = {0x67452301, 0xefcdab89,
                                                   0x98badcfe, 0x10325476};

constexpr uint32_t RotateLeft(uint32_t x, int n) {
  return (x << n) | (x >> (32 - n));
}

}  // namespace

Md5::Md5() : state_(kInitialState) {}

void Md5::ProcessBlock(const uint8_t* block) {
  // Section 3.4: sixteen little-endian words, four rounds of sixteen steps.
  uint32_t x[16];
  for (int i = 0; i < 16; ++i) {
    x[i] = uint32_t{block[4 * i]} | (uint32_t{block[4 * i + 1]} << 8) |
           (uint32_t{block[4 * i + 2]} << 16) |
           (uint32_t{block[4 * i + 3]} << 24);
  }
  uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
  for (int i = 0; i < 64; ++i) {
    const int round = i / 16;
    uint32_t f;
    int k;
    switch (round) {
      case 0:
        f = (b & c) | (~b & d);
        k = i;
        break;
      case 1:
        f = (b & d) | (c & ~d);
        k = (5 * i + 1) % 16;
        break;
      case 2:
        f = b ^ c ^ d;
        k = (3 * i + 5) % 16;
        break;
      default:
        f = c ^ (b | ~d);
        k = (7 * i) % 16;
        break;
    }
    const uint32_t rotated =
        RotateLeft(a + f + x[k] + kSineTable[i], kShifts[round][i % 4]);
    a = d;
    d = c;
    c = b;
    b = b + rotated;
  }
  state_[0] += a;
  state_[1] += b;
  state_[2] += c;
  state_[3] += d;
}

std::string Md5::HexDigest() const {
  // Sections 3.1-3.2: 0x80, zeros up to 56 mod 64, then the length in bits
  // as a little-endian 64-bit number.
  const Md5 copy = Padded(/*big_endian_length=*/false);

  // Section 3.5: the output is the state's bytes, low-order byte first.
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(32);
  for (uint32_t word : copy.state_) {
    for (int byte = 0; byte < 4; ++byte) {
      const uint32_t value = (word >> (8 * byte)) & 0xff;
      hex.push_back(kHex[value >> 4]);
      hex.push_back(kHex[value & 0xf]);
    }
  }
  return hex;
}

absl::StatusOr<std::string> Md5File(const std::filesystem::path& path) {
  Md5 hash;
  absl::Status read = ReadFileChunks(
      path, [&hash](const char* data, size_t size) { hash.Update(data, size); });
  if (!read.ok()) return read;
  return hash.HexDigest();
}

}  // namespace transferd::core
