// The JSON API and the event stream of the HTTP port against the real
// binary: jobs created and followed over HTTP (every event once and in order,
// the same ones gRPC's WatchJob reads, resumed with Last-Event-ID), Predict
// with multipart and JSON bodies, aliases, the error codes and JSON error
// body, tokens and roles, cross-origin refusals, the body limit, and event
// streams that are bounded and cost the trainer nothing when stalled.
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/stat.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/job_support.h"
#include "tests/support/subprocess.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TransferdServer;
using json = nlohmann::json;

struct Answer {
  int status = 0;
  json body;
  std::string text;
  httplib::Headers headers;
};

class Http {
 public:
  explicit Http(int port) : port_(port) {}

  Answer Call(const std::string& method, const std::string& path,
              const std::string& body = "",
              const std::string& type = "application/json",
              httplib::Headers headers = {}) const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(std::chrono::seconds(120));
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    httplib::Result res = [&] {
      if (method == "POST")
        return client.Post(path.c_str(), headers, body, type.c_str());
      if (method == "PUT")
        return client.Put(path.c_str(), headers, body, type.c_str());
      if (method == "DELETE") return client.Delete(path.c_str(), headers);
      if (method == "OPTIONS") return client.Options(path.c_str(), headers);
      return client.Get(path.c_str(), headers);
    }();
    Answer a;
    if (!res) return a;
    a.status = res->status;
    a.text = res->body;
    a.headers = res->headers;
    a.body = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    return a;
  }
  Answer Get(const std::string& path) const { return Call("GET", path); }

  std::string token;

 private:
  int port_;
};

struct SseEvent {
  int64_t id = 0;
  std::string type;
  json data;
};

// Reads a whole event stream (until the server ends it).
std::vector<SseEvent> ReadStream(int port, const std::string& path,
                                 const std::string& last_event_id = "",
                                 int* status = nullptr) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(std::chrono::seconds(120));
  httplib::Headers headers;
  if (!last_event_id.empty()) headers.emplace("Last-Event-ID", last_event_id);
  std::string text;
  httplib::Result res =
      client.Get(path.c_str(), headers, [&](const char* data, size_t n) {
        text.append(data, n);
        return true;
      });
  if (status != nullptr) *status = res ? res->status : 0;
  std::vector<SseEvent> out;
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    SseEvent e;
    bool any = false;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "id: ")) {
        EXPECT_TRUE(absl::SimpleAtoi(line, &e.id)) << line;
      } else if (absl::ConsumePrefix(&line, "event: ")) {
        e.type = std::string(line);
        any = true;
      } else if (absl::ConsumePrefix(&line, "data: ")) {
        e.data = json::parse(std::string(line));
      }
    }
    if (any) out.push_back(std::move(e));
  }
  return out;
}

std::string SpecJson(const v1::JobSpec& spec) {
  std::string out;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(spec, &out).ok());
  return out;
}

std::string CreateBody(const std::string& id, const v1::JobSpec& spec) {
  return absl::StrCat("{\"job_id\": \"", id, "\", \"spec\": ", SpecJson(spec),
                      "}");
}

std::vector<int64_t> GrpcEventSequences(const TransferdServer& server,
                                        const std::string& name) {
  auto stub = v1::Jobs::NewStub(testing::Channel(server));
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx);
  v1::WatchJobRequest req;
  req.set_name(name);
  req.set_follow(false);
  auto reader = stub->WatchJob(&ctx, req);
  std::vector<int64_t> out;
  v1::JobEvent e;
  while (reader->Read(&e)) out.push_back(e.sequence());
  EXPECT_TRUE(reader->Finish().ok());
  return out;
}

std::string Multipart(
    const std::string& boundary,
    const std::vector<std::pair<std::string, std::string>>& files) {
  std::string body;
  for (const auto& [name, bytes] : files) {
    absl::StrAppend(&body, "--", boundary,
                    "\r\nContent-Disposition: form-data; name=\"image\"; "
                    "filename=\"",
                    name, "\"\r\nContent-Type: image/png\r\n\r\n", bytes,
                    "\r\n");
  }
  absl::StrAppend(&body, "--", boundary, "--\r\n");
  return body;
}

