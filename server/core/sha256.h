// SHA-256 (FIPS 180-4), self-contained: checks downloaded weight files
// against the digests their publishers give.
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

// Incremental SHA-256: Update() with the message in pieces of any size, then
// HexDigest(). HexDigest() does not disturb the state, so more Update() calls
// may follow (the digest then covers everything fed so far).
class Sha256 : public BlockHash<Sha256> {
 public:
  Sha256();


  // The 64 lowercase hex digits of the digest of everything fed so far.
  std::string HexDigest() const;

 private:
  friend class BlockHash<Sha256>;
  void ProcessBlock(const uint8_t* block);

  std::array<uint32_t, 8> state_;
};

// SHA-256 of a file's contents, as lowercase hex; NOT_FOUND or INTERNAL
// naming the file when it cannot be read.
absl::StatusOr<std::string> Sha256File(const std::filesystem::path& path);

}  // namespace transferd::core
