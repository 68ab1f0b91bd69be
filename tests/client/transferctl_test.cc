// The real transferctl binary against a real transferd.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "client/client.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::RunResult;
using ::testing::StartsWith;
using testing::TransferdServer;

RunResult Ctl(std::vector<std::string> args,
              std::vector<std::string> env = {"TRANSFERD_ADDR="}) {
  args.insert(args.begin(), testing::TransferctlBinary());
  return testing::Run(args, env, std::chrono::seconds(60));
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// A small Kaggle-style folder: train/{cat,dog}.{0,1}.jpg and
// validation/{cat,dog}.2.jpg (each a different colour, so no duplicates),
// train/notes.txt that the server must reject, and hidden entries the client
// must not send at all (a valid JPEG among them, which would change the
// counts if it were sent).
void MakeImageFolder(const fs::path& dir) {
  int n = 0;
  for (const char* rel :
       {"train/cat.0.jpg", "train/cat.1.jpg", "train/dog.0.jpg",
        "train/dog.1.jpg", "validation/cat.2.jpg", "validation/dog.2.jpg",
        ".hidden/cat.9.jpg"}) {
    fs::create_directories((dir / rel).parent_path());
    cv::Mat image(24, 32, CV_8UC3,
                  cv::Scalar(40 * n % 256, 255 - 30 * n, 17 * n));
    ++n;
    ASSERT_TRUE(cv::imwrite((dir / rel).string(), image)) << rel;
  }
  WriteFile(dir / "train" / "notes.txt", "not an image\n");
  WriteFile(dir / ".DS_Store", "junk");
}

// The entry of `splits` (a Dataset's, as JSON) for `split`.
nlohmann::json FindSplit(const nlohmann::json& splits,
                         const std::string& split) {
  for (const auto& s : splits) {
    if (s["split"] == split) return s;
  }
  return nlohmann::json();
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

TEST_F(TransferctlTest, DatasetUploadShowListRemove) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "small";
  MakeImageFolder(folder);

  RunResult up = Ctl({"--server", server_->address(), "--json", "datasets",
                      "upload", folder.string(), "--id", "small"});
  ASSERT_EQ(up.status.code, 0) << up.err;
  // The detected layout goes to stderr, keeping stdout pure JSON.
  EXPECT_THAT(up.err, HasSubstr("layout: split folders train/ validation/; "
                                "labels from file names (cat.0.jpg -> cat)"));
  auto json = nlohmann::json::parse(up.out);
  EXPECT_EQ(json["accepted_files"], "6");
  EXPECT_EQ(json["duplicate_files"], "0");
  ASSERT_EQ(json["rejected"].size(), 1u) << up.out;
  EXPECT_EQ(json["rejected"][0]["path"], "train/notes.txt");
  EXPECT_EQ(json["rejected"][0]["reason"], "REJECT_REASON_UNSUPPORTED_FORMAT");
  const auto& dataset = json["dataset"];
  EXPECT_EQ(dataset["name"], "datasets/small");
  EXPECT_EQ(dataset["display_name"], "small");
  EXPECT_EQ(dataset["label_source"], "LABEL_SOURCE_FILENAME");
  EXPECT_EQ(dataset["classes"], nlohmann::json::array({"cat", "dog"}));
  EXPECT_EQ(FindSplit(dataset["splits"], "SPLIT_TRAIN")["files"], "4");
  EXPECT_EQ(FindSplit(dataset["splits"], "SPLIT_VALIDATION")["files"], "2");

  RunResult show =
      Ctl({"--server", server_->address(), "datasets", "show", "small"});
  ASSERT_EQ(show.status.code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("dataset     datasets/small (\"small\")"));
  EXPECT_THAT(show.out, HasSubstr("classes     2: cat, dog"));
  EXPECT_THAT(show.out, HasSubstr("images      32x24 to 32x24 pixels"));

  RunResult show_json = Ctl({"--server", server_->address(), "--json",
                             "datasets", "show", "datasets/small"});
  ASSERT_EQ(show_json.status.code, 0) << show_json.err;
  EXPECT_EQ(nlohmann::json::parse(show_json.out)["name"], "datasets/small");

  RunResult ls = Ctl({"--server", server_->address(), "datasets", "ls"});
  ASSERT_EQ(ls.status.code, 0) << ls.err;
  EXPECT_THAT(ls.out, HasSubstr("datasets/small"));

  RunResult rm =
      Ctl({"--server", server_->address(), "datasets", "rm", "small"});
  ASSERT_EQ(rm.status.code, 0) << rm.err;
  EXPECT_EQ(rm.out, "deleted datasets/small\n");

  // NOT_FOUND is a server error: exit code 1.
  RunResult gone =
      Ctl({"--server", server_->address(), "datasets", "show", "small"});
  EXPECT_EQ(gone.status.code, 1);
  EXPECT_THAT(gone.err, StartsWith("transferctl: "));
}

TEST_F(TransferctlTest, DatasetUploadPlainOutput) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "plain";
  MakeImageFolder(folder);

  RunResult up =
      Ctl({"--server", server_->address(), "datasets", "upload",
           folder.string(), "--id", "plain", "--name", "Plain cats"});
  ASSERT_EQ(up.status.code, 0) << up.err;
  EXPECT_THAT(up.out, StartsWith("layout      split folders train/ "
                                 "validation/; labels from file names"));
  EXPECT_THAT(up.out, HasSubstr("dataset     datasets/plain (\"Plain cats\")"));
  EXPECT_THAT(up.out, HasSubstr("classes     2: cat, dog"));
  EXPECT_THAT(up.out, HasSubstr("split       train: 4 files (cat 2, dog 2)"));
  EXPECT_THAT(up.out,
              HasSubstr("split       validation: 2 files (cat 1, dog 1)"));
  EXPECT_THAT(up.out,
              HasSubstr("files       6 accepted, 0 duplicates, 1 rejected"));
  EXPECT_THAT(up.out, HasSubstr("rejected    train/notes.txt: "
                                "UNSUPPORTED_FORMAT"));
  // stderr is a pipe here: plain progress lines, no bar redrawn with \r.
  EXPECT_THAT(up.err, HasSubstr("upload 100%: 7/7 files"));
  EXPECT_THAT(up.err, Not(HasSubstr("\r")));

  // The same id again is ALREADY_EXISTS: a server error.
  RunResult again = Ctl({"--server", server_->address(), "datasets", "upload",
                         folder.string(), "--id", "plain"});
  EXPECT_EQ(again.status.code, 1);

  EXPECT_EQ(
      Ctl({"--server", server_->address(), "datasets", "rm", "datasets/plain"})
          .status.code,
      0);
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

TEST(TransferctlNoServerTest, DatasetUsageErrorsExitTwo) {
  testing::TempDir temp;
  const std::string folder = temp.path() + "/images";
  WriteFile(folder + "/cat.0.jpg", "x");
  const auto upload = [&](std::vector<std::string> more) {
    std::vector<std::string> args = {"datasets", "upload"};
    args.insert(args.end(), more.begin(), more.end());
    return Ctl(args).status.code;
  };
  EXPECT_EQ(upload({}), 2);
  EXPECT_EQ(upload({temp.path() + "/missing"}), 2);
  EXPECT_EQ(upload({folder, "--labels", "explicit"}), 2);
  EXPECT_EQ(upload({folder, "--split", "ratios:0.5,0.5"}), 2);
  EXPECT_EQ(upload({folder, "--split", "ratios:0.5,0.4,0.2"}), 2);
  EXPECT_EQ(upload({folder, "--split", "counts:10,5,x"}), 2);
  EXPECT_EQ(upload({folder, "--split", "halves"}), 2);
  EXPECT_EQ(Ctl({"datasets", "show"}).status.code, 2);
  EXPECT_EQ(Ctl({"datasets", "rm"}).status.code, 2);
  RunResult help = Ctl({"datasets", "upload", "--help"});
  EXPECT_EQ(help.status.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Examples:"));
  EXPECT_THAT(help.out, HasSubstr("keras-book"));
}

TEST(TransferctlNoServerTest, UploadToUnreachableServerExitsThree) {
  testing::TempDir temp;
  WriteFile(temp.path() + "/images/cat.0.jpg", "x");
  const std::string address =
      "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  RunResult r =
      Ctl({"--server", address, "datasets", "upload", temp.path() + "/images"});
  EXPECT_EQ(r.status.code, 3);
  EXPECT_THAT(r.err, HasSubstr("cannot reach transferd at " + address));
}

// Stand-ins for transferd's Server and Datasets services that record the
// upload stream as it arrives, so the client's chunking is checked exactly,
// independently of the real server's validation.
class FakeServerInfo final : public v1::Server::Service {
 public:
  explicit FakeServerInfo(int64_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}
  grpc::Status GetServerInfo(grpc::ServerContext*,
                             const v1::GetServerInfoRequest*,
                             v1::ServerInfo* info) override {
    info->mutable_limits()->set_upload_chunk_bytes(chunk_bytes_);
    return grpc::Status::OK;
  }

 private:
  const int64_t chunk_bytes_;
};

class FakeDatasets final : public v1::Datasets::Service {
 public:
  // With fail_after > 0, the call ends with RESOURCE_EXHAUSTED after that
  // many messages, the way a quota check ends an upload.
  explicit FakeDatasets(size_t fail_after = 0) : fail_after_(fail_after) {}

  grpc::Status UploadDataset(
      grpc::ServerContext*,
      grpc::ServerReader<v1::UploadDatasetRequest>* reader,
      v1::UploadDatasetResponse* response) override {
    v1::UploadDatasetRequest request;
    while (reader->Read(&request)) {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(request);
      if (request.has_chunk() && request.chunk().last()) {
        response->set_accepted_files(response->accepted_files() + 1);
      }
      if (fail_after_ > 0 && requests_.size() >= fail_after_) {
        return grpc::Status(grpc::RESOURCE_EXHAUSTED,
                            "dataset exceeds max_dataset_bytes");
      }
    }
    response->mutable_dataset()->set_name("datasets/fake");
    return grpc::Status::OK;
  }

  std::vector<v1::UploadDatasetRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  const size_t fail_after_;
  std::mutex mu_;
  std::vector<v1::UploadDatasetRequest> requests_;
};

// Both fakes on a loopback port, and a client connected to them.
class FakeTransferd {
 public:
  FakeTransferd(int64_t chunk_bytes, size_t fail_after)
      : info_(chunk_bytes), datasets_(fail_after) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&info_);
    builder.RegisterService(&datasets_);
    server_ = builder.BuildAndStart();
    transferd::client::ClientOptions options;
    options.address = "127.0.0.1:" + std::to_string(port_);
    client_ = transferd::client::Client::Create(options);
  }
  ~FakeTransferd() { server_->Shutdown(); }

  FakeDatasets& datasets() { return datasets_; }
  transferd::client::Client& client() { return *client_; }

 private:
  FakeServerInfo info_;
  FakeDatasets datasets_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<transferd::client::Client> client_;
};

