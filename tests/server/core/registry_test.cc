// The model registry's aliases, and model archives: written, read back by
// Import (identical tensors and metadata), read by Python without transferd,
// and bad archives refused with nothing left behind.
#include "server/core/registry.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/hash.h"
#include "server/core/backbones/safetensors.h"
#include "server/core/model_archive.h"
#include "server/core/model_transfer.h"
#include "server/core/train/classifier.h"
#include "server/core/train/train_json.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/store.h"
#include "tests/support/paths.h"
#include "tests/support/subprocess.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

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

// The smallest classifier the other tests train: MobileNet alpha 0.25 at
// 32 px, global average pooling, 8 hidden units.
train::ModelConfig SmallConfig() {
  train::ModelConfig m;
  m.backbone = "mobilenet";
  m.alpha = 0.25;
  m.weights = "none";
  m.input_size = 32;
  m.head.pooling = train::Pooling::kGlobalAverage;
  m.head.hidden_units = 8;
  m.head.dropout = 0;
  return m;
}

// Offset of the header of member `name` (headers sit on 512-byte blocks).
size_t MemberHeader(const std::string& tar, const std::string& name) {
  for (size_t pos = 0; pos + 512 <= tar.size(); pos += 512) {
    if (tar.compare(pos, name.size() + 1, name.c_str(), name.size() + 1) == 0)
      return pos;
  }
  return std::string::npos;
}

// Recomputes a ustar header's checksum after a test edited it.
void FixChecksum(std::string& tar, size_t header) {
  std::memset(tar.data() + header + 148, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i)
    sum += static_cast<unsigned char>(tar[header + i]);
  std::snprintf(tar.data() + header + 148, 8, "%06o", sum);
  tar[header + 155] = ' ';
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DataDir::Options o;
    o.root = fs::path(temp_.path()) / "data";
    auto dir = DataDir::Open(o);
    ASSERT_TRUE(dir.ok()) << dir.status();
    data_dir_ = std::move(*dir);
    Store::Options so;
    so.path = data_dir_->database_path();
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto registry = ModelRegistry::Open(*store_, *data_dir_);
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
  }

  fs::path Scratch(const std::string& name) const {
    return fs::path(temp_.path()) / name;
  }

  // Registers a small random classifier under `id` with full metadata.
  ModelInfo MakeModel(const std::string& id,
                      std::vector<std::string> classes = {"cat", "dog"}) {
    torch::manual_seed(
        static_cast<uint64_t>(std::hash<std::string>()(id) % 1000));
    auto classifier =
        train::BuildClassifier(SmallConfig(), static_cast<int>(classes.size()),
                               backbones::WeightsCacheOptions(), false);
    EXPECT_TRUE(classifier.ok()) << classifier.status();
    const fs::path weights = Scratch(id + ".safetensors");
    EXPECT_TRUE((*classifier)->Save(weights).ok());
    ModelInfo info;
    info.id = id;
    info.display_name = "Model " + id;
    info.source_job = "jobs/" + id;
    info.spec_blob = std::string("\x0a\x03spec\x00\xff", 9);  // opaque, binary
    info.model = SmallConfig();
    info.classes = classes;
    info.preprocessing.mode = "tf";
    info.preprocessing.scale = 1.0f / 127.5f;
    info.preprocessing.mean = {1, 1, 1};
    info.preprocessing.std = {1, 1, 1};
    info.preprocessing.input_size = 32;
    for (int e = 1; e <= 2; ++e) {
      train::EpochReport r;
      r.epoch = e;
      r.loss = 0.7 / e;
      r.accuracy = 0.5 + 0.1 * e;
      r.has_validation = true;
      r.val_loss = 0.8 / e;
      r.val_accuracy = 0.45 + 0.1 * e;
      r.learning_rate = 1e-3;
      r.seconds = 1.25;
      info.history.push_back(r);
    }
    info.best_epoch = 2;
    train::EvaluationReport ev;
    ev.split = "validation";
    ev.loss = 0.4;
    ev.accuracy = 0.75;
    ev.examples = 4;
    ev.roc_auc = 0.8125;
    ev.num_classes = static_cast<int>(classes.size());
    for (int t = 0; t < ev.num_classes; ++t) {
      for (int p = 0; p < ev.num_classes; ++p)
        ev.confusion.push_back({t, p, 1});
    }
    info.evaluations.push_back(ev);
    const train::TrainableSummary s = (*classifier)->Summary();
    info.parameters = s.trainable_parameters + s.non_trainable_parameters;
    auto registered = registry_->Register(info, weights);
    EXPECT_TRUE(registered.ok()) << registered.status();
    return registered.ok() ? *registered : ModelInfo();
  }

  fs::path Export(const std::string& id, const std::string& file) {
    auto model = registry_->Get(id);
    EXPECT_TRUE(model.ok()) << model.status();
    const fs::path path = Scratch(file);
    auto size = WriteModelArchive(*model, path);
    EXPECT_TRUE(size.ok()) << size.status();
    EXPECT_EQ(*size, static_cast<int64_t>(fs::file_size(path)));
    return path;
  }

  // Expects INVALID_ARGUMENT mentioning `mentions`, and no trace of it.
  void ExpectRefused(const fs::path& archive, const std::string& mentions) {
    SCOPED_TRACE(archive.filename().string());
    const std::set<std::string> models_before =
        Entries(data_dir_->models_dir());
    std::string next;
    const size_t rows_before = registry_->List(1000, "", &next)->size();
    auto imported = registry_->Import(archive, "", "");
    ASSERT_FALSE(imported.ok());
    EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument)
        << imported.status();
    EXPECT_THAT(std::string(imported.status().message()), HasSubstr(mentions));
    EXPECT_EQ(Entries(data_dir_->models_dir()), models_before);
    EXPECT_EQ(registry_->List(1000, "", &next)->size(), rows_before);
    EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());
  }

  testing::TempDir temp_;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ModelRegistry> registry_;
};

