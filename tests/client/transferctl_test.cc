// The real transferctl binary against a real transferd.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "common/stream_protocol.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"
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
    server_ =
        new TransferdServer(TransferdServer::WithArgs({"--threads", "1"}));
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
  RunResult r =
      Ctl({"--server", server_->address(), "server", "info", "--json"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["device"]["name"], "cpu");
  EXPECT_EQ(json["device"]["threads"], 1);
  EXPECT_FALSE(json["version"].get<std::string>().empty());
  EXPECT_TRUE(json["cpu"].contains("amx_bf16"));
  EXPECT_EQ(json["limits"]["max_receive_message_bytes"], "8388608");
  // Device truth: the CPU's memory, no compute capability, and bf16 by
  // default exactly where the CPU computes it natively.
  const bool native = json["cpu"]["avx512_bf16"].get<bool>() ||
                      json["cpu"]["amx_bf16"].get<bool>();
  EXPECT_EQ(json["device"]["native_bf16"], native);
  EXPECT_EQ(json["device"]["compute_capability"], "");
  EXPECT_GT(std::stoll(json["device"]["memory_bytes"].get<std::string>()), 0);
  EXPECT_EQ(json["device"]["default_precision"],
            native ? "PRECISION_BF16" : "PRECISION_FP32");
}

TEST_F(TransferctlTest, ServerInfoAsText) {
  RunResult r = Ctl({"server", "info", "--server", server_->address()});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("device      cpu"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(
                         "GiB memory, 1 threads, (bf16 by default \\(native "
                         "bf16\\)|fp32 by default \\(no native bf16\\))"));
  EXPECT_THAT(r.out, HasSubstr("transferd.v1.Server"));
}

TEST_F(TransferctlTest, AddressFromEnvironment) {
  RunResult r =
      Ctl({"server", "health"}, {"TRANSFERD_ADDR=" + server_->address()});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_EQ(r.out, "server: SERVING\n");
}

TEST_F(TransferctlTest, HealthJsonAndUnknownService) {
  RunResult r =
      Ctl({"--server", server_->address(), "--json", "server", "health"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["status"], "SERVING");

  RunResult unknown = Ctl({"--server", server_->address(), "server", "health",
                           "--service", "no.such.Service"});
  EXPECT_EQ(unknown.status.code, 4);
  EXPECT_THAT(unknown.out, HasSubstr("SERVICE_UNKNOWN"));
}

TEST_F(TransferctlTest, ServerErrorsArePrintedWithExitCodeOne) {
  // NOT_FOUND, printed as the server words it.
  RunResult r = Ctl({"--server", server_->address(), "jobs", "show", "nope"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_THAT(r.err, StartsWith("transferctl: "));
  EXPECT_THAT(r.err, HasSubstr("\"nope\" not found"));
  EXPECT_EQ(r.out, "");
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

  // The same id again is ALREADY_EXISTS: a server error, said before any
  // file is sent (no progress line); so is an invalid id.
  RunResult again = Ctl({"--server", server_->address(), "datasets", "upload",
                         folder.string(), "--id", "plain"});
  EXPECT_EQ(again.status.code, 1);
  EXPECT_THAT(again.err, HasSubstr("dataset \"plain\" already exists"));
  EXPECT_THAT(again.err, Not(HasSubstr("upload ")));
  RunResult bad_id = Ctl({"--server", server_->address(), "datasets", "upload",
                          folder.string(), "--id", "Bad_Id-"});
  EXPECT_EQ(bad_id.status.code, 1);
  EXPECT_THAT(bad_id.err, HasSubstr("starting and ending with a letter"));
  EXPECT_THAT(bad_id.err, Not(HasSubstr("upload ")));

  EXPECT_EQ(
      Ctl({"--server", server_->address(), "datasets", "rm", "datasets/plain"})
          .status.code,
      0);
}

// ---- train / jobs / models against the real server -------------------------

// A tiny two-class dataset of 32x32 JPEGs, Kaggle style: train/{cat,dog}.N
// and validation/{cat,dog}.N, every image a different colour.
void MakeTrainingFolder(const fs::path& dir) {
  int n = 0;
  for (const char* split : {"train", "validation"}) {
    const int per_class = std::string(split) == "train" ? 4 : 2;
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < per_class; ++i, ++n) {
        const fs::path path =
            dir / split /
            (std::string(label) + "." + std::to_string(n) + ".jpg");
        fs::create_directories(path.parent_path());
        // Cats reddish, dogs bluish: something to learn.
        const bool cat = std::string(label) == "cat";
        cv::Mat image(32, 32, CV_8UC3,
                      cv::Scalar(cat ? 20 + 9 * n : 200 - 5 * n, 60 + 7 * n,
                                 cat ? 220 - 6 * n : 30 + 8 * n));
        ASSERT_TRUE(cv::imwrite(path.string(), image)) << path;
      }
    }
  }
}

// Lines of protobuf JSON, one object each.
std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

TEST_F(TransferctlTest, TrainFollowShowWatchAndModels) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "train-small";
  MakeTrainingFolder(folder);
  const std::string& server = server_->address();
  RunResult up = Ctl({"--server", server, "datasets", "upload", folder.string(),
                      "--id", "train-small"});
  ASSERT_EQ(up.status.code, 0) << up.err;

  // Followed in pipe mode: whole lines, Keras-like, no carriage returns.
  RunResult train = testing::Run({testing::TransferctlBinary(),
                                  "--server",
                                  server,
                                  "train",
                                  "train-small",
                                  "--id",
                                  "tiny-job",
                                  "--backbone",
                                  "mobilenet",
                                  "--alpha",
                                  "0.25",
                                  "--weights",
                                  "none",
                                  "--input-size",
                                  "32",
                                  "--epochs",
                                  "2",
                                  "--batch-size",
                                  "4",
                                  "--augment",
                                  "none",
                                  "--hidden-units",
                                  "8"},
                                 {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(train.status.code, 0) << train.out << train.err << server_->Log();
  EXPECT_THAT(train.out, HasSubstr("Epoch 1/2"));
  EXPECT_THAT(train.out, HasSubstr("Epoch 2/2"));
  EXPECT_THAT(train.out, HasSubstr("val_accuracy"));
  EXPECT_THAT(train.out, HasSubstr("Stage 1/1"));
  EXPECT_THAT(train.out, HasSubstr("state: SUCCEEDED"));
  EXPECT_THAT(train.out, Not(HasSubstr("\r")));

  RunResult show =
      Ctl({"--server", server, "--json", "jobs", "show", "tiny-job"});
  ASSERT_EQ(show.status.code, 0) << show.err;
  const auto job = nlohmann::json::parse(show.out);
  EXPECT_EQ(job["name"], "jobs/tiny-job");
  EXPECT_EQ(job["state"], "JOB_STATE_SUCCEEDED");
  const std::string model = job["result_model"].get<std::string>();
  ASSERT_THAT(model, StartsWith("models/"));
  EXPECT_EQ(job["history"].size(), 2u);
  EXPECT_EQ(job["spec"]["model"]["backbone"], "mobilenet");
  EXPECT_EQ(job["spec"]["stages"][0]["epochs"], 2);
  EXPECT_EQ(job["spec"]["stages"][0]["augmentation"]["enabled"], false);

  RunResult show_text =
      Ctl({"--server", server, "jobs", "show", "jobs/tiny-job"});
  ASSERT_EQ(show_text.status.code, 0) << show_text.err;
  EXPECT_THAT(show_text.out, HasSubstr("state       SUCCEEDED"));
  EXPECT_THAT(show_text.out, HasSubstr("VAL_ACC"));
  EXPECT_THAT(show_text.out, HasSubstr("model       " + model));

  RunResult ls =
      Ctl({"--server", server, "--json", "jobs", "ls", "--state", "succeeded"});
  ASSERT_EQ(ls.status.code, 0) << ls.err;
  EXPECT_THAT(ls.out, HasSubstr("jobs/tiny-job"));

  RunResult models = Ctl({"--server", server, "--json", "models", "ls"});
  ASSERT_EQ(models.status.code, 0) << models.err;
  bool listed = false;
  const auto listing = nlohmann::json::parse(models.out);  // outlives the loop
  for (const auto& m : listing["models"]) {
    if (m["name"] == model) listed = true;
  }
  EXPECT_TRUE(listed) << models.out;
  RunResult model_show = Ctl({"--server", server, "models", "show", model});
  ASSERT_EQ(model_show.status.code, 0) << model_show.err;
  EXPECT_THAT(model_show.out, HasSubstr("classes     2: cat, dog"));

  // Watching a finished job replays its events, each once, in order.
  RunResult watch =
      Ctl({"--server", server, "--json", "jobs", "watch", "tiny-job"});
  ASSERT_EQ(watch.status.code, 0) << watch.err;
  const std::vector<nlohmann::json> events = JsonLines(watch.out);
  ASSERT_FALSE(events.empty());
  int64_t previous = 0;
  for (const auto& e : events) {
    const int64_t sequence = std::stoll(e["sequence"].get<std::string>());
    if (previous == 0) {
      EXPECT_EQ(sequence, 1);
    }
    EXPECT_GT(sequence, previous);
    previous = sequence;
  }
  EXPECT_EQ(events.back()["state_changed"]["state"], "JOB_STATE_SUCCEEDED");

  // A finished job cannot be cancelled: FAILED_PRECONDITION, exit code 1.
  EXPECT_EQ(Ctl({"--server", server, "jobs", "cancel", "tiny-job"}).status.code,
            1);
}

TEST_F(TransferctlTest, InvalidHyperparameterNamesTheField) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "hyper-small";
  MakeTrainingFolder(folder);
  ASSERT_EQ(Ctl({"--server", server_->address(), "datasets", "upload",
                 folder.string(), "--id", "hyper-small"})
                .status.code,
            0);
  RunResult r = Ctl({"--server", server_->address(), "train", "hyper-small",
                     "--backbone", "mobilenet", "--lr", "-1"});
  EXPECT_EQ(r.status.code, 1);  // INVALID_ARGUMENT: a server error
  EXPECT_THAT(r.err, StartsWith("transferctl: "));
  EXPECT_THAT(r.err, HasSubstr("learning_rate"));
  EXPECT_EQ(r.out, "");
  // No stage flags: one default stage, so what is wrong is the dataset.
  RunResult nosuch = Ctl({"--server", server_->address(), "train", "nosuch",
                          "--backbone", "mobilenet"});
  EXPECT_EQ(nosuch.status.code, 1);
  EXPECT_EQ(nosuch.err,
            "transferctl: spec.dataset: dataset \"nosuch\" not found\n");

  RunResult missing =
      Ctl({"--server", server_->address(), "models", "show", "nope"});
  EXPECT_EQ(missing.status.code, 1);
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
  // The range is said in words, not as a 300-digit number.
  RunResult zero = Ctl({"--timeout", "0", "server", "info"});
  EXPECT_EQ(zero.status.code, 2);
  EXPECT_THAT(zero.err, HasSubstr("must be a number of seconds > 0 and at "
                                  "most 604800 (a week), got \"0\""));
  EXPECT_LT(zero.err.size(), 200u) << zero.err;
  RunResult version = Ctl({"--version"});
  EXPECT_EQ(version.status.code, 0);
  EXPECT_THAT(version.out, StartsWith("transferctl 0."));
}

// A mistyped command names the word and the closest command, at every level;
// a group given no command lists its commands.
TEST(TransferctlNoServerTest, MistypedCommandSuggestsTheClosest) {
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"serve", "info"},
       "transferctl: \"serve\" is not a command of transferctl; did you "
       "mean \"transferctl server\"?\n"},
      {{"datasets", "lss"},
       "transferctl: \"lss\" is not a command of transferctl datasets; did "
       "you mean \"transferctl datasets ls\"?\n"},
      {{"models", "list"},
       "transferctl: \"list\" is not a command of transferctl models; did "
       "you mean \"transferctl models ls\"?\n"},
      {{"--server", "127.0.0.1:1", "jobs", "wacth", "j1"},
       "transferctl: \"wacth\" is not a command of transferctl jobs; did "
       "you mean \"transferctl jobs watch\"?\n"},
      {{"frobnicate"},
       "transferctl: \"frobnicate\" is not a command of transferctl\n"},
      {{"jobs"},
       "transferctl: transferctl jobs needs a command: ls, show, watch, "
       "cancel, plot, results."},
  };
  for (const Case& c : cases) {
    RunResult r = Ctl(c.args);
    EXPECT_EQ(r.status.code, 2) << absl::StrJoin(c.args, " ");
    EXPECT_THAT(r.err, StartsWith(c.expected)) << absl::StrJoin(c.args, " ");
    EXPECT_THAT(r.err, Not(HasSubstr("A subcommand is required")));
  }
  EXPECT_THAT(Ctl({"datasets", "lss"}).err,
              HasSubstr("Commands: ls, upload, show, rm. Run \"transferctl "
                        "datasets --help\" for more."));
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

  // Like the real server: the header accepted, initial metadata says so
  // (common/stream_protocol.h), and only then do files come.
  grpc::Status UploadDataset(
      grpc::ServerContext* ctx,
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
      if (request.has_header()) {
        ctx->AddInitialMetadata(common::kUploadAcceptedMetadata,
                                common::kUploadAcceptedValue);
        reader->SendInitialMetadata();
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

// Twenty 1000-byte files f0.jpg .. f19.jpg in `dir`.
void WriteTwentyFiles(const std::string& dir) {
  for (int i = 0; i < 20; ++i) {
    WriteFile(fs::path(dir) / ("f" + std::to_string(i) + ".jpg"),
              std::string(1000, 'x'));
  }
}

TEST(UploadStreamTest, ServerEndingTheStreamEarlyReturnsItsStatus) {
  testing::TempDir temp;
  WriteTwentyFiles(temp.path());
  FakeTransferd fake(/*chunk_bytes=*/100, /*fail_after=*/3);
  transferd::client::UploadOptions options;
  options.directory = temp.path();
  auto response = fake.client().UploadDataset(options);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("max_dataset_bytes"));
}

// A header the server refuses (an existing id, a bad id, a viewer's token,
// the quota) ends the upload before any file is read or sent.
TEST(UploadStreamTest, RefusedHeaderSendsNoFile) {
  testing::TempDir temp;
  WriteTwentyFiles(temp.path());
  FakeTransferd fake(/*chunk_bytes=*/100, /*fail_after=*/1);
  transferd::client::UploadOptions options;
  options.directory = temp.path();
  int progress_calls = 0;
  auto response = fake.client().UploadDataset(
      options,
      [&](const transferd::client::UploadProgress&) { ++progress_calls; });
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_EQ(fake.datasets().requests().size(), 1u);
  EXPECT_TRUE(fake.datasets().requests()[0].has_header());
  EXPECT_EQ(progress_calls, 0);
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

  // Shard folders (train/0/1/x.jpg) are named as a likely mistake.
  testing::TempDir sharded;
  WriteFile(fs::path(sharded.path()) / "train" / "0" / "1" / "x.jpg", "x");
  auto sharded_layout = transferd::client::DescribeLayout(sharded.path());
  ASSERT_TRUE(sharded_layout.ok());
  EXPECT_THAT(*sharded_layout,
              HasSubstr("(train/0/1/x.jpg -> 1); nested folders: if they are "
                        "not classes, give labels with --labels csv:FILE"));
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
  std::vector<std::string> argv = {testing::TransferctlBinary(),
                                   "--server",
                                   address,
                                   "server",
                                   "health",
                                   "--wait",
                                   "60"};
  auto waiter = testing::Subprocess::Spawn(argv, {"TRANSFERD_ADDR="},
                                           dir.path() + "/ctl.log");
  auto server =
      testing::Subprocess::Spawn({testing::TransferdBinary(), "--listen",
                                  address, "--data-dir", dir.path() + "/data"},
                                 {}, dir.path() + "/server.log");
  auto exit = waiter.Wait(std::chrono::seconds(90));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->code, 0);
  server.Signal(SIGTERM);
  auto server_exit = server.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(server_exit.has_value());
  EXPECT_EQ(server_exit->code, 0);
}