TEST(UploadStreamTest, HeaderThenFilesInSortedChunks) {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  WriteFile(dir / "b.jpg", "abcd");                // exactly one chunk
  WriteFile(dir / "a" / "big.bin", "0123456789");  // 4 + 4 + 2
  WriteFile(dir / "a" / "empty.jpg", "");
  WriteFile(dir / ".hidden.jpg", "skip");
  WriteFile(dir / ".cache" / "x.jpg", "skip");
  FakeTransferd fake(/*chunk_bytes=*/4, /*fail_after=*/0);

  transferd::client::UploadOptions options;
  options.directory = dir;
  options.dataset_id = "fake";
  options.display_name = "Fake";
  options.label_source = v1::LABEL_SOURCE_FOLDER;
  options.split_policy.emplace().mutable_ratios()->set_train(1);
  std::vector<transferd::client::UploadProgress> progress;
  auto response = fake.client().UploadDataset(
      options, [&](const transferd::client::UploadProgress& p) {
        progress.push_back(p);
      });
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->accepted_files(), 3);

  const auto requests = fake.datasets().requests();
  ASSERT_EQ(requests.size(), 6u);
  ASSERT_TRUE(requests[0].has_header());
  const v1::UploadHeader& h = requests[0].header();
  EXPECT_EQ(h.dataset_id(), "fake");
  EXPECT_EQ(h.display_name(), "Fake");
  EXPECT_EQ(h.label_source(), v1::LABEL_SOURCE_FOLDER);
  EXPECT_TRUE(h.split_policy().has_ratios());
  EXPECT_EQ(h.expected_files(), 3);
  EXPECT_EQ(h.expected_bytes(), 14);

  struct Expected {
    std::string path;
    int64_t size;
    std::string data;
    bool last;
  };
  const std::vector<Expected> expected = {{"a/big.bin", 10, "0123", false},
                                          {"", 0, "4567", false},
                                          {"", 0, "89", true},
                                          {"a/empty.jpg", 0, "", true},
                                          {"b.jpg", 4, "abcd", true}};
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(requests[i + 1].has_chunk());
    const v1::FileChunk& c = requests[i + 1].chunk();
    EXPECT_EQ(c.path(), expected[i].path);
    EXPECT_EQ(c.size(), expected[i].size);
    EXPECT_EQ(c.data(), expected[i].data);
    EXPECT_EQ(c.last(), expected[i].last);
  }

  // One report before the first chunk, then one per chunk.
  ASSERT_EQ(progress.size(), 6u);
  EXPECT_EQ(progress.front().bytes_sent, 0);
  EXPECT_EQ(progress[2].files_sent, 0);
  EXPECT_EQ(progress[2].bytes_sent, 8);
  EXPECT_EQ(progress.back().files_sent, 3);
  EXPECT_EQ(progress.back().files_total, 3);
  EXPECT_EQ(progress.back().bytes_sent, 14);
  EXPECT_EQ(progress.back().bytes_total, 14);
}