TEST_F(RegistryTest, AliasesSetMoveListAndDelete) {
  MakeModel("m1");
  MakeModel("m2");
  std::vector<std::pair<std::string, std::string>> heard;
  registry_->AddAliasListener(
      [&](const std::string& alias, const std::string& model) {
        heard.emplace_back(alias, model);
      });

  auto set = registry_->SetAlias("prod", "m1");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->alias, "prod");
  EXPECT_EQ(set->model_id, "m1");
  EXPECT_GT(set->update_time.time_since_epoch().count(), 0);
  ASSERT_TRUE(registry_->SetAlias("canary", "m1").ok());
  EXPECT_THAT(registry_->Get("m1")->aliases, ElementsAre("canary", "prod"));
  EXPECT_THAT(registry_->Get("m2")->aliases, IsEmpty());
  EXPECT_EQ(*registry_->ResolveAlias("prod"), "m1");

  // Moving it.
  ASSERT_TRUE(registry_->SetAlias("prod", "m2").ok());
  EXPECT_EQ(*registry_->ResolveAlias("prod"), "m2");
  EXPECT_THAT(registry_->Get("m1")->aliases, ElementsAre("canary"));
  EXPECT_THAT(registry_->Get("m2")->aliases, ElementsAre("prod"));
  std::string next;
  auto models = registry_->List(10, "", &next);
  ASSERT_TRUE(models.ok());
  for (const ModelInfo& m : *models) {
    EXPECT_THAT(m.aliases, ElementsAre(m.id == "m1" ? "canary" : "prod"));
  }

  // Listing, a page at a time, in name order.
  auto page = registry_->ListAliases(1, "", &next);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].alias, "canary");
  EXPECT_EQ((*page)[0].model_id, "m1");
  ASSERT_FALSE(next.empty());
  page = registry_->ListAliases(1, next, &next);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].alias, "prod");
  EXPECT_EQ((*page)[0].model_id, "m2");
  EXPECT_TRUE(next.empty());

  ASSERT_TRUE(registry_->DeleteAlias("canary").ok());
  EXPECT_EQ(registry_->DeleteAlias("canary").code(),
            absl::StatusCode::kNotFound);
  auto gone = registry_->ResolveAlias("canary");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone.status().message(), "alias 'canary' not found");
  EXPECT_THAT(registry_->Get("m1")->aliases, IsEmpty());

  EXPECT_THAT(heard,
              ElementsAre(std::pair<std::string, std::string>("prod", "m1"),
                          std::pair<std::string, std::string>("canary", "m1"),
                          std::pair<std::string, std::string>("prod", "m2"),
                          std::pair<std::string, std::string>("canary", "")));
}