// Polls the real server until `job` has reached `epoch` (or ended).
v1::Job AwaitEpoch(const std::string& address, const std::string& job,
                   int epoch) {
  transferd::client::ClientOptions options;
  options.address = address;
  auto client = transferd::client::Client::Create(options);
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (std::chrono::steady_clock::now() < give_up) {
    absl::StatusOr<v1::Job> now = client->GetJob(job);
    if (now.ok() && (now->progress().epoch() >= epoch ||
                     now->state() == v1::JOB_STATE_SUCCEEDED ||
                     now->state() == v1::JOB_STATE_FAILED)) {
      return *now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << job << " did not reach epoch " << epoch;
  return v1::Job();
}

// `transferctl train` follows its job through a graceful restart of the
// server (SIGTERM, started again at once on the same port and data dir) and
// through a kill -9, each time resuming the stream, and exits with the job's
// real end: SUCCEEDED, exit code 0.
TEST(TransferctlRestartTest, FollowSurvivesAGracefulRestartAndAKill) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "images";
  MakeTrainingFolder(folder);
  TransferdServer::Options options =
      TransferdServer::WithArgs({"--threads", "1"});
  options.data_dir = temp.path() + "/data";
  options.listen = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  auto server = std::make_unique<TransferdServer>(options);
  ASSERT_TRUE(server->ok()) << server->Log();
  const std::string address = server->address();
  ASSERT_EQ(Ctl({"--server", address, "datasets", "upload", folder.string(),
                 "--id", "restart-small"})
                .status.code,
            0);
  // Enough epochs (~20 ms each here) that the job still runs after two
  // restarts (~1 s each); resumes() == 2 below checks that it did.
  const std::string log = temp.path() + "/follow.log";
  auto follower = testing::Subprocess::Spawn({testing::TransferctlBinary(),
                                              "--server",
                                              address,
                                              "train",
                                              "restart-small",
                                              "--id",
                                              "long-job",
                                              "--backbone",
                                              "mobilenet",
                                              "--alpha",
                                              "0.25",
                                              "--weights",
                                              "none",
                                              "--input-size",
                                              "32",
                                              "--epochs",
                                              "400",
                                              "--batch-size",
                                              "4",
                                              "--augment",
                                              "keras-book",
                                              "--hidden-units",
                                              "8",
                                              "--seed",
                                              "7"},
                                             {"TRANSFERD_ADDR="}, log);
  AwaitEpoch(address, "jobs/long-job", 3);
  const std::optional<testing::ExitStatus> stopped =
      server->Stop(SIGTERM, std::chrono::seconds(30));
  ASSERT_TRUE(stopped.has_value());
  ASSERT_EQ(stopped->code, 0);
  server = std::make_unique<TransferdServer>(options);
  ASSERT_TRUE(server->ok()) << server->Log();
  const v1::Job resumed = AwaitEpoch(address, "jobs/long-job", 0);
  ASSERT_EQ(resumed.state(), v1::JOB_STATE_RUNNING);
  AwaitEpoch(address, "jobs/long-job", resumed.progress().epoch() + 3);
  ASSERT_TRUE(server->Stop(SIGKILL, std::chrono::seconds(30)).has_value());
  server = std::make_unique<TransferdServer>(options);
  ASSERT_TRUE(server->ok()) << server->Log();

  const std::optional<testing::ExitStatus> exit =
      follower.Wait(std::chrono::minutes(5));
  ASSERT_TRUE(exit.has_value());
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)),
                        std::istreambuf_iterator<char>());
  EXPECT_EQ(exit->code, 0) << out;
  EXPECT_THAT(out, HasSubstr("state: SUCCEEDED"));
  EXPECT_THAT(out, HasSubstr("model: models/long-job"));
  EXPECT_THAT(out, Not(HasSubstr("CANCELLED")));
  EXPECT_THAT(out, HasSubstr("connection lost"));
  const v1::Job done = AwaitEpoch(address, "jobs/long-job", 400);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.resumes(), 2);
}