std::vector<std::string> HttpArgs(int port) {
  return {absl::StrCat("--http-listen=127.0.0.1:", port)};
}

TEST(HttpApiTest, JobsFollowedOverHttpPredictAndAliases) {
  const int port = testing::FreeLoopbackPort();
  TransferdServer server(TransferdServer::WithArgs(HttpArgs(port)));
  ASSERT_TRUE(server.ok()) << server.Log();
  Http http(port);
  const std::vector<testing::LabelledImage> images = testing::TinyDataset(8);
  testing::UploadImages(server, "tiny", images);

  Answer info = http.Get("/api/v1/server");
  ASSERT_EQ(info.status, 200) << info.text;
  EXPECT_EQ(info.body["device"]["name"], "cpu");
  EXPECT_FALSE(info.body["build"]["grpc_version"].get<std::string>().empty());
  EXPECT_GT(
      std::stoll(
          info.body["limits"]["max_receive_message_bytes"].get<std::string>()),
      0);
  Answer datasets = http.Get("/api/v1/datasets");
  ASSERT_EQ(datasets.status, 200);
  EXPECT_EQ(datasets.body["datasets"][0]["name"], "datasets/tiny");
  EXPECT_EQ(http.Get("/api/v1/datasets/tiny").body["files"], "24");

  Answer created =
      http.Call("POST", "/api/v1/jobs",
                CreateBody("j1", testing::SmallSpec("tiny", /*epochs=*/3)));
  ASSERT_EQ(created.status, 200) << created.text;
  EXPECT_EQ(created.body["name"], "jobs/j1");
  Answer again = http.Call("POST", "/api/v1/jobs",
                           CreateBody("j1", testing::SmallSpec("tiny", 3)));
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.body["error"]["status"], "ALREADY_EXISTS");

  // Followed from the start while it runs: every event once, in order, then
  // the end; the same sequence numbers gRPC's WatchJob reads.
  std::vector<SseEvent> events = ReadStream(port, "/api/v1/jobs/j1/events");
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back().type, "end");
  std::vector<int64_t> sequences;
  int epochs = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].type, "job_event");
    EXPECT_EQ(std::stoll(events[i].data["sequence"].get<std::string>()),
              events[i].id);
    if (events[i].data.contains("epoch_end")) ++epochs;
    sequences.push_back(events[i].id);
  }
  EXPECT_EQ(epochs, 3);
  EXPECT_EQ(sequences, GrpcEventSequences(server, "jobs/j1"));
  Answer job = http.Get("/api/v1/jobs/j1");
  ASSERT_EQ(job.status, 200);
  EXPECT_EQ(job.body["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(job.body["history"].size(), 3u);
  EXPECT_EQ(std::stoll(job.body["last_event_sequence"].get<std::string>()),
            sequences.back());

  // Resumed after the fourth event: exactly the rest.
  std::vector<SseEvent> rest =
      ReadStream(port, "/api/v1/jobs/j1/events", std::to_string(sequences[3]));
  ASSERT_EQ(rest.size(), sequences.size() - 4 + 1);
  for (size_t i = 0; i + 1 < rest.size(); ++i) {
    EXPECT_EQ(rest[i].id, sequences[i + 4]);
  }
  int status = 0;
  ReadStream(port, "/api/v1/jobs/j1/events?after=abc", "", &status);
  EXPECT_EQ(status, 400);
  ReadStream(port, "/api/v1/jobs/nope/events", "", &status);
  EXPECT_EQ(status, 404);

  Answer succeeded = http.Get("/api/v1/jobs?state=JOB_STATE_SUCCEEDED");
  ASSERT_EQ(succeeded.status, 200);
  ASSERT_EQ(succeeded.body["jobs"].size(), 1u);
  EXPECT_FALSE(succeeded.body["jobs"][0].contains("history") &&
               !succeeded.body["jobs"][0]["history"].empty());
  Answer bad_state = http.Get("/api/v1/jobs?state=DONE");
  EXPECT_EQ(bad_state.status, 400);
  EXPECT_THAT(bad_state.body["error"]["message"].get<std::string>(),
              HasSubstr("state"));
  EXPECT_EQ(http.Get("/api/v1/jobs?page_size=-1").status, 400);

  // Predict: a multipart body with a real image and a broken one.
  const std::string model = job.body["result_model"];
  const std::string model_id = model.substr(model.find('/') + 1);
  const testing::LabelledImage& cat = images.back();
  const std::string boundary = "----transferd-test-boundary";
  Answer predicted = http.Call(
      "POST", absl::StrCat("/api/v1/models/", model_id, ":predict"),
      Multipart(boundary,
                {{"cat.png", cat.bytes}, {"junk.png", "not an image"}}),
      absl::StrCat("multipart/form-data; boundary=", boundary));
  ASSERT_EQ(predicted.status, 200) << predicted.text;
  EXPECT_EQ(predicted.body["model"], model);
  ASSERT_EQ(predicted.body["predictions"].size(), 2u);
  const json& first = predicted.body["predictions"][0];
  EXPECT_EQ(first["id"], "cat.png");
  EXPECT_EQ(first["status"]["code"], 0);
  EXPECT_EQ(first["scores"].size(), 2u);
  const json& junk = predicted.body["predictions"][1];
  EXPECT_EQ(junk["status"]["code"], 3);  // INVALID_ARGUMENT, that image only
  EXPECT_EQ(junk["label"], "");

  // The same image as a PredictRequest in JSON, through an alias.
  Answer alias = http.Call("PUT", "/api/v1/aliases/prod",
                           absl::StrCat("{\"model\": \"", model, "\"}"));
  ASSERT_EQ(alias.status, 200) << alias.text;
  EXPECT_EQ(alias.body["name"], "aliases/prod");
  EXPECT_EQ(http.Get("/api/v1/aliases").body["aliases"][0]["model"], model);
  Answer by_alias =
      http.Call("POST", "/api/v1/aliases/prod:predict",
                absl::StrCat("{\"images\": [{\"id\": \"c\", \"data\": \"",
                             absl::Base64Escape(cat.bytes), "\"}]}"));
  ASSERT_EQ(by_alias.status, 200) << by_alias.text;
  EXPECT_EQ(by_alias.body["predictions"][0]["label"], first["label"]);
  EXPECT_EQ(by_alias.body["predictions"][0]["probability"],
            first["probability"]);
  // top_k as in PredictRequest: here both classes, most probable first.
  Answer top = http.Call(
      "POST", "/api/v1/aliases/prod:predict",
      absl::StrCat("{\"top_k\": 2, \"images\": [{\"id\": \"c\", \"data\": \"",
                   absl::Base64Escape(cat.bytes), "\"}]}"));
  ASSERT_EQ(top.status, 200) << top.text;
  ASSERT_EQ(top.body["predictions"][0]["top"].size(), 2u);
  EXPECT_EQ(top.body["predictions"][0]["top"][0]["label"], first["label"]);
  EXPECT_EQ(http.Call("POST", "/api/v1/aliases/prod:predict",
                      "{\"top_k\": -1, \"images\": [{\"data\": \"AAAA\"}]}")
                .status,
            400);

  Answer none =
      http.Call("POST", "/api/v1/aliases/prod:predict", "{\"images\": []}");
  EXPECT_EQ(none.status, 400);
  EXPECT_THAT(none.body["error"]["message"].get<std::string>(),
              HasSubstr("at least one image"));
  EXPECT_EQ(http.Call("POST", "/api/v1/models/nope:predict",
                      "{\"images\": [{\"data\": \"AAAA\"}]}")
                .status,
            404);
  Answer typo =
      http.Call("POST", "/api/v1/aliases/prod:predict", "{\"imagez\": []}");
  EXPECT_EQ(typo.status, 400);
  EXPECT_THAT(typo.body["error"]["message"].get<std::string>(),
              HasSubstr("imagez"));

  EXPECT_EQ(http.Call("DELETE", "/api/v1/aliases/prod").status, 200);
  EXPECT_EQ(http.Call("DELETE", "/api/v1/aliases/prod").status, 404);
  Answer models = http.Get("/api/v1/models");
  ASSERT_EQ(models.body["models"].size(), 1u);
  EXPECT_EQ(models.body["models"][0]["name"], model);
  EXPECT_EQ(http.Call("POST", "/api/v1/jobs/j1:cancel").body["error"]["status"],
            "FAILED_PRECONDITION");
}

TEST(HttpApiTest, TokensRolesOriginsAndTheBodyLimit) {
  testing::TempDir dir;
  const std::string tokens = absl::StrCat(dir.path(), "/tokens");
  std::ofstream(tokens) << "viewer-token-0123456789 viewer v\n"
                        << "trainer-token-0123456789 trainer t\n";
  ::chmod(tokens.c_str(), 0600);
  const int port = testing::FreeLoopbackPort();
  TransferdServer::Options options = TransferdServer::WithArgs(
      {absl::StrCat("--http-listen=127.0.0.1:", port), "--token-file=" + tokens,
       "--max-receive-message-bytes=4194304"});
  options.client.token = "viewer-token-0123456789";
  TransferdServer server(options);
  ASSERT_TRUE(server.ok()) << server.Log();
  Http http(port);

  // The page and its files need no token, and forbid inline scripts.
  Answer page = http.Get("/");
  ASSERT_EQ(page.status, 200);
  EXPECT_THAT(page.text, HasSubstr("<script src=\"/assets/app.js\""));
  const std::string csp = httplib::detail::get_header_value(
      page.headers, "Content-Security-Policy", 0, "");
  EXPECT_THAT(csp, HasSubstr("script-src 'self'"));
  EXPECT_THAT(csp, Not(HasSubstr("unsafe-inline")));
  EXPECT_EQ(http.Get("/assets/app.js").status, 200);

  Answer anonymous = http.Get("/api/v1/jobs");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.body["error"]["status"], "UNAUTHENTICATED");
  http.token = "wrong-token-0123456789";
  EXPECT_EQ(http.Get("/api/v1/jobs").status, 401);
  http.token = "viewer-token-0123456789";
  EXPECT_EQ(http.Get("/api/v1/jobs").status, 200);
  Answer viewer_post = http.Call("POST", "/api/v1/jobs",
                                 CreateBody("v", testing::SmallSpec("x", 1)));
  EXPECT_EQ(viewer_post.status, 403);
  EXPECT_EQ(viewer_post.body["error"]["status"], "PERMISSION_DENIED");
  http.token = "trainer-token-0123456789";
  EXPECT_EQ(http.Call("DELETE", "/api/v1/models/m").status, 403);
  // Past the role check: the dataset does not exist.
  Answer trainer_post = http.Call("POST", "/api/v1/jobs",
                                  CreateBody("t", testing::SmallSpec("x", 1)));
  EXPECT_EQ(trainer_post.status, 400) << trainer_post.text;
  EXPECT_THAT(trainer_post.body["error"]["message"].get<std::string>(),
              HasSubstr("spec.dataset"));

  // Another site's page: refused before anything runs; no CORS grant.
  Answer forged = http.Call(
      "POST", "/api/v1/jobs", CreateBody("f", testing::SmallSpec("x", 1)),
      "application/json", {{"Origin", "http://evil.example"}});
  EXPECT_EQ(forged.status, 403);
  EXPECT_THAT(forged.body["error"]["message"].get<std::string>(),
              HasSubstr("cross-origin"));
  Answer preflight = http.Call("OPTIONS", "/api/v1/jobs", "", "",
                               {{"Origin", "http://evil.example"},
                                {"Access-Control-Request-Method", "POST"}});
  EXPECT_FALSE(preflight.headers.count("Access-Control-Allow-Origin"));
  Answer same_origin =
      http.Call("GET", "/api/v1/jobs", "", "",
                {{"Origin", absl::StrCat("http://127.0.0.1:", port)}});
  EXPECT_EQ(same_origin.status, 200) << same_origin.text;
  // A form post (text/plain) is not JSON.
  EXPECT_EQ(http.Call("POST", "/api/v1/jobs", "{}", "text/plain").status, 400);

  // Bodies over gRPC's --max-receive-message-bytes.
  Answer big = http.Call("POST", "/api/v1/models/m:predict",
                         std::string(5 << 20, 'x'), "application/json");
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.body["error"]["status"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(http.Get("/api/v1/jobs").status, 200);  // still serving
}

// Sends `bytes` on a new connection and reads until `until` arrives, the
// server closes it, or 30 s pass.
std::string RawExchange(int port, const std::string& bytes,
                        const std::string& until) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::write(fd, bytes.data(), bytes.size()) ==
          static_cast<ssize_t>(bytes.size())) {
    char buffer[4096];
    while (got.find(until) == std::string::npos) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      got.append(buffer, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return got;
}

TEST(HttpApiTest, BrowserAttacksAreRefused) {
  testing::TempDir dir;
  const std::string tokens = absl::StrCat(dir.path(), "/tokens");
  std::ofstream(tokens) << "admin-token-0123456789 admin a\n";
  ::chmod(tokens.c_str(), 0600);
  const int port = testing::FreeLoopbackPort();
  TransferdServer::Options options =
      TransferdServer::WithArgs({absl::StrCat("--http-listen=127.0.0.1:", port),
                                 "--token-file=" + tokens});
  options.client.token = "admin-token-0123456789";
  TransferdServer server(options);
  ASSERT_TRUE(server.ok()) << server.Log();
  Http http(port);
  http.token = "admin-token-0123456789";

  // Another site's page (Fetch Metadata), even with a token it could not
  // have: refused; the page itself may be linked from anywhere.
  Answer cross = http.Call("GET", "/api/v1/jobs", "", "",
                           {{"Sec-Fetch-Site", "cross-site"}});
  EXPECT_EQ(cross.status, 403);
  EXPECT_THAT(cross.body["error"]["message"].get<std::string>(),
              HasSubstr("cross-site request refused"));
  EXPECT_EQ(http.Call("GET", "/v2/models/x/ready", "", "",
                      {{"Sec-Fetch-Site", "same-site"}})
                .status,
            403);
  EXPECT_EQ(
      http.Call("GET", "/", "", "", {{"Sec-Fetch-Site", "cross-site"}}).status,
      200);
  EXPECT_EQ(http.Call("GET", "/api/v1/jobs", "", "",
                      {{"Sec-Fetch-Site", "same-origin"}})
                .status,
            200);

  // A refused request's body is never read as a request: everything the
  // connection answers until the server closes it (idle, 5 s) is the 401.
  const std::string smuggled =
      "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  const std::string got = RawExchange(
      port,
      absl::StrCat("POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\nContent-Length: ",
                   smuggled.size(), "\r\n\r\n", smuggled),
      /*until=*/"(read until closed)");
  EXPECT_THAT(got, ::testing::StartsWith("HTTP/1.1 401"));
  EXPECT_THAT(got, Not(HasSubstr("ready")));
  EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << got;

  // Too deeply nested JSON is refused before anything walks it.
  Answer deep = http.Call(
      "POST", "/v2/models/x/infer",
      absl::StrCat("{\"inputs\": [{\"name\": \"images\", \"datatype\": "
                   "\"BYTES\", \"shape\": [1], \"data\": ",
                   std::string(100000, '['), std::string(100000, ']'), "}]}"));
  EXPECT_EQ(deep.status, 400);
  EXPECT_THAT(deep.text, HasSubstr("nested deeper than 16"));
  EXPECT_EQ(http.Get("/api/v1/jobs").status, 200);
}