// ResolveAlias answers from memory after the first read; every write
// through the registry keeps those answers true, the missing ones too.
TEST_F(RegistryTest, ResolvedAliasesFollowEveryWrite) {
  MakeModel("m1");
  MakeModel("m2");
  EXPECT_EQ(registry_->ResolveAlias("live").status().code(),
            absl::StatusCode::kNotFound);  // remembered as missing
  ASSERT_TRUE(registry_->SetAlias("live", "m1").ok());
  EXPECT_EQ(*registry_->ResolveAlias("live"), "m1");
  EXPECT_EQ(*registry_->ResolveAlias("live"), "m1");  // from memory
  ASSERT_TRUE(registry_->SetAlias("live", "m2").ok());
  EXPECT_EQ(*registry_->ResolveAlias("live"), "m2");
  ASSERT_TRUE(registry_->DeleteAlias("live").ok());
  EXPECT_EQ(registry_->ResolveAlias("live").status().code(),
            absl::StatusCode::kNotFound);
  // A refused write changes nothing.
  EXPECT_FALSE(registry_->SetAlias("live", "nope").ok());
  EXPECT_EQ(registry_->ResolveAlias("live").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, AliasErrors) {
  MakeModel("m1");
  EXPECT_EQ(registry_->SetAlias("Not Valid", "m1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->SetAlias("-x", "m1").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto missing = registry_->SetAlias("prod", "nosuch");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nosuch"));
  EXPECT_EQ(registry_->ResolveAlias("prod").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->DeleteAlias("BAD").code(),
            absl::StatusCode::kInvalidArgument);
  std::string next;
  EXPECT_EQ(registry_->ListAliases(-1, "", &next).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->ListAliases(10, "junk", &next).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(*registry_->ListAliases(0, "", &next), IsEmpty());
}

TEST_F(RegistryTest, DeleteRefusedWhileAnAliasPointsAtTheModel) {
  MakeModel("m1");
  ASSERT_TRUE(registry_->SetAlias("prod", "m1").ok());
  ASSERT_TRUE(registry_->SetAlias("canary", "m1").ok());
  absl::Status refused = registry_->Delete("m1");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("canary, prod"));
  EXPECT_TRUE(registry_->Get("m1").ok());
  EXPECT_TRUE(
      fs::exists(data_dir_->models_dir() / "m1" / "weights.safetensors"));
  ASSERT_TRUE(registry_->DeleteAlias("prod").ok());
  refused = registry_->Delete("m1");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("alias canary"));
  ASSERT_TRUE(registry_->DeleteAlias("canary").ok());
  ASSERT_TRUE(registry_->Delete("m1").ok());
  EXPECT_FALSE(fs::exists(data_dir_->models_dir() / "m1"));
}

TEST_F(RegistryTest, AliasesSurviveAReopen) {
  MakeModel("m1");
  ASSERT_TRUE(registry_->SetAlias("prod", "m1").ok());
  registry_.reset();
  auto registry = ModelRegistry::Open(*store_, *data_dir_);
  ASSERT_TRUE(registry.ok());
  registry_ = std::move(*registry);
  EXPECT_EQ(*registry_->ResolveAlias("prod"), "m1");
}

