// transferd's configuration: flags, TRANSFERD_* environment variables and an
// optional config file, parsed here and nowhere else. Precedence: flag >
// environment > config file > built-in default. The result is a set of
// Options structs handed to the components.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "server/cluster/worker.h"
#include "server/core/engine.h"
#include "server/http/http_server.h"
#include "server/replica/follower.h"
#include "server/rpc/rpc_server.h"

namespace transferd::app {

struct LogOptions {
  std::string format = "text";  // "text" or "json" (one JSON object a line)
  std::string level = "info";   // trace, debug, info, warn, error
};

struct ServerConfig {
  core::Engine::Options engine;
  rpc::RpcServer::Options rpc;
  http::HttpServer::Options http;   // listen_address empty: no HTTP port
  replica::FollowerOptions follow;  // primary empty: not a replica
  cluster::WorkerOptions worker;    // coordinator empty: not a worker
  LogOptions log;
  std::string config_file;  // the file read, empty when none
};

// Either a configuration to run with, or an exit: --help/--version (code 0)
// or a usage error (code 2), with the text to print.
struct ParseOutcome {
  std::optional<ServerConfig> config;
  int exit_code = 0;
  std::string output;
};

ParseOutcome ParseServerConfig(int argc, const char* const* argv);

// One row per setting, for --help-config and the README's table.
struct SettingDoc {
  std::string flag;
  std::string env;
  std::string default_value;
  std::string description;
};
std::vector<SettingDoc> DescribeSettings();

}  // namespace transferd::app