// ---- WatchJob and the job commands against a scripted Jobs service ---------

v1::JobEvent StateEvent(int64_t sequence, v1::JobState state,
                        const std::string& message = "") {
  v1::JobEvent e;
  e.set_sequence(sequence);
  e.mutable_state_changed()->set_state(state);
  e.mutable_state_changed()->set_message(message);
  return e;
}

// A finished two-epoch job's events: queued, running, stage, then per epoch
// a step and its end (and a checkpoint), a final evaluation and SUCCEEDED.
std::vector<v1::JobEvent> SucceededEvents() {
  std::vector<v1::JobEvent> events;
  int64_t seq = 0;
  events.push_back(StateEvent(++seq, v1::JOB_STATE_QUEUED));
  events.push_back(StateEvent(++seq, v1::JOB_STATE_RUNNING));
  v1::JobEvent stage;
  stage.set_sequence(++seq);
  v1::StageStarted* s = stage.mutable_stage_started();
  s->set_name("frozen-base");
  s->mutable_trainable()->set_trainable_tensors(4);
  s->mutable_trainable()->set_trainable_parameters(2081);
  s->mutable_trainable()->set_non_trainable_parameters(3228864);
  s->set_uses_feature_cache(true);
  events.push_back(stage);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    v1::JobEvent step;
    step.set_sequence(++seq);
    step.mutable_step()->set_epoch(epoch);
    step.mutable_step()->set_step(2);
    step.mutable_step()->set_steps(4);
    step.mutable_step()->set_loss(0.7);
    step.mutable_step()->set_accuracy(0.5);
    step.mutable_step()->set_eta_seconds(2);
    events.push_back(step);
    v1::JobEvent end;
    end.set_sequence(++seq);
    v1::EpochMetrics* m = end.mutable_epoch_end();
    m->set_epoch(epoch);
    m->set_loss(0.6931);
    m->set_accuracy(0.5);
    m->set_val_loss(0.69);
    m->set_val_accuracy(0.55);
    m->set_seconds(3);
    events.push_back(end);
    v1::JobEvent checkpoint;
    checkpoint.set_sequence(++seq);
    checkpoint.mutable_checkpoint_saved()->set_epoch(epoch);
    checkpoint.mutable_checkpoint_saved()->set_bytes(2 * 1024 * 1024);
    events.push_back(checkpoint);
  }
  v1::JobEvent evaluation;
  evaluation.set_sequence(++seq);
  evaluation.mutable_evaluation()->set_split("validation");
  evaluation.mutable_evaluation()->set_examples(4);
  evaluation.mutable_evaluation()->set_accuracy(0.75);
  evaluation.mutable_evaluation()->set_loss(0.5);
  events.push_back(evaluation);
  events.push_back(StateEvent(++seq, v1::JOB_STATE_SUCCEEDED));
  return events;
}

// Jobs and Models stand-ins: WatchJob replays `events` after the request's
// after_sequence, dropping the stream (UNAVAILABLE) once after each sequence
// in `drop_after`; with `live`, it then stays open until the client leaves.
class FakeJobs final : public v1::Jobs::Service {
 public:
  FakeJobs(v1::Job job, std::vector<v1::JobEvent> events)
      : job_(std::move(job)), events_(std::move(events)) {}

  // Ends the stream after `sequence` once, with `code` (UNAVAILABLE: the
  // server is going away; CANCELLED: a server in its shutdown grace period
  // cancelling the calls it has not answered).
  void DropAfter(int64_t sequence, grpc::StatusCode code = grpc::UNAVAILABLE) {
    std::lock_guard<std::mutex> lock(mu_);
    drop_after_[sequence] = code;
  }
  void SetLive(bool live) { live_ = live; }

  grpc::Status CreateJob(grpc::ServerContext*,
                         const v1::CreateJobRequest* request,
                         v1::Job* job) override {
    std::lock_guard<std::mutex> lock(mu_);
    created_.push_back(*request);
    *job = job_;
    *job->mutable_spec() = request->spec();
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::Job* job) override {
    if (request->name() != job_.name()) {
      return grpc::Status(grpc::NOT_FOUND, "job not found");
    }
    *job = job_;
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* ctx,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      watch_after_.push_back(request->after_sequence());
    }
    for (const v1::JobEvent& e : events_) {
      if (e.sequence() <= request->after_sequence()) continue;
      if (!writer->Write(e)) return grpc::Status::CANCELLED;
      std::lock_guard<std::mutex> lock(mu_);
      if (auto drop = drop_after_.find(e.sequence());
          drop != drop_after_.end()) {
        const grpc::StatusCode code = drop->second;
        drop_after_.erase(drop);
        return code == grpc::CANCELLED
                   ? grpc::Status::CANCELLED
                   : grpc::Status(code, "the server is shutting down");
      }
    }
    while (live_ && !ctx->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return grpc::Status::OK;
  }

  std::vector<int64_t> watch_after() {
    std::lock_guard<std::mutex> lock(mu_);
    return watch_after_;
  }
  std::vector<v1::CreateJobRequest> created() {
    std::lock_guard<std::mutex> lock(mu_);
    return created_;
  }

 private:
  const v1::Job job_;
  const std::vector<v1::JobEvent> events_;
  std::atomic<bool> live_{false};
  std::mutex mu_;
  std::map<int64_t, grpc::StatusCode> drop_after_;
  std::vector<int64_t> watch_after_;
  std::vector<v1::CreateJobRequest> created_;
};

class FakeModels final : public v1::Models::Service {
  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest*,
                        v1::Model* model) override {
    model->set_name("models/m1");
    model->add_classes("cat");
    model->add_classes("dog");
    return grpc::Status::OK;
  }
};

// A job as GetJob returns it: one stage of two epochs.
v1::Job FakeJob(v1::JobState state) {
  v1::Job job;
  job.set_name("jobs/j1");
  job.set_state(state);
  v1::JobSpec* r = job.mutable_resolved_spec();
  r->set_kind(v1::JOB_KIND_TRAIN);
  r->set_dataset("datasets/small");
  r->mutable_model()->set_backbone("mobilenet");
  v1::StageSpec* stage = r->add_stages();
  stage->set_name("frozen-base");
  stage->set_trainable_from("none");
  stage->set_epochs(2);
  stage->set_batch_size(4);
  job.mutable_progress()->set_stages(1);
  job.mutable_progress()->set_epochs(2);
  job.mutable_progress()->set_epoch(state == v1::JOB_STATE_SUCCEEDED ? 2 : 1);
  job.set_last_event_sequence(2);
  if (state == v1::JOB_STATE_SUCCEEDED) job.set_result_model("models/m1");
  if (state == v1::JOB_STATE_FAILED) job.set_failure_reason("out of memory");
  return job;
}

class FakeJobsServer {
 public:
  FakeJobsServer(v1::Job job, std::vector<v1::JobEvent> events)
      : jobs_(std::move(job), std::move(events)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&jobs_);
    builder.RegisterService(&models_);
    server_ = builder.BuildAndStart();
    address_ = "127.0.0.1:" + std::to_string(port_);
    transferd::client::ClientOptions options;
    options.address = address_;
    client_ = transferd::client::Client::Create(options);
  }
  ~FakeJobsServer() { Shutdown(); }
  void Shutdown() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
    server_.reset();
  }

  FakeJobs& jobs() { return jobs_; }
  transferd::client::Client& client() { return *client_; }
  const std::string& address() const { return address_; }

 private:
  FakeJobs jobs_;
  FakeModels models_;
  int port_ = 0;
  std::string address_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<transferd::client::Client> client_;
};

TEST(WatchJobTest, ReconnectsAfterADroppedStreamWithoutLossOrRepeat) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  fake.jobs().DropAfter(3);
  fake.jobs().DropAfter(7);
  std::vector<int64_t> seen;
  int reconnects = 0;
  transferd::client::WatchOptions options;
  options.initial_backoff = std::chrono::milliseconds(10);
  options.on_reconnect = [&](const absl::Status& why, int64_t after) {
    ++reconnects;
    EXPECT_EQ(why.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(after, seen.empty() ? 0 : seen.back());
  };
  absl::Status status = fake.client().WatchJob(
      "jobs/j1", 0, true,
      [&](const v1::JobEvent& e) { seen.push_back(e.sequence()); }, options);
  ASSERT_TRUE(status.ok()) << status;
  std::vector<int64_t> expected;
  for (int64_t i = 1; i <= 11; ++i) expected.push_back(i);
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(reconnects, 2);
  EXPECT_THAT(fake.jobs().watch_after(), ElementsAre(0, 3, 7));
}

