// MD5 (RFC 1321), self-contained. Only for checking downloads against the
// md5 digests Keras publishes for some of its weight files (keras.utils'
// get_file(file_hash=...)); never as a security measure on its own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace transferd::core {

// Incremental MD5, used like Sha256: Update() in pieces, then HexDigest()
// (which leaves the state untouched).
class Md5 {
 public:
  Md5();

  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }

  // The 32 lowercase hex digits of the digest of everything fed so far.
  std::string HexDigest() const;

 private:
  void ProcessBlock(const uint8_t* block);

  std::array<uint32_t, 4> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// MD5 of a file's contents, as lowercase hex; NOT_FOUND or INTERNAL naming
// the file when it cannot be read.
absl::StatusOr<std::string> Md5File(const std::filesystem::path& path);

}  // namespace transferd::core
