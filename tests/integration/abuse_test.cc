// What arrives from the network cannot take the server down. Against the
// real binary: a corpus of hostile images to Predict and of hostile files and
// streams to UploadDataset, each answered with a precise status while the
// server stays SERVING and its memory bounded; 100 clients killed in the
// middle of a PredictStream, a WatchJob or an upload, after which threads and
// memory return to their baseline; and a Predict soak with a leak bound.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "tests/support/job_support.h"
#include "tests/support/paths.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using testing::EncodeTestImage;
using ::testing::HasSubstr;
using testing::JpegHeader;
using testing::PngHeader;
using testing::TransferdServer;

// A field of /proc/PID/status ("VmRSS", "Threads"), in its own unit.
int64_t ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0)
      return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}
int64_t RssMiB(TransferdServer& s) {
  return ProcStatus(s.process().pid(), "VmRSS") / 1024;
}
int64_t Threads(TransferdServer& s) {
  return ProcStatus(s.process().pid(), "Threads");
}

bool Serving(const TransferdServer& server) {
  client::ClientOptions o;
  o.address = server.address();
  auto health = client::Client::Create(o)->CheckHealth("");
  return health.ok() && *health == client::HealthStatus::kServing;
}

// Polls `done` (the server frees resources asynchronously) for up to 30 s.
bool Eventually(const std::function<bool()>& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

struct Hostile {
  std::string name;
  std::string bytes;
};

// Bytes that are not a usable image, each for a different reason.
std::vector<Hostile> HostileImages() {
  const std::string jpeg = EncodeTestImage(64, 64, ".jpg", 11);
  const std::string png = EncodeTestImage(64, 64, ".png", 12);
  return {
      {"random bytes", RandomBytes(4096, 1)},
      {"zero bytes", ""},
      {"one byte", "\xff"},
      {"truncated JPEG", jpeg.substr(0, jpeg.size() / 2)},
      {"JPEG without its first byte", jpeg.substr(1)},
      {"truncated PNG", png.substr(0, png.size() / 2)},
      {"PNG signature only", png.substr(0, 8)},
      {"wrong magic (GIF)", "GIF89a" + RandomBytes(512, 2)},
      {"wrong magic (PDF)", "%PDF-1.7\n" + RandomBytes(512, 3)},
      {"PNG header 60000x60000", PngHeader(60000, 60000)},
      {"JPEG header 60000x60000", JpegHeader(60000, 60000)},
      {"PNG header 2^20+1 wide", PngHeader((1u << 20) + 1, 1)},
      {"PNG header 2^31-1 x 2^31-1", PngHeader(0x7fffffffu, 0x7fffffffu)},
      {"JPEG header 65535x65535", JpegHeader(65535, 65535)},
      {"JPEG header 0x0", JpegHeader(0, 0)},
      {"PNG header 0 wide", PngHeader(0, 10)},
  };
}

class AbuseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ =
        new TransferdServer(TransferdServer::WithArgs({"--threads", "1"}));
    ASSERT_TRUE(server_->ok()) << server_->Log();
    testing::UploadImages(*server_, "tiny", testing::TinyDataset(8));
    v1::Job job;
    grpc::Status s = testing::CreateJob(*server_, testing::SmallSpec("tiny", 1),
                                        &job, "tiny1");
    ASSERT_TRUE(s.ok()) << s.error_message();
    const v1::Job done = testing::WaitForJob(*server_, "jobs/tiny1");
    ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.failure_reason();
    model_ = new std::string(done.result_model());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_;
  }
  void SetUp() override { ASSERT_TRUE(server_ != nullptr && server_->ok()); }

  static v1::PredictRequest Request(const std::vector<std::string>& images) {
    v1::PredictRequest r;
    r.set_model(*model_);
    for (size_t i = 0; i < images.size(); ++i) {
      v1::Image* image = r.add_images();
      image->set_id(std::to_string(i));
      image->set_data(images[i]);
    }
    return r;
  }

  static grpc::Status Predict(const v1::PredictRequest& request,
                              v1::PredictResponse* response) {
    auto stub = v1::Inference::NewStub(testing::Channel(*server_));
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx, 60);
    return stub->Predict(&ctx, request, response);
  }

  static TransferdServer* server_;
  static std::string* model_;
};
TransferdServer* AbuseTest::server_ = nullptr;
std::string* AbuseTest::model_ = nullptr;