// A server shutting down cancels the calls it has not answered; unless the
// client itself cancelled, that is a stream to get back, not the job's end.
TEST(WatchJobTest, ServerCancelledStreamIsResumedNotTheEnd) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  fake.jobs().DropAfter(4, grpc::CANCELLED);
  std::vector<int64_t> seen;
  std::vector<absl::StatusCode> why;
  transferd::client::WatchOptions options;
  options.initial_backoff = std::chrono::milliseconds(10);
  options.on_reconnect = [&](const absl::Status& s, int64_t) {
    why.push_back(s.code());
  };
  absl::Status status = fake.client().WatchJob(
      "jobs/j1", 0, true,
      [&](const v1::JobEvent& e) { seen.push_back(e.sequence()); }, options);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(seen.size(), 11u);
  EXPECT_EQ(seen.back(), 11);
  EXPECT_THAT(why, ElementsAre(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fake.jobs().watch_after(), ElementsAre(0, 4));
}

TEST(WatchJobTest, StartsAfterTheGivenSequence) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  std::vector<int64_t> seen;
  ASSERT_TRUE(fake.client()
                  .WatchJob("jobs/j1", 9, false,
                            [&](const v1::JobEvent& e) {
                              seen.push_back(e.sequence());
                            })
                  .ok());
  EXPECT_THAT(seen, ElementsAre(10, 11));
}

TEST(WatchJobTest, ServerGoneIsAClearErrorAfterTheRetryBudget) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  fake.jobs().DropAfter(2);
  std::vector<int64_t> seen;
  transferd::client::WatchOptions options;
  options.reconnect_for = std::chrono::milliseconds(1500);
  options.initial_backoff = std::chrono::milliseconds(10);
  options.on_reconnect = [&](const absl::Status&, int64_t) { fake.Shutdown(); };
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = fake.client().WatchJob(
      "jobs/j1", 0, true,
      [&](const v1::JobEvent& e) { seen.push_back(e.sequence()); }, options);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("lost the event stream of jobs/j1"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("within 1.5 s"));
  EXPECT_THAT(seen, ElementsAre(1, 2));
  EXPECT_GE(took, std::chrono::milliseconds(1400));
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(WatchJobTest, UnreachableAtTheStartFailsAtOnce) {
  transferd::client::ClientOptions options;
  options.address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  auto client = transferd::client::Client::Create(options);
  const auto start = std::chrono::steady_clock::now();
  absl::Status status =
      client->WatchJob("jobs/j1", 0, true, [](const v1::JobEvent&) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("cannot reach transferd"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(WatchJobTest, CancelFlagEndsTheWatch) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_RUNNING),
                      {StateEvent(1, v1::JOB_STATE_QUEUED)});
  fake.jobs().SetLive(true);
  std::atomic<bool> cancel{false};
  transferd::client::WatchOptions options;
  options.cancel = &cancel;
  absl::Status status = fake.client().WatchJob(
      "jobs/j1", 0, true, [&](const v1::JobEvent&) { cancel = true; }, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
}

TEST(TransferctlJobsTest, WatchPrintsKerasLinesInPipeModeAcrossAReconnect) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  fake.jobs().DropAfter(5);
  RunResult r = Ctl({"--server", fake.address(), "jobs", "watch", "j1"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "state: QUEUED\n"
      "state: RUNNING\n"
      "Stage 1/1 \"frozen-base\": 4 trainable tensors, 2,081 trainable "
      "params, 3,228,864 non-trainable; backbone features cached\n"
      "  trainable from none; default optimizer; 2 epochs; batch 4; "
      "augmentation default\n"
      "Epoch 1/2\n"
      "4/4 - 3s - loss: 0.6931 - accuracy: 0.5000 - val_loss: 0.6900 - "
      "val_accuracy: 0.5500\n"
      "checkpoint: epoch 1, 2.0 MiB\n"
      "Epoch 2/2\n"
      "4/4 - 3s - loss: 0.6931 - accuracy: 0.5000 - val_loss: 0.6900 - "
      "val_accuracy: 0.5500\n"
      "checkpoint: epoch 2, 2.0 MiB\n"
      "evaluation validation: 4 examples - loss: 0.5000 - accuracy: 0.7500\n"
      "state: SUCCEEDED\n"
      "model: models/m1\n");
  EXPECT_THAT(r.err, HasSubstr("connection lost"));
  EXPECT_THAT(fake.jobs().watch_after(), ElementsAre(0, 5));
}

TEST(TransferctlJobsTest, WatchDrawsAKerasBarOnATerminal) {
  // util-linux script(1) gives transferctl a pseudo-terminal as stdout.
  if (!fs::exists("/usr/bin/script")) GTEST_SKIP() << "no /usr/bin/script";
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  const std::string command = testing::TransferctlBinary() + " --server " +
                              fake.address() + " jobs watch j1";
  RunResult r = testing::Run({"/usr/bin/script", "-qec", command, "/dev/null"},
                             {"TRANSFERD_ADDR="});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("Epoch 1/2"));
  EXPECT_THAT(r.out,
              HasSubstr("\r2/4 [==============>...............] - ETA: 2s - "
                        "loss: 0.7000 - accuracy: 0.5000"));
  // The bar's line is cleared and replaced by the epoch's summary.
  EXPECT_THAT(r.out, HasSubstr("\r\033[K4/4 - 3s - loss: 0.6931"));
  // Checkpoints are dim.
  EXPECT_THAT(r.out, HasSubstr("\033[2mcheckpoint: epoch 1, 2.0 MiB\033[0m"));
}

TEST(TransferctlJobsTest, ShowPrintsHistoryAndConfusionMatrix) {
  v1::Job job = FakeJob(v1::JOB_STATE_SUCCEEDED);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    v1::EpochMetrics* m = job.add_history();
    m->set_epoch(epoch);
    m->set_loss(0.6931);
    m->set_accuracy(0.5);
    m->set_val_loss(0.69);
    m->set_val_accuracy(0.55);
    m->set_learning_rate(1e-4);
    m->set_seconds(3);
  }
  v1::Evaluation* e = job.add_evaluations();
  e->set_split("validation");
  e->set_examples(4);
  e->set_accuracy(0.75);
  e->set_loss(0.5);
  for (int64_t v : {2, 0, 1, 1}) e->mutable_confusion_matrix()->add_counts(v);
  FakeJobsServer fake(job, {});
  RunResult r = Ctl({"--server", fake.address(), "jobs", "show", "j1"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("job         jobs/j1\n"));
  EXPECT_THAT(r.out, HasSubstr("kind        TRAIN\n"));
  EXPECT_THAT(r.out, HasSubstr("network     mobilenet\n"));
  EXPECT_THAT(r.out, HasSubstr("stage 1     frozen-base: trainable from none"));
  EXPECT_THAT(r.out, HasSubstr("state       SUCCEEDED\n"));
  EXPECT_THAT(r.out, HasSubstr("progress    stage 1/1, epoch 2/2\n"));
  EXPECT_THAT(r.out, HasSubstr("  EPOCH STAGE     LOSS      ACC VAL_LOSS  "
                               "VAL_ACC         LR  SECONDS\n"
                               "      1     1   0.6931   0.5000   0.6900   "
                               "0.5500     0.0001      3.0\n"));
  EXPECT_THAT(r.out, HasSubstr("evaluation  validation: 4 examples, loss "
                               "0.5000, accuracy 0.7500\n"));
  // Class names come from the result model.
  EXPECT_THAT(r.out, HasSubstr("                      cat    dog\n"
                               "               cat      2      0\n"
                               "               dog      1      1\n"));
  EXPECT_THAT(r.out, HasSubstr("model       models/m1\n"));

  RunResult missing = Ctl({"--server", fake.address(), "jobs", "show", "nope"});
  EXPECT_EQ(missing.status.code, 1);
  EXPECT_EQ(missing.err, "transferctl: job not found\n");
}