TEST_F(RegistryTest, ExportImportRoundTripKeepsTensorsAndMetadata) {
  const ModelInfo original = MakeModel("orig", {"cat", "dog", "fox"});
  ASSERT_TRUE(registry_->SetAlias("prod", "orig").ok());
  const fs::path archive = Export("orig", "orig.tar");
  // Deterministic: the same model gives the same bytes.
  EXPECT_EQ(ReadAll(archive), ReadAll(Export("orig", "again.tar")));

  auto copy = registry_->Import(archive, "copy", "");
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->id, "copy");
  EXPECT_EQ(copy->display_name, original.display_name);
  EXPECT_EQ(copy->source_job, "");  // imports have no job
  EXPECT_EQ(copy->parent, "");
  EXPECT_EQ(copy->spec_blob, original.spec_blob);
  EXPECT_EQ(train::ModelConfigToJson(copy->model),
            train::ModelConfigToJson(original.model));
  EXPECT_EQ(copy->classes, original.classes);
  EXPECT_EQ(copy->preprocessing.mode, original.preprocessing.mode);
  EXPECT_EQ(copy->preprocessing.scale, original.preprocessing.scale);
  EXPECT_EQ(copy->preprocessing.mean, original.preprocessing.mean);
  EXPECT_EQ(copy->preprocessing.std, original.preprocessing.std);
  EXPECT_EQ(copy->preprocessing.input_size, original.preprocessing.input_size);
  EXPECT_EQ(copy->best_epoch, original.best_epoch);
  EXPECT_EQ(copy->parameters, original.parameters);
  EXPECT_EQ(copy->size_bytes, original.size_bytes);
  EXPECT_THAT(copy->aliases, IsEmpty());
  ASSERT_EQ(copy->history.size(), original.history.size());
  for (size_t i = 0; i < copy->history.size(); ++i) {
    EXPECT_EQ(copy->history[i].epoch, original.history[i].epoch);
    EXPECT_EQ(copy->history[i].loss, original.history[i].loss);
    EXPECT_EQ(copy->history[i].val_accuracy, original.history[i].val_accuracy);
  }
  ASSERT_EQ(copy->evaluations.size(), 1u);
  const auto& cc = copy->evaluations[0].confusion;
  const auto& oc = original.evaluations[0].confusion;
  ASSERT_EQ(cc.size(), oc.size());
  for (size_t i = 0; i < cc.size(); ++i) {
    EXPECT_EQ(cc[i].truth, oc[i].truth);
    EXPECT_EQ(cc[i].predicted, oc[i].predicted);
    EXPECT_EQ(cc[i].count, oc[i].count);
  }
  EXPECT_EQ(copy->evaluations[0].num_classes,
            original.evaluations[0].num_classes);
  EXPECT_EQ(copy->evaluations[0].roc_auc, original.evaluations[0].roc_auc);

  // Stored again, it reads back the same; the tensors are identical.
  auto stored = registry_->Get("copy");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->classes, original.classes);
  EXPECT_EQ(ReadAll(stored->weights_file), ReadAll(original.weights_file));
  auto a = backbones::ReadSafetensors(original.weights_file);
  auto b = backbones::ReadSafetensors(stored->weights_file);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  for (const auto& [name, t] : *a) {
    ASSERT_EQ(b->count(name), 1u) << name;
    EXPECT_TRUE(torch::equal(t, b->at(name))) << name;
  }
  // Without an id: the archive's when free, else the server's choice.
  auto chosen = registry_->Import(archive, "", "Renamed");
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_THAT(chosen->id, StartsWith("m-"));
  EXPECT_EQ(chosen->display_name, "Renamed");
  ASSERT_TRUE(registry_->DeleteAlias("prod").ok());
  ASSERT_TRUE(registry_->Delete("orig").ok());
  auto same_id = registry_->Import(archive, "", "");
  ASSERT_TRUE(same_id.ok()) << same_id.status();
  EXPECT_EQ(same_id->id, "orig");

  // A taken id.
  auto taken = registry_->Import(archive, "copy", "");
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry_->Import(archive, "Bad Id", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());
}

