#include "server/core/util/catalog_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/store.h"

namespace transferd::core {
namespace fs = std::filesystem;

absl::Status ValidateResourceId(std::string_view what, std::string_view id) {
  const auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  };
  bool ok =
      !id.empty() && id.size() <= 63 && alnum(id.front()) && alnum(id.back());
  for (char c : id) ok = ok && (alnum(c) || c == '-');
  if (ok) return absl::OkStatus();
  std::string shown;
  for (char c : id.substr(0, 80)) shown += c == '\0' ? '?' : c;
  return absl::InvalidArgumentError(absl::StrCat(
      std::string(what), " \"", shown,
      "\" is invalid: use 1 to 63 characters of a-z, 0-9 and '-', starting "
      "and ending with a letter or digit"));
}

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i)
    absl::StrAppendFormat(&out, "%02x", rd() & 0xff);
  return out;
}

absl::StatusOr<int64_t> ParsePageToken(const std::string& token) {
  if (token.empty()) return 0;
  char* end = nullptr;
  errno = 0;
  const long long offset = std::strtoll(token.c_str(), &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0' || offset <= 0) {
    return absl::InvalidArgumentError(
        "page_token is not one this server returned");
  }
  return offset;
}

absl::StatusOr<int> ClampPageSize(int page_size) {
  if (page_size < 0)
    return absl::InvalidArgumentError("page_size must not be negative");
  if (page_size == 0) return 50;
  return std::min(page_size, 1000);
}

absl::StatusOr<bool> ReadPage(
    Statement& query, int page_size,
    const std::function<absl::Status(const Statement&)>& row) {
  for (int n = 0;; ++n) {
    TRANSFERD_ASSIGN_OR_RETURN(bool has_row, query.Step());
    if (!has_row) return false;
    if (n == page_size) return true;
    TRANSFERD_RETURN_IF_ERROR(row(query));
  }
}

int64_t UnixMillis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             t.time_since_epoch())
      .count();
}

std::chrono::system_clock::time_point FromUnixMillis(int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

absl::Status ErrnoError(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(absl::StrCat("open ", dir.string()));
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus()
                 : ErrnoError(absl::StrCat("fsync ", dir.string()));
}

absl::Status WriteFileAtomically(const fs::path& path, std::string_view bytes) {
  const fs::path tmp = path.string() + ".tmp-" + RandomHex(4);
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(absl::StrCat("create ", tmp.string()));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = ErrnoError(absl::StrCat("write ", tmp.string()));
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    absl::Status s = ErrnoError(absl::StrCat("fsync ", tmp.string()));
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError(absl::StrCat("rename to ", path.string()));
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDirectory(path.parent_path());
}

absl::StatusOr<int> RemoveUncatalogued(const fs::path& dir,
                                       const std::set<std::string>& known) {
  int removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (known.count(e.path().filename().string()) > 0) continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    if (!rm) ++removed;
  }
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  return removed;
}

}  // namespace transferd::core
