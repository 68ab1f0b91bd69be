// Digests through OpenSSL's EVP interface (libcrypto, Debian's libssl-dev),
// and the chunked file reader they share.
#include "common/hash.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"

namespace transferd::common {
namespace {

// EVP only fails on allocation or a broken library: nothing a caller could
// handle, and continuing would hand out a wrong digest.
void Check(int ok, const char* what) {
  if (ok != 1) {
    std::fprintf(stderr, "transferd: OpenSSL %s failed\n", what);
    std::abort();
  }
}

}  // namespace

struct Digest::Context {
  struct Free {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx{EVP_MD_CTX_new()};
};

Digest::Digest(Algorithm algorithm) : context_(std::make_unique<Context>()) {
  Check(context_->ctx != nullptr ? 1 : 0, "EVP_MD_CTX_new");
  const EVP_MD* md = algorithm == Algorithm::kSha256 ? EVP_sha256() : EVP_md5();
  Check(EVP_DigestInit_ex(context_->ctx.get(), md, nullptr),
        "EVP_DigestInit_ex");
}

Digest::Digest(const Digest& other) : context_(std::make_unique<Context>()) {
  Check(context_->ctx != nullptr ? 1 : 0, "EVP_MD_CTX_new");
  Check(EVP_MD_CTX_copy_ex(context_->ctx.get(), other.context_->ctx.get()),
        "EVP_MD_CTX_copy_ex");
}

Digest& Digest::operator=(const Digest& other) {
  if (this != &other) {
    Digest copy(other);
    context_ = std::move(copy.context_);
  }
  return *this;
}

Digest::~Digest() = default;

void Digest::Update(const void* data, size_t size) {
  if (size == 0) return;
  Check(EVP_DigestUpdate(context_->ctx.get(), data, size), "EVP_DigestUpdate");
}

std::string Digest::HexDigest() const {
  // Finalising consumes a context: finalise a copy, keep this one going.
  Digest copy(*this);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  Check(EVP_DigestFinal_ex(copy.context_->ctx.get(), digest, &size),
        "EVP_DigestFinal_ex");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * size);
  for (unsigned int i = 0; i < size; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

absl::Status ReadFileChunks(
    const std::filesystem::path& path,
    const std::function<void(const char*, size_t)>& consume) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("cannot open ", path.string(), ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
  }
  std::vector<char> buffer(1 << 20);
  while (true) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return absl::InternalError(absl::StrCat("cannot read ", path.string(),
                                              ": ", std::strerror(err)));
    }
    consume(buffer.data(), static_cast<size_t>(n));
  }
  close(fd);
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::string> FileDigest(const std::filesystem::path& path,
                                       Digest digest) {
  absl::Status read = ReadFileChunks(
      path,
      [&digest](const char* data, size_t size) { digest.Update(data, size); });
  if (!read.ok()) return read;
  return digest.HexDigest();
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::filesystem::path& path) {
  return FileDigest(path, Sha256());
}

absl::StatusOr<std::string> Md5File(const std::filesystem::path& path) {
  return FileDigest(path, Md5());
}

}  // namespace transferd::common
