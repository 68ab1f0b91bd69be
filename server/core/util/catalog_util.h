// Small pieces shared by the engine's catalogs (datasets, models, jobs):
// resource ids, page tokens, random ids, durable file writes, and removing
// folders a crash left without a catalog row.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace transferd::core {

class Statement;

// 1 to 63 of [a-z0-9-], starting and ending with a letter or digit;
// INVALID_ARGUMENT starting with `what` otherwise.
absl::Status ValidateResourceId(std::string_view what, std::string_view id);

// Times as the store keeps them: milliseconds since the Unix epoch.
int64_t UnixMillis(std::chrono::system_clock::time_point t);
std::chrono::system_clock::time_point FromUnixMillis(int64_t ms);

// INTERNAL: "<what>: <strerror(errno)>".
absl::Status ErrnoError(const std::string& what);

// `bytes` random bytes as lowercase hex.
std::string RandomHex(int bytes);

// Offset paging: "" -> 0; otherwise a positive offset a previous page
// returned. INVALID_ARGUMENT for anything else.
absl::StatusOr<int64_t> ParsePageToken(const std::string& token);
// page_size 0 -> 50, capped at 1000; INVALID_ARGUMENT when negative.
absl::StatusOr<int> ClampPageSize(int page_size);

// Reads one page from `query`, which must ask for page_size + 1 rows (the
// extra row only tells whether another page follows): calls `row` on up to
// page_size rows and returns whether more exist.
absl::StatusOr<bool> ReadPage(
    Statement& query, int page_size,
    const std::function<absl::Status(const Statement&)>& row);

// fsync of a directory (after a rename into it).
absl::Status SyncDirectory(const std::filesystem::path& dir);
// Writes a file atomically: temp file beside it, fsync, rename, fsync of the
// directory.
absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::string_view bytes);

// Removes the entries of `dir` whose names are not in `known`; returns how
// many were removed.
absl::StatusOr<int> RemoveUncatalogued(const std::filesystem::path& dir,
                                       const std::set<std::string>& known);

}  // namespace transferd::core
