// Resumable, de-duplicating uploads against the real binary: an upload
// cancelled halfway leaves the files that arrived staged on the server; after
// a server restart the next upload sends only the rest; a second dataset of
// the same files sends nothing; bytes that do not match their hash are
// refused; a reference to content the server lacks fails the upload cleanly.
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/hash.h"
#include "tests/support/job_support.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using ::testing::HasSubstr;
using testing::TransferdServer;

constexpr int kFiles = 20;

// 20 distinct PNGs in class folders, plus a copy of one of them.
void MakeFolder(const fs::path& dir) {
  for (int i = 0; i < kFiles; ++i) {
    testing::WriteFile(dir / (i % 2 ? "dog" : "cat") / absl::StrCat(i, ".png"),
                       testing::EncodeTestImage(48, 40, ".png", 500 + i));
  }
  testing::WriteFile(dir / "cat" / "copy-of-0.png",
                     testing::EncodeTestImage(48, 40, ".png", 500));
}

std::unique_ptr<client::Client> Connect(const TransferdServer& server) {
  client::ClientOptions o;
  o.address = server.address();
  return client::Client::Create(o);
}

client::UploadOptions Options(const fs::path& dir, const std::string& id,
                              const fs::path& cache) {
  client::UploadOptions o;
  o.directory = dir;
  o.dataset_id = id;
  o.label_source = v1::LABEL_SOURCE_FOLDER;
  o.hash_cache_dir = cache;
  return o;
}

TEST(ResumableUploadTest,
     ResumesAfterAnInterruptAndARestartSendingOnlyTheRest) {
  testing::TempDir temp;
  const fs::path folder = fs::path(temp.path()) / "pets";
  const fs::path cache = fs::path(temp.path()) / "hash-cache";
  MakeFolder(folder);
  const std::string data_dir = temp.path() + "/data";
  auto server =
      std::make_unique<TransferdServer>(TransferdServer::WithDataDir(data_dir));
  ASSERT_TRUE(server->ok()) << server->Log();

  // Cancelled once half the files have gone.
  std::atomic<bool> cancel{false};
  client::UploadOptions first = Options(folder, "pets", cache);
  first.cancel = &cancel;
  int64_t sent_first = 0;
  auto result = Connect(*server)->UploadDataset(
      first, [&](const client::UploadProgress& p) {
        sent_first = p.files_sent;
        if (p.files_sent >= (kFiles + 1) / 2) cancel.store(true);
      });
  ASSERT_EQ(result.status().code(), absl::StatusCode::kCancelled)
      << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("stay on the server"));
  ASSERT_GE(sent_first, (kFiles + 1) / 2);
  ASSERT_LT(sent_first, kFiles + 1);
  // No dataset was created.
  EXPECT_EQ(Connect(*server)->GetDataset("datasets/pets").status().code(),
            absl::StatusCode::kNotFound);

  // The server restarts on the same data directory.
  ASSERT_TRUE(server->Stop(SIGTERM, std::chrono::seconds(30)).has_value());
  server.reset();
  server =
      std::make_unique<TransferdServer>(TransferdServer::WithDataDir(data_dir));
  ASSERT_TRUE(server->ok()) << server->Log();

  // The rerun sends only what is missing.
  client::UploadProgress last;
  result = Connect(*server)->UploadDataset(
      Options(folder, "pets", cache),
      [&](const client::UploadProgress& p) { last = p; });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->accepted_files(), kFiles + 1);
  EXPECT_EQ(result->duplicate_files(), 1);
  EXPECT_EQ(last.files_sent, kFiles + 1);
  EXPECT_EQ(last.files_total, kFiles + 1);
  // Every file whose transfer completed before the cancel.
  EXPECT_GE(last.files_held, sent_first);
  EXPECT_LT(last.files_held, kFiles + 1);
  EXPECT_EQ(result->dataset().classes_size(), 2);

  // A second dataset of the same files sends nothing at all.
  result = Connect(*server)->UploadDataset(
      Options(folder, "pets-again", cache),
      [&](const client::UploadProgress& p) { last = p; });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(last.files_held, kFiles + 1);
  EXPECT_EQ(last.bytes_held, last.bytes_total);
  EXPECT_EQ(result->accepted_files(), kFiles + 1);
  // The staged copies were released once a dataset held them.
  EXPECT_TRUE(fs::is_empty(fs::path(data_dir) / "staging"));
}

