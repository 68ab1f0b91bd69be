#include "server/core/backbones/weights_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <system_error>

#include <curl/curl.h>
#include <sys/stat.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/hash.h"
#include "server/core/backbones/backbone.h"
#include "server/core/util/status_macros.h"

namespace transferd::core::backbones {
namespace {

namespace fs = std::filesystem;

// keras.applications' download location; each backbone has a folder below.
constexpr char kKerasBaseUrl[] =
    "https://storage.googleapis.com/tensorflow/keras-applications";

// Backbones with one notop file for every input size. File names, folders and
// md5 digests as in keras/applications/vgg16.py, vgg19.py and resnet.py
// (keras-team/keras; WEIGHTS_PATH_NO_TOP, WEIGHTS_HASHES, get_file's
// file_hash, which Keras treats as md5 when it has 32 hex digits).
struct FixedWeights {
  const char* backbone;
  const char* folder;
  const char* file_name;
  const char* md5;
};
constexpr FixedWeights kFixedWeights[] = {
    {"vgg16", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "6d6bbae143d832006294945121d1f1fc"},
    {"vgg19", "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "253f8cb515780f3b799900260a226db6"},
    {"resnet50", "resnet",
     "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "4d473c1dd8becc155b73f8504c6f6626"},
};

// sha256 digests of official files, known from checked copies (Keras
// publishes no digest for the MobileNet files).
struct KnownSha256 {
  const char* file_name;
  const char* sha256;
};
constexpr KnownSha256 kKnownSha256[] = {
    {"mobilenet_2_5_224_tf_no_top.h5",
     "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"},
};

// An alpha of a width-multiplied backbone and how Keras spells it in file
// names: mobilenet.py maps alpha to '1_0', '7_5', '5_0', '2_5';
// mobilenet_v2.py uses Python's str(float(alpha)).
struct AlphaName {
  double alpha;
  const char* text;
};
constexpr AlphaName kMobileNetAlphas[] = {
    {0.25, "2_5"}, {0.5, "5_0"}, {0.75, "7_5"}, {1.0, "1_0"}};
constexpr AlphaName kMobileNetV2Alphas[] = {{0.35, "0.35"}, {0.5, "0.5"},
                                            {0.75, "0.75"}, {1.0, "1.0"},
                                            {1.3, "1.3"},   {1.4, "1.4"}};
constexpr int kMobileNetRows[] = {128, 160, 192, 224};
constexpr int kMobileNetV2Rows[] = {96, 128, 160, 192, 224};

// "1.0", "0.25": alphas as a user writes them.
std::string AlphaString(double alpha) {
  return absl::StrCat(alpha, alpha == std::floor(alpha) ? ".0" : "");
}

template <size_t N>
const char* FindAlpha(const AlphaName (&alphas)[N], double alpha) {
  for (const AlphaName& a : alphas) {
    if (std::abs(a.alpha - alpha) < 1e-9) return a.text;
  }
  return nullptr;
}

template <size_t N>
std::string AlphaChoices(const AlphaName (&alphas)[N]) {
  std::vector<std::string> choices;
  for (const AlphaName& a : alphas) choices.push_back(AlphaString(a.alpha));
  return absl::StrJoin(choices, ", ");
}

// Keras loads the weights for the input size when it has them, else 224's.
template <size_t N>
int KerasRows(const int (&rows)[N], int input_size) {
  return std::find(std::begin(rows), std::end(rows), input_size) !=
                 std::end(rows)
             ? input_size
             : 224;
}

// "vgg16", "mobilenet alpha 0.25 at 224 px": what the weights are for.
std::string Describe(const BackboneSpec& spec, int input_size) {
  if (spec.name == "mobilenet") {
    return absl::StrCat("mobilenet alpha ", AlphaString(spec.alpha), " at ",
                        KerasRows(kMobileNetRows, input_size), " px");
  }
  if (spec.name == "mobilenet_v2") {
    return absl::StrCat("mobilenet_v2 alpha ", AlphaString(spec.alpha), " at ",
                        KerasRows(kMobileNetV2Rows, input_size), " px");
  }
  return spec.name;
}

// "/data/weights/": a folder, as messages show it.
std::string FolderString(const fs::path& dir) { return (dir / "").string(); }

bool IsHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return absl::ascii_isxdigit(c); });
}

// The digest a file must have; algorithm empty when none is known.
struct ExpectedDigest {
  std::string algorithm;  // "sha256" or "md5"
  std::string hex;
};

absl::StatusOr<ExpectedDigest> ExpectedDigestFor(
    const OfficialWeights& weights, const WeightsCacheOptions& options) {
  auto it = options.digest_overrides.find(weights.file_name);
  if (it != options.digest_overrides.end()) {
    const std::string hex = absl::AsciiStrToLower(it->second);
    if (IsHex(hex) && hex.size() == 64) return ExpectedDigest{"sha256", hex};
    if (IsHex(hex) && hex.size() == 32) return ExpectedDigest{"md5", hex};
    return absl::InvalidArgumentError(absl::StrCat(
        "the digest override for ", weights.file_name, " (\"", it->second,
        "\") is neither a sha256 (64 hex digits) nor an md5 (32 hex digits)"));
  }
  if (!weights.sha256.empty()) return ExpectedDigest{"sha256", weights.sha256};
  if (!weights.md5.empty()) return ExpectedDigest{"md5", weights.md5};
  return ExpectedDigest{};
}

absl::StatusOr<std::string> FileDigest(const std::string& algorithm,
                                       const fs::path& path) {
  return algorithm == "sha256" ? common::Sha256File(path)
                               : common::Md5File(path);
}

// "<size> <mtime in ns>": what a verification marker records of the file.
absl::StatusOr<std::string> FileStamp(const fs::path& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", path.string(), ": ",
                                            std::strerror(errno)));
  }
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return absl::StrCat(st.st_size, " ", mtime_ns, "\n");
}

