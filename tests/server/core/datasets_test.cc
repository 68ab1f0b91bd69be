#include "server/core/datasets.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/core/util/data_dir.h"
#include "server/core/util/store.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using common::LabelSource;
using common::Split;
using ::testing::ElementsAre;
using testing::EncodeTestImage;
using ::testing::HasSubstr;

// Every regular file below `dir`.
std::set<std::string> FilesUnder(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  }
  return out;
}

class DatasetsTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(DatasetLimits limits = Defaults()) {
    catalog_.reset();
    store_.reset();
    data_dir_.reset();
    DataDir::Options o;
    o.root = root_;
    auto dir = DataDir::Open(o);
    ASSERT_TRUE(dir.ok()) << dir.status();
    data_dir_ = std::move(*dir);
    Store::Options so;
    so.path = data_dir_->database_path();
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto catalog = DatasetCatalog::Open(*store_, *data_dir_, limits);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    catalog_ = std::move(*catalog);
  }

  static DatasetLimits Defaults() {
    DatasetLimits l;
    l.min_free_disk_bytes = 0;
    return l;
  }

  // Sends one file as chunks of at most `chunk` bytes.
  static absl::Status Send(DatasetUpload& upload, const std::string& path,
                           const std::string& bytes,
                           const std::string& label = "", size_t chunk = 1000) {
    size_t pos = 0;
    do {
      UploadChunk c;
      if (pos == 0) {
        c.path = path;
        c.label = label;
        c.size = static_cast<int64_t>(bytes.size());
      }
      const size_t n = std::min(chunk, bytes.size() - pos);
      c.data = std::string_view(bytes).substr(pos, n);
      pos += n;
      c.last = pos == bytes.size();
      absl::Status s = upload.Add(c);
      if (!s.ok()) return s;
    } while (pos < bytes.size());
    return absl::OkStatus();
  }

  std::unique_ptr<DatasetUpload> Begin(UploadSpec spec) {
    auto upload = catalog_->BeginUpload(std::move(spec));
    EXPECT_TRUE(upload.ok()) << upload.status();
    return upload.ok() ? std::move(*upload) : nullptr;
  }

  static UploadSpec Spec(const std::string& id) {
    UploadSpec s;
    s.id = id;
    return s;
  }

  // Nothing of an upload survives: no temp folder, no dataset folder, no row.
  void ExpectNoTrace(const std::string& id) {
    EXPECT_TRUE(fs::is_empty(data_dir_->tmp_dir())) << "tmp/ is not empty";
    EXPECT_FALSE(fs::exists(data_dir_->datasets_dir() / id));
    EXPECT_EQ(catalog_->Get(id).status().code(), absl::StatusCode::kNotFound);
  }

  testing::TempDir temp_;
  std::string root_ = (fs::path(temp_.path()) / "data").string();
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DatasetCatalog> catalog_;
};

std::map<std::string, int64_t> Counts(const DatasetInfo& d, Split split) {
  std::map<std::string, int64_t> out;
  for (const SplitCounts& s : d.splits) {
    if (s.split != split) continue;
    for (size_t i = 0; i < d.classes.size(); ++i)
      out[d.classes[i]] = s.per_class[i];
  }
  return out;
}

TEST_F(DatasetsTest, KaggleNamesInSplitFolders) {
  auto upload = Begin(Spec("kaggle"));
  ASSERT_NE(upload, nullptr);
  int seed = 0;
  for (const char* split : {"train", "validation", "test"}) {
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(Send(*upload,
                         absl::StrCat(split, "/", label, ".", seed, ".jpg"),
                         EncodeTestImage(40 + i, 30, ".jpg", seed))
                        .ok());
        ++seed;
      }
    }
  }
  auto result = upload->Commit();
  ASSERT_TRUE(result.ok()) << result.status();
  const DatasetInfo& d = result->dataset;
  EXPECT_EQ(d.label_source, LabelSource::kFilename);
  EXPECT_THAT(d.classes, ElementsAre("cat", "dog"));
  EXPECT_EQ(result->accepted_files, 18);
  EXPECT_TRUE(result->rejected.empty());
  for (Split s : {Split::kTrain, Split::kValidation, Split::kTest}) {
    EXPECT_EQ(Counts(d, s),
              (std::map<std::string, int64_t>{{"cat", 3}, {"dog", 3}}));
  }
  EXPECT_EQ(d.image_size.min_width, 40);
  EXPECT_EQ(d.image_size.max_width, 42);
  EXPECT_DOUBLE_EQ(d.image_size.mean_height, 30);
  // Stored under content hashes, nothing left in tmp/.
  const std::set<std::string> files =
      FilesUnder(data_dir_->datasets_dir() / "kaggle");
  EXPECT_EQ(files.size(), 18u);
  for (const std::string& f : files)
    EXPECT_THAT(f, ::testing::MatchesRegex("[0-9a-f]{64}\\.jpg"));
  EXPECT_TRUE(fs::is_empty(data_dir_->tmp_dir()));

  // Get returns the same, and the loader's examples point at the stored files.
  auto got = catalog_->Get("kaggle");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Counts(*got, Split::kValidation), Counts(d, Split::kValidation));
  auto examples = catalog_->Examples("kaggle", Split::kTrain);
  ASSERT_TRUE(examples.ok());
  ASSERT_EQ(examples->size(), 6u);
  for (const data::Example& e : *examples)
    EXPECT_TRUE(fs::exists(e.path)) << e.path;
  EXPECT_EQ((*examples)[0].label, 0);
  EXPECT_EQ((*examples)[5].label, 1);
}

