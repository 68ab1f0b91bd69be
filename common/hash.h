// SHA-256 and MD5 through OpenSSL's libcrypto (EVP), shared by the server
// and the client. SHA-256 checks uploads, archives and downloaded weights;
// MD5 only checks downloads against the digests Keras publishes for some of
// its weight files (keras.utils' get_file(file_hash=...)), never as a
// security measure on its own.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace transferd::common {

// An incremental digest: Update() with the message in pieces of any size,
// then HexDigest(). HexDigest() does not disturb the state, so more Update()
// calls may follow (the digest then covers everything fed so far). Copies
// carry the state so far.
class Digest {
 public:
  enum class Algorithm { kSha256, kMd5 };
  explicit Digest(Algorithm algorithm);
  Digest(const Digest& other);
  Digest& operator=(const Digest& other);
  Digest(Digest&&) noexcept = default;
  Digest& operator=(Digest&&) noexcept = default;
  ~Digest();

  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // The lowercase hex digits of the digest of everything fed so far.
  std::string HexDigest() const;

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

class Sha256 : public Digest {
 public:
  Sha256() : Digest(Algorithm::kSha256) {}
};

class Md5 : public Digest {
 public:
  Md5() : Digest(Algorithm::kMd5) {}
};

// Reads a file in chunks, handing each to `consume`; NOT_FOUND or INTERNAL
// naming the file when it cannot be read.
absl::Status ReadFileChunks(
    const std::filesystem::path& path,
    const std::function<void(const char*, size_t)>& consume);

// The digest of a file's contents, as lowercase hex; NOT_FOUND or INTERNAL
// naming the file when it cannot be read.
absl::StatusOr<std::string> Sha256File(const std::filesystem::path& path);
absl::StatusOr<std::string> Md5File(const std::filesystem::path& path);

}  // namespace transferd::common
