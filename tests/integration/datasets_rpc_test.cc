// transferd.v1.Datasets against the real binary: uploads over a real client
// stream, the statuses of malformed streams and exhausted limits, and what an
// interrupted upload (a cancelled stream, a kill -9) leaves behind: nothing.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/shared_data.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using ::testing::ElementsAre;
using testing::EncodeTestImage;
using ::testing::HasSubstr;
using testing::TransferdServer;

struct File {
  std::string path;
  std::string bytes;
};

class Uploader {
 public:
  explicit Uploader(const TransferdServer& server)
      : stub_(v1::Datasets::NewStub(grpc::CreateChannel(
            server.address(), grpc::InsecureChannelCredentials()))) {
    ctx_.set_deadline(std::chrono::system_clock::now() +
                      std::chrono::minutes(5));
    writer_ = stub_->UploadDataset(&ctx_, &response_);
  }

  bool Header(const std::string& id, v1::SplitPolicy policy = {}) {
    v1::UploadDatasetRequest r;
    r.mutable_header()->set_dataset_id(id);
    *r.mutable_header()->mutable_split_policy() = std::move(policy);
    return writer_->Write(r);
  }

  // Sends a file in chunks of `chunk` bytes; false once the server has ended
  // the call.
  bool Send(const File& f, size_t chunk = 256 * 1024, bool finish = true) {
    size_t pos = 0;
    do {
      v1::UploadDatasetRequest r;
      v1::FileChunk* c = r.mutable_chunk();
      if (pos == 0) {
        c->set_path(f.path);
        c->set_size(static_cast<int64_t>(f.bytes.size()));
      }
      const size_t n = std::min(chunk, f.bytes.size() - pos);
      c->set_data(f.bytes.substr(pos, n));
      pos += n;
      c->set_last(finish && pos == f.bytes.size());
      if (!writer_->Write(r)) return false;
    } while (pos < f.bytes.size());
    return true;
  }

  grpc::Status Finish() {
    writer_->WritesDone();
    return writer_->Finish();
  }
  void Cancel() { ctx_.TryCancel(); }
  const v1::UploadDatasetResponse& response() const { return response_; }

 private:
  std::unique_ptr<v1::Datasets::Stub> stub_;
  grpc::ClientContext ctx_;
  v1::UploadDatasetResponse response_;
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer_;
};

std::unique_ptr<v1::Datasets::Stub> Stub(const TransferdServer& server) {
  return v1::Datasets::NewStub(grpc::CreateChannel(
      server.address(), grpc::InsecureChannelCredentials()));
}

void Deadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

