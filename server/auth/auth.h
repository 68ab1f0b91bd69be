// Bearer-token authentication and roles, shared by the front ends: checked
// at the edge of every transferd.v1 method (rpc/service_util.h; so it works
// on plaintext and TLS listeners alike, where gRPC's AuthMetadataProcessor
// only runs on secure ones) and of every HTTP route (server/http). One
// Authorizer serves both, so a reload (SIGHUP) applies to both.
//
// The token file has one token per line: `TOKEN ROLE [NAME]`, where ROLE is
// viewer, trainer, admin or worker (worker: only a worker
// transferd joining a coordinator) and NAME (optional) identifies the holder in
// logs. Blank lines and lines starting with '#' are ignored. Tokens are at
// least 16 characters of printable ASCII without spaces; each appears once.
// Only SHA-256 digests of the tokens are kept in memory, compared in constant
// time; a token is never logged. Reload() re-reads the file (SIGHUP) and
// keeps the previous tokens when the new file is invalid.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace transferd::auth {

// Each role includes the ones before it.
enum class Role {
  kViewer = 1,   // read: server info, datasets, jobs, models, aliases, export
  kTrainer = 2,  // + upload datasets, create and cancel jobs, predict, import
  kAdmin = 3,    // + delete datasets and models, set and delete aliases
  // Not above the others: a worker transferd joining this coordinator
  // (Cluster.*) and nothing else; admin tokens may do it too.
  kWorker = 10,
};
const char* RoleName(Role role);

struct TokenEntry {
  std::string digest;  // lowercase hex SHA-256 of the token
  Role role = Role::kViewer;
  std::string name;  // who holds it, for logs; "token N" when not given
};

// Parses a token file's text; INVALID_ARGUMENT naming the line.
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(std::string_view text);

class Authorizer {
 public:
  // Without a token file every call is admitted (the default, for loopback
  // use); otherwise the file must parse and hold at least one token.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(
      std::string token_file);

  bool enabled() const { return !token_file_.empty(); }
  const std::string& token_file() const { return token_file_; }

  // Re-reads the token file; on error the tokens in force stay.
  absl::Status Reload();
  size_t token_count() const;

  // How the caller presented itself: the value of its "authorization"
  // metadata or header (nullopt when absent), and the word for where it goes
  // ("metadata" for gRPC, "header" for HTTP), used in the messages.
  struct Caller {
    std::optional<std::string> authorization;
    const char* carrier = "metadata";
  };
  // OK when `caller` sends "Bearer TOKEN" with a token whose role includes
  // `required` (always, without a token file); UNAUTHENTICATED without a
  // valid token, PERMISSION_DENIED when the role is too small, naming the
  // call `what` ("transferd.v1.Models.DeleteModel", "GET /api/v1/jobs").
  absl::Status Check(const Caller& caller, Role required,
                     std::string_view what) const;

 private:
  explicit Authorizer(std::string token_file)
      : token_file_(std::move(token_file)) {}

  const std::string token_file_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<TokenEntry>> entries_;
};

}  // namespace transferd::auth