TEST_F(DatasetsTest, ClassFoldersAnyNumberOfClasses) {
  auto upload = Begin(Spec("flowers"));
  ASSERT_NE(upload, nullptr);
  int seed = 0;
  for (const char* label : {"daisy", "rose", "tulip"}) {
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(Send(*upload,
                       absl::StrCat("train/", label, "/img", i, ".png"),
                       EncodeTestImage(20, 20, ".png", seed++))
                      .ok());
    }
  }
  auto result = upload->Commit();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->dataset.label_source, LabelSource::kFolder);
  EXPECT_THAT(result->dataset.classes, ElementsAre("daisy", "rose", "tulip"));
  EXPECT_EQ(Counts(result->dataset, Split::kTrain),
            (std::map<std::string, int64_t>{
                {"daisy", 2}, {"rose", 2}, {"tulip", 2}}));
}

TEST_F(DatasetsTest, ExplicitLabelsAndRatios) {
  UploadSpec spec = Spec("explicit");
  spec.label_source = LabelSource::kExplicit;
  common::SplitPolicy policy;
  policy.kind = common::SplitPolicy::Kind::kRatios;
  policy.train = 0.6;
  policy.validation = 0.2;
  policy.test = 0.2;
  policy.seed = 7;
  spec.split = policy;
  auto upload = Begin(spec);
  ASSERT_NE(upload, nullptr);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Send(*upload, absl::StrCat("img", i, ".jpg"),
                     EncodeTestImage(16, 16, ".jpg", i), i % 2 ? "b" : "a")
                    .ok());
  }
  // A file without a label is rejected, the rest go on.
  ASSERT_TRUE(
      Send(*upload, "nolabel.jpg", EncodeTestImage(16, 16, ".jpg", 99)).ok());
  auto result = upload->Commit();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->dataset.classes, ElementsAre("a", "b"));
  EXPECT_EQ(Counts(result->dataset, Split::kTrain),
            (std::map<std::string, int64_t>{{"a", 6}, {"b", 6}}));
  EXPECT_EQ(Counts(result->dataset, Split::kValidation),
            (std::map<std::string, int64_t>{{"a", 2}, {"b", 2}}));
  ASSERT_EQ(result->rejected.size(), 1u);
  EXPECT_EQ(result->rejected[0].reason, RejectReason::kNoLabel);
}

TEST_F(DatasetsTest, PerClassCountsKeepOnlyTheSum) {
  UploadSpec spec = Spec("counts");
  common::SplitPolicy policy;
  policy.kind = common::SplitPolicy::Kind::kPerClassCounts;
  policy.train_count = 4;
  policy.validation_count = 2;
  policy.test_count = 1;
  spec.split = policy;
  auto upload = Begin(spec);
  ASSERT_NE(upload, nullptr);
  for (int i = 0; i < 10; ++i) {
    for (const char* label : {"cat", "dog"}) {
      ASSERT_TRUE(
          Send(*upload, absl::StrCat(label, ".", i, ".jpg"),
               EncodeTestImage(16, 16, ".jpg", i * 2 + (label[0] == 'd')))
              .ok());
    }
  }
  auto result = upload->Commit();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->dataset.files, 14);
  EXPECT_EQ(Counts(result->dataset, Split::kTrain),
            (std::map<std::string, int64_t>{{"cat", 4}, {"dog", 4}}));
  EXPECT_EQ(Counts(result->dataset, Split::kTest),
            (std::map<std::string, int64_t>{{"cat", 1}, {"dog", 1}}));
  // The 6 files beyond the counts are not stored.
  EXPECT_EQ(FilesUnder(data_dir_->datasets_dir() / "counts").size(), 14u);
}

