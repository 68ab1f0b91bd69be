// The real transferd binary on loopback: readiness, GetServerInfo through the
// client library, every contract service listed, an unknown method, reflection,
// logging, and a clean SIGTERM shutdown that leaves an intact SQLite store.
#include <signal.h>

#include <filesystem>
#include <future>
#include <sstream>

#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/core/util/build_info.h"
#include "server/core/util/store.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using ::testing::Contains;
using ::testing::HasSubstr;
using testing::TransferdServer;

std::unique_ptr<client::Client> ClientFor(const TransferdServer& server) {
  client::ClientOptions options;
  options.address = server.address();
  options.timeout = std::chrono::seconds(20);
  return client::Client::Create(options);
}

std::shared_ptr<grpc::Channel> ChannelFor(const TransferdServer& server) {
  return grpc::CreateChannel(server.address(),
                             grpc::InsecureChannelCredentials());
}

void Deadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

// Reads PRAGMA values through a raw read-only connection.
std::string Pragma(const std::string& db_path, const std::string& pragma) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return "<cannot open>";
  }
  sqlite3_stmt* stmt = nullptr;
  std::string value = "<no row>";
  if (sqlite3_prepare_v2(db, ("PRAGMA " + pragma).c_str(), -1, &stmt,
                         nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

TEST(ServerLifecycleTest, ServesHealthAndServerInfo) {
  TransferdServer server(
      TransferdServer::WithArgs({"--device", "cpu", "--threads", "1"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  auto client = ClientFor(server);

  auto health = client->CheckHealth("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::HealthStatus::kServing);

  auto info = client->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), core::GetBuildInfo().version);
  EXPECT_FALSE(info->build().torch_version().empty());
  EXPECT_FALSE(info->build().grpc_version().empty());
  // The server process's own malloc (the test binary links no tcmalloc), so
  // a link that lost tcmalloc (e.g. to --as-needed) fails here.
#if TRANSFERD_EXPECT_TCMALLOC
  EXPECT_THAT(info->build().allocator(), ::testing::StartsWith("tcmalloc "));
#else
  EXPECT_THAT(info->build().allocator(), ::testing::StartsWith("glibc malloc"));
#endif
  EXPECT_EQ(info->device().name(), "cpu");
  EXPECT_EQ(info->device().threads(), 1);
  EXPECT_GT(info->device().memory_bytes(), 0);
  EXPECT_GE(info->cpu().logical_cpus(), 1);
  EXPECT_EQ(info->limits().max_receive_message_bytes(), 8 * 1024 * 1024);
  EXPECT_EQ(info->limits().upload_chunk_bytes(), 1024 * 1024);
  EXPECT_EQ(info->limits().shutdown_grace_seconds(), 25);
  EXPECT_EQ(info->store_schema_version(), core::Store::LatestSchemaVersion());
  EXPECT_GT(info->start_time().seconds(), 0);
  EXPECT_THAT(info->implemented_services(), Contains("transferd.v1.Server"));
  EXPECT_THAT(info->implemented_services(), Contains("grpc.health.v1.Health"));
  EXPECT_THAT(info->implemented_services(),
              ::testing::Not(Contains(HasSubstr("reflection"))));
  std::map<std::string, int64_t> backbones;
  for (const auto& b : info->backbones()) backbones[b.name()] = b.parameters();
  EXPECT_EQ(backbones["vgg16"], 14714688);
  EXPECT_EQ(backbones["mobilenet"], 3228864);  // default alpha 1.0
  EXPECT_EQ(backbones.size(), 5u);
}

TEST(ServerLifecycleTest, EveryContractServiceIsImplemented) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  auto info = ClientFor(server)->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  for (const char* name :
       {v1::Datasets::service_full_name(), v1::Jobs::service_full_name(),
        v1::Models::service_full_name(), v1::Inference::service_full_name()}) {
    EXPECT_THAT(info->implemented_services(), Contains(std::string(name)));
  }
}

TEST(ServerLifecycleTest,
     UnknownMethodAnswersUnimplementedAndServerKeepsServing) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  auto channel = ChannelFor(server);
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx);
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/transferd.v1.Inference/NoSuchMethod",
                 grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  EXPECT_EQ(done.get_future().get().error_code(), grpc::UNIMPLEMENTED);
  auto health = ClientFor(server)->CheckHealth("");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, client::HealthStatus::kServing);
}

// Calls ServerReflectionInfo with one list_services request (field 7, empty
// string) through the generic stub; returns the status and raw response.
std::pair<grpc::Status, std::string> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx);
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof(request_bytes));
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::StubOptions(), &request, &response,
      [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return {status, bytes};
}