TEST_F(RegistryTest, PythonReadsTheArchiveWithoutTransferd) {
  const ModelInfo original = MakeModel("pyread");
  const fs::path archive = Export("pyread", "pyread.tar");
  testing::RunResult r = testing::Run(
      {testing::Python3(),
       testing::SourcePath("tests/server/core/read_model_archive.py"),
       archive.string()});
  ASSERT_TRUE(r.status.exited && r.status.code == 0) << r.out << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["members"],
            nlohmann::json({"model.json", "weights.safetensors"}));
  EXPECT_EQ(out["format"], kModelArchiveFormat);
  EXPECT_EQ(out["format_version"], kModelArchiveFormatVersion);
  EXPECT_EQ(out["id"], "pyread");
  EXPECT_EQ(out["display_name"], "Model pyread");
  EXPECT_EQ(out["classes"], nlohmann::json({"cat", "dog"}));
  EXPECT_EQ(out["model"]["backbone"], "mobilenet");
  EXPECT_EQ(out["model"]["alpha"], 0.25);
  EXPECT_EQ(out["model"]["input_size"], 32);
  EXPECT_EQ(out["model"]["head"]["hidden_units"], 8);
  EXPECT_EQ(out["preprocessing"]["mode"], "tf");
  EXPECT_EQ(out["history_epochs"], 2);
  EXPECT_EQ(out["best_epoch"], 2);
  EXPECT_EQ(out["parameters"], original.parameters);
  EXPECT_EQ(out["total_numel"], original.parameters);

  // Every tensor, by name, shape and value checksum.
  auto tensors = backbones::ReadSafetensors(original.weights_file);
  ASSERT_TRUE(tensors.ok());
  ASSERT_EQ(out["tensors"].size(), tensors->size());
  for (const auto& [name, t] : *tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(out["tensors"].contains(name));
    const nlohmann::json& p = out["tensors"][name];
    EXPECT_EQ(p["shape"].get<std::vector<int64_t>>(), t.sizes().vec());
    EXPECT_EQ(p["dtype"], "F32");
    const double sum = t.to(torch::kFloat64).sum().item<double>();
    const double abs_sum = t.to(torch::kFloat64).abs().sum().item<double>();
    EXPECT_NEAR(p["sum"].get<double>(), sum, 1e-9 * std::max(1.0, abs_sum));
    EXPECT_NEAR(p["abs_sum"].get<double>(), abs_sum,
                1e-9 * std::max(1.0, abs_sum));
  }
  EXPECT_TRUE(out["tensors"].contains("head.output.weight"));
}