TEST_F(DatasetsTest, BadFilesAreRejectedWithReasonsAndTheRestStored) {
  auto upload = Begin(Spec("mixed"));
  ASSERT_NE(upload, nullptr);
  const std::string good = EncodeTestImage(32, 32, ".jpg", 1);
  ASSERT_TRUE(Send(*upload, "cat.1.jpg", good).ok());
  ASSERT_TRUE(Send(*upload, "cat.2.jpg", "GIF89a not an image").ok());
  ASSERT_TRUE(Send(*upload, "cat.3.jpg", good.substr(0, good.size() / 2)).ok());
  ASSERT_TRUE(Send(*upload, "cat.4.jpg", "").ok());
  ASSERT_TRUE(
      Send(*upload, "cat.5.png", testing::PngHeader(60000, 60000)).ok());
  ASSERT_TRUE(
      Send(*upload, "cat.6.jpg", testing::JpegHeader(60000, 60000)).ok());
  ASSERT_TRUE(
      Send(*upload, "cat.7.png", testing::PngHeader((1u << 20) + 1, 1)).ok());
  ASSERT_TRUE(Send(*upload, "../../etc/cat.8.jpg", good).ok());
  ASSERT_TRUE(Send(*upload, "/abs/cat.9.jpg", good).ok());
  ASSERT_TRUE(Send(*upload, std::string("cat.10\0.jpg", 11), good).ok());
  ASSERT_TRUE(Send(*upload, "dir\\cat.11.jpg", good).ok());
  ASSERT_TRUE(Send(*upload, std::string(256, 'c') + ".jpg", good).ok());
  ASSERT_TRUE(Send(*upload, "cat.12.jpg", good).ok());  // a duplicate
  ASSERT_TRUE(Send(*upload, "notes", EncodeTestImage(8, 8, ".png", 5)).ok());
  {
    // Declares more than it sends.
    UploadChunk c;
    c.path = "cat.13.jpg";
    c.size = static_cast<int64_t>(good.size()) + 5;
    c.data = good;
    c.last = true;
    ASSERT_TRUE(upload->Add(c).ok());
  }
  auto result = upload->Commit();
  ASSERT_TRUE(result.ok()) << result.status();
  std::map<std::string, RejectReason> reasons;
  for (const RejectedFile& r : result->rejected) reasons[r.path] = r.reason;
  EXPECT_EQ(reasons["cat.2.jpg"], RejectReason::kUnsupportedFormat);
  EXPECT_EQ(reasons["cat.3.jpg"], RejectReason::kCorrupt);
  EXPECT_EQ(reasons["cat.4.jpg"], RejectReason::kEmpty);
  EXPECT_EQ(reasons["cat.5.png"], RejectReason::kTooManyPixels);
  EXPECT_EQ(reasons["cat.6.jpg"], RejectReason::kTooManyPixels);
  EXPECT_EQ(reasons["cat.7.png"], RejectReason::kTooManyPixels);
  EXPECT_EQ(reasons["../../etc/cat.8.jpg"], RejectReason::kBadPath);
  EXPECT_EQ(reasons["/abs/cat.9.jpg"], RejectReason::kBadPath);
  EXPECT_EQ(reasons["cat.10\\0.jpg"], RejectReason::kBadPath);
  EXPECT_EQ(reasons["dir\\cat.11.jpg"], RejectReason::kBadPath);
  EXPECT_EQ(reasons[std::string(256, 'c') + ".jpg"], RejectReason::kBadPath);
  EXPECT_EQ(reasons["notes"], RejectReason::kNoLabel);
  EXPECT_EQ(reasons["cat.13.jpg"], RejectReason::kSizeMismatch);
  EXPECT_EQ(result->rejected.size(), 13u);
  for (const RejectedFile& r : result->rejected)
    EXPECT_FALSE(r.message.empty());

  // Two entries, one stored file.
  EXPECT_EQ(result->accepted_files, 2);
  EXPECT_EQ(result->duplicate_files, 1);
  EXPECT_EQ(result->dataset.bytes, static_cast<int64_t>(good.size()));
  EXPECT_EQ(FilesUnder(data_dir_->datasets_dir() / "mixed").size(), 1u);
  // Nothing was written outside the data directory.
  EXPECT_FALSE(fs::exists(fs::path(temp_.path()) / "etc"));
  EXPECT_FALSE(fs::exists("/abs"));
  auto got = catalog_->Get("mixed");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->rejected_files, 13);
  EXPECT_EQ(got->rejects.size(), 13u);
  EXPECT_EQ(got->duplicate_files, 1);
}

