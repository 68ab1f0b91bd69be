#include "server/app/config.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/paths.h"
#include "tests/support/subprocess.h"

namespace transferd::app {
namespace {

using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name :
         {"TRANSFERD_CONFIG", "TRANSFERD_LISTEN", "TRANSFERD_DATA_DIR",
          "TRANSFERD_DEVICE", "TRANSFERD_THREADS", "TRANSFERD_LOG_FORMAT",
          "TRANSFERD_LOG_LEVEL", "TRANSFERD_SHUTDOWN_GRACE",
          "TRANSFERD_REFLECTION", "TRANSFERD_MAX_RECEIVE_MESSAGE_BYTES",
          "TRANSFERD_MAX_SEND_MESSAGE_BYTES", "TRANSFERD_UPLOAD_CHUNK_BYTES"}) {
      unsetenv(name);
      set_.push_back(name);
    }
  }
  void TearDown() override {
    for (const std::string& name : set_) unsetenv(name.c_str());
  }

  void SetEnv(const std::string& name, const std::string& value) {
    setenv(name.c_str(), value.c_str(), 1);
    set_.push_back(name);
  }

  ParseOutcome Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "transferd");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return ParseServerConfig(static_cast<int>(argv.size()), argv.data());
  }

  std::string WriteFile(const std::string& content) {
    std::string path = dir_.path() + "/transferd.toml";
    std::ofstream(path) << content;
    return path;
  }

  testing::TempDir dir_;
  std::vector<std::string> set_;
};

TEST_F(ConfigTest, DefaultsAreLoopbackAndLocalDataDir) {
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  const ServerConfig& c = *out.config;
  EXPECT_EQ(c.rpc.listen_address, "127.0.0.1:50051");
  EXPECT_EQ(c.engine.data_dir.root, "transferd-data");
  EXPECT_EQ(c.engine.device.device, "auto");
  EXPECT_EQ(c.engine.device.threads, 0);
  EXPECT_EQ(c.log.format, "text");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.rpc.shutdown_grace, std::chrono::seconds(25));
  EXPECT_FALSE(c.rpc.reflection);
  EXPECT_EQ(c.rpc.max_receive_message_bytes, 8 * 1024 * 1024);
  EXPECT_EQ(c.rpc.upload_chunk_bytes, 1024 * 1024);
  EXPECT_TRUE(c.config_file.empty());
}

