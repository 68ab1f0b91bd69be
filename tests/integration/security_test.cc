// Transport security and access control of the real binary: bearer tokens
// with roles on a plaintext loopback listener (reloaded on SIGHUP, never
// logged), TLS with and without client certificates, the refusal of
// plaintext on a non-loopback address, and the plaintext health-only port.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/paths.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunResult;
using testing::TransferdServer;

constexpr char kViewer[] = "viewer-token-0123456789abcdef";
constexpr char kTrainer[] = "trainer-token-0123456789abcdef";
constexpr char kAdmin[] = "admin-token-0123456789abcdef";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

std::unique_ptr<client::Client> ClientWith(const std::string& address,
                                           const std::string& token,
                                           client::ClientOptions options = {}) {
  options.address = address;
  options.token = token;
  options.timeout = std::chrono::seconds(20);
  return client::Client::Create(options);
}

absl::StatusCode Code(const absl::Status& s) { return s.code(); }

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_file_ = temp_.path() + "/tokens";
    WriteFile(
        token_file_,
        absl::StrCat("# role per token\n", kViewer, " viewer dashboards\n",
                     kTrainer, " trainer ci\n", kAdmin, " admin ops\n"));
    server_ = std::make_unique<TransferdServer>(
        TransferdServer::WithArgs({"--token-file", token_file_}));
    ASSERT_TRUE(server_->ok()) << server_->Log();
  }

  testing::TempDir temp_;
  std::string token_file_;
  std::unique_ptr<TransferdServer> server_;
};