TEST_F(AbuseTest, HostileImagesGetAPreciseStatusEachAndTheServerHolds) {
  const std::string good = EncodeTestImage(40, 40, ".png", 7);
  v1::PredictResponse warm;
  ASSERT_TRUE(Predict(Request({good}), &warm).ok());
  const int64_t rss_before = RssMiB(*server_);

  // All of them in one request, a good image between each: every bad one
  // fails alone with INVALID_ARGUMENT and a reason, every good one succeeds.
  const std::vector<Hostile> corpus = HostileImages();
  std::vector<std::string> images;
  for (const Hostile& h : corpus) {
    images.push_back(h.bytes);
    images.push_back(good);
  }
  v1::PredictResponse response;
  grpc::Status s = Predict(Request(images), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.predictions_size(), static_cast<int>(images.size()));
  for (size_t i = 0; i < corpus.size(); ++i) {
    const v1::ImagePrediction& bad =
        response.predictions(static_cast<int>(2 * i));
    EXPECT_EQ(bad.status().code(), grpc::INVALID_ARGUMENT) << corpus[i].name;
    EXPECT_FALSE(bad.status().message().empty()) << corpus[i].name;
    EXPECT_TRUE(bad.label().empty()) << corpus[i].name;
    const v1::ImagePrediction& ok =
        response.predictions(static_cast<int>(2 * i + 1));
    EXPECT_EQ(ok.status().code(), 0) << "the neighbour of " << corpus[i].name;
    EXPECT_EQ(ok.scores_size(), 2);
  }
  // The dimension bombs are refused from the header, naming the cap.
  EXPECT_THAT(response.predictions(18).status().message(), HasSubstr("pixels"));

  // And each alone, many times over: still one precise answer each.
  for (int round = 0; round < 20; ++round) {
    for (const Hostile& h : corpus) {
      v1::PredictResponse one;
      ASSERT_TRUE(Predict(Request({h.bytes}), &one).ok()) << h.name;
      ASSERT_EQ(one.predictions_size(), 1);
      EXPECT_EQ(one.predictions(0).status().code(), grpc::INVALID_ARGUMENT)
          << h.name;
    }
  }

  // Request-level abuse: a precise status for the call.
  v1::PredictResponse none;
  EXPECT_EQ(Predict(Request({}), &none).error_code(), grpc::INVALID_ARGUMENT);
  v1::PredictRequest unknown = Request({good});
  unknown.set_model("models/no-such-model");
  EXPECT_EQ(Predict(unknown, &none).error_code(), grpc::NOT_FOUND);
  unknown.set_model("../../etc/passwd");
  EXPECT_EQ(Predict(unknown, &none).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(
      Predict(Request(std::vector<std::string>(257, good)), &none).error_code(),
      grpc::INVALID_ARGUMENT);
  EXPECT_EQ(Predict(Request({RandomBytes(9 << 20, 4)}), &none).error_code(),
            grpc::RESOURCE_EXHAUSTED);  // over --max-receive-message-bytes

  EXPECT_TRUE(Serving(*server_));
  const int64_t rss_after = RssMiB(*server_);
  std::printf("hostile images: server RSS %lld -> %lld MiB\n",
              static_cast<long long>(rss_before),
              static_cast<long long>(rss_after));
  // Stated bound: hostile inputs cost the server under 64 MiB of lasting
  // memory (nothing they declare is ever allocated).
  EXPECT_LT(rss_after - rss_before, 64)
      << rss_before << " -> " << rss_after << " MiB";
}

TEST_F(AbuseTest, HostileUploadsAreRejectedPerFileAndLeaveNothingBehind) {
  auto stub = v1::Datasets::NewStub(testing::Channel(*server_));
  auto upload = [&](const std::string& id, const std::vector<Hostile>& files,
                    v1::UploadDatasetResponse* response,
                    size_t chunk = 64 * 1024) {
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx, 120);
    auto writer = stub->UploadDataset(&ctx, response);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_dataset_id(id);
    writer->Write(header);
    for (const Hostile& f : files) {
      size_t pos = 0;
      do {
        v1::UploadDatasetRequest r;
        if (pos == 0) {
          r.mutable_chunk()->set_path(f.name);
          r.mutable_chunk()->set_size(static_cast<int64_t>(f.bytes.size()));
        }
        const size_t n = std::min(chunk, f.bytes.size() - pos);
        r.mutable_chunk()->set_data(f.bytes.substr(pos, n));
        pos += n;
        r.mutable_chunk()->set_last(pos == f.bytes.size());
        if (!writer->Write(r)) break;
      } while (pos < f.bytes.size());
    }
    writer->WritesDone();
    return writer->Finish();
  };

  // Hostile names and contents next to good files.
  std::vector<Hostile> files;
  for (int i = 0; i < 4; ++i) {
    files.push_back({absl::StrCat("train/cat.", i, ".png"),
                     EncodeTestImage(32, 32, ".png", 40 + i)});
    files.push_back({absl::StrCat("train/dog.", i, ".png"),
                     EncodeTestImage(32, 32, ".png", 50 + i)});
  }
  const std::string good = EncodeTestImage(32, 32, ".png", 60);
  std::map<std::string, v1::RejectReason> expected = {
      {"../escape.png", v1::REJECT_REASON_BAD_PATH},
      {"/etc/cat.9.png", v1::REJECT_REASON_BAD_PATH},
      {"train/../../cat.10.png", v1::REJECT_REASON_BAD_PATH},
      {"train\\cat.11.png", v1::REJECT_REASON_BAD_PATH},
      {std::string("train/cat.12\0.png", 17), v1::REJECT_REASON_BAD_PATH},
      {"train/" + std::string(5000, 'c') + ".png", v1::REJECT_REASON_BAD_PATH},
      {"train/cat.13.png", v1::REJECT_REASON_EMPTY},
      {"train/cat.14.png", v1::REJECT_REASON_UNSUPPORTED_FORMAT},
      {"train/cat.15.png", v1::REJECT_REASON_TOO_MANY_PIXELS},
      {"train/cat.16.jpg", v1::REJECT_REASON_TOO_MANY_PIXELS},
      {"train/cat.17.png", v1::REJECT_REASON_CORRUPT},
  };
  const std::string png = EncodeTestImage(64, 64, ".png", 61);
  for (const auto& [path, reason] : expected) {
    std::string bytes = good;
    if (path == "train/cat.13.png") bytes = "";
    if (path == "train/cat.14.png") bytes = RandomBytes(2048, 5);
    if (path == "train/cat.15.png") bytes = PngHeader(60000, 60000);
    if (path == "train/cat.16.jpg") bytes = JpegHeader(60000, 60000);
    if (path == "train/cat.17.png") bytes = png.substr(0, png.size() / 2);
    files.push_back({path, bytes});
  }
  v1::UploadDatasetResponse response;
  grpc::Status s =
      upload("hostile", files, &response, 7);  // 7-byte chunks: many messages
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::map<std::string, v1::RejectReason> got;
  for (const v1::RejectedFile& r : response.rejected())
    got[r.path()] = r.reason();
  // Rejected names come back printable: NUL as "\0", cut after 300 bytes.
  auto shown = [](const std::string& path) {
    std::string out;
    for (const char c : path.substr(0, 300))
      out += c == '\0' ? std::string("\\0") : std::string(1, c);
    return path.size() > 300 ? out + "..." : out;
  };
  for (const auto& [path, reason] : expected) {
    auto it = got.find(shown(path));
    ASSERT_NE(it, got.end()) << "not rejected: " << path.substr(0, 60);
    EXPECT_EQ(it->second, reason) << path.substr(0, 60);
  }
  EXPECT_EQ(response.accepted_files(), 8);

  // A file declared larger than --max-file-bytes ends the upload at once.
  v1::UploadDatasetResponse big;
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx, 60);
  auto writer = stub->UploadDataset(&ctx, &big);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id("too-big");
  writer->Write(header);
  v1::UploadDatasetRequest chunk;
  chunk.mutable_chunk()->set_path("train/cat.1.png");
  chunk.mutable_chunk()->set_size(int64_t{1} << 40);
  chunk.mutable_chunk()->set_data("x");
  writer->Write(chunk);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::RESOURCE_EXHAUSTED);

  EXPECT_TRUE(Serving(*server_));
  EXPECT_TRUE(Eventually(
      [] { return fs::is_empty(fs::path(server_->data_dir()) / "tmp"); }));
}