// Polls a condition the server reaches asynchronously (it removes a
// cancelled upload's files after it sees the cancellation) until it holds or
// 20 s pass.
bool Eventually(const std::function<bool()>& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

bool NoUploadLeft(const std::string& data_dir) {
  return fs::is_empty(fs::path(data_dir) / "tmp") &&
         fs::is_empty(fs::path(data_dir) / "datasets");
}

std::map<std::string, int64_t> Counts(const v1::Dataset& d, v1::Split split) {
  std::map<std::string, int64_t> out;
  for (const v1::SplitSummary& s : d.splits()) {
    if (s.split() != split) continue;
    for (const v1::ClassCount& c : s.classes()) out[c.label()] = c.files();
  }
  return out;
}

TEST(DatasetsRpcTest, UploadGetListDelete) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Uploader up(server);
  ASSERT_TRUE(up.Header("pets"));
  int seed = 0;
  for (const char* split : {"train", "validation"}) {
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < 2; ++i, ++seed) {
        // Small chunks: several per file.
        ASSERT_TRUE(up.Send({absl::StrCat(split, "/", label, ".", seed, ".jpg"),
                             EncodeTestImage(96, 64, ".jpg", seed)},
                            1000));
      }
    }
  }
  ASSERT_TRUE(up.Send({"train/readme.txt", "just text"}));
  grpc::Status s = up.Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::UploadDatasetResponse& r = up.response();
  EXPECT_EQ(r.accepted_files(), 8);
  ASSERT_EQ(r.rejected_size(), 1);
  EXPECT_EQ(r.rejected(0).path(), "train/readme.txt");
  EXPECT_EQ(r.rejected(0).reason(), v1::REJECT_REASON_UNSUPPORTED_FORMAT);
  EXPECT_EQ(r.dataset().name(), "datasets/pets");
  EXPECT_EQ(r.dataset().label_source(), v1::LABEL_SOURCE_FILENAME);
  EXPECT_THAT(r.dataset().classes(), ElementsAre("cat", "dog"));
  EXPECT_EQ(Counts(r.dataset(), v1::SPLIT_VALIDATION),
            (std::map<std::string, int64_t>{{"cat", 2}, {"dog", 2}}));
  EXPECT_EQ(r.dataset().image_size().max_width(), 96);

  auto stub = Stub(server);
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetDatasetRequest req;
    req.set_name("datasets/pets");
    v1::Dataset d;
    ASSERT_TRUE(stub->GetDataset(&ctx, req, &d).ok());
    EXPECT_EQ(d.files(), 8);
    EXPECT_EQ(d.rejected_files(), 1);
    EXPECT_EQ(d.rejects(0).reason(), v1::REJECT_REASON_UNSUPPORTED_FORMAT);
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListDatasetsResponse list;
    ASSERT_TRUE(
        stub->ListDatasets(&ctx, v1::ListDatasetsRequest(), &list).ok());
    ASSERT_EQ(list.datasets_size(), 1);
    EXPECT_EQ(list.datasets(0).name(), "datasets/pets");
  }
  for (const char* bad : {"pets", "datasets/../x", "datasets/"}) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetDatasetRequest req;
    req.set_name(bad);
    v1::Dataset d;
    EXPECT_EQ(stub->GetDataset(&ctx, req, &d).error_code(),
              grpc::INVALID_ARGUMENT)
        << bad;
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::DeleteDatasetRequest req;
    req.set_name("datasets/pets");
    google::protobuf::Empty empty;
    ASSERT_TRUE(stub->DeleteDataset(&ctx, req, &empty).ok());
  }
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetDatasetRequest req;
    req.set_name("datasets/pets");
    v1::Dataset d;
    grpc::Status missing = stub->GetDataset(&ctx, req, &d);
    EXPECT_EQ(missing.error_code(), grpc::NOT_FOUND);
    EXPECT_THAT(missing.error_message(), HasSubstr("pets"));
  }
  EXPECT_TRUE(NoUploadLeft(server.data_dir()));
}

TEST(DatasetsRpcTest, MalformedStreamsGetInvalidArgument) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  {
    Uploader up(server);  // a chunk before the header
    up.Send({"cat.1.jpg", EncodeTestImage(8, 8, ".jpg")});
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("header"));
  }
  {
    Uploader up(server);  // the stream ends inside a file
    ASSERT_TRUE(up.Header("inside"));
    up.Send({"cat.1.jpg", EncodeTestImage(8, 8, ".jpg")}, 1000,
            /*finish=*/false);
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("last"));
  }
  {
    Uploader up(server);  // a bad id
    up.Header("../etc");
    EXPECT_EQ(up.Finish().error_code(), grpc::INVALID_ARGUMENT);
  }
  {
    Uploader up(server);  // nothing acceptable
    ASSERT_TRUE(up.Header("nothing"));
    up.Send({"cat.1.jpg", std::string("\0\0\0\0", 4)});
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("no file was accepted"));
  }
  EXPECT_TRUE(Eventually([&] { return NoUploadLeft(server.data_dir()); }));
}

