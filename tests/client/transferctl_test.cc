// The real transferctl binary against a real transferd.
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/transferd_server.h"

namespace transferd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::RunResult;
using testing::TransferdServer;

RunResult Ctl(std::vector<std::string> args,
              std::vector<std::string> env = {"TRANSFERD_ADDR="}) {
  args.insert(args.begin(), testing::TransferctlBinary());
  return testing::Run(args, env, std::chrono::seconds(60));
}

class TransferctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TransferdServer(TransferdServer::WithArgs({"--threads", "1"}));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(server_->ok()) << server_->Log(); }
  static TransferdServer* server_;
};
TransferdServer* TransferctlTest::server_ = nullptr;

TEST_F(TransferctlTest, ServerInfoAsJson) {
  RunResult r = Ctl({"--server", server_->address(), "server", "info", "--json"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["device"]["name"], "cpu");
  EXPECT_EQ(json["device"]["threads"], 1);
  EXPECT_FALSE(json["version"].get<std::string>().empty());
  EXPECT_TRUE(json["cpu"].contains("amx_bf16"));
  EXPECT_EQ(json["limits"]["max_receive_message_bytes"], "8388608");
}

TEST_F(TransferctlTest, ServerInfoAsText) {
  RunResult r = Ctl({"server", "info", "--server", server_->address()});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("device      cpu"));
  EXPECT_THAT(r.out, HasSubstr("transferd.v1.Server"));
}

TEST_F(TransferctlTest, AddressFromEnvironment) {
  RunResult r = Ctl({"server", "health"}, {"TRANSFERD_ADDR=" + server_->address()});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_EQ(r.out, "server: SERVING\n");
}

TEST_F(TransferctlTest, HealthJsonAndUnknownService) {
  RunResult r = Ctl({"--server", server_->address(), "--json", "server", "health"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["status"], "SERVING");

  RunResult unknown = Ctl({"--server", server_->address(), "server", "health",
                           "--service", "no.such.Service"});
  EXPECT_EQ(unknown.status.code, 4);
  EXPECT_THAT(unknown.out, HasSubstr("SERVICE_UNKNOWN"));
}

TEST_F(TransferctlTest, ServerErrorsArePrintedWithExitCodeOne) {
  RunResult r = Ctl({"--server", server_->address(), "jobs", "ls"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_THAT(r.err, StartsWith("transferctl: "));
  EXPECT_THAT(r.err, HasSubstr("Jobs.ListJobs is not implemented"));
}

TEST(TransferctlNoServerTest, UnreachableServerIsOneSentenceAndExitThree) {
  const std::string address =
      "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  RunResult r = Ctl({"--server", address, "server", "info"});
  EXPECT_EQ(r.status.code, 3);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "transferctl: cannot reach transferd at " + address +
                       " (connection refused); is the server running? Set "
                       "--server or TRANSFERD_ADDR\n");
}

TEST(TransferctlNoServerTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Ctl({}).status.code, 2);
  EXPECT_EQ(Ctl({"server"}).status.code, 2);
  EXPECT_EQ(Ctl({"frobnicate"}).status.code, 2);
  EXPECT_EQ(Ctl({"--timeout", "-1", "server", "info"}).status.code, 2);
  RunResult help = Ctl({"--help"});
  EXPECT_EQ(help.status.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Exit codes"));
}

TEST(TransferctlNoServerTest, HealthWaitsForAServerThatComesUpLate) {
  // Health --wait blocks until the server appears and reports SERVING.
  testing::TempDir dir;
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  std::vector<std::string> argv = {testing::TransferctlBinary(), "--server",
                                   address, "server", "health", "--wait", "60"};
  auto waiter = testing::Subprocess::Spawn(argv, {"TRANSFERD_ADDR="},
                                           dir.path() + "/ctl.log");
  auto server = testing::Subprocess::Spawn(
      {testing::TransferdBinary(), "--listen", address, "--data-dir",
       dir.path() + "/data"},
      {}, dir.path() + "/server.log");
  auto exit = waiter.Wait(std::chrono::seconds(90));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->code, 0);
  server.Signal(SIGTERM);
  auto server_exit = server.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(server_exit.has_value());
  EXPECT_EQ(server_exit->code, 0);
}

}  // namespace
}  // namespace transferd
