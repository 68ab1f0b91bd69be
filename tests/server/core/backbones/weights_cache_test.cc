// The ImageNet weights cache: Keras' official file names and URLs, files
// found in the cache (checked once against their digest), the error when a
// file is missing and downloads are off, and downloads through libcurl from
// a real HTTP server on 127.0.0.1 (cpp-httplib): a good file, a corrupt one
// and a 404, none of which may leave anything half-written behind.
//
// With TRANSFERD_TEST_WEIGHTS set (.ci/run exports it) the real
// mobilenet_2_5_224_tf_no_top.h5 in that folder is checked against the
// folder's SHA256SUMS and the digest compiled into the server.
#include "server/core/backbones/weights_cache.h"

#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/hash.h"
#include "server/core/backbones/backbone.h"
#include "tests/support/subprocess.h"

namespace transferd::core::backbones {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kKerasBase[] =
    "https://storage.googleapis.com/tensorflow/keras-applications";

// Small stand-ins for weight files and their digests (Python's hashlib).
constexpr char kFakeMobileNet[] = "fake mobilenet weights\n";
constexpr char kFakeMobileNetSha256[] =
    "0d38ec214dda704d7393884e32dbe3b9b1c5e9c1cfa0f945f0e1c7616cae8e15";
constexpr char kFakeVgg16[] = "fake vgg16 weights\n";
constexpr char kFakeVgg16Md5[] = "332383139ad270d3078e3fe97805d254";

BackboneSpec Spec(const std::string& name, double alpha = 1.0) {
  BackboneSpec spec;
  spec.name = name;
  spec.alpha = alpha;
  return spec;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

// Everything in `dir`, hidden entries included, recursively.
std::vector<std::string> Entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    names.push_back(fs::relative(entry.path(), dir).string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A real HTTP server on a free loopback port, serving what `routes` sets up.
// Counts the requests it received.
class LocalHttpServer {
 public:
  explicit LocalHttpServer(
      const std::function<void(httplib::Server&)>& routes) {
    // The download must reach 127.0.0.1 directly, whatever proxy the
    // environment names.
    setenv("no_proxy", "127.0.0.1", 1);
    setenv("NO_PROXY", "127.0.0.1", 1);
    routes(server_);
    // Counted before routing, so before the client sees any response.
    server_.set_pre_routing_handler(
        [this](const httplib::Request&, httplib::Response&) {
          ++requests_;
          return httplib::Server::HandlerResponse::Unhandled;
        });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) {
      ADD_FAILURE() << "cannot bind a loopback port for the test server";
      return;
    }
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      finished_ = true;
    });
    // The socket already listens; wait until the accept loop runs so that
    // stop() in the destructor cannot come before it.
    while (!server_.is_running() && !finished_) std::this_thread::yield();
  }
  ~LocalHttpServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Stands in for "https://storage.googleapis.com/.../keras-applications".
  std::string base_url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/ka";
  }
  int requests() const { return requests_; }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::atomic<int> requests_{0};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

// ---- Official names -------------------------------------------------------

