// transferctl: the command-line client of transferd.
//
// Exit codes: 0 success; 1 the server answered with an error (or a followed
// job failed or was cancelled); 2 usage error; 3 server unreachable or
// unavailable; 4 health check answered but the server (or the named
// service) is not SERVING. Ctrl-C while following a job detaches: exit 0.
//
// The commands live in client/commands/, one file per group.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client_build_info.h"  // generated: TRANSFERD_VERSION, _REVISION

namespace {

constexpr char kExitCodesHelp[] =
    "Exit codes: 0 success, 1 server error (or the followed job failed or "
    "was\ncancelled), 2 usage error, 3 server unreachable or unavailable, 4 "
    "not serving.\n"
    "The server address comes from --server or TRANSFERD_ADDR "
    "(default 127.0.0.1:50051),\nthe bearer token from --token or "
    "TRANSFERD_TOKEN.";

}  // namespace

int main(int argc, char** argv) {
  namespace commands = transferd::client::commands;
  transferd::client::QuietGrpcLogs();
  CLI::App app{
      "transferctl: client of the transferd training and inference "
      "server",
      "transferctl"};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  app.set_version_flag(
      "--version", "transferctl " TRANSFERD_VERSION " (" TRANSFERD_REVISION ")",
      "Print the version and exit");
  commands::Globals g;
  commands::AddGlobalOptions(app, g);

  // The order here is the order --help lists them in.
  int rc = commands::kOk;
  commands::AddServerCommands(app, g, rc);
  commands::AddDatasetsCommands(app, g, rc);
  commands::AddTrainCommands(app, g, rc);
  commands::AddJobsCommands(app, g, rc);
  commands::AddModelsCommands(app, g, rc);
  commands::AddPredictCommands(app, g, rc);

  // Global flags may be given after the subcommand too.
  commands::AllowGlobalOptionsAfterSubcommands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
      if (const std::string unknown = commands::UnknownCommandMessage(app);
          !unknown.empty()) {
        std::fputs(unknown.c_str(), stderr);
        return commands::kUsage;
      }
    }
    const int code = app.exit(e);
    return code == 0 ? commands::kOk : commands::kUsage;
  }
  return rc;
}