TEST_F(ConfigTest, FlagsSetEveryField) {
  const std::string tokens = WriteFile("t0ken admin\n");
  ParseOutcome out = Parse({"--listen",
                            "0.0.0.0:6000",
                            "--data-dir",
                            "/srv/td",
                            "--device",
                            "cuda:1",
                            "--threads",
                            "3",
                            "--log-format",
                            "json",
                            "--log-level",
                            "debug",
                            "--shutdown-grace",
                            "7",
                            "--reflection",
                            "--max-receive-message-bytes",
                            "1048576",
                            "--max-send-message-bytes",
                            "2097152",
                            "--upload-chunk-bytes",
                            "65536",
                            "--allow-plaintext",
                            "--health-listen",
                            "0.0.0.0:6001",
                            "--token-file",
                            tokens,
                            "--max-concurrent-streams",
                            "20",
                            "--grpc-memory-bytes",
                            "33554432",
                            "--max-rpc-threads",
                            "16",
                            "--min-ping-seconds",
                            "30",
                            "--max-connection-idle-seconds",
                            "600",
                            "--max-request-seconds",
                            "9",
                            "--interactive-share",
                            "0.3",
                            "--interactive-burst-ms",
                            "20"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  const ServerConfig& c = *out.config;
  EXPECT_EQ(c.rpc.listen_address, "0.0.0.0:6000");
  EXPECT_TRUE(c.rpc.allow_plaintext);
  EXPECT_EQ(c.rpc.health_listen_address, "0.0.0.0:6001");
  EXPECT_EQ(c.rpc.token_file, tokens);
  EXPECT_EQ(c.rpc.max_concurrent_streams, 20);
  EXPECT_EQ(c.rpc.grpc_memory_bytes, 33554432);
  EXPECT_EQ(c.rpc.max_rpc_threads, 16);
  EXPECT_EQ(c.rpc.min_ping_interval, std::chrono::seconds(30));
  EXPECT_EQ(c.rpc.max_connection_idle, std::chrono::seconds(600));
  EXPECT_EQ(c.rpc.max_request_time, std::chrono::seconds(9));
  EXPECT_EQ(c.engine.data_dir.root, "/srv/td");
  EXPECT_EQ(c.engine.device.device, "cuda:1");
  EXPECT_EQ(c.engine.device.threads, 3);
  EXPECT_EQ(c.log.format, "json");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.rpc.shutdown_grace, std::chrono::seconds(7));
  EXPECT_TRUE(c.rpc.reflection);
  EXPECT_EQ(c.rpc.max_receive_message_bytes, 1048576);
  EXPECT_EQ(c.rpc.max_send_message_bytes, 2097152);
  EXPECT_EQ(c.rpc.upload_chunk_bytes, 65536);
  EXPECT_DOUBLE_EQ(c.engine.interactive_share, 0.3);
  EXPECT_EQ(c.engine.interactive_burst, std::chrono::milliseconds(20));
}

TEST_F(ConfigTest, PlaintextOffLoopbackAndHalfConfiguredTlsAreUsageErrors) {
  for (const char* address :
       {"127.0.0.1:1", "127.8.9.10:1", "localhost:1", "[::1]:1"}) {
    EXPECT_TRUE(Parse({"--listen", address}).config.has_value()) << address;
  }
  for (const char* address :
       {"0.0.0.0:1", "10.0.0.5:1", "[::]:1", "gpu-box:1"}) {
    ParseOutcome out = Parse({"--listen", address});
    EXPECT_FALSE(out.config.has_value()) << address;
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_THAT(out.output, HasSubstr("--allow-plaintext")) << address;
  }
  const std::string pem = WriteFile("not really PEM, only has to exist\n");
  EXPECT_TRUE(Parse({"--listen", "0.0.0.0:1", "--tls-cert", pem, "--tls-key",
                     pem, "--insecure-no-auth"})
                  .config.has_value());
  ParseOutcome half = Parse({"--tls-cert", pem});
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_THAT(half.output, HasSubstr("--tls-cert and --tls-key go together"));
  ParseOutcome ca = Parse({"--tls-client-ca", pem});
  EXPECT_EQ(ca.exit_code, 2);
  EXPECT_THAT(ca.output, HasSubstr("--tls-client-ca needs TLS"));
  EXPECT_EQ(
      Parse({"--tls-cert", "/no/such/file.pem", "--tls-key", pem}).exit_code,
      2);
}

// Secure by default: an address others can reach (gRPC or HTTP) needs
// tokens or client certificates, or the explicit --insecure-no-auth;
// loopback alone needs neither.
TEST_F(ConfigTest, ReachableAddressesNeedAuthenticationOrTheInsecureFlag) {
  const std::string pem = WriteFile("not really PEM, only has to exist\n");
  const std::vector<std::string> tls = {"--tls-cert", pem, "--tls-key", pem};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = {"--listen", "0.0.0.0:1"};
    args.insert(args.end(), tls.begin(), tls.end());
    args.insert(args.end(), more.begin(), more.end());
    return Parse(args);
  };
  ParseOutcome open = with({});
  EXPECT_FALSE(open.config.has_value());
  EXPECT_EQ(open.exit_code, 2);
  EXPECT_THAT(open.output,
              HasSubstr("--listen 0.0.0.0:1 is not a loopback address and "
                        "callers would not authenticate"));
  EXPECT_THAT(open.output, HasSubstr("--insecure-no-auth"));
  EXPECT_TRUE(with({"--token-file", pem}).config.has_value());
  EXPECT_TRUE(with({"--tls-client-ca", pem}).config.has_value());
  EXPECT_TRUE(with({"--insecure-no-auth"}).config.has_value());

  // The HTTP port counts too; loopback on both needs nothing.
  ParseOutcome http =
      Parse({"--http-listen", "0.0.0.0:8080", "--allow-plaintext"});
  EXPECT_EQ(http.exit_code, 2);
  EXPECT_THAT(http.output, HasSubstr("--http-listen 0.0.0.0:8080 is not a "
                                     "loopback address"));
  EXPECT_TRUE(
      Parse({"--listen", "127.0.0.1:1", "--http-listen"}).config.has_value());

  SetEnv("TRANSFERD_INSECURE_NO_AUTH", "true");
  EXPECT_TRUE(with({}).config.has_value());
}