fs::path MarkerPath(const fs::path& dir, const std::string& file_name,
                    const std::string& hex) {
  return dir / ".verified" / absl::StrCat(file_name, ".", hex);
}

bool MarkerMatches(const fs::path& marker, const std::string& stamp) {
  std::ifstream in(marker);
  if (!in) return false;
  std::ostringstream content;
  content << in.rdbuf();
  return content.str() == stamp;
}

// Best effort: without the marker the file is only checked again next time.
void WriteMarker(const fs::path& marker, const std::string& stamp) {
  std::error_code ec;
  fs::create_directories(marker.parent_path(), ec);
  if (ec) return;
  std::ofstream out(marker, std::ios::trunc);
  out << stamp;
}

// Checks a cached file against its digest once; later calls trust the
// marker while the file's size and mtime are unchanged.
absl::Status VerifyCachedFile(const fs::path& path, const fs::path& dir,
                              const OfficialWeights& weights,
                              const ExpectedDigest& expected) {
  if (expected.algorithm.empty()) return absl::OkStatus();
  TRANSFERD_ASSIGN_OR_RETURN(const std::string stamp, FileStamp(path));
  const fs::path marker = MarkerPath(dir, weights.file_name, expected.hex);
  if (MarkerMatches(marker, stamp)) return absl::OkStatus();
  TRANSFERD_ASSIGN_OR_RETURN(const std::string found,
                             FileDigest(expected.algorithm, path));
  if (found != expected.hex) {
    return absl::DataLossError(
        absl::StrCat("the ImageNet weights file ", path.string(),
                     " is not the official one: its ", expected.algorithm,
                     " is ", found, " but ", expected.hex,
                     " is expected; delete it and fetch it again "
                     "from ",
                     weights.url));
  }
  WriteMarker(marker, stamp);
  return absl::OkStatus();
}

// A temporary file that is closed and removed unless Commit()ted.
class TempFile {
 public:
  TempFile(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~TempFile() {
    if (fd_ >= 0) close(fd_);
    if (!committed_) unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }
  const fs::path& path() const { return path_; }

  // fsync()s, closes and renames the file to `target`.
  absl::Status Commit(const fs::path& target) {
    if (fsync(fd_) != 0) {
      return absl::InternalError(absl::StrCat("cannot sync ", path_.string(),
                                              ": ", std::strerror(errno)));
    }
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) {
      return absl::InternalError(absl::StrCat("cannot close ", path_.string(),
                                              ": ", std::strerror(errno)));
    }
    if (rename(path_.c_str(), target.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot rename ", path_.string(),
                                              " to ", target.string(), ": ",
                                              std::strerror(errno)));
    }
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  fs::path path_;
  int fd_;
  bool committed_ = false;
};

