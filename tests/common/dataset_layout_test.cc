#include "common/dataset_layout.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::common {
namespace {

using ::testing::HasSubstr;

TEST(DatasetLayoutTest, TraversalAndOddNamesAreRejected) {
  for (const std::string& bad :
       {std::string("../etc/passwd"), std::string("a/../../b.jpg"),
        std::string("/etc/passwd"), std::string("a\\b.jpg"),
        std::string("a\0b.jpg", 7), std::string(256, 'x'), std::string(""),
        std::string("train/")}) {
    absl::Status s = ValidateClientPath(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(ValidateClientPath("x/../y.jpg").message()),
              HasSubstr(".."));
  for (const char* good :
       {"cat.1.jpg", "train/cats/x.jpg", "a..b.jpg", "dir/.hidden.png"}) {
    EXPECT_TRUE(ValidateClientPath(good).ok()) << good;
  }
  EXPECT_TRUE(ValidateClientPath(std::string(255, 'x')).ok());
}

// Found by tests/fuzz/fuzz_upload: a path that is not UTF-8 reached the
// rejects' JSON and threw. Such paths are refused, by name.
TEST(DatasetLayoutTest, PathsMustBeUtf8) {
  EXPECT_TRUE(ValidateClientPath("train/chat-\xc3\xa9t\xc3\xa9.1.jpg")
                  .ok());  // chat-été
  EXPECT_TRUE(ValidateClientPath("train/\xe7\x8c\xab.1.jpg").ok());      // 猫
  EXPECT_TRUE(ValidateClientPath("train/\xf0\x9f\x90\x88.1.jpg").ok());  // 🐈
  for (const std::string& bad :
       {std::string("train/cat.1\x9c.png"), std::string("train/\xc3.jpg"),
        std::string("train/\xc0\xaf.jpg"),          // overlong '/'
        std::string("train/\xed\xa0\x80.jpg"),      // a surrogate
        std::string("train/\xf4\x90\x80\x80.jpg"),  // past U+10FFFF
        std::string("train/x.jpg\xe2\x82")}) {      // cut short at the end
    absl::Status s = ValidateClientPath(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("UTF-8")) << bad;
  }
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

TEST(DatasetLayoutTest, LabelsFromKaggleNamesAndClassFolders) {
  EXPECT_EQ(*LabelFromFilename("cat.123.jpg"), "cat");
  EXPECT_EQ(*LabelFromFilename("some/dir/dog.45.jpg"), "dog");
  EXPECT_FALSE(LabelFromFilename("cat.jpg").ok());
  EXPECT_FALSE(LabelFromFilename(".123.jpg").ok());
  EXPECT_EQ(*LabelFromFolder("train/cats/x.jpg"), "cats");
  EXPECT_EQ(*LabelFromFolder("dogs/y.png"), "dogs");
  EXPECT_FALSE(LabelFromFolder("x.jpg").ok());
  EXPECT_EQ(SplitFromFolder("train/cats/x.jpg"), Split::kTrain);
  EXPECT_EQ(SplitFromFolder("val/cats/x.jpg"), Split::kValidation);
  EXPECT_EQ(SplitFromFolder("validation/x.jpg"), Split::kValidation);
  EXPECT_EQ(SplitFromFolder("test/x.jpg"), Split::kTest);
  EXPECT_EQ(SplitFromFolder("cats/x.jpg"), std::nullopt);
  EXPECT_EQ(DetectLabelSource({"cats/a.jpg", "dogs/b.jpg"}),
            LabelSource::kFolder);
  EXPECT_EQ(DetectLabelSource({"cats/a.jpg", "dog.1.jpg"}),
            LabelSource::kFilename);
  // The shared data's layout: split folders holding Kaggle names.
  EXPECT_EQ(DetectLabelSource({"train/cat.1.jpg", "validation/dog.2.jpg"}),
            LabelSource::kFilename);
  EXPECT_EQ(DetectLabelSource({"train/cats/a.jpg", "val/dogs/b.jpg"}),
            LabelSource::kFolder);
}

// 2000 cats and 2000 dogs named as in Kaggle.
struct Kaggle {
  std::vector<std::string> paths, labels;
  explicit Kaggle(int per_class = 2000) {
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < per_class; ++i) {
        paths.push_back(std::string(label) + "." + std::to_string(i) + ".jpg");
        labels.push_back(label);
      }
    }
  }
};

std::map<std::pair<std::string, Split>, int> Count(
    const Kaggle& k, const std::vector<Split>& splits) {
  std::map<std::pair<std::string, Split>, int> counts;
  for (size_t i = 0; i < splits.size(); ++i) ++counts[{k.labels[i], splits[i]}];
  return counts;
}

TEST(DatasetLayoutTest, KerasBookPresetGivesExactCountsPerClass) {
  Kaggle k(2200);
  auto splits = AssignSplits(k.paths, k.labels, SplitPolicy::KerasBook(3));
  ASSERT_TRUE(splits.ok()) << splits.status();
  auto counts = Count(k, *splits);
  for (const char* label : {"cat", "dog"}) {
    EXPECT_EQ((counts[{label, Split::kTrain}]), 1000);
    EXPECT_EQ((counts[{label, Split::kValidation}]), 500);
    EXPECT_EQ((counts[{label, Split::kTest}]), 500);
    EXPECT_EQ((counts[{label, Split::kNone}]),
              200);  // beyond the sum: not kept
  }
  auto too_few = AssignSplits(Kaggle(1500).paths, Kaggle(1500).labels,
                              SplitPolicy::KerasBook());
  ASSERT_FALSE(too_few.ok());
  EXPECT_THAT(std::string(too_few.status().message()),
              HasSubstr("class \"cat\" has 1500"));
}

TEST(DatasetLayoutTest, RatiosAreStratifiedSeededAndOrderIndependent) {
  Kaggle k(1000);
  SplitPolicy p;
  p.kind = SplitPolicy::Kind::kRatios;
  p.train = 0.7;
  p.validation = 0.2;
  p.test = 0.1;
  p.seed = 11;
  auto a = AssignSplits(k.paths, k.labels, p);
  ASSERT_TRUE(a.ok());
  auto counts = Count(k, *a);
  EXPECT_EQ((counts[{"cat", Split::kTrain}]), 700);
  EXPECT_EQ((counts[{"dog", Split::kValidation}]), 200);
  EXPECT_EQ((counts[{"dog", Split::kTest}]), 100);

  // Same files in another arrival order: same split per file.
  std::vector<size_t> perm(k.paths.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(5));
  Kaggle shuffled(0);
  for (size_t i : perm) {
    shuffled.paths.push_back(k.paths[i]);
    shuffled.labels.push_back(k.labels[i]);
  }
  auto b = AssignSplits(shuffled.paths, shuffled.labels, p);
  ASSERT_TRUE(b.ok());
  for (size_t j = 0; j < perm.size(); ++j) ASSERT_EQ((*b)[j], (*a)[perm[j]]);

  // Another seed: another split.
  p.seed = 12;
  auto c = AssignSplits(k.paths, k.labels, p);
  EXPECT_NE(*c, *a);

  p.test = 0.2;
  EXPECT_EQ(AssignSplits(k.paths, k.labels, p).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Classes of 1, 2, 3, 10 and 200 files: a long tail.
Kaggle LongTail() {
  Kaggle k(0);
  for (const auto& [label, n] : std::vector<std::pair<std::string, int>>{
           {"one", 1}, {"two", 2}, {"three", 3}, {"ten", 10}, {"big", 200}}) {
    for (int i = 0; i < n; ++i) {
      k.paths.push_back(label + "/" + std::to_string(i) + ".jpg");
      k.labels.push_back(label);
    }
  }
  return k;
}

TEST(DatasetLayoutTest, LongTailRatiosKeepATrainingFilePerClass) {
  const Kaggle k = LongTail();
  SplitPolicy p;
  p.kind = SplitPolicy::Kind::kRatios;
  p.train = 0.3;  // rounds to 0 files of a one-file class
  p.validation = 0.4;
  p.test = 0.3;
  auto s = AssignSplits(k.paths, k.labels, p);
  ASSERT_TRUE(s.ok()) << s.status();
  auto counts = Count(k, *s);
  EXPECT_EQ((counts[{"one", Split::kTrain}]), 1);
  EXPECT_EQ((counts[{"two", Split::kTrain}]), 1);
  EXPECT_EQ((counts[{"big", Split::kTrain}]), 60);
  EXPECT_EQ((counts[{"big", Split::kValidation}]), 80);
  // Nothing is dropped.
  EXPECT_EQ((counts[{"one", Split::kNone}]), 0);
  EXPECT_EQ((counts[{"three", Split::kNone}]), 0);
}

TEST(DatasetLayoutTest, CountsUpToTakeAsManyAsExist) {
  const Kaggle k = LongTail();
  SplitPolicy p;
  p.kind = SplitPolicy::Kind::kPerClassCounts;
  p.train_count = 16;
  p.validation_count = 2;
  p.test_count = 2;
  // Strict counts name the first short class.
  auto strict = AssignSplits(k.paths, k.labels, p);
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  p.up_to = true;
  auto s = AssignSplits(k.paths, k.labels, p);
  ASSERT_TRUE(s.ok()) << s.status();
  auto counts = Count(k, *s);
  // A big class gets exactly the counts; the rest are not kept.
  EXPECT_EQ((counts[{"big", Split::kTrain}]), 16);
  EXPECT_EQ((counts[{"big", Split::kValidation}]), 2);
  EXPECT_EQ((counts[{"big", Split::kTest}]), 2);
  EXPECT_EQ((counts[{"big", Split::kNone}]), 180);
  // Small classes: in proportion 16:2:2, at least one training file, and
  // every file kept.
  EXPECT_EQ((counts[{"one", Split::kTrain}]), 1);
  EXPECT_EQ((counts[{"one", Split::kNone}]), 0);
  EXPECT_EQ((counts[{"ten", Split::kTrain}]), 8);
  EXPECT_EQ((counts[{"ten", Split::kValidation}]), 1);
  EXPECT_EQ((counts[{"ten", Split::kTest}]), 1);
  EXPECT_EQ((counts[{"three", Split::kTrain}]), 2);
  EXPECT_EQ((counts[{"three", Split::kNone}]), 0);
}

TEST(DatasetLayoutTest, FoldersAndAllTrain) {
  std::vector<std::string> paths = {"train/cats/a.jpg", "validation/dogs/b.jpg",
                                    "test/cats/c.jpg", "misc/cats/d.jpg"};
  std::vector<std::string> labels = {"cats", "dogs", "cats", "cats"};
  SplitPolicy folders;
  folders.kind = SplitPolicy::Kind::kFolders;
  auto s = AssignSplits(paths, labels, folders);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, (std::vector<Split>{Split::kTrain, Split::kValidation,
                                    Split::kTest, Split::kNone}));
  auto all = AssignSplits(paths, labels, SplitPolicy{});
  EXPECT_EQ(std::count(all->begin(), all->end(), Split::kTrain), 4);
}

}  // namespace
}  // namespace transferd::common
