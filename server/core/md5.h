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
#include "server/core/block_hash.h"

namespace transferd::core {

// Incremental MD5, used like Sha256: Update() in pieces, then HexDigest()
// (which leaves the state untouched).
class Md5 : public BlockHash<Md5> {
 public:
  Md5();


  // The 32 lowercase hex digits of the digest of everything fed so far.
  std::string HexDigest() const;

 private:
  friend class BlockHash<Md5>;
  void ProcessBlock(const uint8_t* block);

  std::array<uint32_t, 4> state_;
};

// MD5 of a file's contents, as lowercase hex; NOT_FOUND or INTERNAL naming
// the file when it cannot be read.
absl::StatusOr<std::string> Md5File(const std::filesystem::path& path);

}  // namespace transferd::core