// Starts `count` stream clients, kills each with SIGKILL once it streams.
void KillClientsMidStream(const TransferdServer& server,
                          const std::string& mode, const std::string& name,
                          int count, const std::string& dir) {
  for (int i = 0; i < count; i += 10) {
    std::vector<std::unique_ptr<testing::Subprocess>> clients;
    std::vector<std::string> logs;
    for (int k = i; k < std::min(count, i + 10); ++k) {
      logs.push_back(absl::StrCat(dir, "/", mode, "-", k, ".log"));
      const std::string target =
          mode == "upload" ? absl::StrCat(name, "-", k) : name;
      clients.push_back(
          std::make_unique<testing::Subprocess>(testing::Subprocess::Spawn(
              {testing::BinaryPath("transferd_stream_client"), server.address(),
               mode, target},
              {}, logs.back())));
    }
    for (size_t k = 0; k < clients.size(); ++k) {
      EXPECT_TRUE(Eventually([&] {
        std::ifstream in(logs[k]);
        std::stringstream text;
        text << in.rdbuf();
        return text.str().find("streaming") != std::string::npos;
      })) << mode
          << " client " << k << " never streamed";
      clients[k]->Signal(SIGKILL);
      auto status = clients[k]->Wait(std::chrono::seconds(10));
      ASSERT_TRUE(status.has_value());
      EXPECT_EQ(status->signal, SIGKILL) << mode << " client ended by itself";
    }
  }
}