TEST(DatasetsRpcTest, LimitsGiveResourceExhaustedNamingTheLimit) {
  const std::string image = EncodeTestImage(64, 64, ".png", 3);
  TransferdServer server(TransferdServer::WithArgs(
      {"--max-file-bytes=100000", "--max-dataset-bytes",
       std::to_string(image.size() + 10), "--min-free-disk-bytes=0"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  {
    Uploader up(server);
    ASSERT_TRUE(up.Header("big"));
    up.Send({"cat.1.png", std::string(200000, 'x')});
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("--max-file-bytes"));
  }
  {
    Uploader up(server);
    ASSERT_TRUE(up.Header("quota"));
    ASSERT_TRUE(up.Send({"cat.1.png", image}));
    up.Send({"cat.2.png", EncodeTestImage(64, 64, ".png", 4)});
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("--max-dataset-bytes"));
  }
  EXPECT_TRUE(Eventually([&] { return NoUploadLeft(server.data_dir()); }));

  // The limits are reported.
  auto info_stub = v1::Server::NewStub(grpc::CreateChannel(
      server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::ServerInfo info;
  ASSERT_TRUE(
      info_stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.limits().max_file_bytes(), 100000);
  EXPECT_EQ(info.limits().max_image_pixels(), 100'000'000);
  EXPECT_EQ(info.limits().min_free_disk_bytes(), 0);
}

TEST(DatasetsRpcTest, DiskFloorGivesResourceExhausted) {
  TransferdServer server(
      TransferdServer::WithArgs({"--min-free-disk-bytes=1000000000000000000"}));
  ASSERT_TRUE(server.ok()) << server.Log();
  Uploader up(server);
  ASSERT_TRUE(up.Header("floor"));
  up.Send({"cat.1.jpg", EncodeTestImage(32, 32, ".jpg")});
  grpc::Status s = up.Finish();
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("free-disk floor"));
  EXPECT_TRUE(Eventually([&] { return NoUploadLeft(server.data_dir()); }));
}

TEST(DatasetsRpcTest, ACancelledUploadLeavesNoTrace) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Uploader up(server);
  ASSERT_TRUE(up.Header("cancelled"));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(up.Send(
        {absl::StrCat("cat.", i, ".jpg"), EncodeTestImage(32, 32, ".jpg", i)}));
  }
  // Files are being stored in tmp/ ...
  ASSERT_TRUE(Eventually(
      [&] { return !fs::is_empty(fs::path(server.data_dir()) / "tmp"); }));
  up.Cancel();
  EXPECT_EQ(up.Finish().error_code(), grpc::CANCELLED);
  // ... and are gone once the server sees the cancellation.
  EXPECT_TRUE(Eventually([&] { return NoUploadLeft(server.data_dir()); }));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(
      Stub(server)->ListDatasets(&ctx, v1::ListDatasetsRequest(), &list).ok());
  EXPECT_EQ(list.datasets_size(), 0);
}

TEST(DatasetsRpcTest, AnUploadInterruptedByKill9LeavesNoTraceAfterRestart) {
  testing::TempDir dir;
  const std::string data_dir = (fs::path(dir.path()) / "data").string();
  {
    TransferdServer server(TransferdServer::WithDataDir(data_dir));
    ASSERT_TRUE(server.ok()) << server.Log();
    Uploader up(server);
    ASSERT_TRUE(up.Header("crashed"));
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(up.Send({absl::StrCat("cat.", i, ".jpg"),
                           EncodeTestImage(32, 32, ".jpg", i)}));
    }
    ASSERT_TRUE(
        Eventually([&] { return !fs::is_empty(fs::path(data_dir) / "tmp"); }));
    ASSERT_TRUE(server.Stop(SIGKILL, std::chrono::seconds(10)).has_value());
    EXPECT_FALSE(
        fs::is_empty(fs::path(data_dir) / "tmp"));  // what the crash left
  }
  TransferdServer again(TransferdServer::WithDataDir(data_dir));
  ASSERT_TRUE(again.ok()) << again.Log();
  EXPECT_TRUE(NoUploadLeft(data_dir));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(
      Stub(again)->ListDatasets(&ctx, v1::ListDatasetsRequest(), &list).ok());
  EXPECT_EQ(list.datasets_size(), 0);
}

// The shared cats_and_dogs folders (TRANSFERD_TEST_DATA): 2000 training and
// 1000 validation JPEGs, all accepted.
TEST(DatasetsRpcTest, SharedCatsAndDogsUploadWithNoReject) {
  const auto data = testing::TestDataDir();
  if (!data.has_value()) GTEST_SKIP() << "TRANSFERD_TEST_DATA is not set";
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Uploader up(server);
  ASSERT_TRUE(up.Header("cats-and-dogs"));
  std::vector<fs::path> files;
  for (const char* split :
       {"train", "validation"}) {  // not SHA256SUMS beside them
    for (const auto& e : fs::recursive_directory_iterator(*data / split)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    ASSERT_TRUE(up.Send({fs::relative(f, *data).generic_string(), bytes}));
  }
  grpc::Status s = up.Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::UploadDatasetResponse& r = up.response();
  EXPECT_EQ(r.accepted_files(), 3000);
  EXPECT_EQ(r.rejected_size(), 0) << r.rejected(0).DebugString();
  EXPECT_THAT(r.dataset().classes(), ElementsAre("cat", "dog"));
  EXPECT_EQ(Counts(r.dataset(), v1::SPLIT_TRAIN),
            (std::map<std::string, int64_t>{{"cat", 1000}, {"dog", 1000}}));
  EXPECT_EQ(Counts(r.dataset(), v1::SPLIT_VALIDATION),
            (std::map<std::string, int64_t>{{"cat", 500}, {"dog", 500}}));
}

}  // namespace
}  // namespace transferd