TEST_F(DatasetsTest, EveryFileUnderTheDataDirIsServerNamed) {
  auto upload = Begin(Spec("names"));
  ASSERT_NE(upload, nullptr);
  ASSERT_TRUE(
      Send(*upload, "../../escape/cat.1.jpg", EncodeTestImage(8, 8, ".jpg", 1))
          .ok());
  ASSERT_TRUE(
      Send(*upload, "cat.2.jpg", EncodeTestImage(8, 8, ".jpg", 2)).ok());
  ASSERT_TRUE(upload->Commit().ok());
  for (const std::string& f : FilesUnder(root_)) {
    EXPECT_THAT(f,
                ::testing::MatchesRegex(
                    "transferd\\.db.*|LOCK|datasets/names/[0-9a-f]{64}\\.jpg"));
  }
  EXPECT_FALSE(
      fs::exists(fs::path(root_).parent_path().parent_path() / "escape"));
}

TEST_F(DatasetsTest, MalformedChunkSequencesEndTheUpload) {
  auto upload = Begin(Spec("seq"));
  ASSERT_NE(upload, nullptr);
  UploadChunk no_path;
  no_path.data = "x";
  EXPECT_EQ(upload->Add(no_path).code(), absl::StatusCode::kInvalidArgument);

  auto second = Begin(Spec("seq2"));
  ASSERT_NE(second, nullptr);
  UploadChunk open;
  open.path = "a/cat.1.jpg";
  open.data = "\xFF\xD8";
  ASSERT_TRUE(second->Add(open).ok());
  UploadChunk interleaved;
  interleaved.path = "a/cat.2.jpg";
  const absl::Status s = second->Add(interleaved);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("still open"));
  // Ending inside a file.
  auto third = Begin(Spec("seq3"));
  ASSERT_NE(third, nullptr);
  ASSERT_TRUE(third->Add(open).ok());
  EXPECT_EQ(third->Commit().status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetsTest, AnUploadThatEndsWithoutCommitLeavesNoTrace) {
  {
    auto upload = Begin(Spec("gone"));
    ASSERT_NE(upload, nullptr);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(Send(*upload, absl::StrCat("cat.", i, ".jpg"),
                       EncodeTestImage(16, 16, ".jpg", i))
                      .ok());
    }
    EXPECT_FALSE(fs::is_empty(data_dir_->tmp_dir()));
  }  // the stream was cancelled
  ExpectNoTrace("gone");
  // The id is free again.
  EXPECT_NE(Begin(Spec("gone")), nullptr);
}

TEST_F(DatasetsTest, NoAcceptedFileIsAnErrorAndStoresNothing) {
  auto upload = Begin(Spec("empty"));
  ASSERT_NE(upload, nullptr);
  ASSERT_TRUE(Send(*upload, "cat.1.jpg", "not an image").ok());
  const absl::Status s = upload->Commit().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no file was accepted"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("cat.1.jpg"));
  upload.reset();
  ExpectNoTrace("empty");
}