TEST_F(RegistryTest, ImportRefusesBadArchivesAndLeavesNothing) {
  MakeModel("good");
  const fs::path archive = Export("good", "good.tar");
  const std::string bytes = ReadAll(archive);

  // Not a tar at all; empty; short.
  WriteAll(Scratch("garbage.tar"), std::string(4096, 'x'));
  ExpectRefused(Scratch("garbage.tar"), "not a tar");
  WriteAll(Scratch("empty.tar"), "");
  ExpectRefused(Scratch("empty.tar"), "512-byte blocks");
  WriteAll(Scratch("text.tar"), "hello, I am not an archive\n");
  ExpectRefused(Scratch("text.tar"), "512-byte blocks");

  // Truncated: mid-block, mid-weights, before the end-of-archive blocks.
  WriteAll(Scratch("cut-odd.tar"), bytes.substr(0, bytes.size() / 2 + 7));
  ExpectRefused(Scratch("cut-odd.tar"), "512-byte blocks");
  WriteAll(Scratch("cut-weights.tar"),
           bytes.substr(0, (bytes.size() / 2) / 512 * 512));
  ExpectRefused(Scratch("cut-weights.tar"), "truncated");
  WriteAll(Scratch("cut-end.tar"), bytes.substr(0, bytes.size() - 1024));
  ExpectRefused(Scratch("cut-end.tar"), "end-of-archive");
  WriteAll(Scratch("trailing.tar"), bytes + std::string(512, 'z'));
  ExpectRefused(Scratch("trailing.tar"), "end-of-archive");

  // A flipped byte in the weights: the SHA-256 in model.json says so.
  std::string flipped = bytes;
  flipped[flipped.size() - 2048] ^= 0x01;
  WriteAll(Scratch("flipped.tar"), flipped);
  ExpectRefused(Scratch("flipped.tar"), "SHA-256");
  // A header with a bad checksum.
  std::string bad_sum = bytes;
  bad_sum[0] = 'M';
  WriteAll(Scratch("bad-sum.tar"), bad_sum);
  ExpectRefused(Scratch("bad-sum.tar"), "checksum");

  // Path tricks, links and unknown members (checksums fixed up).
  std::string renamed = bytes;
  std::memcpy(renamed.data(), "../model.json", 14);
  FixChecksum(renamed, 0);
  WriteAll(Scratch("dotdot.tar"), renamed);
  ExpectRefused(Scratch("dotdot.tar"), "unexpected member");
  std::string absolute = bytes;
  std::memcpy(absolute.data(), "/model.json", 12);
  FixChecksum(absolute, 0);
  WriteAll(Scratch("absolute.tar"), absolute);
  ExpectRefused(Scratch("absolute.tar"), "unexpected member");
  std::string link = bytes;
  link[156] = '2';
  FixChecksum(link, 0);
  WriteAll(Scratch("symlink.tar"), link);
  ExpectRefused(Scratch("symlink.tar"), "not a regular file");
  std::string prefixed = bytes;
  std::memcpy(prefixed.data() + 345, "evil", 4);
  FixChecksum(prefixed, 0);
  WriteAll(Scratch("prefix.tar"), prefixed);
  ExpectRefused(Scratch("prefix.tar"), "prefix");

  // Metadata problems: the format, the architecture, the classes.
  const auto python = [&](const std::string& name,
                          std::vector<std::string> edits) {
    std::vector<std::string> argv = {
        testing::Python3(),
        testing::SourcePath("tests/server/core/read_model_archive.py"),
        "--rewrite", archive.string(), Scratch(name).string()};
    argv.insert(argv.end(), edits.begin(), edits.end());
    testing::RunResult r = testing::Run(argv);
    EXPECT_TRUE(r.status.exited && r.status.code == 0) << r.err;
    return Scratch(name);
  };
  // Unchanged but re-packed by Python's tarfile: accepted.
  auto repacked = registry_->Import(python("repacked.tar", {}), "repacked", "");
  ASSERT_TRUE(repacked.ok()) << repacked.status();
  EXPECT_EQ(ReadAll(repacked->weights_file),
            ReadAll(registry_->Get("good")->weights_file));

  ExpectRefused(python("format.tar", {"--set", "format=\"keras\""}), "format");
  ExpectRefused(python("version.tar", {"--set", "format_version=99"}),
                "format_version");
  ExpectRefused(python("hidden.tar", {"--set", "model.head.hidden_units=16"}),
                "does not fit");
  ExpectRefused(python("backbone.tar", {"--set", "model.backbone=\"vgg16\""}),
                "does not fit");
  ExpectRefused(python("classes.tar", {"--set", "classes=[\"a\",\"b\",\"c\"]",
                                       "--set", "evaluations=[]"}),
                "does not fit");
  ExpectRefused(python("one-class.tar", {"--set", "classes=[\"a\"]"}),
                "classes");
  ExpectRefused(
      python("unknown-backbone.tar", {"--set", "model.backbone=\"lenet\""}),
      "lenet");
  ExpectRefused(python("no-classes.tar", {"--set", "classes=7"}), "model.json");
  ExpectRefused(
      python("preprocessing.tar", {"--set", "preprocessing.mode=\"magic\""}),
      "preprocessing.mode");
  ExpectRefused(python("size.tar", {"--set", "preprocessing.input_size=64"}),
                "input_size");
  ExpectRefused(python("extra.tar", {"--add-member", "../../etc/passwd"}),
                "unexpected member");
  ExpectRefused(
      python("no-weights.tar", {"--drop-member", "weights.safetensors"}),
      "no weights.safetensors");
  ExpectRefused(python("no-json.tar", {"--drop-member", "model.json"}),
                "no model.json");

  // Tensors that are not safetensors at all (model.json without a hash).
  std::string junk_weights =
      ReadAll(python("nohash.tar", {"--set", "weights={}"}));
  const size_t data = MemberHeader(junk_weights, "weights.safetensors");
  ASSERT_NE(data, std::string::npos);
  std::memset(junk_weights.data() + data + 512, 'j', 64);
  WriteAll(Scratch("junk-weights.tar"), junk_weights);
  ExpectRefused(Scratch("junk-weights.tar"), "weights.safetensors");

  // The good model is still the only one (plus the re-packed copy).
  std::string next;
  EXPECT_EQ(registry_->List(100, "", &next)->size(), 2u);
}

// ---- ModelExport and ModelImport (model_transfer.h) ------------------------