TEST_F(AbuseTest, ClientsKilledMidStreamLeaveNothingBehind) {
  // A job that runs for the whole test, for the watchers to follow.
  v1::Job job;
  grpc::Status s = testing::CreateJob(
      *server_, testing::SmallSpec("tiny", 10000), &job, "long");
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::PredictResponse warm;
  ASSERT_TRUE(
      Predict(Request({EncodeTestImage(40, 40, ".png", 7)}), &warm).ok());
  const int64_t threads_before = Threads(*server_);
  const int64_t rss_before = RssMiB(*server_);

  testing::TempDir logs;
  KillClientsMidStream(*server_, "predict", *model_, 40, logs.path());
  KillClientsMidStream(*server_, "watch", "jobs/long", 30, logs.path());
  KillClientsMidStream(*server_, "upload", "crash", 30, logs.path());

  EXPECT_TRUE(Serving(*server_));
  v1::PredictResponse after;
  EXPECT_TRUE(
      Predict(Request({EncodeTestImage(40, 40, ".png", 8)}), &after).ok());
  // gRPC and the engine notice the dead connections asynchronously.
  EXPECT_TRUE(Eventually([&] {
    return Threads(*server_) <= threads_before + 4;
  })) << threads_before
      << " -> " << Threads(*server_) << " threads";
  EXPECT_TRUE(Eventually([&] {
    return fs::is_empty(fs::path(server_->data_dir()) / "tmp");
  })) << "a killed upload left files in tmp/";
  const int64_t rss_after = RssMiB(*server_);
  std::printf(
      "100 killed clients: threads %lld -> %lld, RSS %lld -> %lld MiB\n",
      static_cast<long long>(threads_before),
      static_cast<long long>(Threads(*server_)),
      static_cast<long long>(rss_before), static_cast<long long>(rss_after));
  EXPECT_LT(rss_after - rss_before, 96)
      << rss_before << " -> " << rss_after << " MiB";

  auto jobs = v1::Jobs::NewStub(testing::Channel(*server_));
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx);
  v1::CancelJobRequest cancel;
  cancel.set_name("jobs/long");
  v1::Job cancelled;
  EXPECT_TRUE(jobs->CancelJob(&ctx, cancel, &cancelled).ok());
  EXPECT_EQ(testing::WaitForJob(*server_, "jobs/long").state(),
            v1::JOB_STATE_CANCELLED);
}

TEST_F(AbuseTest, PredictSoakDoesNotLeak) {
  const std::vector<std::string> images = {EncodeTestImage(40, 40, ".png", 21),
                                           EncodeTestImage(40, 40, ".jpg", 22)};
  auto run = [&](int calls_per_thread) {
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto stub = v1::Inference::NewStub(testing::Channel(*server_));
        const v1::PredictRequest request =
            Request({images[static_cast<size_t>(t) % 2]});
        for (int i = 0; i < calls_per_thread; ++i) {
          grpc::ClientContext ctx;
          testing::SetDeadline(ctx, 60);
          v1::PredictResponse response;
          if (!stub->Predict(&ctx, request, &response).ok()) ++failures;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    return failures.load();
  };
  ASSERT_EQ(run(250), 0);  // warm-up: 1000 calls
  const int64_t rss_warm = RssMiB(*server_);
  ASSERT_EQ(run(750), 0);  // 3000 calls
  const int64_t rss_end = RssMiB(*server_);
  std::printf(
      "soak: RSS %lld MiB after 1000 warm-up calls, %lld MiB after 3000 more\n",
      static_cast<long long>(rss_warm), static_cast<long long>(rss_end));
  // Stated bound: under 24 MiB of growth over 3000 calls after warm-up.
  EXPECT_LT(rss_end - rss_warm, 24) << rss_warm << " -> " << rss_end << " MiB";
  EXPECT_TRUE(Serving(*server_));
}

}  // namespace
}  // namespace transferd