TEST(OfficialKerasWeightsTest, VggAndResNetHaveOneFileWithKerasMd5) {
  auto vgg16 = OfficialKerasWeights(Spec("vgg16"), 224);
  ASSERT_TRUE(vgg16.ok()) << vgg16.status();
  EXPECT_EQ(vgg16->file_name,
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
  EXPECT_EQ(vgg16->url, std::string(kKerasBase) +
                            "/vgg16/vgg16_weights_tf_dim_ordering_tf_"
                            "kernels_notop.h5");
  EXPECT_EQ(vgg16->md5, "6d6bbae143d832006294945121d1f1fc");
  EXPECT_THAT(vgg16->sha256, IsEmpty());
  // The input size does not matter for these.
  EXPECT_EQ(OfficialKerasWeights(Spec("vgg16"), 150)->file_name,
            vgg16->file_name);

  auto vgg19 = OfficialKerasWeights(Spec("vgg19"), 224);
  ASSERT_TRUE(vgg19.ok()) << vgg19.status();
  EXPECT_EQ(vgg19->url, std::string(kKerasBase) +
                            "/vgg19/vgg19_weights_tf_dim_ordering_tf_"
                            "kernels_notop.h5");
  EXPECT_EQ(vgg19->md5, "253f8cb515780f3b799900260a226db6");

  auto resnet = OfficialKerasWeights(Spec("resnet50"), 224);
  ASSERT_TRUE(resnet.ok()) << resnet.status();
  EXPECT_EQ(resnet->url, std::string(kKerasBase) +
                             "/resnet/resnet50_weights_tf_dim_ordering_tf_"
                             "kernels_notop.h5");
  EXPECT_EQ(resnet->md5, "4d473c1dd8becc155b73f8504c6f6626");
}

TEST(OfficialKerasWeightsTest, MobileNetByAlphaAndRows) {
  auto quarter = OfficialKerasWeights(Spec("mobilenet", 0.25), 224);
  ASSERT_TRUE(quarter.ok()) << quarter.status();
  EXPECT_EQ(quarter->file_name, "mobilenet_2_5_224_tf_no_top.h5");
  EXPECT_EQ(quarter->url, std::string(kKerasBase) +
                              "/mobilenet/mobilenet_2_5_224_tf_no_top.h5");
  EXPECT_EQ(quarter->sha256,
            "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf");

  auto half = OfficialKerasWeights(Spec("mobilenet", 0.5), 160);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(half->file_name, "mobilenet_5_0_160_tf_no_top.h5");
  EXPECT_EQ(half->url, std::string(kKerasBase) +
                           "/mobilenet/mobilenet_5_0_160_tf_no_top.h5");
  // Keras publishes no digest for the MobileNet files.
  EXPECT_THAT(half->sha256, IsEmpty());
  EXPECT_THAT(half->md5, IsEmpty());

  EXPECT_EQ(OfficialKerasWeights(Spec("mobilenet", 0.75), 128)->file_name,
            "mobilenet_7_5_128_tf_no_top.h5");
  EXPECT_EQ(OfficialKerasWeights(Spec("mobilenet", 1.0), 192)->file_name,
            "mobilenet_1_0_192_tf_no_top.h5");
  // Sizes Keras has no file for get the 224 one, as in Keras.
  EXPECT_EQ(OfficialKerasWeights(Spec("mobilenet", 1.0), 200)->file_name,
            "mobilenet_1_0_224_tf_no_top.h5");
  EXPECT_EQ(OfficialKerasWeights(Spec("mobilenet", 1.0), 96)->file_name,
            "mobilenet_1_0_224_tf_no_top.h5");
}

TEST(OfficialKerasWeightsTest, MobileNetV2ByAlphaAndRows) {
  auto v2 = OfficialKerasWeights(Spec("mobilenet_v2", 1.0), 160);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(
      v2->file_name,
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5");
  EXPECT_EQ(v2->url,
            std::string(kKerasBase) +
                "/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_"
                "kernels_1.0_160_no_top.h5");
  EXPECT_EQ(
      OfficialKerasWeights(Spec("mobilenet_v2", 1.0), 224)->file_name,
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5");
  EXPECT_EQ(
      OfficialKerasWeights(Spec("mobilenet_v2", 0.35), 96)->file_name,
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5");
  EXPECT_EQ(
      OfficialKerasWeights(Spec("mobilenet_v2", 0.5), 300)->file_name,
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5");
  EXPECT_EQ(
      OfficialKerasWeights(Spec("mobilenet_v2", 1.4), 192)->file_name,
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_192_no_top.h5");
}

TEST(OfficialKerasWeightsTest, UnknownChoicesAreInvalidArguments) {
  auto alpha = OfficialKerasWeights(Spec("mobilenet", 0.35), 224);
  EXPECT_EQ(alpha.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(alpha.status().message(), HasSubstr("0.25, 0.5, 0.75, 1"));

  auto v2_alpha = OfficialKerasWeights(Spec("mobilenet_v2", 0.25), 224);
  EXPECT_EQ(v2_alpha.status().code(), absl::StatusCode::kInvalidArgument);

  auto name = OfficialKerasWeights(Spec("inception_v3"), 299);
  EXPECT_EQ(name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(name.status().message(), HasSubstr("inception_v3"));

  BackboneSpec torchvision = Spec("vgg16");
  torchvision.flavor = Flavor::kTorchvision;
  EXPECT_EQ(OfficialKerasWeights(torchvision, 224).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- The real file ------------------------------------------------------

TEST(WeightsCacheTest, RealMobileNetFileMatchesSha256Sums) {
  const char* dir = std::getenv("TRANSFERD_TEST_WEIGHTS");
  if (dir == nullptr || *dir == '\0') {
    GTEST_SKIP() << "TRANSFERD_TEST_WEIGHTS is not set";
  }
  const fs::path file = fs::path(dir) / "mobilenet_2_5_224_tf_no_top.h5";
  ASSERT_TRUE(fs::is_regular_file(file))
      << "TRANSFERD_TEST_WEIGHTS=" << dir << " has no " << file.filename();
  const fs::path sums = fs::path(dir) / "SHA256SUMS";
  std::ifstream in(sums);
  ASSERT_TRUE(in) << "cannot read " << sums;
  std::string expected, line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string digest, name;
    fields >> digest >> name;
    if (!name.empty() && name[0] == '*') name.erase(0, 1);  // binary mode
    if (name == file.filename().string()) expected = digest;
  }
  ASSERT_EQ(expected.size(), 64u) << sums << " lists no sha256 of " << file;

  auto found = common::Sha256File(file);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, expected);
  auto official = OfficialKerasWeights(Spec("mobilenet", 0.25), 224);
  ASSERT_TRUE(official.ok()) << official.status();
  EXPECT_EQ(official->sha256, expected);

  // The real file in a cache passes the check with the compiled-in digest.
  testing::TempDir tmp;
  fs::copy_file(file, fs::path(tmp.path()) / file.filename());
  WeightsCacheOptions options;
  options.dir = tmp.path();
  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, fs::path(tmp.path()) / file.filename());
}

// ---- Files in the cache ---------------------------------------------------

TEST(WeightsCacheTest, PresentFileIsCheckedOnceAndReturned) {
  testing::TempDir tmp;
  const fs::path dir = tmp.path();
  WriteFile(dir / "mobilenet_2_5_224_tf_no_top.h5", kFakeMobileNet);
  WeightsCacheOptions options;
  options.dir = dir;
  options.digest_overrides["mobilenet_2_5_224_tf_no_top.h5"] =
      kFakeMobileNetSha256;

  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, dir / "mobilenet_2_5_224_tf_no_top.h5");
  EXPECT_TRUE(fs::exists(
      dir / ".verified" /
      (std::string("mobilenet_2_5_224_tf_no_top.h5.") + kFakeMobileNetSha256)));
  // Again: the marker vouches for it.
  EXPECT_TRUE(
      ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options).ok());

  // A changed file is checked again, and caught.
  WriteFile(dir / "mobilenet_2_5_224_tf_no_top.h5", "something else entirely");
  auto changed = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_FALSE(changed.ok());
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kDataLoss);
}

TEST(WeightsCacheTest, PresentFileWithWrongDigestIsDataLoss) {
  testing::TempDir tmp;
  const fs::path dir = tmp.path();
  const fs::path file =
      dir / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5";
  WriteFile(file, "not the real vgg16");
  WeightsCacheOptions options;
  options.dir = dir;

  auto path = ResolveImagenetWeights(Spec("vgg16"), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(path.status().message(), HasSubstr(file.string()));
  EXPECT_THAT(path.status().message(),
              HasSubstr("6d6bbae143d832006294945121d1f1fc"));  // expected
  EXPECT_THAT(path.status().message(),
              HasSubstr(*common::Md5File(file)));  // found
  EXPECT_FALSE(fs::exists(dir / ".verified"));
}

TEST(WeightsCacheTest, PresentFileWithoutKnownDigestIsUsedUnchecked) {
  testing::TempDir tmp;
  const fs::path file = fs::path(tmp.path()) / "mobilenet_5_0_160_tf_no_top.h5";
  WriteFile(file, "user-provided");
  WeightsCacheOptions options;
  options.dir = tmp.path();
  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.5), 160, options);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, file);
}

TEST(WeightsCacheTest, MissingFileWithDownloadsOffSaysWhatToFetch) {
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = fs::path(tmp.path()) / "weights";
  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(path.status().message());
  EXPECT_THAT(message, HasSubstr("mobilenet alpha 0.25 at 224 px"));
  EXPECT_THAT(message, HasSubstr("mobilenet_2_5_224_tf_no_top.h5"));
  EXPECT_THAT(message, HasSubstr(std::string(kKerasBase) +
                                 "/mobilenet/mobilenet_2_5_224_tf_no_top.h5"));
  EXPECT_THAT(message, HasSubstr(tmp.path() + "/weights/"));
  EXPECT_THAT(message, HasSubstr("--allow-weight-downloads"));
}

TEST(WeightsCacheTest, BadDigestOverrideIsInvalidArgument) {
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options
      .digest_overrides["vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"] =
      "xyz";
  EXPECT_EQ(ResolveImagenetWeights(Spec("vgg16"), 224, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WeightsCacheTest, CachedWeightFilesListsWeightFilesOnly) {
  testing::TempDir tmp;
  const fs::path dir = tmp.path();
  WriteFile(dir / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "x");
  WriteFile(dir / "resnet50.safetensors", "x");
  WriteFile(dir / "README.txt", "x");
  WriteFile(dir / ".download-abc123", "x");
  fs::create_directories(dir / ".verified");
  fs::create_directories(dir / "folder.h5");
  EXPECT_THAT(CachedWeightFiles(dir),
              ElementsAre("resnet50.safetensors",
                          "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"));
  EXPECT_THAT(CachedWeightFiles(dir / "missing"), IsEmpty());
}

// ---- Downloads from a real local HTTP server ----------------------------

TEST(WeightsDownloadTest, GoodFileIsFetchedCheckedAndKept) {
  LocalHttpServer http([](httplib::Server& server) {
    server.Get("/ka/mobilenet/mobilenet_2_5_224_tf_no_top.h5",
               [](const httplib::Request&, httplib::Response& response) {
                 response.set_content(kFakeMobileNet,
                                      "application/octet-stream");
               });
  });
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = fs::path(tmp.path()) / "weights";  // created on demand
  options.allow_download = true;
  options.base_url_override = http.base_url();
  options.timeout_seconds = 30;
  options.digest_overrides["mobilenet_2_5_224_tf_no_top.h5"] =
      kFakeMobileNetSha256;

  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, options.dir / "mobilenet_2_5_224_tf_no_top.h5");
  EXPECT_EQ(ReadFile(*path), kFakeMobileNet);
  EXPECT_THAT(Entries(options.dir),
              ElementsAre(".verified",
                          ".verified/mobilenet_2_5_224_tf_no_top.h5." +
                              std::string(kFakeMobileNetSha256),
                          "mobilenet_2_5_224_tf_no_top.h5"));
  EXPECT_EQ(http.requests(), 1);

  // Cached now: no second download.
  ASSERT_TRUE(
      ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options).ok());
  EXPECT_EQ(http.requests(), 1);
}

TEST(WeightsDownloadTest, RedirectsAreFollowedAndMd5Checked) {
  LocalHttpServer http([](httplib::Server& server) {
    server.Get("/ka/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
               [](const httplib::Request&, httplib::Response& response) {
                 response.set_redirect("/elsewhere/vgg16.h5");
               });
    server.Get("/elsewhere/vgg16.h5",
               [](const httplib::Request&, httplib::Response& response) {
                 response.set_content(kFakeVgg16, "application/octet-stream");
               });
  });
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options.allow_download = true;
  options.base_url_override = http.base_url();
  options.timeout_seconds = 30;
  options
      .digest_overrides["vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"] =
      kFakeVgg16Md5;

  auto path = ResolveImagenetWeights(Spec("vgg16"), 224, options);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(ReadFile(*path), kFakeVgg16);
}

TEST(WeightsDownloadTest, CorruptDownloadIsDataLossAndLeavesNothing) {
  LocalHttpServer http([](httplib::Server& server) {
    server.Get("/ka/mobilenet/mobilenet_2_5_224_tf_no_top.h5",
               [](const httplib::Request&, httplib::Response& response) {
                 response.set_content("truncated", "application/octet-stream");
               });
  });
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options.allow_download = true;
  options.base_url_override = http.base_url();
  options.timeout_seconds = 30;
  options.digest_overrides["mobilenet_2_5_224_tf_no_top.h5"] =
      kFakeMobileNetSha256;

  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(path.status().message(),
              HasSubstr("mobilenet_2_5_224_tf_no_top.h5"));
  EXPECT_THAT(path.status().message(), HasSubstr(kFakeMobileNetSha256));
  common::Sha256 truncated;
  truncated.Update("truncated");
  EXPECT_THAT(path.status().message(), HasSubstr(truncated.HexDigest()));
  EXPECT_THAT(Entries(tmp.path()), IsEmpty());
}

TEST(WeightsDownloadTest, NotFoundIsAClearErrorAndLeavesNothing) {
  LocalHttpServer http([](httplib::Server&) {});  // every path is a 404
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options.allow_download = true;
  options.base_url_override = http.base_url() + "/";  // trailing '/' is fine
  options.timeout_seconds = 30;

  auto path = ResolveImagenetWeights(Spec("resnet50"), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  const std::string message(path.status().message());
  EXPECT_THAT(message, HasSubstr("HTTP 404"));
  EXPECT_THAT(message, HasSubstr(http.base_url() +
                                 "/resnet/resnet50_weights_tf_dim_ordering_tf_"
                                 "kernels_notop.h5"));
  EXPECT_THAT(message, HasSubstr(tmp.path() + "/"));
  EXPECT_THAT(Entries(tmp.path()), IsEmpty());
  EXPECT_EQ(http.requests(), 1);
}

TEST(WeightsDownloadTest, NoKnownChecksumMeansNoDownload) {
  LocalHttpServer http([](httplib::Server& server) {
    server.Get("/ka/mobilenet/mobilenet_1_0_224_tf_no_top.h5",
               [](const httplib::Request&, httplib::Response& response) {
                 response.set_content("weights", "application/octet-stream");
               });
  });
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options.allow_download = true;
  options.base_url_override = http.base_url();

  auto path = ResolveImagenetWeights(Spec("mobilenet", 1.0), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(path.status().message(), HasSubstr("no checksum"));
  EXPECT_THAT(
      path.status().message(),
      HasSubstr(http.base_url() + "/mobilenet/mobilenet_1_0_224_tf_no_top.h5"));
  EXPECT_EQ(http.requests(), 0);
  EXPECT_THAT(Entries(tmp.path()), IsEmpty());
}

TEST(WeightsDownloadTest, UnreachableServerIsUnavailable) {
  // A loopback port that is bound but not listening refuses connections.
  const int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(sock, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  const int port = ntohs(address.sin_port);
  setenv("no_proxy", "127.0.0.1", 1);
  setenv("NO_PROXY", "127.0.0.1", 1);
  testing::TempDir tmp;
  WeightsCacheOptions options;
  options.dir = tmp.path();
  options.allow_download = true;
  options.base_url_override =
      "http://127.0.0.1:" + std::to_string(port) + "/ka";
  options.timeout_seconds = 5;
  options.digest_overrides["mobilenet_2_5_224_tf_no_top.h5"] =
      kFakeMobileNetSha256;

  auto path = ResolveImagenetWeights(Spec("mobilenet", 0.25), 224, options);
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kUnavailable)
      << path.status();
  EXPECT_THAT(path.status().message(), HasSubstr("127.0.0.1"));
  EXPECT_THAT(Entries(tmp.path()), IsEmpty());
  close(sock);
}

}  // namespace
}  // namespace transferd::core::backbones
