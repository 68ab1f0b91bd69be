#include "tests/support/transferd_server.h"

#include <signal.h>

#include <fstream>
#include <sstream>

#include "client/client.h"
#include "tests/support/paths.h"

namespace transferd::testing {

std::string TransferdBinary() { return BinaryPath("transferd"); }
std::string TransferctlBinary() { return BinaryPath("transferctl"); }

TransferdServer::TransferdServer(Options options)
    : temp_(std::make_unique<TempDir>()) {
  data_dir_ =
      options.data_dir.empty() ? temp_->path() + "/data" : options.data_dir;
  log_path_ = temp_->path() + "/transferd.log";
  std::string listen = options.listen;
  if (listen.empty())
    listen = "127.0.0.1:" + std::to_string(FreeLoopbackPort());
  address_ = listen;
  if (address_.rfind("0.0.0.0:", 0) == 0)
    address_ = "127.0.0.1:" + address_.substr(8);

  std::vector<std::string> argv = {TransferdBinary(), "--listen", listen,
                                   "--data-dir", data_dir_};
  argv.insert(argv.end(), options.args.begin(), options.args.end());
  // The developer's own TRANSFERD_* settings must not leak into tests.
  std::vector<std::string> env = {
      "TRANSFERD_CONFIG=",     "TRANSFERD_DEVICE=",
      "TRANSFERD_THREADS=",    "TRANSFERD_LOG_FORMAT=",
      "TRANSFERD_TOKEN_FILE=", "TRANSFERD_ALLOW_PLAINTEXT="};
  env.insert(env.end(), options.env.begin(), options.env.end());
  process_ =
      std::make_unique<Subprocess>(Subprocess::Spawn(argv, env, log_path_));

  if (!options.wait_ready) return;
  client::ClientOptions client_options = options.client;
  client_options.address = address_;
  auto client = client::Client::Create(client_options);
  const auto deadline =
      std::chrono::steady_clock::now() + options.ready_timeout;
  // Health Watch with wait-for-ready returns as soon as the server reports
  // SERVING; the 1 s slices only let us notice a server that died.
  while (std::chrono::steady_clock::now() < deadline && process_->Running()) {
    auto health = client->CheckHealth("", std::chrono::seconds(1));
    if (health.ok() && *health == client::HealthStatus::kServing) {
      ready_ = true;
      break;
    }
  }
}

TransferdServer::~TransferdServer() {
  if (process_ && process_->Running()) {
    process_->Signal(SIGKILL);
    process_->Wait(std::chrono::seconds(10));
  }
}

std::string TransferdServer::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<ExitStatus> TransferdServer::Stop(
    int signo, std::chrono::milliseconds timeout) {
  process_->Signal(signo);
  return process_->Wait(timeout);
}

}  // namespace transferd::testing
