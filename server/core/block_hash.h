// What MD5 and SHA-256 share: the message is fed in 64-byte blocks, and the
// digest pads it with 0x80, zeros up to 56 mod 64 and the length in bits as
// an 8-byte number (little-endian for MD5, big-endian for SHA-256).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string_view>

#include "absl/status/status.h"

namespace transferd::core {

// CRTP base: Derived provides `void ProcessBlock(const uint8_t* block)`.
template <class Derived>
class BlockHash {
 public:
  void Update(const void* data, size_t size) {
    const auto* bytes = static_cast<const uint8_t*>(data);
    total_bytes_ += size;
    if (buffered_ > 0) {
      const size_t take = std::min(size, buffer_.size() - buffered_);
      std::memcpy(buffer_.data() + buffered_, bytes, take);
      buffered_ += take;
      bytes += take;
      size -= take;
      if (buffered_ < buffer_.size()) return;
      self().ProcessBlock(buffer_.data());
      buffered_ = 0;
    }
    for (; size >= buffer_.size(); bytes += 64, size -= 64) {
      self().ProcessBlock(bytes);
    }
    if (size > 0) {
      std::memcpy(buffer_.data(), bytes, size);
      buffered_ = size;
    }
  }
  void Update(std::string_view data) { Update(data.data(), data.size()); }

 protected:
  // A copy with the final padding fed in: its state is the digest. The
  // original is left as it was, so more Update() calls may follow.
  Derived Padded(bool big_endian_length) const {
    Derived copy = static_cast<const Derived&>(*this);
    const uint64_t bit_length = total_bytes_ * 8;
    static constexpr uint8_t kPad[64] = {0x80};
    copy.Update(kPad, buffered_ < 56 ? 56 - buffered_ : 120 - buffered_);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) {
      length[i] = static_cast<uint8_t>(
          bit_length >> (big_endian_length ? 56 - 8 * i : 8 * i));
    }
    copy.Update(length, sizeof(length));
    return copy;
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }

  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Reads a file in chunks, handing each to `consume`; NOT_FOUND or INTERNAL
// naming the file when it cannot be read.
absl::Status ReadFileChunks(const std::filesystem::path& path,
                            const std::function<void(const char*, size_t)>& consume);

}  // namespace transferd::core
