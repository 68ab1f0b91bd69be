// transferd.v1.Models against the real binary: aliases (set, move, list,
// delete; GetModel and ExportModel by alias; DeleteModel refused while
// aliased), ExportModel -> ImportModel round trip with identical tensors and
// metadata, the archive read by Python without transferd, and bad imports
// refused with nothing left behind. One tiny model (MobileNet 0.25 at 32 px,
// one epoch) is trained once for the suite.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "tests/support/paths.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using ::testing::ElementsAre;
using testing::EncodeTestImage;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::TransferdServer;

std::shared_ptr<grpc::Channel> Channel(const TransferdServer& server) {
  return grpc::CreateChannel(server.address(),
                             grpc::InsecureChannelCredentials());
}

void Deadline(grpc::ClientContext& ctx, int seconds = 60) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(seconds));
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteAll(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::set<std::string> Entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    out.insert(e.path().filename().string());
  return out;
}

// tmp/ empties once the server has finished with a call (OnDone runs after
// the client already has the status): waits up to 5 s.
std::set<std::string> TmpAfterCalls(const TransferdServer& server) {
  const fs::path tmp = fs::path(server.data_dir()) / "tmp";
  for (int i = 0; i < 100 && !Entries(tmp).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Entries(tmp);
}

void Upload(const TransferdServer& server, const std::string& id,
            int per_class) {
  auto stub = v1::Datasets::NewStub(Channel(server));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::UploadDatasetResponse response;
  auto writer = stub->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id(id);
  ASSERT_TRUE(writer->Write(header));
  int seed = 0;
  for (const char* split : {"train", "validation"}) {
    const int n = std::string(split) == "train" ? per_class : per_class / 2;
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < n; ++i, ++seed) {
        v1::UploadDatasetRequest r;
        r.mutable_chunk()->set_path(
            absl::StrCat(split, "/", label, ".", seed, ".png"));
        r.mutable_chunk()->set_data(
            EncodeTestImage(40, 40, ".png", seed * 2 + (label[0] == 'd')));
        r.mutable_chunk()->set_last(true);
        ASSERT_TRUE(writer->Write(r));
      }
    }
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
}

// Trains the suite's model: the smallest network the other tests use.
void TrainTiny(const TransferdServer& server, const std::string& id) {
  v1::CreateJobRequest req;
  req.set_job_id(id);
  v1::JobSpec* spec = req.mutable_spec();
  spec->set_kind(v1::JOB_KIND_TRAIN);
  spec->set_dataset("datasets/small");
  spec->set_seed(7);
  v1::ModelSpec* m = spec->mutable_model();
  m->set_backbone("mobilenet");
  m->set_alpha(0.25);
  m->set_weights("none");
  m->set_input_size(32);
  m->set_precision(v1::PRECISION_FP32);
  m->mutable_head()->set_pooling(v1::POOLING_GLOBAL_AVERAGE);
  m->mutable_head()->set_hidden_units(8);
  m->mutable_head()->set_dropout(0);
  v1::StageSpec* s = spec->add_stages();
  s->set_name("frozen");
  s->set_trainable_from("none");
  s->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_ADAM);
  s->mutable_optimizer()->set_learning_rate(1e-2);
  s->set_epochs(1);
  s->set_batch_size(4);
  auto jobs = v1::Jobs::NewStub(Channel(server));
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::Job job;
    grpc::Status status = jobs->CreateJob(&ctx, req, &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  grpc::ClientContext ctx;
  Deadline(ctx, 300);
  v1::WatchJobRequest watch;
  watch.set_name("jobs/" + id);
  watch.set_follow(true);
  auto reader = jobs->WatchJob(&ctx, watch);
  v1::JobEvent e;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&e)) {
    if (e.has_state_changed()) last = e.state_changed().state();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(last, v1::JOB_STATE_SUCCEEDED) << server.Log();
}

class ModelsRpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ =
        new TransferdServer(TransferdServer::WithArgs({"--threads", "1"}));
    if (!server_->ok()) return;
    Upload(*server_, "small", 4);
    TrainTiny(*server_, "tiny");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->Log();
    models_ = v1::Models::NewStub(Channel(*server_));
  }

  grpc::Status GetModel(const std::string& name, v1::Model* out) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::GetModelRequest req;
    req.set_name(name);
    return models_->GetModel(&ctx, req, out);
  }
  v1::Model MustGet(const std::string& name) {
    v1::Model m;
    grpc::Status s = GetModel(name, &m);
    EXPECT_TRUE(s.ok()) << name << ": " << s.error_message();
    return m;
  }
  grpc::Status SetAlias(const std::string& alias, const std::string& model,
                        v1::Alias* out = nullptr) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::SetAliasRequest req;
    req.set_alias(alias);
    req.set_model(model);
    v1::Alias ignored;
    return models_->SetAlias(&ctx, req, out != nullptr ? out : &ignored);
  }
  grpc::Status DeleteAlias(const std::string& alias) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::DeleteAliasRequest req;
    req.set_alias(alias);
    google::protobuf::Empty out;
    return models_->DeleteAlias(&ctx, req, &out);
  }
  grpc::Status DeleteModel(const std::string& name) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::DeleteModelRequest req;
    req.set_name(name);
    google::protobuf::Empty out;
    return models_->DeleteModel(&ctx, req, &out);
  }
  v1::ListAliasesResponse ListAliases(int page_size = 0,
                                      const std::string& token = "") {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListAliasesRequest req;
    req.set_page_size(page_size);
    req.set_page_token(token);
    v1::ListAliasesResponse out;
    grpc::Status s = models_->ListAliases(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  int CountModels() {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ListModelsRequest req;
    req.set_page_size(1000);
    v1::ListModelsResponse out;
    EXPECT_TRUE(models_->ListModels(&ctx, req, &out).ok());
    return out.models_size();
  }

  // Streams ExportModel into `path`, checking offsets, totals and the hash.
  grpc::Status Export(const std::string& name, const fs::path& path) {
    grpc::ClientContext ctx;
    Deadline(ctx, 120);
    v1::ExportModelRequest req;
    req.set_name(name);
    auto reader = models_->ExportModel(&ctx, req);
    std::string bytes;
    std::string sha256;
    int chunks = 0;
    int64_t total = -1;
    v1::ExportModelChunk chunk;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), static_cast<int64_t>(bytes.size()));
      if (total >= 0) {
        EXPECT_EQ(chunk.total_bytes(), total);
      }
      total = chunk.total_bytes();
      EXPECT_TRUE(sha256.empty()) << "sha256 before the last chunk";
      sha256 = chunk.sha256();
      bytes += chunk.data();
      ++chunks;
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) return status;
    EXPECT_GT(chunks, 0);
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), total);
    EXPECT_LE(chunk.data().size(), size_t{1} << 20);
    WriteAll(path, bytes);
    auto actual = client::FileSha256(path);
    EXPECT_TRUE(actual.ok());
    EXPECT_EQ(sha256, *actual);
    EXPECT_EQ(sha256.size(), 64u);
    return status;
  }

  // Streams `bytes` as ImportModel (header first, then 64 KiB messages).
  grpc::Status Import(const std::string& bytes, const std::string& id,
                      v1::Model* out, bool send_header = true,
                      int64_t declared = -1,
                      const std::string& display_name = "") {
    grpc::ClientContext ctx;
    Deadline(ctx, 120);
    auto writer = models_->ImportModel(&ctx, out);
    if (send_header) {
      v1::ImportModelRequest header;
      header.mutable_header()->set_model_id(id);
      header.mutable_header()->set_display_name(display_name);
      header.mutable_header()->set_total_bytes(
          declared >= 0 ? declared : static_cast<int64_t>(bytes.size()));
      if (!writer->Write(header)) return writer->Finish();
    }
    constexpr size_t kPiece = 64 * 1024;
    for (size_t pos = 0; pos < bytes.size(); pos += kPiece) {
      v1::ImportModelRequest r;
      r.set_data(bytes.substr(pos, kPiece));
      if (!writer->Write(r)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Runs the archive reader; its JSON output.
  static nlohmann::json PythonRead(const fs::path& archive) {
    testing::RunResult r = testing::Run(
        {testing::Python3(),
         testing::SourcePath("tests/server/core/read_model_archive.py"),
         archive.string()});
    EXPECT_TRUE(r.status.exited && r.status.code == 0) << r.out << r.err;
    if (!r.status.exited || r.status.code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(r.out);
  }

  // Expects the import of `bytes` to fail with INVALID_ARGUMENT, leaving no
  // model row, no folder and no temporary file.
  void ExpectRefused(const std::string& what, const std::string& bytes,
                     const std::string& mentions = "", bool send_header = true,
                     int64_t declared = -1) {
    SCOPED_TRACE(what);
    const fs::path models_dir = fs::path(server_->data_dir()) / "models";
    const std::set<std::string> before = Entries(models_dir);
    const int count = CountModels();
    v1::Model out;
    grpc::Status s = Import(bytes, "", &out, send_header, declared);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << s.error_message();
    if (!mentions.empty()) {
      EXPECT_THAT(s.error_message(), HasSubstr(mentions));
    }
    EXPECT_EQ(CountModels(), count);
    EXPECT_EQ(Entries(models_dir), before);
    EXPECT_THAT(TmpAfterCalls(*server_), IsEmpty());
  }

  fs::path Scratch(const std::string& name) const {
    return fs::path(temp_.path()) / name;
  }

  static TransferdServer* server_;
  std::unique_ptr<v1::Models::Stub> models_;
  testing::TempDir temp_;
};
TransferdServer* ModelsRpcTest::server_ = nullptr;

TEST_F(ModelsRpcTest, AliasesSetMoveListDeleteAndGetModelByAlias) {
  v1::Alias alias;
  grpc::Status s = SetAlias("aliases/prod", "models/tiny", &alias);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(alias.name(), "aliases/prod");
  EXPECT_EQ(alias.model(), "models/tiny");
  EXPECT_GT(alias.update_time().seconds(), 0);
  ASSERT_TRUE(SetAlias("aliases/canary", "models/tiny").ok());

  const v1::Model by_alias = MustGet("aliases/prod");
  EXPECT_EQ(by_alias.name(), "models/tiny");
  EXPECT_THAT(by_alias.aliases(),
              ElementsAre("aliases/canary", "aliases/prod"));
  EXPECT_THAT(MustGet("models/tiny").aliases(),
              ElementsAre("aliases/canary", "aliases/prod"));

  // Listed in name order, a page at a time.
  v1::ListAliasesResponse page = ListAliases(1);
  ASSERT_EQ(page.aliases_size(), 1);
  EXPECT_EQ(page.aliases(0).name(), "aliases/canary");
  ASSERT_FALSE(page.next_page_token().empty());
  page = ListAliases(1, page.next_page_token());
  ASSERT_EQ(page.aliases_size(), 1);
  EXPECT_EQ(page.aliases(0).name(), "aliases/prod");
  EXPECT_EQ(page.aliases(0).model(), "models/tiny");
  EXPECT_TRUE(page.next_page_token().empty());

  // The model cannot go while aliased.
  s = DeleteModel("models/tiny");
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("canary, prod"));
  EXPECT_EQ(DeleteModel("aliases/prod").error_code(), grpc::INVALID_ARGUMENT);

  // Errors.
  EXPECT_EQ(SetAlias("aliases/x", "models/nosuch").error_code(),
            grpc::NOT_FOUND);
  EXPECT_EQ(SetAlias("aliases/Bad Name", "models/tiny").error_code(),
            grpc::INVALID_ARGUMENT);
  s = SetAlias("prod", "models/tiny");
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("alias"));
  s = SetAlias("aliases/prod", "tiny");
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("model"));
  v1::Model m;
  s = GetModel("aliases/nosuch", &m);
  EXPECT_EQ(s.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nosuch"));
  EXPECT_EQ(GetModel("aliases/NO!", &m).error_code(), grpc::INVALID_ARGUMENT);
  s = GetModel("bogus/tiny", &m);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("name"));
  EXPECT_EQ(GetModel("models/nosuch", &m).error_code(), grpc::NOT_FOUND);

  ASSERT_TRUE(DeleteAlias("aliases/canary").ok());
  EXPECT_EQ(DeleteAlias("aliases/canary").error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(DeleteAlias("canary").error_code(), grpc::INVALID_ARGUMENT);
  ASSERT_TRUE(DeleteAlias("aliases/prod").ok());
  EXPECT_THAT(MustGet("models/tiny").aliases(), IsEmpty());
  EXPECT_EQ(ListAliases().aliases_size(), 0);
}

TEST_F(ModelsRpcTest,
       ExportImportRoundTripIsIdenticalAndReadableWithoutTransferd) {
  const v1::Model original = MustGet("models/tiny");
  const fs::path archive = Scratch("tiny.tar");
  grpc::Status s = Export("models/tiny", archive);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(TmpAfterCalls(*server_), IsEmpty());  // the server's copy is gone

  // Python's tarfile and a hand-written safetensors parser read it.
  const nlohmann::json py = PythonRead(archive);
  ASSERT_FALSE(py.empty());
  EXPECT_EQ(py["members"],
            nlohmann::json({"model.json", "weights.safetensors"}));
  EXPECT_EQ(py["id"], "tiny");
  EXPECT_EQ(py["classes"], nlohmann::json({"cat", "dog"}));
  EXPECT_EQ(py["model"]["backbone"], "mobilenet");
  EXPECT_EQ(py["model"]["input_size"], 32);
  EXPECT_EQ(py["preprocessing"]["mode"], "tf");
  EXPECT_EQ(py["history_epochs"], original.history_size());
  EXPECT_EQ(py["best_epoch"], original.best_epoch());
  EXPECT_EQ(py["parameters"], original.parameters());
  EXPECT_EQ(py["total_numel"], original.parameters());
  EXPECT_TRUE(py["tensors"].contains("head.output.weight"));
  EXPECT_TRUE(py["tensors"].contains("conv1.weight"));

  // Imported under another id: the same model.
  v1::Model copy;
  s = Import(ReadAll(archive), "tiny-copy", &copy);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(TmpAfterCalls(*server_), IsEmpty());
  EXPECT_EQ(copy.name(), "models/tiny-copy");
  EXPECT_EQ(copy.source_job(), "");
  EXPECT_EQ(original.source_job(), "jobs/tiny");
  EXPECT_EQ(copy.display_name(), original.display_name());
  EXPECT_EQ(copy.parent(), original.parent());
  EXPECT_EQ(copy.spec().SerializeAsString(),
            original.spec().SerializeAsString());
  EXPECT_EQ(copy.spec().backbone(), "mobilenet");
  EXPECT_EQ(copy.preprocessing().SerializeAsString(),
            original.preprocessing().SerializeAsString());
  EXPECT_THAT(copy.classes(), ElementsAre("cat", "dog"));
  ASSERT_EQ(copy.history_size(), original.history_size());
  for (int i = 0; i < copy.history_size(); ++i) {
    EXPECT_EQ(copy.history(i).SerializeAsString(),
              original.history(i).SerializeAsString());
  }
  ASSERT_EQ(copy.evaluations_size(), original.evaluations_size());
  for (int i = 0; i < copy.evaluations_size(); ++i) {
    EXPECT_EQ(copy.evaluations(i).SerializeAsString(),
              original.evaluations(i).SerializeAsString());
  }
  EXPECT_EQ(copy.best_epoch(), original.best_epoch());
  EXPECT_EQ(copy.size_bytes(), original.size_bytes());
  EXPECT_EQ(copy.parameters(), original.parameters());
  EXPECT_EQ(MustGet("models/tiny-copy").SerializeAsString(),
            copy.SerializeAsString());
  const fs::path models_dir = fs::path(server_->data_dir()) / "models";
  EXPECT_EQ(ReadAll(models_dir / "tiny-copy" / "weights.safetensors"),
            ReadAll(models_dir / "tiny" / "weights.safetensors"));
  // Its export holds the same tensors, value for value.
  ASSERT_TRUE(Export("models/tiny-copy", Scratch("copy.tar")).ok());
  const nlohmann::json py_copy = PythonRead(Scratch("copy.tar"));
  EXPECT_EQ(py_copy["tensors"], py["tensors"]);
  EXPECT_EQ(py_copy["weights_sha256"], py["weights_sha256"]);
  EXPECT_EQ(py_copy["id"], "tiny-copy");

  // Export by alias; moving the alias moves GetModel and ExportModel.
  ASSERT_TRUE(SetAlias("aliases/serving", "models/tiny").ok());
  ASSERT_TRUE(Export("aliases/serving", Scratch("by-alias.tar")).ok());
  EXPECT_EQ(ReadAll(Scratch("by-alias.tar")),
            ReadAll(archive));  // deterministic
  ASSERT_TRUE(SetAlias("aliases/serving", "models/tiny-copy").ok());
  EXPECT_EQ(MustGet("aliases/serving").name(), "models/tiny-copy");
  EXPECT_THAT(MustGet("models/tiny").aliases(), IsEmpty());
  ASSERT_TRUE(Export("aliases/serving", Scratch("moved.tar")).ok());
  EXPECT_EQ(PythonRead(Scratch("moved.tar"))["id"], "tiny-copy");
  s = DeleteModel("models/tiny-copy");
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  ASSERT_TRUE(DeleteAlias("aliases/serving").ok());

  // Export errors.
  EXPECT_EQ(Export("models/nosuch", Scratch("x.tar")).error_code(),
            grpc::NOT_FOUND);
  EXPECT_EQ(Export("aliases/nosuch", Scratch("x.tar")).error_code(),
            grpc::NOT_FOUND);
  EXPECT_EQ(Export("tiny", Scratch("x.tar")).error_code(),
            grpc::INVALID_ARGUMENT);

  // Import errors that are not about the archive.
  v1::Model again;
  EXPECT_EQ(Import(ReadAll(archive), "tiny-copy", &again).error_code(),
            grpc::ALREADY_EXISTS);
  EXPECT_EQ(Import(ReadAll(archive), "Bad Id", &again).error_code(),
            grpc::INVALID_ARGUMENT);
  // No id, the archive's taken: the server picks one; display name given.
  s = Import(ReadAll(archive), "", &again, true, -1, "Another copy");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(again.name(), ::testing::StartsWith("models/m-"));
  EXPECT_EQ(again.display_name(), "Another copy");
  ASSERT_TRUE(DeleteModel(again.name()).ok());
  ASSERT_TRUE(DeleteModel("models/tiny-copy").ok());
  EXPECT_THAT(TmpAfterCalls(*server_), IsEmpty());
}

TEST_F(ModelsRpcTest, BadImportsAreInvalidAndLeaveNothingBehind) {
  const fs::path archive = Scratch("good.tar");
  ASSERT_TRUE(Export("models/tiny", archive).ok());
  const std::string good = ReadAll(archive);

  ExpectRefused("garbage", std::string(100000, 'g'),
                "not a valid model archive");
  ExpectRefused("empty", "", "not a valid model archive");
  ExpectRefused("truncated in the weights",
                good.substr(0, good.size() / 2 / 512 * 512), "truncated");
  ExpectRefused("truncated mid-block", good.substr(0, good.size() - 700));
  // Tensors that do not fit the architecture model.json describes.
  testing::RunResult r = testing::Run(
      {testing::Python3(),
       testing::SourcePath("tests/server/core/read_model_archive.py"),
       "--rewrite", archive.string(), Scratch("wrong.tar").string(), "--set",
       "model.head.hidden_units=16"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  ExpectRefused("wrong tensors", ReadAll(Scratch("wrong.tar")), "does not fit");
  r = testing::Run(
      {testing::Python3(),
       testing::SourcePath("tests/server/core/read_model_archive.py"),
       "--rewrite", archive.string(), Scratch("classes.tar").string(), "--set",
       "classes=[\"a\",\"b\",\"c\"]", "--set", "evaluations=[]"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  ExpectRefused("three classes on a two-class head",
                ReadAll(Scratch("classes.tar")), "does not fit");
  r = testing::Run(
      {testing::Python3(),
       testing::SourcePath("tests/server/core/read_model_archive.py"),
       "--rewrite", archive.string(), Scratch("meta.tar").string(), "--set",
       "format=\"something-else\""});
  ASSERT_EQ(r.status.code, 0) << r.err;
  ExpectRefused("bad metadata", ReadAll(Scratch("meta.tar")), "format");

  // Stream-level mistakes.
  ExpectRefused("no header", good, "header", /*send_header=*/false);
  ExpectRefused("fewer bytes than announced", good.substr(0, good.size() - 512),
                "announced", true, static_cast<int64_t>(good.size()));
  ExpectRefused("more bytes than announced", good, "total_bytes", true,
                static_cast<int64_t>(good.size()) - 512);

  // A client that goes away mid-stream leaves nothing either.
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::Model out;
    auto writer = models_->ImportModel(&ctx, &out);
    v1::ImportModelRequest header;
    header.mutable_header()->set_model_id("abandoned");
    ASSERT_TRUE(writer->Write(header));
    v1::ImportModelRequest data;
    data.set_data(good.substr(0, 100000));
    ASSERT_TRUE(writer->Write(data));
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::CANCELLED);
  }
  EXPECT_THAT(TmpAfterCalls(*server_), IsEmpty());
  v1::Model m;
  EXPECT_EQ(GetModel("models/abandoned", &m).error_code(), grpc::NOT_FOUND);
}

}  // namespace
}  // namespace transferd
