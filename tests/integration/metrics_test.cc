// The HTTP port against the real binary: the probes, the exposition (checked
// by Debian's promtool), the JSON error body, the token rules and TLS with
// gRPC's certificates (client certificates too); then a real
// Prometheus (Debian's prometheus) scraping transferd every second while a
// training job runs and Predict calls succeed and fail, queried through its
// HTTP API: the counts and the job's last epoch equal what the gRPC API
// reported.
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/job_support.h"
#include "tests/support/paths.h"
#include "tests/support/subprocess.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/inference.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using testing::TransferdServer;

// An executable on PATH, or "" (Debian's prometheus package installs both
// prometheus and promtool in /usr/bin).
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  const std::vector<std::string> dirs =
      absl::StrSplit(path == nullptr ? "/usr/bin" : path, ':');
  for (const std::string& dir : dirs) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return "";
}

struct Http {
  int status = 0;
  std::string body;
  std::string content_type;
};

Http Get(int port, const std::string& path, const std::string& token = "") {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(std::chrono::seconds(30));
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result res = client.Get(path.c_str(), headers);
  if (!res) return {};
  return {res->status, res->body, res->get_header_value("Content-Type")};
}

std::string WriteFile(const std::string& dir, const std::string& name,
                      const std::string& text) {
  const std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << text;
  return path;
}

// promtool's verdict on an exposition; empty when it passes.
std::string PromtoolProblems(const std::string& dir,
                             const std::string& exposition) {
  const std::string promtool = FindOnPath("promtool");
  if (promtool.empty())
    return "promtool is not installed (apt install prometheus)";
  const std::string file = WriteFile(dir, "metrics.txt", exposition);
  testing::RunResult r = testing::Run(
      {"/bin/sh", "-c", absl::StrCat(promtool, " check metrics < ", file)});
  if (r.status.exited && r.status.code == 0) return "";
  return r.out + r.err;
}

std::vector<std::string> HttpArgs(int port) {
  return {absl::StrCat("--http-listen=127.0.0.1:", port)};
}