// Where libcurl's write callback puts the body: the file and the digest.
struct DownloadSink {
  int fd = -1;
  bool use_sha256 = true;
  common::Sha256 sha256;
  common::Md5 md5;
  int write_errno = 0;
};

size_t WriteToSink(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<DownloadSink*>(user);
  const size_t total = size * count;
  size_t done = 0;
  while (done < total) {
    const ssize_t n = write(sink->fd, data + done, total - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      sink->write_errno = errno;
      return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
    }
    done += static_cast<size_t>(n);
  }
  if (sink->use_sha256) {
    sink->sha256.Update(data, total);
  } else {
    sink->md5.Update(data, total);
  }
  return total;
}

absl::Status InitCurlOnce() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (result != CURLE_OK) {
    return absl::InternalError(absl::StrCat("cannot initialise libcurl: ",
                                            curl_easy_strerror(result)));
  }
  return absl::OkStatus();
}

// The transfer's settings: `weights.url` over HTTP(S) only, redirects
// followed, time limits, the body written to `sink`.
void SetDownloadOptions(CURL* handle, const OfficialWeights& weights,
                        const WeightsCacheOptions& options, char* error_buffer,
                        DownloadSink* sink) {
  curl_easy_setopt(handle, CURLOPT_URL, weights.url.c_str());
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85.0
  curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(handle, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
  curl_easy_setopt(handle, CURLOPT_REDIR_PROTOCOLS,
                   CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
  curl_easy_setopt(handle, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(handle, CURLOPT_TIMEOUT,
                   static_cast<long>(std::max(1, options.timeout_seconds)));
  curl_easy_setopt(
      handle, CURLOPT_CONNECTTIMEOUT,
      static_cast<long>(std::clamp(options.timeout_seconds, 1, 30)));
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "transferd");
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &WriteToSink);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, sink);
}

// The error for a failed transfer (`result`), most specific first: a local
// write error, an HTTP error status, then libcurl's own message.
absl::Status DownloadFailure(CURLcode result, CURL* handle,
                             const OfficialWeights& weights,
                             const DownloadSink& sink, const TempFile& temp,
                             const char* error_buffer,
                             const std::string& by_hand) {
  const std::string what = absl::StrCat("downloading ", weights.file_name,
                                        " from ", weights.url, " failed: ");
  if (sink.write_errno != 0) {
    return absl::InternalError(absl::StrCat(what, "cannot write ",
                                            temp.path().string(), ": ",
                                            std::strerror(sink.write_errno)));
  }
  if (result == CURLE_HTTP_RETURNED_ERROR) {
    long code = 0;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
    if (code == 404 || code == 410) {
      return absl::NotFoundError(absl::StrCat(
          what, "the server answered HTTP ", code, " (no such file)", by_hand));
    }
    return absl::UnavailableError(
        absl::StrCat(what, "the server answered HTTP ", code, by_hand));
  }
  const std::string detail =
      error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(result);
  return absl::UnavailableError(absl::StrCat(what, detail, by_hand));
}