// The HTTP port is off unless asked for, loopback when asked for without an
// address, and follows gRPC's rules: its TLS files, plaintext only on
// loopback unless allowed, a token file behind --metrics-require-token.
TEST_F(ConfigTest, FollowMakesAReadOnlyReplicaAndItsSettingsNeedIt) {
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_TRUE(out.config->engine.follow_primary.empty());

  const std::string token = WriteFile("replica-token\n");
  out = Parse({"--follow", "primary.example:50051", "--follow-token-file",
               token, "--follow-keep-models", "3"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->follow.primary, "primary.example:50051");
  EXPECT_EQ(out.config->engine.follow_primary, "primary.example:50051");
  EXPECT_EQ(out.config->follow.token_file, token);
  EXPECT_EQ(out.config->engine.replica_keep_models, 3);

  out = Parse({"--follow-token-file", token});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("need --follow PRIMARY"));
  out = Parse({"--follow", "p:1", "--follow-cert", token});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("--follow-cert and --follow-key"));
  out = Parse({"--follow", "no-port"});
  EXPECT_EQ(out.exit_code, 2);
}

TEST_F(ConfigTest, CoordinatorMakesAWorkerAndTorchrunsEnvironmentIsHonoured) {
  for (const char* name : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"})
    unsetenv(name);
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_FALSE(out.config->engine.worker);
  EXPECT_EQ(out.config->engine.rendezvous_port, 29500);

  const std::string token = WriteFile("worker-token-0123456789\n");
  out = Parse({"--coordinator", "coord.example:50051", "--worker-name", "w7",
               "--worker-token-file", token, "--rendezvous-address", "10.0.0.7",
               "--collective-timeout-seconds", "15"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_TRUE(out.config->engine.worker);
  EXPECT_EQ(out.config->worker.coordinator, "coord.example:50051");
  EXPECT_EQ(out.config->worker.name, "w7");
  EXPECT_EQ(out.config->worker.advertise_address, "10.0.0.7");
  EXPECT_EQ(out.config->engine.collective_timeout, std::chrono::seconds(15));
  out = Parse({"--worker-name", "w7"});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("need --coordinator ADDRESS"));
  out = Parse({"--coordinator", "c:1", "--follow", "p:1"});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("exclude each other"));

  // As torchrun or a PyTorchJob starts it: rank 0 coordinates with its
  // TCPStore on MASTER_PORT, the other ranks join MASTER_ADDR.
  SetEnv("WORLD_SIZE", "3");
  SetEnv("MASTER_ADDR", "job-master-0");
  SetEnv("MASTER_PORT", "23456");
  SetEnv("RANK", "0");
  out = Parse({"--listen", "127.0.0.1:50051"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_FALSE(out.config->engine.worker);
  EXPECT_EQ(out.config->engine.rendezvous_address, "job-master-0");
  EXPECT_EQ(out.config->engine.rendezvous_port, 23456);
  SetEnv("RANK", "2");
  out = Parse({"--listen", "127.0.0.1:50051"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_TRUE(out.config->engine.worker);
  EXPECT_EQ(out.config->worker.coordinator, "job-master-0:50051");
  SetEnv("RANK", "3");
  out = Parse({});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("RANK, MASTER_ADDR or MASTER_PORT"));
  // An explicit --coordinator wins over the environment.
  out = Parse({"--coordinator", "c:1"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->worker.coordinator, "c:1");
}

TEST_F(ConfigTest, HttpPortIsOffByDefaultAndSharesGrpcSecurity) {
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->http.listen_address, "");
  out = Parse({"--http-listen"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->http.listen_address, "127.0.0.1:8080");
  out = Parse({"--http-listen", "127.0.0.1:0"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->http.listen_address, "127.0.0.1:0");

  out = Parse({"--http-listen", "0.0.0.0:8080"});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("--http-listen 0.0.0.0:8080"));
  EXPECT_TRUE(Parse({"--http-listen", "0.0.0.0:8080", "--allow-plaintext",
                     "--insecure-no-auth"})
                  .config.has_value());
  const std::string pem = WriteFile("not really PEM, only has to exist\n");
  out = Parse({"--listen", "0.0.0.0:1", "--http-listen", "0.0.0.0:8080",
               "--tls-cert", pem, "--tls-key", pem, "--token-file", pem});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->http.tls_cert_file, pem);
  EXPECT_EQ(out.config->http.tls_key_file, pem);

  out = Parse({"--http-listen", "--metrics-require-token"});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("--metrics-require-token needs "
                                    "--token-file"));
  out = Parse({"--metrics-require-token"});
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("needs --http-listen"));

  SetEnv("TRANSFERD_HTTP_LISTEN", "127.0.0.1:9100");
  out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->http.listen_address, "127.0.0.1:9100");
}

TEST_F(ConfigTest, EnvironmentSetsEverySetting) {
  // Every documented setting has an environment variable (Kubernetes passes
  // configuration that way).
  for (const SettingDoc& doc : DescribeSettings()) {
    EXPECT_THAT(doc.env, ::testing::StartsWith("TRANSFERD_")) << doc.flag;
  }
  SetEnv("TRANSFERD_LISTEN", "127.0.0.1:7000");
  SetEnv("TRANSFERD_THREADS", "2");
  SetEnv("TRANSFERD_REFLECTION", "true");
  SetEnv("TRANSFERD_SHUTDOWN_GRACE", "3");
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->rpc.listen_address, "127.0.0.1:7000");
  EXPECT_EQ(out.config->engine.device.threads, 2);
  EXPECT_TRUE(out.config->rpc.reflection);
  EXPECT_EQ(out.config->rpc.shutdown_grace, std::chrono::seconds(3));
}