TEST(TransferctlJobsTest, ShowSummarisesManyClassesByTheirTopConfusions) {
  v1::Job job = FakeJob(v1::JOB_STATE_SUCCEEDED);
  v1::Evaluation* e = job.add_evaluations();
  e->set_split("validation");
  e->set_examples(2000);
  e->set_accuracy(0.61);
  e->set_loss(1.5);
  e->set_top_k(5);
  e->set_top_k_accuracy(0.83);
  e->set_macro_accuracy(0.47);
  e->set_gap(0.52);
  for (int i = 0; i < 1049; ++i) {
    e->mutable_confusion_matrix()->add_classes("landmark-" + std::to_string(i));
  }
  v1::ConfusionCell* cell = e->mutable_confusion_matrix()->add_cells();
  cell->set_true_class(3);
  cell->set_predicted_class(7);
  cell->set_count(12);
  for (const auto& [t, p, n] :
       std::vector<std::tuple<std::string, std::string, int>>{
           {"landmark-3", "landmark-7", 12}, {"landmark-9", "landmark-1", 4}}) {
    v1::Confusion* c = e->add_top_confusions();
    c->set_true_label(t);
    c->set_predicted_label(p);
    c->set_count(n);
  }
  FakeJobsServer fake(job, {});
  RunResult r = Ctl({"--server", fake.address(), "jobs", "show", "j1"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("evaluation  validation: 2000 examples, loss "
                               "1.5000, accuracy 0.6100, top-5 0.8300\n"
                               "            macro accuracy 0.4700, GAP 0.5200 "
                               "over 1049 classes\n"
                               "            most frequent confusions (true -> "
                               "predicted: images)\n"
                               "              landmark-3 -> landmark-7: 12\n"
                               "              landmark-9 -> landmark-1: 4\n"));
  // No 1,049-column matrix.
  EXPECT_LT(r.out.size(), 4000u);
}

TEST(TransferctlJobsTest, WatchAsJsonLines) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_SUCCEEDED), SucceededEvents());
  RunResult r =
      Ctl({"--server", fake.address(), "--json", "jobs", "watch", "jobs/j1"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  const std::vector<nlohmann::json> events = JsonLines(r.out);
  ASSERT_EQ(events.size(), 11u) << r.out;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i]["sequence"], std::to_string(i + 1));
  }
  EXPECT_EQ(events[4]["epoch_end"]["val_accuracy"], 0.55);
}

TEST(TransferctlJobsTest, FailedJobExitsOneWithTheReason) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_FAILED),
                      {StateEvent(1, v1::JOB_STATE_QUEUED),
                       StateEvent(2, v1::JOB_STATE_RUNNING),
                       StateEvent(3, v1::JOB_STATE_FAILED, "out of memory")});
  RunResult r = Ctl({"--server", fake.address(), "jobs", "watch", "j1"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_THAT(r.out, HasSubstr("state: FAILED (out of memory)"));
  EXPECT_EQ(r.err, "transferctl: jobs/j1 failed: out of memory\n");
}

TEST(TransferctlJobsTest, CtrlCDetachesWithoutCancelling) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_RUNNING),
                      {StateEvent(1, v1::JOB_STATE_QUEUED),
                       StateEvent(2, v1::JOB_STATE_RUNNING)});
  fake.jobs().SetLive(true);
  testing::TempDir temp;
  const std::string log = temp.path() + "/watch.log";
  auto watch =
      testing::Subprocess::Spawn({testing::TransferctlBinary(), "--server",
                                  fake.address(), "jobs", "watch", "j1"},
                                 {"TRANSFERD_ADDR="}, log);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (fake.jobs().watch_after().empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(fake.jobs().watch_after().empty());
  // A live job is followed from its newest event on.
  EXPECT_THAT(fake.jobs().watch_after(), ElementsAre(2));
  watch.Signal(SIGINT);
  auto exit = watch.Wait(std::chrono::seconds(10));
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited);
  EXPECT_EQ(exit->code, 0);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("jobs/j1 RUNNING, stage 1/1, epoch 1/2"));
  EXPECT_THAT(
      text.str(),
      HasSubstr(
          "detached; the job keeps running: transferctl jobs watch jobs/j1"));
}

TEST(TransferctlJobsTest, TrainFlagsBuildTheSpec) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_QUEUED), {});
  testing::TempDir temp;
  const std::string spec_file = temp.path() + "/spec.json";
  WriteFile(spec_file,
            R"({"recipe": "keras-book", "seed": "7",
                "model": {"backbone": "vgg19", "inputSize": 224},
                "stages": [{"epochs": 30, "batchSize": 20},
                           {"trainableFrom": "block4_conv1", "epochs": 50}]})");
  RunResult r = Ctl({"--server",
                     fake.address(),
                     "train",
                     "datasets/small",
                     "--spec",
                     spec_file,
                     "--backbone",
                     "vgg16",
                     "--alpha",
                     "0.5",
                     "--weights",
                     "none",
                     "--precision",
                     "bf16",
                     "--pooling",
                     "gap",
                     "--hidden-units",
                     "8",
                     "--dropout",
                     "0.25",
                     "--epochs",
                     "3",
                     "--lr",
                     "0.001",
                     "--optimizer",
                     "sgd",
                     "--momentum",
                     "0.9",
                     "--selection-metric",
                     "loss",
                     "--augment",
                     "none",
                     "--fine-tune-from",
                     "block5_conv1",
                     "--fine-tune-epochs",
                     "4",
                     "--fine-tune-lr",
                     "1e-5",
                     "--id",
                     "my-job",
                     "--detach"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("transferctl jobs watch jobs/j1"));
  ASSERT_EQ(fake.jobs().created().size(), 1u);
  const v1::CreateJobRequest request = fake.jobs().created()[0];
  EXPECT_EQ(request.job_id(), "my-job");
  const v1::JobSpec& s = request.spec();
  EXPECT_EQ(s.kind(), v1::JOB_KIND_TRAIN);
  EXPECT_EQ(s.dataset(), "datasets/small");
  EXPECT_EQ(s.recipe(), "keras-book");
  EXPECT_EQ(s.seed(), 7u);
  EXPECT_EQ(s.selection_metric(), "loss");
  EXPECT_EQ(s.model().backbone(), "vgg16");
  EXPECT_EQ(s.model().input_size(), 224);
  EXPECT_EQ(s.model().alpha(), 0.5);
  EXPECT_EQ(s.model().weights(), "none");
  EXPECT_EQ(s.model().precision(), v1::PRECISION_BF16);
  EXPECT_EQ(s.model().head().pooling(), v1::POOLING_GLOBAL_AVERAGE);
  EXPECT_EQ(s.model().head().hidden_units(), 8);
  EXPECT_EQ(s.model().head().dropout(), 0.25);
  ASSERT_EQ(s.stages_size(), 2);
  EXPECT_EQ(s.stages(0).epochs(), 3);
  EXPECT_EQ(s.stages(0).batch_size(), 20);
  EXPECT_EQ(s.stages(0).optimizer().kind(), v1::OptimizerSpec::KIND_SGD);
  EXPECT_EQ(s.stages(0).optimizer().learning_rate(), 0.001);
  EXPECT_EQ(s.stages(0).optimizer().momentum(), 0.9);
  EXPECT_TRUE(s.stages(0).augmentation().has_enabled());
  EXPECT_FALSE(s.stages(0).augmentation().enabled());
  EXPECT_EQ(s.stages(1).trainable_from(), "block5_conv1");
  EXPECT_EQ(s.stages(1).epochs(), 4);
  EXPECT_EQ(s.stages(1).optimizer().learning_rate(), 1e-5);
  EXPECT_FALSE(s.stages(1).optimizer().has_momentum());

  // finetune: FINE_TUNE of models/ID, no network.
  RunResult tune =
      Ctl({"--server", fake.address(), "--json", "finetune", "m1", "small",
           "--epochs", "2", "--trainable-from", "100", "--detach"});
  ASSERT_EQ(tune.status.code, 0) << tune.err;
  EXPECT_EQ(nlohmann::json::parse(tune.out)["name"], "jobs/j1");
  ASSERT_EQ(fake.jobs().created().size(), 2u);
  const v1::JobSpec t = fake.jobs().created()[1].spec();
  EXPECT_EQ(t.kind(), v1::JOB_KIND_FINE_TUNE);
  EXPECT_EQ(t.base_model(), "models/m1");
  EXPECT_EQ(t.dataset(), "datasets/small");
  EXPECT_FALSE(t.has_model());
  ASSERT_EQ(t.stages_size(), 1);
  EXPECT_EQ(t.stages(0).trainable_from(), "100");
  EXPECT_EQ(t.stages(0).epochs(), 2);
}

TEST(TransferctlNoServerTest, JobUsageErrorsExitTwo) {
  EXPECT_EQ(Ctl({"train"}).status.code, 2);
  EXPECT_EQ(Ctl({"train", "small", "--optimizer", "adamw"}).status.code, 2);
  EXPECT_EQ(Ctl({"train", "small", "--precision", "fp16"}).status.code, 2);
  EXPECT_EQ(Ctl({"train", "small", "--epochs", "two"}).status.code, 2);
  EXPECT_EQ(Ctl({"train", "small", "--selection-metric", "f1"}).status.code, 2);
  EXPECT_EQ(Ctl({"finetune", "m1"}).status.code, 2);
  EXPECT_EQ(Ctl({"jobs", "ls", "--state", "sleeping"}).status.code, 2);
  EXPECT_EQ(Ctl({"jobs", "watch"}).status.code, 2);
  EXPECT_EQ(Ctl({"models", "show"}).status.code, 2);
  testing::TempDir temp;
  WriteFile(temp.path() + "/bad.json", "{\"stages\": 3}");
  RunResult bad = Ctl({"train", "small", "--spec", temp.path() + "/bad.json"});
  EXPECT_EQ(bad.status.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("is not a JobSpec"));
  for (const char* cmd : {"train", "finetune"}) {
    RunResult help = Ctl({cmd, "--help"});
    EXPECT_EQ(help.status.code, 0);
    EXPECT_THAT(help.out, HasSubstr("Examples:"));
  }
  RunResult watch_help = Ctl({"jobs", "watch", "--help"});
  EXPECT_THAT(watch_help.out, HasSubstr("Ctrl-C"));
}

// ---- jobs plot ------------------------------------------------------------

// Lines of a text file.
std::vector<std::string> FileLines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

