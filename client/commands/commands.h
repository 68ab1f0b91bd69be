// transferctl's command groups. Each registers its subcommands on `app`, in
// the order `--help` lists them; the callback of the subcommand that runs
// sets `rc` to its exit code. `g` is read when the command runs.
#pragma once

#include <CLI/CLI.hpp>

#include "client/commands/common.h"

namespace transferd::client::commands {

// server info, server health.
void AddServerCommands(CLI::App& app, const Globals& g, int& rc);

// datasets ls, upload, show, rm.
void AddDatasetsCommands(CLI::App& app, const Globals& g, int& rc);

// train, finetune.
void AddTrainCommands(CLI::App& app, const Globals& g, int& rc);

// jobs ls, show, watch, cancel, plot, results.
void AddJobsCommands(CLI::App& app, const Globals& g, int& rc);

// models ls, show, rm, alias, unalias, aliases, export, import.
void AddModelsCommands(CLI::App& app, const Globals& g, int& rc);

// predict.
void AddPredictCommands(CLI::App& app, const Globals& g, int& rc);

}  // namespace transferd::client::commands