// Downloads `weights` into `target` through a temporary file in the same
// folder, checking `expected` before anything is renamed into place.
absl::Status Download(const OfficialWeights& weights,
                      const ExpectedDigest& expected, const fs::path& target,
                      const WeightsCacheOptions& options) {
  TRANSFERD_RETURN_IF_ERROR(InitCurlOnce());
  const std::string by_hand = absl::StrCat("; fetch it by hand and put it in ",
                                           FolderString(options.dir));

  std::string temp_name = (options.dir / ".download-XXXXXX").string();
  const int fd = mkostemp(temp_name.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary file in ",
                     FolderString(options.dir), ": ", std::strerror(errno)));
  }
  TempFile temp(temp_name, fd);
  fchmod(fd, 0644);  // mkstemp's 0600 would hide the weights from others

  DownloadSink sink;
  sink.fd = fd;
  sink.use_sha256 = expected.algorithm == "sha256";

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(),
                                                           curl_easy_cleanup);
  if (curl == nullptr) {
    return absl::InternalError("cannot create a libcurl handle");
  }
  char error_buffer[CURL_ERROR_SIZE] = {};
  CURL* handle = curl.get();
  SetDownloadOptions(handle, weights, options, error_buffer, &sink);

  const CURLcode result = curl_easy_perform(handle);
  if (result != CURLE_OK) {
    return DownloadFailure(result, handle, weights, sink, temp, error_buffer,
                           by_hand);
  }

  const std::string found =
      sink.use_sha256 ? sink.sha256.HexDigest() : sink.md5.HexDigest();
  if (found != expected.hex) {
    return absl::DataLossError(absl::StrCat(
        "the download of ", weights.file_name, " from ", weights.url,
        " is not the official file: its ", expected.algorithm, " is ", found,
        " but ", expected.hex, " is expected; nothing was kept"));
  }
  TRANSFERD_RETURN_IF_ERROR(temp.Commit(target));
  // Make the rename durable too (best effort).
  const int dir_fd =
      open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  // Checked while it arrived: no need to read it again.
  absl::StatusOr<std::string> stamp = FileStamp(target);
  if (stamp.ok()) {
    WriteMarker(MarkerPath(options.dir, weights.file_name, expected.hex),
                *stamp);
  }
  return absl::OkStatus();
}

// One download at a time in this process, so that concurrent requests for
// missing weights fetch each file once.
std::mutex& DownloadMutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}

}  // namespace

absl::StatusOr<OfficialWeights> OfficialKerasWeights(const BackboneSpec& spec,
                                                     int input_size) {
  if (spec.flavor != Flavor::kKeras) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the official Keras ImageNet weights of ", spec.name,
        " need the Keras flavour of the backbone, not the torchvision one"));
  }
  OfficialWeights weights;
  std::string folder;
  for (const FixedWeights& fixed : kFixedWeights) {
    if (spec.name != fixed.backbone) continue;
    folder = fixed.folder;
    weights.file_name = fixed.file_name;
    weights.md5 = fixed.md5;
  }
  if (spec.name == "mobilenet") {
    const char* alpha = FindAlpha(kMobileNetAlphas, spec.alpha);
    if (alpha == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mobilenet has no ImageNet weights for alpha ", spec.alpha,
          "; Keras has them for alpha ", AlphaChoices(kMobileNetAlphas)));
    }
    folder = "mobilenet";
    weights.file_name =
        absl::StrCat("mobilenet_", alpha, "_",
                     KerasRows(kMobileNetRows, input_size), "_tf_no_top.h5");
  } else if (spec.name == "mobilenet_v2") {
    const char* alpha = FindAlpha(kMobileNetV2Alphas, spec.alpha);
    if (alpha == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mobilenet_v2 has no ImageNet weights for alpha ", spec.alpha,
          "; Keras has them for alpha ", AlphaChoices(kMobileNetV2Alphas)));
    }
    folder = "mobilenet_v2";
    weights.file_name = absl::StrCat(
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_", alpha, "_",
        KerasRows(kMobileNetV2Rows, input_size), "_no_top.h5");
  }
  if (weights.file_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no official ImageNet weights are known for backbone \"", spec.name,
        "\"; known: vgg16, vgg19, resnet50, mobilenet, mobilenet_v2"));
  }
  weights.url =
      absl::StrCat(kKerasBaseUrl, "/", folder, "/", weights.file_name);
  for (const KnownSha256& known : kKnownSha256) {
    if (weights.file_name == known.file_name) weights.sha256 = known.sha256;
  }
  return weights;
}