TEST(HttpApiTest, WithoutTokensOnlyAddressesAreAnswered) {
  const int port = testing::FreeLoopbackPort();
  TransferdServer server(TransferdServer::WithArgs(HttpArgs(port)));
  ASSERT_TRUE(server.ok()) << server.Log();
  Http http(port);
  // A DNS rebinding page reaches 127.0.0.1 under its own name.
  Answer rebound = http.Call("GET", "/api/v1/models", "", "",
                             {{"Host", absl::StrCat("evil.example:", port)}});
  EXPECT_EQ(rebound.status, 403);
  EXPECT_THAT(rebound.body["error"]["message"].get<std::string>(),
              HasSubstr("DNS rebinding"));
  EXPECT_EQ(http.Call("GET", "/api/v1/models", "", "",
                      {{"Host", absl::StrCat("localhost:", port)}})
                .status,
            200);
  EXPECT_EQ(http.Get("/api/v1/models").status, 200);  // Host: 127.0.0.1
}

// A connection that asks for a job's events and never reads them.
class StalledReader {
 public:
  StalledReader(int port, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    connected_ = connected_ && ::write(fd_, request.data(), request.size()) ==
                                   static_cast<ssize_t>(request.size());
  }
  ~StalledReader() { ::close(fd_); }
  bool connected() const { return connected_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST(HttpApiTest, StalledEventStreamsAreBoundedAndCostTheTrainerNothing) {
  const int port = testing::FreeLoopbackPort();
  std::vector<std::string> args = HttpArgs(port);
  args.push_back("--http-threads=16");
  TransferdServer server(TransferdServer::WithArgs(args));
  ASSERT_TRUE(server.ok()) << server.Log();
  Http http(port);
  testing::UploadImages(server, "tiny", testing::TinyDataset(8));
  // "slow" waits behind a long job until the streams are all open.
  v1::Job job;
  ASSERT_TRUE(testing::CreateJob(server, testing::SmallSpec("tiny", 500), &job,
                                 "blocker")
                  .ok());
  ASSERT_TRUE(
      testing::CreateJob(server, testing::SmallSpec("tiny", 4), &job, "slow")
          .ok());

  // The listener's 16 threads serve at most 4 streams: 4 readers that never
  // read hold them all; the 5th is refused, other routes still answer.
  std::vector<std::unique_ptr<StalledReader>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(
        std::make_unique<StalledReader>(port, "/api/v1/jobs/slow/events"));
    ASSERT_TRUE(stalled.back()->connected());
  }
  // The readers' requests are served in the order the listener accepts
  // them; wait (bounded) until all 4 streams are open.
  int refused = 0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    ReadStream(port, "/api/v1/jobs/slow/events?follow=false", "", &status);
    if (status == 429) {
      refused = status;
      break;
    }
    ASSERT_EQ(status, 200);
  }
  EXPECT_EQ(refused, 429);
  EXPECT_EQ(http.Get("/api/v1/jobs/slow").status, 200);

  // The job runs to its end while nobody reads.
  ASSERT_EQ(http.Call("POST", "/api/v1/jobs/blocker:cancel").status, 200);
  v1::Job done = testing::WaitForJob(server, "jobs/slow");
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.history_size(), 4);

  // The stalled streams end with the job (their last events fit the socket
  // buffers) and give their places back.
  int status = 0;
  const auto later =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < later && status != 200) {
    ReadStream(port, "/api/v1/jobs/slow/events?follow=false", "", &status);
  }
  EXPECT_EQ(status, 200);
}

}  // namespace
}  // namespace transferd
