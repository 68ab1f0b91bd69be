// State and helpers shared by transferctl's commands: the global options,
// connecting to the server, exit codes and error reporting.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "client/client.h"

namespace transferd::client::commands {

enum ExitCode {
  kOk = 0,
  kServerError = 1,
  kUsage = 2,
  kUnreachable = 3,
  kNotServing = 4,
};

// The options given before (or after) the subcommand.
struct Globals {
  std::string server = "127.0.0.1:50051";
  bool json = false;
  double timeout_seconds = 30;
  std::string token;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
};

// Registers --server, --json, --timeout, --token and the --tls* options.
void AddGlobalOptions(CLI::App& app, Globals& g);

// Lets the global options be given after the subcommand too; call once
// every subcommand is registered.
void AllowGlobalOptionsAfterSubcommands(CLI::App& app);

// After a parse error of `app`: when the deepest command given expects a
// subcommand and got a word that is none of them ("serve", "lss", "list"),
// a message naming the word, the closest command and the valid ones; else
// empty.
std::string UnknownCommandMessage(CLI::App& app);

std::unique_ptr<Client> Connect(const Globals& g);

// Prints `status` on stderr; the exit code for it.
int Fail(const absl::Status& status);

// `rm` of any resource: the delete RPCs return google.protobuf.Empty, which
// --json prints as {}.
int PrintDeleted(const Globals& g, const absl::Status& status,
                 const std::string& full);

}  // namespace transferd::client::commands