TEST(MetricsHttpTest, ProbesAndAnExpositionPromtoolAccepts) {
  const int port = testing::FreeLoopbackPort();
  TransferdServer server(TransferdServer::WithArgs(HttpArgs(port)));
  ASSERT_TRUE(server.ok()) << server.Log();

  Http health = Get(port, "/healthz");
  EXPECT_EQ(health.status, 200);
  Http ready = Get(port, "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.body;
  Http metrics = Get(port, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.content_type, StartsWith("text/plain; version=0.0.4"));
  EXPECT_THAT(metrics.body, HasSubstr("\ntransferd_ready 1\n"));
  EXPECT_THAT(metrics.body, HasSubstr("transferd_build_info{"));
  EXPECT_THAT(metrics.body, HasSubstr("transferd_device_info{kind=\"cpu\""));
  // CUDA memory is a GPU's only: no such series on the CPU.
  EXPECT_THAT(metrics.body,
              Not(HasSubstr("\ntransferd_device_memory_allocated_bytes{")));
  EXPECT_THAT(metrics.body, HasSubstr("\nprocess_resident_memory_bytes "));
  EXPECT_THAT(metrics.body, HasSubstr("\ntransferd_jobs{state=\"queued\"} 0"));
  testing::TempDir dir;
  EXPECT_EQ(PromtoolProblems(dir.path(), metrics.body), "");

  Http missing = Get(port, "/no/such/page");
  EXPECT_EQ(missing.status, 404);
  const nlohmann::json error = nlohmann::json::parse(missing.body);
  EXPECT_EQ(error["error"]["code"], 404);
  EXPECT_EQ(error["error"]["status"], "NOT_FOUND");
  EXPECT_THAT(error["error"]["message"].get<std::string>(),
              HasSubstr("/no/such/page"));
}

TEST(MetricsHttpTest, TokensGuardAllButTheProbesAndMetrics) {
  testing::TempDir dir;
  const std::string viewer = "viewer-token-0123456789";
  const std::string tokens =
      WriteFile(dir.path(), "tokens", absl::StrCat(viewer, " viewer ci\n"));
  ::chmod(tokens.c_str(), 0600);
  {
    const int port = testing::FreeLoopbackPort();
    std::vector<std::string> args = HttpArgs(port);
    args.push_back("--token-file=" + tokens);
    TransferdServer::Options options = TransferdServer::WithArgs(args);
    options.client.token = viewer;
    TransferdServer server(options);
    ASSERT_TRUE(server.ok()) << server.Log();
    EXPECT_EQ(Get(port, "/metrics").status, 200);
    EXPECT_EQ(Get(port, "/readyz").status, 200);
    Http anonymous = Get(port, "/no/such/page");
    EXPECT_EQ(anonymous.status, 401);
    EXPECT_THAT(anonymous.body, HasSubstr("UNAUTHENTICATED"));
    EXPECT_THAT(anonymous.body, HasSubstr("send the header"));
    EXPECT_EQ(Get(port, "/no/such/page", "wrong-token-0123456789").status, 401);
    EXPECT_EQ(Get(port, "/no/such/page", viewer).status, 404);
  }
  {
    const int port = testing::FreeLoopbackPort();
    std::vector<std::string> args = HttpArgs(port);
    args.push_back("--token-file=" + tokens);
    args.push_back("--metrics-require-token");
    TransferdServer::Options options = TransferdServer::WithArgs(args);
    options.client.token = viewer;
    TransferdServer server(options);
    ASSERT_TRUE(server.ok()) << server.Log();
    EXPECT_EQ(Get(port, "/metrics").status, 401);
    EXPECT_EQ(Get(port, "/metrics", viewer).status, 200);
    EXPECT_EQ(Get(port, "/healthz").status, 200);
  }
}

// The HTTP port speaks TLS with gRPC's certificate and key, and requires
// client certificates when gRPC does.
TEST(MetricsHttpTest, TheHttpPortUsesTheGrpcTlsSettings) {
  // With TLS 1.3 a client without a certificate learns of its refusal only
  // when it writes the request after the handshake: OpenSSL's write to the
  // closed socket must fail with EPIPE, not kill the test with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  testing::TempDir dir;
  const std::string certs = dir.path() + "/certs";
  testing::RunResult made = testing::Run(
      {"/bin/bash", testing::SourcePath("tests/support/make_test_certs.sh"),
       certs});
  ASSERT_EQ(made.status.code, 0) << made.err;
  for (const bool mutual : {false, true}) {
    const int port = testing::FreeLoopbackPort();
    TransferdServer::Options options;
    options.args = HttpArgs(port);
    options.args.insert(options.args.end(),
                        {"--tls-cert", certs + "/server.crt", "--tls-key",
                         certs + "/server.key"});
    if (mutual) {
      options.args.push_back("--tls-client-ca");
      options.args.push_back(certs + "/ca.crt");
    }
    options.client.tls = true;
    options.client.tls_ca_file = certs + "/ca.crt";
    options.client.tls_cert_file = certs + "/client.crt";
    options.client.tls_key_file = certs + "/client.key";
    TransferdServer server(options);
    ASSERT_TRUE(server.ok()) << server.Log();

    auto get = [&](bool with_cert) {
      std::unique_ptr<httplib::SSLClient> client =
          with_cert ? std::make_unique<httplib::SSLClient>(
                          "127.0.0.1", port, certs + "/client.crt",
                          certs + "/client.key")
                    : std::make_unique<httplib::SSLClient>("127.0.0.1", port);
      client->set_ca_cert_path((certs + "/ca.crt").c_str());
      client->enable_server_certificate_verification(true);
      httplib::Result res = client->Get("/readyz");
      return res ? res->status : 0;
    };
    EXPECT_EQ(get(/*with_cert=*/true), 200) << "mutual " << mutual;
    EXPECT_EQ(get(/*with_cert=*/false), mutual ? 0 : 200)
        << "mutual " << mutual;
    EXPECT_EQ(Get(port, "/readyz").status, 0)
        << "plaintext HTTP was answered on a TLS port";
  }
}

// A Prometheus server on loopback scraping one target every second, with
// its own storage; queried through /api/v1/query.
class Prometheus {
 public:
  Prometheus(const std::string& binary, const std::string& dir, int target)
      : port_(testing::FreeLoopbackPort()) {
    const std::string config =
        WriteFile(dir, "prometheus.yml",
                  absl::StrCat("global:\n"
                               "  scrape_interval: 1s\n"
                               "  scrape_timeout: 1s\n"
                               "scrape_configs:\n"
                               "  - job_name: transferd\n"
                               "    static_configs:\n"
                               "      - targets: ['127.0.0.1:",
                               target, "']\n"));
    process_.emplace(testing::Subprocess::Spawn(
        {binary, "--config.file=" + config,
         "--storage.tsdb.path=" + dir + "/tsdb",
         absl::StrCat("--web.listen-address=127.0.0.1:", port_),
         "--log.level=warn"},
        {}, dir + "/prometheus.log"));
  }

  // The value of an instant query's single sample; nullopt when it has no
  // sample (yet).
  std::optional<double> Query(const std::string& promql) const {
    httplib::Client client("127.0.0.1", port_);
    httplib::Result res =
        client.Get("/api/v1/query", httplib::Params{{"query", promql}},
                   httplib::Headers{});
    if (!res || res->status != 200) return std::nullopt;
    const nlohmann::json body =
        nlohmann::json::parse(res->body, nullptr, false);
    if (body.is_discarded() || body["status"] != "success") return std::nullopt;
    const nlohmann::json& result = body["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nullopt;
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  // Waits (polling the API, 60 s at most) until `promql` has the value
  // `want`: Prometheus scrapes on its own schedule, so its answer is the
  // only thing to wait for.
  std::optional<double> WaitFor(const std::string& promql, double want) const {
    std::optional<double> got;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      got = Query(promql);
      if (got.has_value() && *got == want) return got;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return got;
  }

  // Waits likewise until `promql` has no sample any more.
  bool WaitForAbsent(const std::string& promql) const {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (!Query(promql).has_value()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

 private:
  int port_;
  std::optional<testing::Subprocess> process_;
};

grpc::Status Predict(const TransferdServer& server, const std::string& model,
                     const std::vector<std::string>& images,
                     v1::PredictResponse* response) {
  auto stub = v1::Inference::NewStub(testing::Channel(server));
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx);
  v1::PredictRequest request;
  request.set_model(model);
  for (size_t i = 0; i < images.size(); ++i) {
    v1::Image* image = request.add_images();
    image->set_id(absl::StrCat("img", i));
    image->set_data(images[i]);
  }
  return stub->Predict(&ctx, request, response);
}

TEST(PrometheusTest, ScrapedCountsAndLastEpochEqualWhatTheApiReported) {
  const std::string prometheus = FindOnPath("prometheus");
  if (prometheus.empty()) {
    GTEST_SKIP() << "the prometheus binary is not installed (Debian package "
                    "prometheus; scripts/install-deps installs it)";
  }
  const int http_port = testing::FreeLoopbackPort();
  TransferdServer server(TransferdServer::WithArgs(HttpArgs(http_port)));
  ASSERT_TRUE(server.ok()) << server.Log();
  testing::TempDir dir;
  Prometheus prom(prometheus, dir.path(), http_port);

  const std::vector<testing::LabelledImage> images = testing::TinyDataset(8);
  testing::UploadImages(server, "tiny", images);
  v1::Job created;
  grpc::Status s = testing::CreateJob(server, testing::SmallSpec("tiny", 3),
                                      &created, "train1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::Job job = testing::WaitForJob(server, "jobs/train1");
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.failure_reason();
  ASSERT_EQ(job.history_size(), 3);
  const v1::EpochMetrics& last = job.history(2);

  // Three requests answered OK: 6 images classified, 2 refused as not
  // images; one request for a model that does not exist.
  const std::string model = job.result_model();
  const std::string model_id = model.substr(std::string("models/").size());
  v1::PredictResponse response;
  ASSERT_TRUE(Predict(server, model,
                      {images[0].bytes, images[1].bytes, images[2].bytes,
                       images[3].bytes},
                      &response)
                  .ok());
  ASSERT_TRUE(Predict(server, model,
                      {images[4].bytes, "not an image", images[5].bytes},
                      &response)
                  .ok());
  EXPECT_EQ(response.predictions(1).status().code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Predict(server, model, {"garbage"}, &response).ok());
  EXPECT_EQ(
      Predict(server, "models/no-such-model", {images[0].bytes}, &response)
          .error_code(),
      grpc::StatusCode::NOT_FOUND);

  const std::string m = absl::StrCat("model=\"", model_id, "\"");
  EXPECT_EQ(prom.WaitFor(absl::StrCat("transferd_inference_images_total{", m,
                                      ",outcome=\"ok\"}"),
                         6),
            6);
  EXPECT_EQ(prom.WaitFor(absl::StrCat("transferd_inference_images_total{", m,
                                      ",outcome=\"invalid_argument\"}"),
                         2),
            2);
  EXPECT_EQ(prom.WaitFor(absl::StrCat("transferd_inference_requests_total{", m,
                                      ",outcome=\"ok\"}"),
                         3),
            3);
  EXPECT_EQ(prom.WaitFor("transferd_rpc_requests_total{method=\"transferd.v1."
                         "Inference/Predict\",code=\"OK\"}",
                         3),
            3);
  EXPECT_EQ(prom.WaitFor("transferd_rpc_requests_total{method=\"transferd.v1."
                         "Inference/Predict\",code=\"NOT_FOUND\"}",
                         1),
            1);
  EXPECT_EQ(prom.WaitFor("transferd_jobs_finished_total{kind=\"train\","
                         "state=\"succeeded\"}",
                         1),
            1);
  EXPECT_EQ(prom.WaitFor("transferd_jobs{state=\"succeeded\"}", 1), 1);
  EXPECT_EQ(prom.WaitFor("transferd_dataset_upload_files_total",
                         static_cast<double>(images.size())),
            static_cast<double>(images.size()));
  EXPECT_EQ(prom.WaitFor(absl::StrCat("transferd_model_loaded{", m, "}"), 1),
            1);

  // The running job's gauges: gone now, their last values in Prometheus.
  auto last_value = [&](const std::string& name) {
    return prom.Query(
        absl::StrCat("last_over_time(", name, "{job_id=\"train1\"}[10m])"));
  };
  ASSERT_TRUE(last_value("transferd_job_epoch").has_value())
      << "the job's gauges were never scraped";
  EXPECT_EQ(*last_value("transferd_job_epoch"), 3);
  EXPECT_NEAR(*last_value("transferd_job_loss"), last.loss(), 1e-9);
  EXPECT_NEAR(*last_value("transferd_job_accuracy"), last.accuracy(), 1e-9);
  EXPECT_NEAR(*last_value("transferd_job_val_loss"), last.val_loss(), 1e-9);
  EXPECT_NEAR(*last_value("transferd_job_val_accuracy"), last.val_accuracy(),
              1e-9);
  EXPECT_TRUE(prom.WaitForAbsent("transferd_job_epoch{job_id=\"train1\"}"))
      << "a finished job's gauges stay in the exposition";

  // The exposition with every kind of series in it still passes promtool.
  Http metrics = Get(http_port, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(PromtoolProblems(dir.path(), metrics.body), "");
}

}  // namespace
}  // namespace transferd