TEST(ResumableUploadTest, WrongBytesAndMissingContentAreRefusedCleanly) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  auto stub = v1::Datasets::NewStub(testing::Channel(server));
  const std::string png = testing::EncodeTestImage(48, 40, ".png", 7);
  common::Sha256 h;
  h.Update(png.data(), png.size());
  const std::string sha = h.HexDigest();

  // Bytes that hash to something else: DATA_LOSS, nothing staged.
  {
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx);
    v1::StageContentResponse response;
    auto writer = stub->StageContent(&ctx, &response);
    v1::StageContentRequest r;
    r.set_sha256(sha);
    r.set_size(static_cast<int64_t>(png.size()));
    r.set_data(png.substr(0, png.size() - 1) + "x");
    r.set_last(true);
    writer->Write(r);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS);
    EXPECT_THAT(s.error_message(), HasSubstr(sha));
  }
  auto client = Connect(server);
  auto held = client->FindContent({sha, std::string(64, '0')});
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_FALSE((*held)[0]);
  EXPECT_FALSE((*held)[1]);
  EXPECT_EQ(client->FindContent({"not-a-hash"}).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A dataset that references content the server lacks: FAILED_PRECONDITION
  // naming the file; no dataset.
  {
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx);
    v1::UploadDatasetResponse response;
    auto writer = stub->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_dataset_id("ghost");
    writer->Write(header);
    v1::UploadDatasetRequest r;
    r.mutable_chunk()->set_path("cat/1.png");
    r.mutable_chunk()->set_sha256(sha);
    r.mutable_chunk()->set_last(true);
    writer->Write(r);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("cat/1.png"));
  }
  EXPECT_EQ(client->GetDataset("datasets/ghost").status().code(),
            absl::StatusCode::kNotFound);

  // The right bytes stage; then the reference works.
  {
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx);
    v1::StageContentResponse response;
    auto writer = stub->StageContent(&ctx, &response);
    v1::StageContentRequest r;
    r.set_sha256(sha);
    r.set_size(static_cast<int64_t>(png.size()));
    r.set_data(png);
    r.set_last(true);
    writer->Write(r);
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(response.contents(), 1);
  }
  held = client->FindContent({sha});
  ASSERT_TRUE(held.ok());
  EXPECT_TRUE((*held)[0]);
}

TEST(ServerPathImportTest, ForAdminsOnlyAndConfinedToTheImportRoot) {
  testing::TempDir temp;
  const fs::path root = fs::path(temp.path()) / "volume";
  MakeFolder(root / "pets");
  testing::WriteFile(root / "pets" / ".hidden" / "x.png",
                     testing::EncodeTestImage(48, 40, ".png", 999));
  fs::create_directories(fs::path(temp.path()) / "outside");
  fs::create_directory_symlink(fs::path(temp.path()) / "outside",
                               root / "escape");
  const std::string tokens = temp.path() + "/tokens";
  testing::WriteFile(
      tokens,
      "admin-t0ken-0123456789 admin\ntrainer-t0ken-0123456789 trainer\n");
  TransferdServer server(TransferdServer::WithArgs(
      {"--import-root", root.string(), "--token-file", tokens}));
  ASSERT_TRUE(server.ok()) << server.Log();
  auto as = [&](const std::string& token) {
    client::ClientOptions o;
    o.address = server.address();
    o.token = token;
    return client::Client::Create(o);
  };
  client::UploadOptions import;
  import.dataset_id = "pets";
  import.server_path = "pets";
  import.label_source = v1::LABEL_SOURCE_FOLDER;

  // A trainer may upload, not read the server's volume.
  auto refused = as("trainer-t0ken-0123456789")->UploadDataset(import, nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied)
      << refused.status();
  // Out of the root, by "..", or by a symbolic link: refused.
  client::UploadOptions bad = import;
  bad.server_path = "../outside";
  EXPECT_EQ(
      as("admin-t0ken-0123456789")->UploadDataset(bad, nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
  bad.server_path = "escape";
  auto escaped = as("admin-t0ken-0123456789")->UploadDataset(bad, nullptr);
  EXPECT_EQ(escaped.status().code(), absl::StatusCode::kInvalidArgument)
      << escaped.status();
  EXPECT_THAT(std::string(escaped.status().message()),
              HasSubstr("leaves the import root"));
  bad.server_path = "nope";
  EXPECT_EQ(
      as("admin-t0ken-0123456789")->UploadDataset(bad, nullptr).status().code(),
      absl::StatusCode::kNotFound);

  // An admin imports it, with the upload's checks (hidden files skipped,
  // the duplicate counted).
  auto imported = as("admin-t0ken-0123456789")->UploadDataset(import, nullptr);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->accepted_files(), kFiles + 1);
  EXPECT_EQ(imported->duplicate_files(), 1);
  EXPECT_EQ(imported->dataset().classes_size(), 2);
  EXPECT_EQ(imported->dataset().name(), "datasets/pets");
}

}  // namespace
}  // namespace transferd