TEST(UploadStreamTest, ServerEndingTheStreamEarlyReturnsItsStatus) {
  testing::TempDir temp;
  for (int i = 0; i < 20; ++i) {
    WriteFile(fs::path(temp.path()) / ("f" + std::to_string(i) + ".jpg"),
              std::string(1000, 'x'));
  }
  FakeTransferd fake(/*chunk_bytes=*/100, /*fail_after=*/3);
  transferd::client::UploadOptions options;
  options.directory = temp.path();
  auto response = fake.client().UploadDataset(options);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("max_dataset_bytes"));
}

TEST(UploadStreamTest, CancelStopsBeforeTheNextChunk) {
  testing::TempDir temp;
  WriteFile(fs::path(temp.path()) / "a.jpg", std::string(1000, 'x'));
  FakeTransferd fake(/*chunk_bytes=*/100, /*fail_after=*/0);
  std::atomic<bool> cancel{false};
  transferd::client::UploadOptions options;
  options.directory = temp.path();
  options.cancel = &cancel;
  auto response = fake.client().UploadDataset(
      options, [&](const transferd::client::UploadProgress& p) {
        if (p.bytes_sent >= 300) cancel = true;
      });
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kCancelled);
  // The header and the three chunks sent before the cancel, at most.
  EXPECT_LE(fake.datasets().requests().size(), 4u);
}

