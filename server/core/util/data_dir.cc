#include "server/core/util/data_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include <spdlog/spdlog.h>
#include <sys/file.h>

#include "absl/strings/str_cat.h"

namespace transferd::core {
namespace fs = std::filesystem;

namespace {

absl::Status ErrnoStatus(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[128];
  if (lseek(fd, 0, SEEK_SET) != 0) return out;
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataDir>> DataDir::Open(const Options& options) {
  std::error_code ec;
  fs::path root = fs::absolute(options.root, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data dir \"", options.root.string(), "\": ", ec.message()));
  }
  root = root.lexically_normal();
  for (const char* sub :
       {"", "weights", "datasets", "models", "cache", "tmp", "staging"}) {
    fs::create_directories(root / sub, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create data dir \"", (root / sub).string(),
                       "\": ", ec.message()));
    }
  }

  const fs::path lock_path = root / "LOCK";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("open " + lock_path.string(), errno);
  // Another process may hold the lock for a while (a predecessor finishing
  // its shutdown): polled until options.lock_wait has passed.
  const auto give_up = std::chrono::steady_clock::now() + options.lock_wait;
  bool told = false;
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = ReadAll(fd);
    if (err == EWOULDBLOCK && std::chrono::steady_clock::now() < give_up) {
      if (!told) {
        spdlog::info(
            "data dir {} is in use by another transferd{}; waiting up to {} "
            "s for it (--startup-timeout)",
            root.string(), holder.empty() ? "" : " (pid " + holder + ")",
            std::chrono::duration_cast<std::chrono::seconds>(options.lock_wait)
                .count());
        told = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data dir \"", root.string(), "\" is in use by another transferd",
          holder.empty() ? "" : " (pid " + holder + ")",
          options.lock_wait.count() > 0
              ? " and stayed so for the whole --startup-timeout"
              : "",
          "; each server needs its own --data-dir"));
    }
    return ErrnoStatus("lock " + lock_path.string(), err);
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus("write " + lock_path.string(), err);
  }

  int removed = 0;
  for (const auto& entry : fs::directory_iterator(root / "tmp", ec)) {
    std::error_code rm_ec;
    fs::remove_all(entry.path(), rm_ec);
    if (!rm_ec) ++removed;
  }
  return std::unique_ptr<DataDir>(new DataDir(root, fd, removed));
}

DataDir::~DataDir() {
  if (lock_fd_ >= 0) {
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
  }
}

}  // namespace transferd::core