TEST_F(ConfigTest, PrecedenceIsFlagThenEnvThenFileThenDefault) {
  const std::string file = WriteFile(
      "listen = \"127.0.0.1:1111\"\n"
      "threads = 1\n"
      "log-level = \"warn\"\n"
      "data-dir = \"/from/file\"\n");
  SetEnv("TRANSFERD_THREADS", "2");
  SetEnv("TRANSFERD_LISTEN", "127.0.0.1:2222");
  ParseOutcome out = Parse({"--config", file, "--listen", "127.0.0.1:3333"});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  const ServerConfig& c = *out.config;
  EXPECT_EQ(c.rpc.listen_address, "127.0.0.1:3333");  // flag
  EXPECT_EQ(c.engine.device.threads, 2);              // env over file
  EXPECT_EQ(c.log.level, "warn");                     // file over default
  EXPECT_EQ(c.engine.data_dir.root, "/from/file");    // file
  EXPECT_EQ(c.log.format, "text");                    // default
  EXPECT_EQ(c.config_file, file);
}

TEST_F(ConfigTest, ConfigFileFromEnvironment) {
  SetEnv("TRANSFERD_CONFIG", WriteFile("device = \"cpu\"\n"));
  ParseOutcome out = Parse({});
  ASSERT_TRUE(out.config.has_value()) << out.output;
  EXPECT_EQ(out.config->engine.device.device, "cpu");
}

TEST_F(ConfigTest, UnknownConfigFileKeyIsAnError) {
  ParseOutcome out = Parse({"--config", WriteFile("treads = 4\n")});
  EXPECT_FALSE(out.config.has_value());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("unknown setting \"treads\""));
}

TEST_F(ConfigTest, InvalidEnvironmentValueIsAUsageError) {
  SetEnv("TRANSFERD_LOG_FORMAT", "yaml");
  ParseOutcome out = Parse({});
  EXPECT_FALSE(out.config.has_value());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("--log-format"));
}