TEST(ServerLifecycleTest, ReflectionIsOffByDefaultAndOnByFlag) {
  {
    TransferdServer server;
    ASSERT_TRUE(server.ok()) << server.Log();
    auto [status, bytes] = ListServicesByReflection(ChannelFor(server));
    EXPECT_EQ(status.error_code(), grpc::UNIMPLEMENTED);
  }
  {
    TransferdServer server(TransferdServer::WithArgs({"--reflection"}));
    ASSERT_TRUE(server.ok()) << server.Log();
    auto [status, bytes] = ListServicesByReflection(ChannelFor(server));
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_THAT(bytes, HasSubstr("transferd.v1.Server"));
    EXPECT_THAT(bytes, HasSubstr("transferd.v1.Jobs"));
  }
}

TEST(ServerLifecycleTest, SigtermTurnsHealthNotServingAndExitsCleanly) {
  TransferdServer server(TransferdServer::WithArgs({"--shutdown-grace", "5"}));
  ASSERT_TRUE(server.ok()) << server.Log();

  // A health watcher sees SERVING, then NOT_SERVING as shutdown begins.
  auto health = grpc::health::v1::Health::NewStub(ChannelFor(server));
  grpc::ClientContext ctx;
  Deadline(ctx);
  grpc::health::v1::HealthCheckRequest request;
  auto watch = health->Watch(&ctx, request);
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  server.process().Signal(SIGTERM);
  // Health turns NOT_SERVING before the listener closes; the update may race
  // with the end of the stream, but SERVING is never reported again.
  while (watch->Read(&response)) {
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }

  auto exit = server.process().Wait(std::chrono::seconds(20));
  ASSERT_TRUE(exit.has_value()) << "no exit within 20 s\n" << server.Log();
  EXPECT_TRUE(exit->exited);
  EXPECT_EQ(exit->code, 0) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("stopped cleanly"));

  const std::string db = server.data_dir() + "/transferd.db";
  EXPECT_EQ(Pragma(db, "integrity_check"), "ok");
  EXPECT_EQ(Pragma(db, "journal_mode"), "wal");
  EXPECT_EQ(Pragma(db, "user_version"),
            std::to_string(core::Store::LatestSchemaVersion()));
  // The WAL was checkpointed into the main file at close.
  const auto wal = std::filesystem::path(db + "-wal");
  EXPECT_TRUE(!std::filesystem::exists(wal) ||
              std::filesystem::file_size(wal) == 0);
}