TEST_F(TokenTest, RolesDecideWhatACallMayDo) {
  const std::string& addr = server_->address();
  // Health needs no token.
  auto health = ClientWith(addr, "")->CheckHealth("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::HealthStatus::kServing);

  auto none = ClientWith(addr, "")->GetServerInfo();
  EXPECT_EQ(Code(none.status()), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(none.status().message(), HasSubstr("bearer token"));
  auto wrong = ClientWith(addr, "not-a-token-of-this-server")->GetServerInfo();
  EXPECT_EQ(Code(wrong.status()), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(wrong.status().message(), HasSubstr("not valid"));

  auto viewer = ClientWith(addr, kViewer);
  EXPECT_TRUE(viewer->GetServerInfo().ok());
  EXPECT_TRUE(viewer->ListDatasets(v1::ListDatasetsRequest()).ok());
  EXPECT_TRUE(viewer->ListJobs(v1::ListJobsRequest()).ok());
  v1::CreateJobRequest create;  // invalid, but only a trainer gets to hear that
  auto denied = viewer->CreateJob(create);
  EXPECT_EQ(Code(denied.status()), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.status().message(), HasSubstr("needs the role trainer"));
  EXPECT_THAT(denied.status().message(),
              HasSubstr("\"dashboards\" has the role viewer"));

  auto trainer = ClientWith(addr, kTrainer);
  EXPECT_EQ(Code(trainer->CreateJob(create).status()),
            absl::StatusCode::kInvalidArgument);
  const absl::Status trainer_delete = trainer->DeleteDataset("datasets/nope");
  EXPECT_EQ(Code(trainer_delete), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(trainer_delete.message(), HasSubstr("needs the role admin"));
  EXPECT_EQ(Code(trainer->SetAlias("aliases/a", "models/nope").status()),
            absl::StatusCode::kPermissionDenied);

  auto admin = ClientWith(addr, kAdmin);
  EXPECT_EQ(Code(admin->DeleteDataset("datasets/nope")),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Code(admin->CreateJob(create).status()),
            absl::StatusCode::kInvalidArgument);

  // The server kept serving, and no token reached its log.
  EXPECT_TRUE(viewer->GetServerInfo().ok());
  const std::string log = server_->Log();
  for (const char* token :
       {kViewer, kTrainer, kAdmin, "not-a-token-of-this-server"}) {
    EXPECT_THAT(log, Not(HasSubstr(token)));
  }
}

TEST_F(TokenTest, SighupReloadsTheTokenFileAndKeepsItWhenInvalid) {
  const std::string& addr = server_->address();
  const std::string rotated = "viewer-token-rotated-0123456789";
  WriteFile(token_file_, absl::StrCat(rotated, " viewer dashboards\n", kAdmin,
                                      " admin ops\n"));
  server_->process().Signal(SIGHUP);
  // The reload is logged once done; wait for that line, not for a time.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server_->Log().find("token file reloaded") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    auto probe = ClientWith(addr, kAdmin)->GetServerInfo();  // paces the loop
    ASSERT_TRUE(probe.ok()) << probe.status();
  }
  ASSERT_THAT(server_->Log(), HasSubstr("token file reloaded: 2 tokens"));
  EXPECT_EQ(Code(ClientWith(addr, kViewer)->GetServerInfo().status()),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(ClientWith(addr, rotated)->GetServerInfo().ok());
  EXPECT_EQ(Code(ClientWith(addr, kTrainer)->GetServerInfo().status()),
            absl::StatusCode::kUnauthenticated);

  // A broken file is refused; the tokens in force stay.
  WriteFile(token_file_, "short admin\n");
  server_->process().Signal(SIGHUP);
  const auto deadline2 =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server_->Log().find("token file not reloaded") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline2) {
    ASSERT_TRUE(ClientWith(addr, rotated)->GetServerInfo().ok());
  }
  ASSERT_THAT(server_->Log(), HasSubstr("token file not reloaded"));
  EXPECT_TRUE(ClientWith(addr, rotated)->GetServerInfo().ok());
  EXPECT_THAT(server_->Log(), Not(HasSubstr(rotated)));
}

TEST_F(TokenTest, TransferctlSendsTheTokenFromFlagOrEnvironment) {
  const std::string& addr = server_->address();
  RunResult none = testing::Run(
      {testing::TransferctlBinary(), "--server", addr, "datasets", "ls"},
      {"TRANSFERD_TOKEN="});
  EXPECT_EQ(none.status.code, 1);
  EXPECT_THAT(none.err, HasSubstr("bearer token"));
  RunResult flag = testing::Run({testing::TransferctlBinary(), "--server", addr,
                                 "--token", kViewer, "datasets", "ls"},
                                {"TRANSFERD_TOKEN="});
  EXPECT_EQ(flag.status.code, 0) << flag.err;
  RunResult env = testing::Run(
      {testing::TransferctlBinary(), "--server", addr, "datasets", "ls"},
      {std::string("TRANSFERD_TOKEN=") + kViewer});
  EXPECT_EQ(env.status.code, 0) << env.err;
  RunResult denied = testing::Run({testing::TransferctlBinary(), "--server",
                                   addr, "datasets", "rm", "nope"},
                                  {std::string("TRANSFERD_TOKEN=") + kViewer});
  EXPECT_EQ(denied.status.code, 1);
  EXPECT_THAT(denied.err, HasSubstr("needs the role admin"));
  // A viewer's upload is refused on its header: no file is sent (no
  // progress line), the refusal names the role.
  const std::string folder = temp_.path() + "/images";
  fs::create_directories(folder + "/train");
  for (const char* name : {"cat.0.jpg", "dog.0.jpg"}) {
    WriteFile(folder + "/train/" + name, std::string(4096, 'x'));
  }
  RunResult upload =
      testing::Run({testing::TransferctlBinary(), "--server", addr, "datasets",
                    "upload", folder, "--id", "viewer-upload"},
                   {std::string("TRANSFERD_TOKEN=") + kViewer});
  EXPECT_EQ(upload.status.code, 1);
  EXPECT_THAT(upload.err, HasSubstr("needs the role trainer"));
  EXPECT_THAT(upload.err, Not(HasSubstr("upload ")));
}

TEST(TokenFileTest, AnInvalidTokenFileStopsTheStart) {
  testing::TempDir temp;
  const std::string file = temp.path() + "/tokens";
  WriteFile(file, "0123456789abcdef0123 superuser\n");
  RunResult r =
      testing::Run({testing::TransferdBinary(), "--listen", "127.0.0.1:0",
                    "--data-dir", temp.path() + "/data", "--token-file", file},
                   {"TRANSFERD_CONFIG="}, std::chrono::seconds(60));
  EXPECT_NE(r.status.code, 0);
  EXPECT_THAT(
      r.err,
      HasSubstr("line 1: role must be viewer, trainer, admin or worker"));
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    certs_ = temp_.path() + "/certs";
    RunResult made = testing::Run(
        {"/bin/bash", testing::SourcePath("tests/support/make_test_certs.sh"),
         certs_});
    ASSERT_EQ(made.status.code, 0) << made.err;
  }
  client::ClientOptions Tls(const std::string& cert = "") const {
    client::ClientOptions o;
    o.tls = true;
    o.tls_ca_file = certs_ + "/ca.crt";
    if (!cert.empty()) {
      o.tls_cert_file = certs_ + "/" + cert + ".crt";
      o.tls_key_file = certs_ + "/" + cert + ".key";
    }
    return o;
  }
  TransferdServer::Options ServerOptions(std::vector<std::string> extra) const {
    TransferdServer::Options o;
    o.args = {"--tls-cert", certs_ + "/server.crt", "--tls-key",
              certs_ + "/server.key"};
    o.args.insert(o.args.end(), extra.begin(), extra.end());
    o.client = Tls("client");
    return o;
  }

  testing::TempDir temp_;
  std::string certs_;
};

TEST_F(TlsTest, ServerCertificateIsVerifiedAndPlaintextRefused) {
  TransferdServer server(ServerOptions({}));
  ASSERT_TRUE(server.ok()) << server.Log();
  auto info = ClientWith(server.address(), "", Tls())->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(
      ClientWith(server.address(), "")->GetServerInfo().ok());  // plaintext
  client::ClientOptions untrusted = Tls();
  untrusted.tls_ca_file = certs_ + "/other-ca.crt";
  EXPECT_FALSE(
      ClientWith(server.address(), "", untrusted)->GetServerInfo().ok());

  RunResult ctl =
      testing::Run({testing::TransferctlBinary(), "--server", server.address(),
                    "--tls-ca", certs_ + "/ca.crt", "server", "info"},
                   {"TRANSFERD_TOKEN="});
  EXPECT_EQ(ctl.status.code, 0) << ctl.err;
}

TEST_F(TlsTest, ClientCertificatesAreRequiredWithAClientCa) {
  TransferdServer server(
      ServerOptions({"--tls-client-ca", certs_ + "/ca.crt"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  EXPECT_TRUE(
      ClientWith(server.address(), "", Tls("client"))->GetServerInfo().ok());
  EXPECT_FALSE(ClientWith(server.address(), "", Tls())->GetServerInfo().ok());
  EXPECT_FALSE(
      ClientWith(server.address(), "", Tls("stranger"))->GetServerInfo().ok());
  RunResult ctl = testing::Run(
      {testing::TransferctlBinary(), "--server", server.address(), "--tls-ca",
       certs_ + "/ca.crt", "--tls-cert", certs_ + "/client.crt", "--tls-key",
       certs_ + "/client.key", "--json", "server", "info"},
      {"TRANSFERD_TOKEN="});
  EXPECT_EQ(ctl.status.code, 0) << ctl.err;
}

// Each TLS mistake is named for what it is, not "is the server running?",
// and gRPC's own "E1205 ... Handshake failed" lines stay out of the output.
// The server, logging JSON, keeps one JSON object per line meanwhile.
TEST_F(TlsTest, TransferctlSaysWhatWentWrongWithTls) {
  TransferdServer::Options tls_options =
      ServerOptions({"--log-format", "json"});
  TransferdServer server(tls_options);
  ASSERT_TRUE(server.ok()) << server.Log();
  TransferdServer mtls(ServerOptions({"--tls-client-ca", certs_ + "/ca.crt"}));
  ASSERT_TRUE(mtls.ok()) << mtls.Log();
  TransferdServer plaintext;
  ASSERT_TRUE(plaintext.ok()) << plaintext.Log();
  const std::string ca = certs_ + "/ca.crt";
  struct Case {
    std::string what;
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"plaintext to a TLS server",
       {"--server", server.address()},
       "it likely expects TLS; connect with --tls-ca"},
      {"a CA that did not sign the server's certificate",
       {"--server", server.address(), "--tls-ca", certs_ + "/other-ca.crt"},
       "the server's certificate is not signed by a CA in --tls-ca"},
      {"a name the certificate does not carry",
       {"--server", server.address(), "--tls-ca", ca, "--tls-server-name",
        "wrong.example"},
       "not valid for the name \"wrong.example\""},
      {"no client certificate under mutual TLS",
       {"--server", mtls.address(), "--tls-ca", ca},
       "it likely requires a client certificate; give one with --tls-cert"},
      {"a client certificate the server does not accept",
       {"--server", mtls.address(), "--tls-ca", ca, "--tls-cert",
        certs_ + "/stranger.crt", "--tls-key", certs_ + "/stranger.key"},
       "does not accept the client certificate"},
      {"TLS to a plaintext server",
       {"--server", plaintext.address(), "--tls-ca", ca},
       "the server does not speak TLS"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {testing::TransferctlBinary(), "--timeout",
                                     "10"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.insert(argv.end(), {"server", "info"});
    RunResult r = testing::Run(argv, {"TRANSFERD_TOKEN=", "GRPC_VERBOSITY="});
    EXPECT_EQ(r.status.code, 3) << c.what << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << c.what;
    EXPECT_THAT(r.err, Not(HasSubstr("is the server running"))) << c.what;
    EXPECT_THAT(r.err, Not(HasSubstr("E1"))) << c.what;  // gRPC's log lines
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // The handshakes the server saw fail were logged as JSON like the rest.
  std::istringstream log(server.Log());
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
  }
  EXPECT_GT(lines, 3);
}

TEST_F(TlsTest, HealthPortAnswersPlaintextProbesAndNothingElse) {
  const int health_port = testing::FreeLoopbackPort();
  const std::string health_addr = "127.0.0.1:" + std::to_string(health_port);
  TransferdServer server(ServerOptions({"--health-listen", health_addr}));
  ASSERT_TRUE(server.ok()) << server.Log();
  auto health =
      ClientWith(health_addr, "")->CheckHealth("", std::chrono::seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::HealthStatus::kServing);
  auto info = ClientWith(health_addr, "")->GetServerInfo();
  EXPECT_EQ(Code(info.status()), absl::StatusCode::kUnimplemented);
}

TEST(PlaintextTest, NonLoopbackPlaintextNeedsTheFlag) {
  testing::TempDir temp;
  const std::string addr =
      "0.0.0.0:" + std::to_string(testing::FreeLoopbackPort());
  RunResult refused =
      testing::Run({testing::TransferdBinary(), "--listen", addr, "--data-dir",
                    temp.path() + "/data"},
                   {"TRANSFERD_CONFIG=", "TRANSFERD_ALLOW_PLAINTEXT="},
                   std::chrono::seconds(60));
  EXPECT_EQ(refused.status.code, 2);
  EXPECT_THAT(refused.err, HasSubstr("--allow-plaintext"));
  TransferdServer::Options o;
  o.listen = addr;
  o.args = {"--allow-plaintext", "--insecure-no-auth"};
  TransferdServer allowed(o);
  EXPECT_TRUE(allowed.ok()) << allowed.Log();
}

// Secure by default: a reachable address without tokens (or client
// certificates) is refused at start unless --insecure-no-auth says so, and
// so is a token file that is not there: the process exits, it never serves
// an open port.
TEST(PlaintextTest, ReachableServerRefusesToStartWithoutAuthentication) {
  testing::TempDir temp;
  const std::string addr =
      "0.0.0.0:" + std::to_string(testing::FreeLoopbackPort());
  const std::vector<std::string> env = {
      "TRANSFERD_CONFIG=", "TRANSFERD_TOKEN_FILE=",
      "TRANSFERD_INSECURE_NO_AUTH="};
  RunResult open =
      testing::Run({testing::TransferdBinary(), "--listen", addr,
                    "--allow-plaintext", "--data-dir", temp.path() + "/data"},
                   env, std::chrono::seconds(60));
  EXPECT_EQ(open.status.code, 2);
  EXPECT_THAT(open.err, HasSubstr("callers would not authenticate"));
  EXPECT_THAT(open.err, HasSubstr("--insecure-no-auth"));

  const std::string missing = temp.path() + "/secrets/tokens";
  RunResult no_file = testing::Run(
      {testing::TransferdBinary(), "--listen", addr, "--allow-plaintext",
       "--token-file", missing, "--data-dir", temp.path() + "/data"},
      env, std::chrono::seconds(60));
  EXPECT_EQ(no_file.status.code, 2);
  EXPECT_THAT(no_file.err, HasSubstr("--token-file"));
  EXPECT_THAT(no_file.err, HasSubstr(missing));
  EXPECT_FALSE(fs::exists(temp.path() + "/data"))
      << "a refused start must not create the data dir";
}

}  // namespace
}  // namespace transferd