TEST_F(ConfigTest, MissingConfigFileIsAnError) {
  ParseOutcome out = Parse({"--config", dir_.path() + "/absent.toml"});
  EXPECT_FALSE(out.config.has_value());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr("absent.toml"));
}

struct BadValue {
  std::string name;
  std::vector<std::string> args;
  std::string mentions;
};

void PrintTo(const BadValue& v, std::ostream* os) { *os << v.name; }

class ConfigRejectsTest : public ConfigTest,
                          public ::testing::WithParamInterface<BadValue> {};

TEST_P(ConfigRejectsTest, WithUsageErrorNamingTheProblem) {
  ParseOutcome out = Parse(GetParam().args);
  EXPECT_FALSE(out.config.has_value());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_THAT(out.output, HasSubstr(GetParam().mentions));
}

INSTANTIATE_TEST_SUITE_P(
    BadValues, ConfigRejectsTest,
    ::testing::Values(
        BadValue{"NegativeThreads", {"--threads", "-1"}, "--threads"},
        BadValue{"WordThreads", {"--threads", "many"}, "--threads"},
        BadValue{"UnknownDevice",
                 {"--device", "tpu"},
                 "expected auto, cpu, cuda or cuda:N"},
        BadValue{"BadCudaIndex",
                 {"--device", "cuda:x"},
                 "expected auto, cpu, cuda or cuda:N"},
        BadValue{"LogFormat", {"--log-format", "xml"}, "--log-format"},
        BadValue{"LogLevel", {"--log-level", "loud"}, "--log-level"},
        BadValue{"ListenWithoutHost", {"--listen", "50051"}, "HOST:PORT"},
        BadValue{"ListenPortRange", {"--listen", "127.0.0.1:99999"}, "port"},
        BadValue{
            "NegativeGrace", {"--shutdown-grace", "-5"}, "--shutdown-grace"},
        BadValue{"TinyMessages",
                 {"--max-receive-message-bytes", "100"},
                 "--max-receive-message-bytes"},
        BadValue{"ChunkAboveMessage",
                 {"--max-receive-message-bytes", "131072",
                  "--upload-chunk-bytes", "131072"},
                 "--upload-chunk-bytes"},
        BadValue{"UnknownFlag", {"--no-such-flag"}, "--no-such-flag"},
        BadValue{
            "ShareOfOne", {"--interactive-share", "1"}, "--interactive-share"},
        BadValue{"BadEnvValueIsNamed", {"--threads=x"}, "--threads"}),
    [](const ::testing::TestParamInfo<BadValue>& info) {
      return info.param.name;
    });

TEST_F(ConfigTest, HelpAndVersionExitZero) {
  ParseOutcome help = Parse({"--help"});
  EXPECT_FALSE(help.config.has_value());
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.output, HasSubstr("--data-dir"));
  EXPECT_THAT(help.output, HasSubstr("TRANSFERD_DATA_DIR"));

  ParseOutcome version = Parse({"--version"});
  EXPECT_FALSE(version.config.has_value());
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.output, HasSubstr("0."));
}

}  // namespace
}  // namespace transferd::app

namespace transferd::app {
namespace {

// README.md's configuration table must list every setting with its
// environment variable and default, so the documentation cannot drift.
TEST(ConfigDocsTest, ReadmeTableListsEverySetting) {
  std::ifstream in(testing::SourcePath("README.md"));
  ASSERT_TRUE(in) << "README.md not found";
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (const SettingDoc& doc : DescribeSettings()) {
    const std::string flag = "| `" + doc.flag + "` |";
    const std::string* row = nullptr;
    for (const std::string& line : lines) {
      if (line.rfind(flag, 0) == 0) row = &line;
    }
    ASSERT_NE(row, nullptr) << "README.md has no row for " << doc.flag;
    EXPECT_THAT(*row, HasSubstr("`" + doc.env + "`")) << doc.flag;
    if (!doc.default_value.empty()) {
      EXPECT_THAT(*row, HasSubstr("`" + doc.default_value + "`")) << doc.flag;
    }
  }
}

}  // namespace
}  // namespace transferd::app