TEST_F(DatasetsTest, IdsAreCheckedAndUnique) {
  for (const char* bad : {"", "UPPER", "-x", "x-", "a/b", "..", "a b"}) {
    if (std::string(bad).empty()) continue;  // empty means "server picks"
    EXPECT_EQ(catalog_->BeginUpload(Spec(bad)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  auto picked = Begin(Spec(""));
  ASSERT_NE(picked, nullptr);
  EXPECT_THAT(picked->id(), ::testing::MatchesRegex("ds-[0-9a-f]{8}"));

  auto first = Begin(Spec("same"));
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(catalog_->BeginUpload(Spec("same")).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(Send(*first, "cat.1.jpg", EncodeTestImage(8, 8, ".jpg")).ok());
  ASSERT_TRUE(first->Commit().ok());
  EXPECT_EQ(catalog_->BeginUpload(Spec("same")).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(DatasetsTest, PerFileCapIsResourceExhausted) {
  DatasetLimits limits = Defaults();
  limits.max_file_bytes = 2000;
  Open(limits);
  auto upload = Begin(Spec("cap"));
  ASSERT_NE(upload, nullptr);
  const absl::Status declared =
      Send(*upload, "cat.1.jpg", std::string(3000, 'x'));
  EXPECT_EQ(declared.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(declared.message()), HasSubstr("--max-file-bytes"));
  // Undeclared size: caught as the bytes arrive.
  auto second = Begin(Spec("cap2"));
  ASSERT_NE(second, nullptr);
  UploadChunk c;
  c.path = "cat.1.jpg";
  c.data = std::string(1500, 'x');
  ASSERT_TRUE(second->Add(c).ok());
  UploadChunk more;
  more.data = c.data;
  EXPECT_EQ(second->Add(more).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(DatasetsTest, DatasetAndTotalQuotasAndTheDiskFloor) {
  const std::string a = EncodeTestImage(64, 64, ".png", 1);
  const std::string b = EncodeTestImage(64, 64, ".png", 2);
  DatasetLimits limits = Defaults();
  limits.max_dataset_bytes = static_cast<int64_t>(a.size() + b.size() / 2);
  Open(limits);
  auto upload = Begin(Spec("quota"));
  ASSERT_NE(upload, nullptr);
  ASSERT_TRUE(Send(*upload, "cat.1.png", a).ok());
  absl::Status s = Send(*upload, "cat.2.png", b);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--max-dataset-bytes"));
  upload.reset();
  ExpectNoTrace("quota");

  limits = Defaults();
  limits.max_total_bytes = static_cast<int64_t>(a.size() + b.size() / 2);
  Open(limits);
  auto first = Begin(Spec("first"));
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(Send(*first, "cat.1.png", a).ok());
  ASSERT_TRUE(first->Commit().ok());
  auto second = Begin(Spec("second"));
  ASSERT_NE(second, nullptr);
  s = Send(*second, "cat.2.png", b);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--max-total-dataset-bytes"));
  // Declared up front: refused before any byte is sent.
  UploadSpec declared = Spec("third");
  declared.expected_bytes = static_cast<int64_t>(b.size());
  EXPECT_EQ(catalog_->BeginUpload(declared).status().code(),
            absl::StatusCode::kResourceExhausted);
  second.reset();

  limits = Defaults();
  limits.min_free_disk_bytes = std::numeric_limits<int64_t>::max() / 2;
  Open(limits);
  auto floor = Begin(Spec("floor"));
  ASSERT_NE(floor, nullptr);
  s = Send(*floor, "cat.1.png", b);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--min-free-disk-bytes"));
  floor.reset();
  ExpectNoTrace("floor");
}

TEST_F(DatasetsTest, ListPagesNewestFirstAndDeleteRemovesFiles) {
  for (const char* id : {"one", "two", "three"}) {
    auto upload = Begin(Spec(id));
    ASSERT_NE(upload, nullptr);
    ASSERT_TRUE(
        Send(*upload, "cat.1.jpg", EncodeTestImage(8, 8, ".jpg", id[1])).ok());
    ASSERT_TRUE(upload->Commit().ok());
  }
  std::string token;
  auto page = catalog_->List(2, "", &token);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_FALSE(token.empty());
  auto rest = catalog_->List(2, token, &token);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_TRUE(token.empty());
  std::set<std::string> ids{(*page)[0].id, (*page)[1].id, (*rest)[0].id};
  EXPECT_EQ(ids, (std::set<std::string>{"one", "two", "three"}));
  EXPECT_EQ(catalog_->List(2, "bogus", &token).status().code(),
            absl::StatusCode::kInvalidArgument);

  catalog_->SetInUseCheck([](const std::string& id) {
    return id == "two" ? std::string("jobs/7") : std::string();
  });
  const absl::Status busy = catalog_->Delete("two");
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(busy.message()), HasSubstr("jobs/7"));
  EXPECT_TRUE(catalog_->Get("two").ok());

  ASSERT_TRUE(catalog_->Delete("one").ok());
  EXPECT_FALSE(fs::exists(data_dir_->datasets_dir() / "one"));
  EXPECT_EQ(catalog_->Get("one").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog_->Delete("one").code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetsTest, ReopeningRemovesWhatACrashLeft) {
  auto upload = Begin(Spec("kept"));
  ASSERT_NE(upload, nullptr);
  ASSERT_TRUE(Send(*upload, "cat.1.jpg", EncodeTestImage(8, 8, ".jpg")).ok());
  ASSERT_TRUE(upload->Commit().ok());
  // A crash between the rename and the catalog insert, and one mid-upload.
  testing::WriteFile(data_dir_->datasets_dir() / "orphan" / "x.jpg", "x");
  testing::WriteFile(data_dir_->tmp_dir() / "upload-dead" / "y.jpg", "y");
  Open();
  EXPECT_EQ(catalog_->orphans_removed(), 1);
  EXPECT_FALSE(fs::exists(data_dir_->datasets_dir() / "orphan"));
  EXPECT_TRUE(fs::is_empty(data_dir_->tmp_dir()));
  EXPECT_TRUE(catalog_->Get("kept").ok());
  EXPECT_EQ(FilesUnder(data_dir_->datasets_dir() / "kept").size(), 1u);
}

}  // namespace
}  // namespace transferd::core
