// The global options, the connection and error reporting of transferctl.
#include "client/commands/common.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "client/commands/output.h"

namespace transferd::client::commands {

void AddGlobalOptions(CLI::App& app, Globals& g) {
  app.add_option("--server", g.server, "transferd address HOST:PORT")
      ->envname("TRANSFERD_ADDR")
      ->capture_default_str();
  app.add_flag("--json", g.json, "Print machine-readable JSON");
  app.add_option("--timeout", g.timeout_seconds, "Seconds per call")
      ->check(CLI::PositiveNumber)
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
  std::fprintf(stderr, "transferctl: %s\n",
               std::string(status.message()).c_str());
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