namespace {

// Where the official weights for `spec` live in the cache, and what to tell
// a user who lacks them.
struct WeightsPlan {
  OfficialWeights weights;
  ExpectedDigest expected;
  fs::path target;
  std::string needs;  // "ImageNet weights for ... need FILE in FOLDER"
};

absl::StatusOr<WeightsPlan> PlanImagenetWeights(
    const BackboneSpec& spec, int input_size,
    const WeightsCacheOptions& options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError(
        "no weights folder is configured for ImageNet weights");
  }
  WeightsPlan plan;
  TRANSFERD_ASSIGN_OR_RETURN(plan.weights,
                             OfficialKerasWeights(spec, input_size));
  if (!options.base_url_override.empty()) {
    std::string base = options.base_url_override;
    while (absl::EndsWith(base, "/")) base.pop_back();
    plan.weights.url =
        absl::StrCat(base, plan.weights.url.substr(std::strlen(kKerasBaseUrl)));
  }
  TRANSFERD_ASSIGN_OR_RETURN(plan.expected,
                             ExpectedDigestFor(plan.weights, options));
  plan.target = options.dir / plan.weights.file_name;
  plan.needs = absl::StrCat("ImageNet weights for ", Describe(spec, input_size),
                            " need ", plan.weights.file_name, " in ",
                            FolderString(options.dir));
  return plan;
}

// Whether the planned file is there: false when missing; an error when
// something else stands in its place or it cannot be looked at.
absl::StatusOr<bool> WeightsPresent(const WeightsPlan& plan) {
  std::error_code ec;
  const fs::file_status status = fs::status(plan.target, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InternalError(absl::StrCat(
        "cannot access ", plan.target.string(), ": ", ec.message()));
  }
  if (!fs::exists(status)) return false;
  if (!fs::is_regular_file(status)) {
    return absl::FailedPreconditionError(absl::StrCat(
        plan.needs, ", but ", plan.target.string(), " is not a regular file"));
  }
  return true;
}

// Why a missing file will not be downloaded; OK when it may be.
absl::Status CheckDownloadable(const WeightsPlan& plan,
                               const WeightsCacheOptions& options) {
  if (!options.allow_download) {
    return absl::FailedPreconditionError(absl::StrCat(
        plan.needs,
        "; downloads are off (--allow-weight-downloads): fetch it from ",
        plan.weights.url,
        " and put it there, or start the server with downloads "
        "allowed"));
  }
  if (plan.expected.algorithm.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        plan.needs,
        "; no checksum of it is known, so transferd does not download "
        "it: fetch it from ",
        plan.weights.url, " and put it there"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckImagenetWeights(const BackboneSpec& spec, int input_size,
                                  const WeightsCacheOptions& options) {
  TRANSFERD_ASSIGN_OR_RETURN(const WeightsPlan plan,
                             PlanImagenetWeights(spec, input_size, options));
  TRANSFERD_ASSIGN_OR_RETURN(const bool present, WeightsPresent(plan));
  return present ? absl::OkStatus() : CheckDownloadable(plan, options);
}

absl::StatusOr<fs::path> ResolveImagenetWeights(
    const BackboneSpec& spec, int input_size,
    const WeightsCacheOptions& options) {
  TRANSFERD_ASSIGN_OR_RETURN(const WeightsPlan plan,
                             PlanImagenetWeights(spec, input_size, options));
  const OfficialWeights& weights = plan.weights;
  const ExpectedDigest& expected = plan.expected;
  const fs::path& target = plan.target;
  const auto present = [&] { return WeightsPresent(plan); };

  // Present: check it (once) and use it.
  TRANSFERD_ASSIGN_OR_RETURN(bool is_present, present());
  if (is_present) {
    TRANSFERD_RETURN_IF_ERROR(
        VerifyCachedFile(target, options.dir, weights, expected));
    return target;
  }
  TRANSFERD_RETURN_IF_ERROR(CheckDownloadable(plan, options));

  std::lock_guard<std::mutex> lock(DownloadMutex());
  // Another request may have fetched it while this one waited.
  TRANSFERD_ASSIGN_OR_RETURN(is_present, present());
  if (!is_present) {
    std::error_code ec;
    fs::create_directories(options.dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create the weights folder ",
                       FolderString(options.dir), ": ", ec.message()));
    }
    TRANSFERD_RETURN_IF_ERROR(Download(weights, expected, target, options));
  }
  TRANSFERD_RETURN_IF_ERROR(
      VerifyCachedFile(target, options.dir, weights, expected));
  return target;
}

std::vector<std::string> CachedWeightFiles(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec) || type_ec) continue;
    const fs::path& path = it->path();
    const std::string name = path.filename().string();
    if (absl::StartsWith(name, ".")) continue;
    if (path.extension() == ".h5" || path.extension() == ".safetensors") {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace transferd::core::backbones