// Creates a data directory with a store (one clean server run), then holds
// the store's lock exclusively through a separate connection, as a backup
// tool might.
void HoldStoreLock(const std::string& data, sqlite3** holder) {
  {
    TransferdServer first(TransferdServer::WithDataDir(data));
    ASSERT_TRUE(first.ok()) << first.Log();
  }
  ASSERT_EQ(sqlite3_open((data + "/transferd.db").c_str(), holder), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(*holder,
                         "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; "
                         "SELECT count(*) FROM meta;",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
}

TEST(ServerLifecycleTest, NotServingDuringStartUpUntilTheStoreIsReady) {
  // Another process (here: this test) holds the store's lock, as a backup
  // tool might: the server listens and answers health with NOT_SERVING, and
  // turns SERVING once it can open the store.
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  sqlite3* holder = nullptr;
  ASSERT_NO_FATAL_FAILURE(HoldStoreLock(data, &holder));

  TransferdServer::Options options = TransferdServer::WithDataDir(data);
  options.wait_ready = false;
  TransferdServer server(options);
  auto health = grpc::health::v1::Health::NewStub(ChannelFor(server));
  grpc::ClientContext ctx;
  Deadline(ctx);
  ctx.set_wait_for_ready(true);
  auto watch = health->Watch(&ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response)) << server.Log();
  EXPECT_EQ(response.status(),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  ASSERT_EQ(sqlite3_exec(holder, "COMMIT", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(holder);
  ASSERT_TRUE(watch->Read(&response)) << server.Log();
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
      << server.Log();
  ctx.TryCancel();
  auto exit = server.Stop(SIGTERM, std::chrono::seconds(20));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->code, 0) << server.Log();
}

TEST(ServerLifecycleTest, SigtermDuringStartUpExitsCleanly) {
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  sqlite3* holder = nullptr;
  ASSERT_NO_FATAL_FAILURE(HoldStoreLock(data, &holder));
  TransferdServer::Options options = TransferdServer::WithDataDir(data);
  options.wait_ready = false;
  TransferdServer server(options);
  // Wait until it answers (NOT_SERVING: stuck on the lock), then stop it.
  auto health = grpc::health::v1::Health::NewStub(ChannelFor(server));
  grpc::ClientContext ctx;
  Deadline(ctx);
  ctx.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(
      health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &response)
          .ok());
  EXPECT_EQ(response.status(),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto exit = server.Stop(SIGTERM, std::chrono::seconds(20));
  ASSERT_TRUE(exit.has_value()) << server.Log();
  EXPECT_EQ(exit->code, 0) << server.Log();
  sqlite3_close(holder);
}

TEST(ServerLifecycleTest, SecondServerOnTheSameDataDirIsRefused) {
  TransferdServer first;
  ASSERT_TRUE(first.ok()) << first.Log();
  // It waits --startup-timeout for the lock (a predecessor may be shutting
  // down), then gives up naming the holder.
  auto result =
      testing::Run({testing::TransferdBinary(), "--listen",
                    "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort()),
                    "--data-dir", first.data_dir(), "--startup-timeout", "1"});
  EXPECT_TRUE(result.status.exited);
  EXPECT_EQ(result.status.code, 1);
  EXPECT_THAT(result.err, HasSubstr("waiting up to 1 s for it"));
  EXPECT_THAT(result.err, HasSubstr("in use by another transferd (pid " +
                                    std::to_string(first.process().pid()) +
                                    ") and stayed so"));
  // The first server is untouched.
  auto health = ClientFor(first)->CheckHealth("");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, client::HealthStatus::kServing);
}

TEST(ServerLifecycleTest, RestartKeepsTheStore) {
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  {
    TransferdServer server(TransferdServer::WithDataDir(data));
    ASSERT_TRUE(server.ok()) << server.Log();
    auto exit = server.Stop(SIGINT, std::chrono::seconds(20));
    ASSERT_TRUE(exit.has_value());
    EXPECT_EQ(exit->code, 0);
  }
  TransferdServer server(TransferdServer::WithDataDir(data));
  ASSERT_TRUE(server.ok()) << server.Log();
  EXPECT_THAT(
      server.Log(),
      HasSubstr(absl::StrCat("schema v", core::Store::LatestSchemaVersion())));
}

TEST(ServerLifecycleTest, UnusableAddressFailsAtStartWithAReason) {
  TransferdServer holder;
  ASSERT_TRUE(holder.ok()) << holder.Log();
  testing::TempDir dir;
  auto result = testing::Run({testing::TransferdBinary(), "--listen",
                              holder.address(), "--data-dir", dir.path()});
  EXPECT_EQ(result.status.code, 1);
  EXPECT_THAT(result.err, HasSubstr("cannot listen on " + holder.address()));
}

// In JSON mode every line is one object, and the fields of a structured
// line are keys of their own (not inside msg): the access log's method,
// request id, peer, code, duration and the caller's W3C trace id.
TEST(ServerLifecycleTest, JsonLogsAreOneObjectPerLineWithFieldsAsKeys) {
  TransferdServer server(TransferdServer::WithArgs({"--log-format", "json"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  ASSERT_TRUE(ClientFor(server)->GetServerInfo().ok());
  {
    auto stub = v1::Jobs::NewStub(ChannelFor(server));
    grpc::ClientContext ctx;
    Deadline(ctx);
    ctx.AddMetadata("traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub->ListJobs(&ctx, v1::ListJobsRequest(), &response).ok());
  }
  auto exit = server.Stop(SIGTERM, std::chrono::seconds(20));
  ASSERT_TRUE(exit.has_value());
  std::istringstream lines(server.Log());
  std::string line;
  int parsed = 0;
  nlohmann::json info_call, traced_call;
  while (std::getline(lines, line)) {
    auto json =
        nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(json.is_discarded()) << line;
    ASSERT_TRUE(json.contains("ts") && json.contains("level") &&
                json.contains("msg"))
        << line;
    if (json["msg"] == "rpc" &&
        json.value("method", "") == "/transferd.v1.Server/GetServerInfo") {
      info_call = json;
    }
    if (json["msg"] == "rpc" &&
        json.value("method", "") == "/transferd.v1.Jobs/ListJobs") {
      traced_call = json;
    }
    ++parsed;
  }
  EXPECT_GE(parsed, 4);
  ASSERT_TRUE(info_call.is_object()) << server.Log();
  EXPECT_EQ(info_call.value("code", ""), "OK");
  EXPECT_EQ(info_call.value("request_id", "").size(), 16u) << info_call;
  EXPECT_THAT(info_call.value("peer", ""), HasSubstr("127.0.0.1"));
  ASSERT_TRUE(info_call.contains("duration_ms"));
  EXPECT_TRUE(info_call["duration_ms"].is_number());
  EXPECT_FALSE(info_call.contains("trace_id"));
  ASSERT_TRUE(traced_call.is_object()) << server.Log();
  EXPECT_EQ(traced_call.value("trace_id", ""),
            "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST(ServerLifecycleTest, ClientRequestIdIsEchoedAndLogged) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  auto stub = v1::Jobs::NewStub(ChannelFor(server));
  grpc::ClientContext ctx;
  Deadline(ctx);
  ctx.AddMetadata("x-request-id", "req-42.a_b");
  v1::ListJobsResponse response;
  (void)stub->ListJobs(&ctx, v1::ListJobsRequest(), &response);
  auto md = ctx.GetServerInitialMetadata();
  auto it = md.find("x-request-id");
  ASSERT_NE(it, md.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "req-42.a_b");
  ASSERT_TRUE(server.Stop(SIGTERM, std::chrono::seconds(20)).has_value());
  EXPECT_THAT(server.Log(), HasSubstr("request_id=req-42.a_b"));
}

}  // namespace
}  // namespace transferd
