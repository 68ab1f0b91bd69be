#include "server/core/block_hash.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace transferd::core {

absl::Status ReadFileChunks(const std::filesystem::path& path,
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

}  // namespace transferd::core
