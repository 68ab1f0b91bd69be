// The global options, the connection and error reporting of transferctl.
#include "client/commands/common.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands/output.h"

namespace transferd::client::commands {

void AddGlobalOptions(CLI::App& app, Globals& g) {
  app.add_option("--server", g.server, "transferd address HOST:PORT")
      ->envname("TRANSFERD_ADDR")
      ->capture_default_str();
  app.add_flag("--json", g.json, "Print machine-readable JSON");
  app.add_option("--timeout", g.timeout_seconds, "Seconds per call")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            if (end == text.c_str() || *end != '\0' || !(v > 0) ||
                v > 7 * 24 * 3600) {
              return "must be a number of seconds > 0 and at most "
                     "604800 (a week), got \"" +
                     text + "\"";
            }
            return "";
          },
          "SECONDS"))
      ->capture_default_str();
  app.add_option(
         "--token", g.token,
         "Bearer token for servers started with --token-file (never printed)")
      ->envname("TRANSFERD_TOKEN");
  app.add_flag("--tls", g.tls,
               "Connect over TLS, checking the server's certificate against "
               "the system's "
               "roots (implied by the other --tls-* options)")
      ->envname("TRANSFERD_TLS");
  app.add_option("--tls-ca", g.tls_ca,
                 "TLS: CA bundle (PEM) the server's certificate must chain to")
      ->envname("TRANSFERD_TLS_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", g.tls_cert,
                 "TLS: client certificate (PEM) for mutual TLS")
      ->envname("TRANSFERD_CLIENT_TLS_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", g.tls_key,
                 "TLS: the client certificate's key (PEM)")
      ->envname("TRANSFERD_CLIENT_TLS_KEY")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-server-name", g.tls_server_name,
                 "TLS: the name the server's certificate must carry, when it "
                 "differs from "
                 "the --server host")
      ->envname("TRANSFERD_TLS_SERVER_NAME");
}

void AllowGlobalOptionsAfterSubcommands(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->fallthrough();
    AllowGlobalOptionsAfterSubcommands(*sub);
  }
}

namespace {

// Edit distance with adjacent transpositions ("lsit" is one from "list").
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1,
                                     std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] =
          std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The command `word` most likely meant among `names`, or "".
std::string ClosestCommand(const std::string& word,
                           const std::vector<std::string>& names) {
  // Words other tools use for the same thing.
  static const std::map<std::string, std::string> kSynonyms = {
      {"list", "ls"},
      {"get", "show"},
      {"describe", "show"},
      {"delete", "rm"},
      {"remove", "rm"},
      {"del", "rm"},
      {"status", "health"},
      {"version", "info"},
      {"follow", "watch"},
      {"logs", "watch"},
      {"stop", "cancel"},
      {"fit", "train"},
      {"fine-tune", "finetune"},
      {"classify", "predict"},
      {"model", "models"},
      {"dataset", "datasets"},
      {"job", "jobs"},
  };
  const auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  if (auto it = kSynonyms.find(word);
      it != kSynonyms.end() && has(it->second)) {
    return it->second;
  }
  std::string best;
  size_t best_distance = 0;
  for (const std::string& name : names) {
    // A prefix ("serve", "data") or a close spelling ("lss", "modles").
    const size_t distance = name.rfind(word, 0) == 0 && word.size() >= 2
                                ? 1
                                : EditDistance(word, name);
    if (best.empty() || distance < best_distance) {
      best = name;
      best_distance = distance;
    }
  }
  const size_t allowed =
      std::max<size_t>(1, std::min(word.size(), best.size()) / 2);
  return best_distance <= allowed ? best : std::string();
}

}  // namespace

std::string UnknownCommandMessage(CLI::App& app) {
  // The deepest command that was given.
  CLI::App* at = &app;
  for (std::vector<CLI::App*> parsed = at->get_subcommands(); !parsed.empty();
       parsed = at->get_subcommands()) {
    at = parsed.front();
  }
  std::vector<std::string> names;
  for (const CLI::App* sub :
       at->get_subcommands([](CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }
  if (names.empty()) return "";
  std::string word;
  for (const std::string& arg : app.remaining(/*recurse=*/true)) {
    if (!arg.empty() && arg[0] != '-') {
      word = arg;
      break;
    }
  }
  std::string path = at->get_name();
  for (const CLI::App* p = at->get_parent(); p != nullptr;
       p = p->get_parent()) {
    path = p->get_name() + " " + path;
  }
  if (word.empty()) {
    return absl::StrCat("transferctl: ", path,
                        " needs a command: ", absl::StrJoin(names, ", "),
                        ". Run \"", path, " --help\" for more.\n");
  }
  std::string message =
      absl::StrCat("transferctl: \"", word, "\" is not a command of ", path);
  if (const std::string closest = ClosestCommand(word, names);
      !closest.empty()) {
    absl::StrAppend(&message, "; did you mean \"", path, " ", closest, "\"?");
  }
  absl::StrAppend(&message, "\nCommands: ", absl::StrJoin(names, ", "),
                  ". Run \"", path, " --help\" for more.\n");
  return message;
}

std::unique_ptr<Client> Connect(const Globals& g) {
  transferd::client::ClientOptions options;
  options.address = g.server;
  options.timeout =
      std::chrono::milliseconds(static_cast<int64_t>(g.timeout_seconds * 1000));
  options.token = g.token;
  options.tls = g.tls;
  options.tls_ca_file = g.tls_ca;
  options.tls_cert_file = g.tls_cert;
  options.tls_key_file = g.tls_key;
  options.tls_server_name = g.tls_server_name;
  return Client::Create(options);
}

int Fail(const absl::Status& status) {
  // A status without a message (gRPC's own CANCELLED, say) is named by code.
  const std::string message =
      status.message().empty()
          ? absl::StatusCodeToString(status.code()) + " (no message)"
          : std::string(status.message());
  std::fprintf(stderr, "transferctl: %s\n", message.c_str());
  return transferd::client::IsUnreachable(status) ? kUnreachable : kServerError;
}

int PrintDeleted(const Globals& g, const absl::Status& status,
                 const std::string& full) {
  if (!status.ok()) return Fail(status);
  if (g.json) {
    google::protobuf::Struct out;
    (*out.mutable_fields())["deleted"].set_string_value(full);
    PrintJson(out);
  } else {
    std::cout << "deleted " << full << "\n";
  }
  return kOk;
}

}  // namespace transferd::client::commands
