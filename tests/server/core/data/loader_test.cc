#include "server/core/data/loader.h"

#include <filesystem>
#include <fstream>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "tests/support/subprocess.h"

namespace transferd::core::data {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// 23 JPEGs of different sizes, each a colour that encodes its index with a
// white square in its top-left quarter (so that warps show).
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 23; ++i) {
      const int w = 40 + 13 * i, h = 30 + 7 * i;
      cv::Mat img(h, w, CV_8UC3, cv::Scalar(i * 10, 255 - i * 10, 128));
      img(cv::Rect(0, 0, w / 2, h / 2)).setTo(cv::Scalar(255, 255, 255));
      const std::string path =
          dir_.path() + "/img" + std::to_string(i) + ".jpg";
      ASSERT_TRUE(cv::imwrite(path, img));
      examples_.push_back({path, i % 3});
    }
  }
  std::unique_ptr<Loader> Make(LoaderOptions options) {
    auto loader = Loader::Create(examples_, options);
    EXPECT_TRUE(loader.ok()) << loader.status();
    return loader.ok() ? std::move(*loader) : nullptr;
  }
  std::vector<Batch> Epoch(Loader& loader, int64_t epoch) {
    loader.StartEpoch(epoch);
    std::vector<Batch> out;
    while (true) {
      auto next = loader.Next();
      EXPECT_TRUE(next.ok()) << next.status();
      if (!next.ok() || !next->has_value()) break;
      out.push_back(std::move(**next));
    }
    return out;
  }
  LoaderOptions Options() {
    LoaderOptions o;
    o.image_size = 32;
    o.batch_size = 5;
    o.seed = 7;
    o.preprocessing = backbones::Preprocessing::Tf();
    return o;
  }

  testing::TempDir dir_;
  std::vector<Example> examples_;
};

TEST_F(LoaderTest, YieldsEveryExampleOnceInChannelsLastBatches) {
  auto loader = Make(Options());
  ASSERT_NE(loader, nullptr);
  EXPECT_EQ(loader->batches_per_epoch(), 5);
  std::vector<Batch> batches = Epoch(*loader, 0);
  ASSERT_EQ(batches.size(), 5u);
  std::set<int64_t> seen;
  for (const Batch& b : batches) {
    EXPECT_EQ(b.images.size(1), 3);
    EXPECT_EQ(b.images.size(2), 32);
    EXPECT_TRUE(b.images.is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_EQ(b.images.scalar_type(), torch::kFloat32);
    EXPECT_LE(b.images.max().item<float>(), 1.0f);  // tf preprocessing
    EXPECT_GE(b.images.min().item<float>(), -1.0f);
    for (size_t i = 0; i < b.examples.size(); ++i) {
      EXPECT_EQ(b.labels[static_cast<int64_t>(i)].item<int64_t>(),
                examples_[b.examples[i]].label);
      seen.insert(b.examples[i]);
    }
  }
  EXPECT_EQ(batches.back().images.size(0), 3);  // 23 = 4 * 5 + 3
  EXPECT_EQ(seen.size(), 23u);
}

TEST_F(LoaderTest, ReshufflesEachEpochReproducibly) {
  auto a = Make(Options());
  auto b = Make(Options());
  auto e0 = Epoch(*a, 0), e1 = Epoch(*a, 1), again = Epoch(*b, 1);
  EXPECT_NE(e0[0].examples, e1[0].examples);
  EXPECT_EQ(e1[0].examples, again[0].examples);
}

TEST_F(LoaderTest, OutputDoesNotDependOnThreadsWithAugmentation) {
  LoaderOptions one = Options();
  one.threads = 1;
  one.augment = AugmentOptions::KerasBook();
  LoaderOptions three = one;
  three.threads = 3;
  three.prefetch_batches = 2;
  auto x = Epoch(*Make(one), 4);
  auto y = Epoch(*Make(three), 4);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(torch::equal(x[i].images, y[i].images)) << "batch " << i;
  }
  // Augmentation really changes pixels compared with none.
  auto plain = Epoch(*Make(Options()), 4);
  EXPECT_EQ(plain[0].examples, x[0].examples);
  EXPECT_FALSE(torch::equal(plain[0].images, x[0].images));
}

