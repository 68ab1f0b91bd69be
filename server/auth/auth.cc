#include "server/auth/auth.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/hash.h"

namespace transferd::auth {
namespace {

constexpr size_t kMinTokenLength = 16;

std::string Digest(std::string_view token) {
  common::Sha256 hash;
  hash.Update(token.data(), token.size());
  return hash.HexDigest();
}

// Equal-length hex digests compared without an early exit.
bool SameDigest(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat("cannot read the token file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kTrainer:
      return "trainer";
    case Role::kAdmin:
      return "admin";
    case Role::kWorker:
      return "worker";
  }
  return "unknown";
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(std::string_view text) {
  std::vector<TokenEntry> entries;
  int line_number = 0;
  for (absl::string_view raw :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    const absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() < 2 || fields.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number, ": expected TOKEN ROLE [NAME], got ",
          fields.size(), " fields"));
    }
    const absl::string_view token = fields[0];
    if (token.size() < kMinTokenLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number, ": a token has at least ",
          kMinTokenLength, " characters"));
    }
    for (const char c : token) {
      if (c < 0x21 || c > 0x7e) {
        return absl::InvalidArgumentError(
            absl::StrCat("token file line ", line_number,
                         ": a token is printable ASCII without spaces"));
      }
    }
    TokenEntry entry;
    const std::string role(fields[1]);
    if (role == "viewer") {
      entry.role = Role::kViewer;
    } else if (role == "trainer") {
      entry.role = Role::kTrainer;
    } else if (role == "admin") {
      entry.role = Role::kAdmin;
    } else if (role == "worker") {
      entry.role = Role::kWorker;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number,
          ": role must be viewer, trainer, admin or worker, got \"", role,
          "\""));
    }
    entry.digest = Digest(std::string_view(token.data(), token.size()));
    entry.name = fields.size() == 3
                     ? std::string(fields[2])
                     : absl::StrCat("token ", entries.size() + 1);
    for (const TokenEntry& other : entries) {
      if (other.digest == entry.digest) {
        return absl::InvalidArgumentError(
            absl::StrCat("token file line ", line_number, ": the token of \"",
                         other.name, "\" appears again"));
      }
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(
    std::string token_file) {
  std::unique_ptr<Authorizer> auth(new Authorizer(std::move(token_file)));
  if (!auth->enabled()) return auth;
  if (absl::Status s = auth->Reload(); !s.ok()) return s;
  return auth;
}

absl::Status Authorizer::Reload() {
  if (!enabled()) return absl::OkStatus();
  absl::StatusOr<std::string> text = ReadFile(token_file_);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(*text);
  if (!entries.ok()) return entries.status();
  if (entries->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the token file ", token_file_, " holds no token"));
  }
  struct stat st {};
  if (stat(token_file_.c_str(), &st) == 0 &&
      (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn(
        "the token file {} is readable by others than its owner (mode {:o})",
        token_file_, st.st_mode & 0777);
  }
  auto shared =
      std::make_shared<const std::vector<TokenEntry>>(std::move(*entries));
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::move(shared);
  return absl::OkStatus();
}

size_t Authorizer::token_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_ == nullptr ? 0 : entries_->size();
}

absl::Status Authorizer::Check(const Caller& caller, Role required,
                               std::string_view what) const {
  if (!enabled()) return absl::OkStatus();
  std::shared_ptr<const std::vector<TokenEntry>> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries = entries_;
  }
  if (!caller.authorization.has_value()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "this server requires a bearer token: send the ", caller.carrier,
        " \"authorization: Bearer TOKEN\" (transferctl --token or "
        "TRANSFERD_TOKEN)"));
  }
  const std::string& value = *caller.authorization;
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      absl::AsciiStrToLower(value.substr(0, kScheme.size())) != kScheme) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the authorization ", caller.carrier, " must be \"Bearer TOKEN\""));
  }
  const std::string digest =
      Digest(std::string_view(value).substr(kScheme.size()));
  const TokenEntry* match = nullptr;
  for (const TokenEntry& e : *entries) {  // every entry, match or not
    if (SameDigest(e.digest, digest)) match = &e;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("the bearer token is not valid");
  }
  const bool allowed =
      required == Role::kWorker
          ? match->role == Role::kWorker || match->role == Role::kAdmin
          : match->role != Role::kWorker &&
                static_cast<int>(match->role) >= static_cast<int>(required);
  if (!allowed) {
    return absl::PermissionDeniedError(
        absl::StrCat(std::string(what), " needs the role ", RoleName(required),
                     "; the token of \"", match->name, "\" has the role ",
                     RoleName(match->role)));
  }
  return absl::OkStatus();
}

}  // namespace transferd::auth