TEST_F(TransferctlTest, PlotTwoStageJobAsPngAndCsv) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "plot-small";
  MakeTrainingFolder(folder);
  const std::string& server = server_->address();
  RunResult up = Ctl({"--server", server, "datasets", "upload", folder.string(),
                      "--id", "plot-small"});
  ASSERT_EQ(up.status.code, 0) << up.err;

  // Two stages: 2 epochs with the base frozen, 1 fine-tuning the top.
  RunResult train = testing::Run({testing::TransferctlBinary(),
                                  "--server",
                                  server,
                                  "train",
                                  "plot-small",
                                  "--id",
                                  "plot-job",
                                  "--backbone",
                                  "mobilenet",
                                  "--alpha",
                                  "0.25",
                                  "--weights",
                                  "none",
                                  "--input-size",
                                  "32",
                                  "--epochs",
                                  "2",
                                  "--batch-size",
                                  "4",
                                  "--augment",
                                  "none",
                                  "--hidden-units",
                                  "8",
                                  "--fine-tune-from",
                                  "conv_dw_13",
                                  "--fine-tune-epochs",
                                  "1",
                                  "--fine-tune-lr",
                                  "1e-5"},
                                 {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(train.status.code, 0) << train.out << train.err << server_->Log();
  EXPECT_THAT(train.out, HasSubstr("Stage 2/2"));

  const fs::path png = fs::path(temp.path()) / "curves.png";
  const fs::path csv = fs::path(temp.path()) / "curves.csv";
  RunResult plot = Ctl({"--server", server, "--json", "jobs", "plot",
                        "plot-job", "-o", png.string(), "--csv", csv.string(),
                        "--width", "800", "--height", "360"});
  ASSERT_EQ(plot.status.code, 0) << plot.err;
  const auto json = nlohmann::json::parse(plot.out);
  EXPECT_EQ(json["png"], png.string());
  EXPECT_EQ(json["csv"], csv.string());
  EXPECT_EQ(json["epochs"], 3);

  const cv::Mat image = cv::imread(png.string(), cv::IMREAD_COLOR);
  ASSERT_FALSE(image.empty()) << png;
  EXPECT_EQ(image.cols, 800);
  EXPECT_EQ(image.rows, 360);

  // A header and one row per epoch of the job's history, stages 1, 1, 2.
  RunResult show =
      Ctl({"--server", server, "--json", "jobs", "show", "plot-job"});
  ASSERT_EQ(show.status.code, 0) << show.err;
  const size_t epochs = nlohmann::json::parse(show.out)["history"].size();
  EXPECT_EQ(epochs, 3u);
  const std::vector<std::string> lines = FileLines(csv);
  ASSERT_EQ(lines.size(), epochs + 1);
  EXPECT_EQ(lines[0],
            "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds");
  EXPECT_THAT(lines[1], StartsWith("1,1,"));
  EXPECT_THAT(lines[2], StartsWith("2,1,"));
  EXPECT_THAT(lines[3], StartsWith("3,2,"));
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(std::count(lines[i].begin(), lines[i].end(), ','), 7) << lines[i];
  }

  // CSV only, plain output: no PNG needed.
  const fs::path only = fs::path(temp.path()) / "only.csv";
  RunResult csv_only = Ctl({"--server", server, "jobs", "plot", "jobs/plot-job",
                            "--csv", only.string()});
  ASSERT_EQ(csv_only.status.code, 0) << csv_only.err;
  EXPECT_THAT(csv_only.out, HasSubstr(only.string()));
  EXPECT_EQ(FileLines(only), lines);
  RunResult csv_json = Ctl({"--server", server, "--json", "jobs", "plot",
                            "plot-job", "--csv", only.string()});
  ASSERT_EQ(csv_json.status.code, 0) << csv_json.err;
  const auto csv_only_json = nlohmann::json::parse(csv_json.out);
  EXPECT_TRUE(csv_only_json["png"].is_null()) << csv_json.out;
  EXPECT_EQ(csv_only_json["csv"], only.string());
  EXPECT_EQ(csv_only_json["epochs"], 3);
  // "-" is standard output, and then nothing else is printed there (run in
  // the temporary folder: no file named "-" may appear).
  RunResult csv_stdout = testing::Run(
      {"/bin/sh", "-c",
       "cd '" + temp.path() + "' && exec " + testing::TransferctlBinary() +
           " --server " + server + " jobs plot plot-job --csv -"},
      {"TRANSFERD_ADDR="});
  ASSERT_EQ(csv_stdout.status.code, 0) << csv_stdout.err;
  EXPECT_EQ(csv_stdout.out, absl::StrJoin(lines, "\n") + "\n");
  EXPECT_FALSE(fs::exists(fs::path(temp.path()) / "-"));
  EXPECT_EQ(Ctl({"--server", server, "jobs", "plot", "plot-job", "-o", "-",
                 "--csv", "-"})
                .status.code,
            2);

  // Neither output: a usage error; an unknown job: the server's NOT_FOUND;
  // an unwritable path: exit code 1 naming it.
  EXPECT_EQ(Ctl({"--server", server, "jobs", "plot", "plot-job"}).status.code,
            2);
  RunResult missing =
      Ctl({"--server", server, "jobs", "plot", "nope", "--csv", only.string()});
  EXPECT_EQ(missing.status.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("\"nope\" not found"));
  RunResult unwritable = Ctl({"--server", server, "jobs", "plot", "plot-job",
                              "-o", temp.path() + "/no/such/dir/curves.png"});
  EXPECT_EQ(unwritable.status.code, 1);
  EXPECT_THAT(unwritable.err, HasSubstr("cannot write"));
}

TEST(TransferctlJobsTest, PlotOfAJobWithoutHistoryIsAnError) {
  FakeJobsServer fake(FakeJob(v1::JOB_STATE_QUEUED), {});
  testing::TempDir temp;
  const std::string png = temp.path() + "/curves.png";
  RunResult r =
      Ctl({"--server", fake.address(), "jobs", "plot", "j1", "-o", png});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            "transferctl: jobs/j1 has no finished epoch to plot yet (state "
            "QUEUED)\n");
  EXPECT_FALSE(fs::exists(png));
}