TEST(UploadStreamTest, EmptyFolderIsAnErrorBeforeAnyCall) {
  testing::TempDir temp;
  WriteFile(fs::path(temp.path()) / ".only-hidden", "x");
  FakeTransferd fake(/*chunk_bytes=*/100, /*fail_after=*/0);
  transferd::client::UploadOptions options;
  options.directory = temp.path();
  auto response = fake.client().UploadDataset(options);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fake.datasets().requests(), IsEmpty());
}

TEST(DatasetLayoutTest, KaggleNamesInSplitFolders) {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  for (const char* rel :
       {"train/cat.0.jpg", "train/dog.0.JPG", "validation/cat.1.png",
        "test/dog.2.jpeg", "train/README.md", ".git/config"}) {
    WriteFile(dir / rel, "x");
  }
  auto layout = transferd::client::DetectLayout(dir);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_THAT(layout->split_folders,
              ElementsAre("train", "validation", "test"));
  EXPECT_EQ(layout->label_source, v1::LABEL_SOURCE_FILENAME);
  EXPECT_EQ(layout->files, 5);
  EXPECT_EQ(layout->image_files, 4);
  EXPECT_EQ(transferd::client::DescribeLayout(*layout),
            "split folders train/ validation/ test/; labels from file names "
            "(cat.0.jpg -> cat); 5 files, 4 images");
}

TEST(DatasetLayoutTest, ClassFolders) {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  for (const char* rel : {"train/cats/a.jpg", "train/dogs/b.jpg",
                          "val/cats/c.jpg", "val/dogs/d.jpg"}) {
    WriteFile(dir / rel, "x");
  }
  auto described = transferd::client::DescribeLayout(dir);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(*described,
            "split folders train/ val/; class folders (train/cats/a.jpg -> "
            "cats); 4 files, 4 images");

  testing::TempDir flat;
  WriteFile(fs::path(flat.path()) / "cats" / "x.png", "x");
  auto flat_layout = transferd::client::DetectLayout(flat.path());
  ASSERT_TRUE(flat_layout.ok());
  EXPECT_THAT(flat_layout->split_folders, IsEmpty());
  EXPECT_EQ(flat_layout->label_source, v1::LABEL_SOURCE_FOLDER);
}

TEST(DatasetLayoutTest, NamesAndEmptyFolders) {
  EXPECT_EQ(transferd::client::DatasetName("small"), "datasets/small");
  EXPECT_EQ(transferd::client::DatasetName("datasets/small"), "datasets/small");
  testing::TempDir temp;
  auto layout = transferd::client::DetectLayout(temp.path());
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->label_source, v1::LABEL_SOURCE_UNSPECIFIED);
  EXPECT_FALSE(transferd::client::DetectLayout(temp.path() + "/missing").ok());
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