TEST_F(LoaderTest, DecodedImageCacheGivesTheSameBatchesWithoutRereadingFiles) {
  LoaderOptions o = Options();
  o.augment = AugmentOptions::KerasBook();
  const auto reference = Epoch(*Make(o), 2);
  o.decoded_cache = std::make_shared<DecodedImageCache>(int64_t{1} << 30);
  auto cached = Make(o);
  Epoch(*cached, 1);  // fills the cache
  EXPECT_EQ(o.decoded_cache->bytes(), 23 * 32 * 32 * 3);
  // Every file gone: epoch 2 comes from memory alone, and is what the
  // uncached loader produced.
  for (const Example& e : examples_) fs::remove(e.path);
  const auto again = Epoch(*cached, 2);
  ASSERT_EQ(again.size(), reference.size());
  for (size_t i = 0; i < again.size(); ++i) {
    EXPECT_TRUE(torch::equal(again[i].images, reference[i].images))
        << "batch " << i;
  }
  // A budget of one image keeps one image.
  auto small = std::make_shared<DecodedImageCache>(32 * 32 * 3);
  small->Put(0, std::vector<uint8_t>(32 * 32 * 3));
  small->Put(1, std::vector<uint8_t>(32 * 32 * 3));
  EXPECT_NE(small->Get(0), nullptr);
  EXPECT_EQ(small->Get(1), nullptr);
}

TEST_F(LoaderTest, DropLastAndBadFiles) {
  LoaderOptions o = Options();
  o.drop_last = true;
  EXPECT_EQ(Make(o)->batches_per_epoch(), 4);

  examples_.push_back({dir_.path() + "/missing.jpg", 0});
  std::ofstream(dir_.path() + "/garbage.jpg") << "not an image";
  examples_.push_back({dir_.path() + "/garbage.jpg", 0});
  LoaderOptions all = Options();
  all.batch_size = 25;
  all.shuffle = false;
  auto loader = Make(all);
  loader->StartEpoch(0);
  auto batch = loader->Next();
  ASSERT_FALSE(batch.ok());
  EXPECT_THAT(std::string(batch.status().message()), HasSubstr("missing.jpg"));
  EXPECT_EQ(Loader::Create({}, Options()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LoaderTest, ShardsSplitEveryGlobalBatchInRankOrder) {
  // 23 examples, batch 5 per rank, 2 ranks: global batches of 10, 10, 3.
  LoaderOptions whole = Options();
  whole.batch_size = 10;
  auto reference = Make(whole);
  const std::vector<Batch> global = Epoch(*reference, 4);
  ASSERT_EQ(global.size(), 3u);
  std::vector<std::vector<Batch>> ranks;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o = Options();
    o.shard_count = 2;
    o.shard_index = r;
    auto loader = Make(o);
    ASSERT_EQ(loader->batches_per_epoch(), 3);
    ranks.push_back(Epoch(*loader, 4));
    ASSERT_EQ(ranks.back().size(), 3u) << "rank " << r;
  }
  for (size_t b = 0; b < global.size(); ++b) {
    std::vector<int64_t> joined = ranks[0][b].examples;
    joined.insert(joined.end(), ranks[1][b].examples.begin(),
                  ranks[1][b].examples.end());
    EXPECT_EQ(joined, global[b].examples) << "batch " << b;
    EXPECT_TRUE(
        torch::equal(torch::cat({ranks[0][b].images, ranks[1][b].images}),
                     global[b].images));
  }
  // The last global batch (3 examples) is all rank 0's; rank 1's is empty.
  EXPECT_EQ(ranks[0][2].examples.size(), 3u);
  EXPECT_EQ(ranks[1][2].images.size(0), 0);
  EXPECT_EQ(ranks[1][2].labels.size(0), 0);

  LoaderOptions bad = Options();
  bad.shard_count = 2;
  bad.shard_index = 2;
  EXPECT_THAT(std::string(Loader::Create(examples_, bad).status().message()),
              HasSubstr("shard 2 of 2 does not exist"));
}

}  // namespace
}  // namespace transferd::core::data