TEST(TransferctlNoServerTest, PlotUsageErrorsExitTwo) {
  EXPECT_EQ(Ctl({"jobs", "plot"}).status.code, 2);
  EXPECT_EQ(
      Ctl({"jobs", "plot", "j1", "-o", "x.png", "--width", "10"}).status.code,
      2);
  EXPECT_EQ(Ctl({"jobs", "plot", "j1", "-o", "x.png", "--height", "100000"})
                .status.code,
            2);
  RunResult help = Ctl({"jobs", "plot", "--help"});
  EXPECT_EQ(help.status.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Examples:"));
  EXPECT_THAT(help.out, HasSubstr("--csv"));
}

// ---- models alias / aliases / unalias / export / import
// -----------------------

TEST_F(TransferctlTest, ModelsAliasExportImport) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "alias-small";
  MakeTrainingFolder(folder);
  const std::string& server = server_->address();
  ASSERT_EQ(Ctl({"--server", server, "datasets", "upload", folder.string(),
                 "--id", "alias-small"})
                .status.code,
            0);
  RunResult train = testing::Run({testing::TransferctlBinary(),
                                  "--server",
                                  server,
                                  "train",
                                  "alias-small",
                                  "--id",
                                  "alias-job",
                                  "--backbone",
                                  "mobilenet",
                                  "--alpha",
                                  "0.25",
                                  "--weights",
                                  "none",
                                  "--input-size",
                                  "32",
                                  "--epochs",
                                  "1",
                                  "--batch-size",
                                  "4",
                                  "--augment",
                                  "none",
                                  "--hidden-units",
                                  "8"},
                                 {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(train.status.code, 0) << train.out << train.err << server_->Log();

  RunResult alias =
      Ctl({"--server", server, "models", "alias", "catdog", "alias-job"});
  ASSERT_EQ(alias.status.code, 0) << alias.err;
  EXPECT_EQ(alias.out, "aliases/catdog -> models/alias-job\n");
  RunResult aliases = Ctl({"--server", server, "--json", "models", "aliases"});
  ASSERT_EQ(aliases.status.code, 0) << aliases.err;
  const auto listed = nlohmann::json::parse(aliases.out);
  ASSERT_EQ(listed["aliases"].size(), 1u) << aliases.out;
  EXPECT_EQ(listed["aliases"][0]["name"], "aliases/catdog");
  EXPECT_EQ(listed["aliases"][0]["model"], "models/alias-job");
  RunResult table = Ctl({"--server", server, "models", "aliases"});
  ASSERT_EQ(table.status.code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("ALIAS"));
  EXPECT_THAT(table.out, HasSubstr("aliases/catdog"));
  RunResult show =
      Ctl({"--server", server, "models", "show", "aliases/catdog"});
  ASSERT_EQ(show.status.code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("model       models/alias-job"));
  EXPECT_THAT(show.out, HasSubstr("aliases/catdog"));
  RunResult rm = Ctl({"--server", server, "models", "rm", "alias-job"});
  EXPECT_EQ(rm.status.code, 1);
  EXPECT_THAT(rm.err, HasSubstr("catdog"));

  const std::string tar = temp.path() + "/catdog.tar";
  RunResult exported = Ctl(
      {"--server", server, "models", "export", "aliases/catdog", "-o", tar});
  ASSERT_EQ(exported.status.code, 0) << exported.err;
  EXPECT_THAT(exported.out, HasSubstr("verified"));
  EXPECT_TRUE(fs::exists(tar));
  EXPECT_FALSE(fs::exists(tar + ".part"));
  auto sha256 = client::FileSha256(tar);
  ASSERT_TRUE(sha256.ok());
  EXPECT_THAT(exported.out, HasSubstr(*sha256));
  RunResult exported_json = Ctl({"--server", server, "--json", "models",
                                 "export", "alias-job", "-o", tar});
  ASSERT_EQ(exported_json.status.code, 0) << exported_json.err;
  EXPECT_EQ(nlohmann::json::parse(exported_json.out)["sha256"], *sha256);

  RunResult imported = Ctl({"--server", server, "models", "import", tar, "--id",
                            "imported", "--name", "Imported copy"});
  ASSERT_EQ(imported.status.code, 0) << imported.err;
  EXPECT_THAT(imported.out, HasSubstr("models/imported"));
  RunResult copy =
      Ctl({"--server", server, "--json", "models", "show", "imported"});
  ASSERT_EQ(copy.status.code, 0) << copy.err;
  const auto model = nlohmann::json::parse(copy.out);
  EXPECT_EQ(model["display_name"], "Imported copy");
  EXPECT_EQ(model["source_job"], "");
  EXPECT_EQ(model["classes"], nlohmann::json({"cat", "dog"}));
  EXPECT_EQ(model["spec"]["backbone"], "mobilenet");
  RunResult again =
      Ctl({"--server", server, "models", "import", tar, "--id", "imported"});
  EXPECT_EQ(again.status.code, 1);
  EXPECT_THAT(again.err, HasSubstr("already exists"));

  const std::string junk = temp.path() + "/junk.tar";
  WriteFile(junk, std::string(2048, 'j'));
  RunResult bad = Ctl({"--server", server, "models", "import", junk});
  EXPECT_EQ(bad.status.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("not a valid model archive"));
  RunResult missing = Ctl({"--server", server, "models", "export",
                           "aliases/nope", "-o", temp.path() + "/nope.tar"});
  EXPECT_EQ(missing.status.code, 1);
  EXPECT_FALSE(fs::exists(temp.path() + "/nope.tar"));
  EXPECT_FALSE(fs::exists(temp.path() + "/nope.tar.part"));

  ASSERT_EQ(
      Ctl({"--server", server, "models", "unalias", "catdog"}).status.code, 0);
  EXPECT_EQ(
      Ctl({"--server", server, "models", "unalias", "catdog"}).status.code, 1);
  EXPECT_EQ(Ctl({"--server", server, "models", "rm", "alias-job"}).status.code,
            0);
}

TEST(TransferctlNoServerTest, ModelsAliasUsageErrorsExitTwo) {
  EXPECT_EQ(Ctl({"models", "alias", "catdog"}).status.code, 2);
  EXPECT_EQ(Ctl({"models", "unalias"}).status.code, 2);
  EXPECT_EQ(Ctl({"models", "export", "m1"}).status.code, 2);  // no -o
  EXPECT_EQ(Ctl({"models", "import", "/no/such/file.tar"}).status.code, 2);
}

TEST_F(TransferctlTest, PredictFilesFoldersAndAPredictJob) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "predict-small";
  MakeTrainingFolder(folder);
  const std::string& server = server_->address();
  ASSERT_EQ(Ctl({"--server", server, "datasets", "upload", folder.string(),
                 "--id", "predict-small"})
                .status.code,
            0);
  RunResult train = testing::Run({testing::TransferctlBinary(),
                                  "--server",
                                  server,
                                  "train",
                                  "predict-small",
                                  "--id",
                                  "predict-job",
                                  "--backbone",
                                  "mobilenet",
                                  "--alpha",
                                  "0.25",
                                  "--weights",
                                  "none",
                                  "--input-size",
                                  "32",
                                  "--epochs",
                                  "1",
                                  "--batch-size",
                                  "4",
                                  "--augment",
                                  "none",
                                  "--hidden-units",
                                  "8"},
                                 {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(train.status.code, 0) << train.out << train.err << server_->Log();
  ASSERT_EQ(Ctl({"--server", server, "models", "alias", "predict-alias",
                 "predict-job"})
                .status.code,
            0);

  // A folder (searched recursively) plus one named file: 4 validation
  // images and 1 training image, as JSON.
  const fs::path one = folder / "train" / "cat.0.jpg";
  RunResult json =
      Ctl({"--server", server, "--json", "predict", "--model", "predict-alias",
           (folder / "validation").string(), one.string()});
  ASSERT_EQ(json.status.code, 0) << json.out << json.err;
  const auto answer = nlohmann::json::parse(json.out);
  EXPECT_EQ(answer["model"], "models/predict-job");
  ASSERT_EQ(answer["predictions"].size(), 5u) << json.out;
  std::map<std::string, std::string> served;  // file name -> label
  for (const auto& p : answer["predictions"]) {
    EXPECT_EQ(p["status"]["code"], 0);  // numeric, as in jobs results
    const double cat = p["scores"]["cat"].get<double>();
    const double dog = p["scores"]["dog"].get<double>();
    EXPECT_NEAR(cat + dog, 1.0, 1e-5);
    EXPECT_EQ(p["label"], cat >= dog ? "cat" : "dog");
    EXPECT_DOUBLE_EQ(p["probability"].get<double>(), std::max(cat, dog));
    served[fs::path(p["file"].get<std::string>()).filename().string()] =
        p["label"].get<std::string>();
  }
  EXPECT_EQ(answer["predictions"][4]["file"],
            one.string());  // in the given order

  // A table; a file that is not an image gets its own error line, the
  // others are answered, and the exit code says something failed.
  const fs::path junk = fs::path(temp.path()) / "junk.jpg";
  WriteFile(junk, "this is not a JPEG");
  RunResult table =
      Ctl({"--server", server, "predict", "--model", "models/predict-job",
           "--tta", one.string(), junk.string()});
  EXPECT_EQ(table.status.code, 1) << table.out << table.err;
  EXPECT_THAT(table.out, HasSubstr("FILE"));
  EXPECT_THAT(table.out, HasSubstr("PROBABILITY"));
  EXPECT_THAT(table.out, HasSubstr(one.string() + "  " + served["cat.0.jpg"]));
  EXPECT_THAT(table.out, HasSubstr("error        INVALID_ARGUMENT"));
  EXPECT_THAT(table.out,
              HasSubstr("2 images, 1 error; model models/predict-job"));

  RunResult unknown =
      Ctl({"--server", server, "predict", "--model", "nope", one.string()});
  EXPECT_EQ(unknown.status.code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("nope"));

  // A PREDICT job over the stored dataset's validation split, followed.
  RunResult job =
      testing::Run({testing::TransferctlBinary(), "--server", server, "predict",
                    "--model", "predict-alias", "--dataset", "predict-small",
                    "--split", "validation", "--id", "predict-run"},
                   {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(job.status.code, 0) << job.out << job.err << server_->Log();
  EXPECT_THAT(job.out, HasSubstr("evaluation validation: 4 examples"));
  EXPECT_THAT(job.out, HasSubstr("state: SUCCEEDED"));
  EXPECT_THAT(job.out, HasSubstr("transferctl jobs results jobs/predict-run"));

  const std::string csv = temp.path() + "/results.csv";
  RunResult written =
      Ctl({"--server", server, "jobs", "results", "predict-run", "--csv", csv});
  ASSERT_EQ(written.status.code, 0) << written.err;
  EXPECT_EQ(written.out, csv + ": 4 rows\n");
  std::ifstream in(csv);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(
      line,
      "path,split,true_label,label,p_cat,p_dog,status_code,status_message");
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    ASSERT_EQ(f.size(), 8u) << line;
    EXPECT_EQ(f[1], "validation");
    EXPECT_EQ(f[2], fs::path(f[0]).filename().string().substr(
                        0, 3));  // cat.N.jpg -> cat
    // The job and the Predict RPC agree on every file.
    EXPECT_EQ(f[3], served[fs::path(f[0]).filename().string()]) << line;
    EXPECT_NEAR(std::stod(f[4]) + std::stod(f[5]), 1.0, 1e-5);
    EXPECT_EQ(f[6], "OK");
  }
  EXPECT_EQ(rows, 4);

  RunResult results =
      Ctl({"--server", server, "--json", "jobs", "results", "predict-run"});
  ASSERT_EQ(results.status.code, 0) << results.err;
  const auto listed = nlohmann::json::parse(results.out);
  EXPECT_EQ(listed["classes"], nlohmann::json({"cat", "dog"}));
  EXPECT_EQ(listed["predictions"].size(), 4u);
  for (const auto& p : listed["predictions"]) {
    EXPECT_EQ(p["status"]["code"], 0) << p;  // numeric, as in predict --json
  }
  RunResult text = Ctl({"--server", server, "jobs", "results", "predict-run"});
  ASSERT_EQ(text.status.code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("PATH"));
  EXPECT_THAT(text.out, HasSubstr("labelled files correct"));
  // Results of a training job: it is not a PREDICT job.
  EXPECT_EQ(
      Ctl({"--server", server, "jobs", "results", "predict-job"}).status.code,
      1);
  ASSERT_EQ(Ctl({"--server", server, "models", "unalias", "predict-alias"})
                .status.code,
            0);
}

// Labels from a contest's CSV files, an unlabelled test folder, a PREDICT
// job over it and its submission file, all through transferctl.
TEST_F(TransferctlTest, CsvLabelsTestFolderAndSubmission) {
  testing::TempDir temp;
  const fs::path root = fs::path(temp.path()) / "landmarks";
  // Shard folders (train/0/1/...) that must not become class names.
  std::string rows = "id,landmark_id\n";
  int n = 0;
  for (int cls = 0; cls < 3; ++cls) {
    for (int i = 0; i < 4; ++i, ++n) {
      const std::string id = absl::StrFormat("img%04d", n);
      const fs::path file = root / "train" / std::to_string(n % 2) /
                            std::to_string(n % 3) / (id + ".jpg");
      fs::create_directories(file.parent_path());
      cv::Mat image(24, 32, CV_8UC3,
                    cv::Scalar(80 * cls, 255 - 60 * cls, 11 * n % 256));
      ASSERT_TRUE(cv::imwrite(file.string(), image));
      absl::StrAppend(&rows, id, ",", 10 + cls, "\n");
    }
  }
  for (int i = 0; i < 3; ++i) {
    cv::Mat image(24, 32, CV_8UC3, cv::Scalar(70 * i, 90, 200 - 50 * i));
    fs::create_directories(root / "test");
    ASSERT_TRUE(cv::imwrite(
        (root / "test" / absl::StrFormat("t%02d.jpg", i)).string(), image));
  }
  const std::string labels = (root / "train.csv").string();
  WriteFile(labels, rows + "img0001,11\nghost,10\n");  // lines 14, 15
  const std::string names = (root / "category.csv").string();
  WriteFile(names,
            "landmark_id,landmark_name\n10,경복궁\n11,남산\n12,\"불국사, "
            "경주\"\n");
  const std::string& server = server_->address();
  const std::string spec = "csv:" + labels + ",names=" + names;

  // --strict: the two bad rows stop everything; nothing is stored.
  RunResult strict =
      Ctl({"--server", server, "datasets", "upload", (root / "train").string(),
           "--id", "lm", "--labels", spec, "--strict"});
  EXPECT_EQ(strict.status.code, 1) << strict.out << strict.err;
  EXPECT_THAT(strict.err,
              HasSubstr("error: " + labels +
                        ":14: id \"img0001\" already given on line 3"));
  EXPECT_THAT(strict.err, HasSubstr(labels + ":15: no file for id \"ghost\""));
  EXPECT_THAT(strict.err, HasSubstr("nothing was sent"));
  EXPECT_EQ(Ctl({"--server", server, "datasets", "show", "lm"}).status.code, 1);

  // Without --strict the bad rows are warned about and skipped.
  RunResult up = Ctl({"--server", server, "--json", "datasets", "upload",
                      (root / "train").string(), "--id", "lm", "--labels", spec,
                      "--split", "counts-up-to:3,1,0"});
  ASSERT_EQ(up.status.code, 0) << up.out << up.err;
  EXPECT_THAT(up.err, HasSubstr("warning: " + labels + ":15:"));
  EXPECT_THAT(up.err, HasSubstr("12 of 12 files labelled"));
  const auto uploaded = nlohmann::json::parse(up.out);
  EXPECT_EQ(uploaded["dataset"]["classes"],
            nlohmann::json({"경복궁", "남산", "불국사, 경주"}));
  EXPECT_EQ(uploaded["dataset"]["label_source"], "LABEL_SOURCE_EXPLICIT");
  EXPECT_EQ(uploaded["accepted_files"], "12");
  EXPECT_EQ(FindSplit(uploaded["dataset"]["splits"], "SPLIT_TRAIN")["files"],
            "9");

  // The unlabelled test folder: kept, no classes, no training on it.
  RunResult test =
      Ctl({"--server", server, "--json", "datasets", "upload",
           (root / "test").string(), "--id", "lm-test", "--labels", "none"});
  ASSERT_EQ(test.status.code, 0) << test.out << test.err;
  const auto test_set = nlohmann::json::parse(test.out);
  EXPECT_EQ(test_set["accepted_files"], "3");
  EXPECT_EQ(test_set["dataset"].value("classes", nlohmann::json::array()),
            nlohmann::json::array());
  EXPECT_EQ(test_set["dataset"]["label_source"], "LABEL_SOURCE_NONE");
  RunResult refused = Ctl({"--server", server, "train", "lm-test", "--backbone",
                           "mobilenet", "--detach"});
  EXPECT_EQ(refused.status.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("unlabelled"));

  RunResult train = testing::Run({testing::TransferctlBinary(),
                                  "--server",
                                  server,
                                  "train",
                                  "lm",
                                  "--id",
                                  "lm-train",
                                  "--backbone",
                                  "mobilenet",
                                  "--alpha",
                                  "0.25",
                                  "--weights",
                                  "none",
                                  "--input-size",
                                  "32",
                                  "--epochs",
                                  "1",
                                  "--batch-size",
                                  "4",
                                  "--augment",
                                  "none",
                                  "--hidden-units",
                                  "8",
                                  "--class-weights",
                                  "balanced"},
                                 {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(train.status.code, 0) << train.out << train.err;
  RunResult job = testing::Run(
      {testing::TransferctlBinary(), "--server", server, "predict", "--model",
       "lm-train", "--dataset", "lm-test", "--top-k", "2", "--id", "lm-run"},
      {"TRANSFERD_ADDR="}, std::chrono::minutes(5));
  ASSERT_EQ(job.status.code, 0) << job.out << job.err;
  EXPECT_THAT(job.out, ::testing::Not(HasSubstr("evaluation")));

  const std::string sub = temp.path() + "/submission.csv";
  RunResult written =
      Ctl({"--server", server, "jobs", "results", "lm-run", "--submission", sub,
           "--submission-columns", "id,landmark_id,conf"});
  ASSERT_EQ(written.status.code, 0) << written.err;
  EXPECT_EQ(written.out, sub + ": 3 rows\n");
  std::ifstream in(sub);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "id,landmark_id,conf");
  const std::set<std::string> classes = {"경복궁", "남산", "\"불국사, 경주\""};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(std::getline(in, line));
    EXPECT_TRUE(absl::StartsWith(line, absl::StrFormat("t%02d,", i))) << line;
    const size_t last = line.rfind(',');
    const std::string label = line.substr(4, last - 4);
    EXPECT_EQ(classes.count(label), 1u) << line;
    const double conf = std::stod(line.substr(last + 1));
    EXPECT_GT(conf, 1.0 / 3 - 1e-6);  // the most probable of three
    EXPECT_LE(conf, 1.0);
  }
  EXPECT_FALSE(std::getline(in, line));
  // Three classes: every probability, and the top 2 asked for.
  RunResult json =
      Ctl({"--server", server, "--json", "jobs", "results", "lm-run"});
  ASSERT_EQ(json.status.code, 0) << json.err;
  const auto results = nlohmann::json::parse(json.out);
  ASSERT_EQ(results["predictions"].size(), 3u);
  for (const auto& p : results["predictions"]) {
    EXPECT_EQ(p["probabilities"].size(), 3u);
    ASSERT_EQ(p["top"].size(), 2u);
    EXPECT_EQ(p["top"][0]["label"], p["label"]);
    EXPECT_EQ(p.value("true_label", ""), "");
  }
}

TEST(TransferctlNoServerTest, PredictUsageErrorsExitTwo) {
  EXPECT_EQ(Ctl({"predict", "a.jpg"}).status.code, 2);  // no --model
  EXPECT_EQ(Ctl({"predict", "--model", "m"}).status.code,
            2);  // nothing to predict
  EXPECT_EQ(Ctl({"predict", "--model", "m", "/no/such/file.jpg"}).status.code,
            2);
  EXPECT_EQ(
      Ctl({"predict", "--model", "m", "--split", "test", "/"}).status.code, 2);
  EXPECT_EQ(Ctl({"predict", "--model", "m", "--dataset", "d", "--split",
                 "everything"})
                .status.code,
            2);
  EXPECT_EQ(Ctl({"jobs", "results"}).status.code, 2);
}

TEST(TransferctlNoServerTest, EveryCommandsHelpHasExamplesAndExitCodes) {
  const std::vector<std::vector<std::string>> commands = {
      {"server", "info"},
      {"server", "health"},
      {"datasets", "ls"},
      {"datasets", "upload"},
      {"datasets", "show"},
      {"datasets", "rm"},
      {"train"},
      {"finetune"},
      {"jobs", "ls"},
      {"jobs", "show"},
      {"jobs", "watch"},
      {"jobs", "cancel"},
      {"jobs", "plot"},
      {"jobs", "results"},
      {"models", "ls"},
      {"models", "show"},
      {"models", "rm"},
      {"models", "alias"},
      {"models", "unalias"},
      {"models", "aliases"},
      {"models", "export"},
      {"models", "import"},
      {"predict"}};
  for (std::vector<std::string> command : commands) {
    const std::string name = absl::StrJoin(command, " ");
    command.push_back("--help");
    RunResult r = Ctl(command);
    EXPECT_EQ(r.status.code, 0) << name;
    EXPECT_THAT(r.out, HasSubstr("Example")) << name;
  }
  RunResult top = Ctl({"--help"});
  EXPECT_THAT(top.out, HasSubstr("--json"));
  EXPECT_THAT(top.out, HasSubstr("Exit codes: 0 success"));
  EXPECT_THAT(top.out, HasSubstr("TRANSFERD_TOKEN"));
}

}  // namespace
}  // namespace transferd