TEST_F(RegistryTest, TransferRoundTripInPiecesAndNothingLeftInTmp) {
  const ModelInfo model = MakeModel("m-transfer");
  absl::StatusOr<std::unique_ptr<ModelExport>> exported =
      ModelExport::Create(model, *data_dir_);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(Entries(data_dir_->tmp_dir()).size(), 1u);  // the archive
  std::string archive;
  while (!(*exported)->done()) {
    absl::StatusOr<std::string_view> piece = (*exported)->Next(1000);
    ASSERT_TRUE(piece.ok()) << piece.status();
    ASSERT_LE(piece->size(), 1000u);
    archive.append(*piece);
  }
  EXPECT_EQ(static_cast<int64_t>(archive.size()), (*exported)->total_bytes());
  const std::string sha256 = (*exported)->sha256();
  exported->reset();
  EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());
  WriteAll(Scratch("copy.tar"), archive);
  EXPECT_EQ(*common::Sha256File(Scratch("copy.tar")), sha256);

  TransferLimits limits{1ll << 30, 0};
  ModelImportSpec spec{"m-imported", "Imported", 0};
  spec.total_bytes = static_cast<int64_t>(archive.size());
  absl::StatusOr<std::unique_ptr<ModelImport>> import =
      ModelImport::Begin(*registry_, *data_dir_, limits, spec);
  ASSERT_TRUE(import.ok()) << import.status();
  for (size_t at = 0; at < archive.size(); at += 777) {
    ASSERT_TRUE((*import)->Append(archive.substr(at, 777)).ok());
  }
  absl::StatusOr<ModelInfo> imported = (*import)->Commit();
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->id, "m-imported");
  EXPECT_EQ(imported->display_name, "Imported");
  EXPECT_EQ(imported->classes, model.classes);
  EXPECT_EQ(imported->history.size(), model.history.size());
  EXPECT_EQ((*import)->Commit().status().code(),
            absl::StatusCode::kFailedPrecondition);
  import->reset();
  EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());
}

TEST_F(RegistryTest, ImportLimitsAndBadSpecsLeaveNothingBehind) {
  MakeModel("m-taken");
  TransferLimits limits{4096, 0};
  auto begin = [&](ModelImportSpec spec) {
    return ModelImport::Begin(*registry_, *data_dir_, limits, std::move(spec))
        .status();
  };
  EXPECT_EQ(begin({"", "", -1}).message(),
            "header.total_bytes must not be negative");
  EXPECT_EQ(begin({"", "", 5000}).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(begin({"Bad Id!", "", 0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(begin({"m-taken", "", 0}).code(), absl::StatusCode::kAlreadyExists);
  // The free-disk floor: no disk has this much free.
  TransferLimits floor{4096, int64_t{1} << 62};
  EXPECT_EQ(
      ModelImport::Begin(*registry_, *data_dir_, floor, {}).status().code(),
      absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());

  auto announced =
      ModelImport::Begin(*registry_, *data_dir_, limits, {"", "", 100});
  ASSERT_TRUE(announced.ok()) << announced.status();
  EXPECT_TRUE((*announced)->Append(std::string(60, 'x')).ok());
  EXPECT_THAT((*announced)->Append(std::string(60, 'x')).message(),
              HasSubstr("more than header.total_bytes (100)"));
  EXPECT_THAT((*announced)->Commit().status().message(),
              HasSubstr("the stream ended after 60 of the 100 bytes"));
  announced->reset();

  auto unbounded = ModelImport::Begin(*registry_, *data_dir_, limits, {});
  ASSERT_TRUE(unbounded.ok()) << unbounded.status();
  EXPECT_EQ((*unbounded)->Append(std::string(5000, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE((*unbounded)->Append("not a tar").ok());
  EXPECT_EQ((*unbounded)->Commit().status().code(),
            absl::StatusCode::kInvalidArgument);
  unbounded->reset();
  EXPECT_THAT(Entries(data_dir_->tmp_dir()), IsEmpty());
  std::string next;
  EXPECT_EQ(registry_->List(100, "", &next)->size(), 1u);
}

}  // namespace
}  // namespace transferd::core
