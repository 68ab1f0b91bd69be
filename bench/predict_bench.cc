// Served Predict against the offline forward pass of the same model, in one
// run on one machine (bench/run_predict_bench.sh).
//
// For each model (MobileNet alpha 0.25 at 224 px with the tf-tutorial head,
// VGG16 at 150 px with the keras-book head; random weights) it registers a
// classifier in a fresh data directory, starts the real `transferd` on it,
// and measures
//   - offline: core::ModelRunner (what the predictor computes per batch) on
//     batches of 32 and of 1, in this process, while the server is idle;
//   - decode: core::DecodeResized of the request's JPEG, which the server
//     does per image before batching (part of served latency, not of the
//     offline rows);
//   - served: a closed-loop load generator, N client threads each sending
//     one-image Predict calls back to back, for N = 1, 8, 32: requests/s
//     (= images/s) and latency percentiles over a measured window after a
//     warm-up,
// and checks the two targets: served throughput at concurrency 32 >= 0.9x
// offline batch-32 throughput; served p50 at concurrency 1 <= 1.5x one
// forward (the median batch-1 Run()).
//
//   predict_bench [--window-seconds S] [--warmup-seconds S]
//                 [--offline-seconds S] [--models mobilenet,vgg16]
//                 [--concurrency 1,8,32] [--channels K] [--threads N]
//                 [--precision auto|fp32|bf16] [--image-size PX]
//                 [--offline-batches 8,16]
//                 [--server-args "ARGS"] [--server-env "K=V ..."]
//                 [--transferd PATH] [--keep]
//                 [--no-training] [--training-concurrency 1,8]
//                 [--training-rates 20]
//                 [--metrics-cost ROUNDS] [--protocols v1,oip-grpc,oip-rest]
//                 [--protocol-rounds R]
//
// Unless --no-training, Predict is then measured again while a training job
// runs on the same server (MobileNet alpha 0.25 at 128 px, every layer
// trainable, batch 16, on generated images): the closed-loop rows at
// --training-concurrency and open-loop rows at --training-rates (one caller
// on a fixed schedule of R requests/s, latency counted from the scheduled
// send time; measured with no job first), each with the job's images/s over
// the same window. Targets: the job keeps >= 85% of its images/s alone (the
// mean of the windows just before and after the row: the VM drifts), and
// the open-loop rows' p50 <= 2x and p99 <= 3x those with no job. A closed
// loop asks for the whole device, so there the server's --interactive-share
// decides the latency and only the job's side is a target. Training gives
// way to Predict between backbone blocks (DeviceArbiter::YieldPoint) while
// Predict stays within its share.
//
// --protocols adds, at each concurrency, rows for the Open Inference
// Protocol (KServe v2) next to transferd.v1's in the same run: "oip-grpc"
// (ModelInfer, the JPEG as a raw BYTES tensor, as Triton's clients send it)
// and "oip-rest" (POST /v2/models/{id}/infer with binary tensor data both
// ways, one keep-alive connection per thread), all rows alternated
// --protocol-rounds times (3), with the target: the median over rounds of
// oip c=32 throughput / transferd.v1's >= 0.95.
//
// With --metrics-cost R it measures instead what the Prometheus metrics cost
// on the hot path: served c=32 images/s and c=1 p50 with the server's
// metrics on (the default) and off (--no-metrics), on servers started in
// alternation (on, off, off, on, ...) for R rounds each, and prints the
// medians and their difference (target: within 2%).
#include <fcntl.h>
#include <httplib.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/core/backbones/preprocessing.h"
#include "server/core/backbones/weights_cache.h"
#include "server/core/data/images.h"
#include "server/core/device.h"
#include "server/core/device_arbiter.h"
#include "server/core/predictor.h"
#include "server/core/registry.h"
#include "server/core/train/classifier.h"
#include "server/core/util/build_info.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/metrics.h"
#include "server/core/util/store.h"
#include "server/rpc/oip_conversions.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.pb.h"
#include "transferd/v1/models.grpc.pb.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace core = transferd::core;
namespace v1 = transferd::v1;
using Clock = std::chrono::steady_clock;

// ---- options
// -----------------------------------------------------------------

// A binary built beside this one (build/bin/NAME): no path compiled in.
std::string BinaryBeside(const char* name) {
  std::error_code ec;
  const std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(name) : (self.parent_path() / name).string();
}

struct Options {
  double window_seconds = 10;
  double warmup_seconds = 2;
  double offline_seconds = 3;
  std::vector<std::string> models = {"mobilenet", "vgg16"};
  std::vector<int> concurrency = {1, 8, 32};
  int channels = 4;  // distinct connections, shared round-robin by the threads
  int threads = 0;  // torch intra-op threads, server and offline (0 = all CPUs)
  std::string precision = "auto";
  int image_size = 0;  // side of the encoded JPEG; 0 = the model's input size
  std::vector<int>
      extra_batches;  // more offline rows, for finding the best batch size
  std::vector<std::string> server_args;
  std::vector<std::string> server_env;
  std::string transferd = BinaryBeside("transferd");
  bool keep = false;
  // Served rows again while a training job keeps the device busy.
  bool while_training = true;
  std::vector<int> training_concurrency = {1, 8};
  // Open-loop Predict rates (requests/s) measured idle and while training:
  // interactive traffic that fits the server's --interactive-share.
  std::vector<double> training_rates = {20};
  // Instead of the rows above: served c=32 throughput and c=1 p50 with the
  // server's metrics on and off (--no-metrics), alternating servers for
  // this many rounds each.
  int metrics_cost_rounds = 0;
  // The served protocols measured side by side at each concurrency:
  // "v1" (transferd.v1 Predict), "oip-grpc" (the Open Inference Protocol's
  // ModelInfer, raw BYTES), "oip-rest" (its REST form, binary tensor data).
  std::vector<std::string> protocols = {"v1"};
  int protocol_rounds = 3;
  // Instead of the rows above: serving replicas (transferd --follow) against
  // one server, one core each (docs/replicas.md).
  bool replicas = false;
};

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<std::string> SplitWords(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

constexpr char kUsage[] =
    "usage: predict_bench [--window-seconds S] [--warmup-seconds S] "
    "[--offline-seconds S]\n"
    "  [--models mobilenet,vgg16] [--concurrency 1,8,32] [--channels K]\n"
    "  [--threads N] [--precision auto|fp32|bf16] [--image-size PX]\n"
    "  [--offline-batches 8,16]\n"
    "  [--server-args \"ARGS\"] [--server-env \"K=V ...\"] [--transferd "
    "PATH] [--keep]\n"
    "  [--no-training] [--training-concurrency 1,8] [--training-rates 20]\n"
    "  [--metrics-cost ROUNDS] [--protocols v1,oip-grpc,oip-rest]\n"
    "  [--protocol-rounds R] [--replicas]\n"
    "bench/README.md says what each row measures.\n";

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr, "predict_bench: %s\n%s", why, kUsage);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--window-seconds")
      o.window_seconds = std::atof(value().c_str());
    else if (a == "--warmup-seconds")
      o.warmup_seconds = std::atof(value().c_str());
    else if (a == "--offline-seconds")
      o.offline_seconds = std::atof(value().c_str());
    else if (a == "--models")
      o.models = Split(value(), ',');
    else if (a == "--concurrency") {
      o.concurrency.clear();
      for (const std::string& c : Split(value(), ','))
        o.concurrency.push_back(std::atoi(c.c_str()));
    } else if (a == "--channels")
      o.channels = std::atoi(value().c_str());
    else if (a == "--threads")
      o.threads = std::atoi(value().c_str());
    else if (a == "--precision")
      o.precision = value();
    else if (a == "--image-size")
      o.image_size = std::atoi(value().c_str());
    else if (a == "--offline-batches") {
      for (const std::string& b : Split(value(), ','))
        o.extra_batches.push_back(std::atoi(b.c_str()));
    } else if (a == "--server-args")
      o.server_args = SplitWords(value());
    else if (a == "--server-env")
      o.server_env = SplitWords(value());
    else if (a == "--transferd")
      o.transferd = value();
    else if (a == "--keep")
      o.keep = true;
    else if (a == "--no-training")
      o.while_training = false;
    else if (a == "--training-concurrency") {
      o.training_concurrency.clear();
      for (const std::string& c : Split(value(), ',')) {
        o.training_concurrency.push_back(std::atoi(c.c_str()));
      }
    } else if (a == "--training-rates") {
      o.training_rates.clear();
      for (const std::string& r : Split(value(), ',')) {
        if (std::atof(r.c_str()) > 0)
          o.training_rates.push_back(std::atof(r.c_str()));
      }
    } else if (a == "--metrics-cost")
      o.metrics_cost_rounds = std::atoi(value().c_str());
    else if (a == "--protocols")
      o.protocols = Split(value(), ',');
    else if (a == "--protocol-rounds")
      o.protocol_rounds = std::max(1, std::atoi(value().c_str()));
    else if (a == "--replicas")
      o.replicas = true;
    else
      Usage(("unknown argument " + a).c_str());
  }
  if (o.window_seconds <= 0 || o.warmup_seconds < 0 || o.offline_seconds <= 0) {
    Usage("seconds must be positive");
  }
  if (o.channels < 1) Usage("--channels must be >= 1");
  for (const std::string& p : o.protocols) {
    if (p != "v1" && p != "oip-grpc" && p != "oip-rest")
      Usage("--protocols takes v1, oip-grpc, oip-rest");
  }
  for (int c : o.concurrency) {
    if (c < 1) Usage("--concurrency values must be >= 1");
  }
  for (int b : o.extra_batches) {
    if (b < 1) Usage("--offline-batches values must be >= 1");
  }
  for (const std::string& m : o.models) {
    if (m != "mobilenet" && m != "vgg16") Usage(("unknown model " + m).c_str());
  }
  return o;
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "predict_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Fail(std::string(what) + ": " + v.status().ToString());
  return *std::move(v);
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Nearest-rank percentile of sorted values.
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  size_t rank =
      static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// ---- the models
// ------------------------------------------------------------------

struct ModelSetup {
  std::string name;   // "mobilenet", "vgg16"
  std::string label;  // for the table
  core::train::ModelConfig config;
  core::backbones::Preprocessing preprocessing;
  core::ModelInfo info;  // as registered (weights_file filled)
};

ModelSetup Describe(const std::string& name, const std::string& precision) {
  ModelSetup m;
  m.name = name;
  core::train::ModelConfig& c = m.config;
  c.weights =
      "none";  // random initialisation: compute cost does not depend on values
  c.precision = precision;
  if (name == "mobilenet") {
    // The tf-tutorial recipe's head: global average pooling, no hidden
    // layer, dropout 0.2.
    c.backbone = "mobilenet";
    c.alpha = 0.25;
    c.input_size = 224;
    c.head = {core::train::Pooling::kGlobalAverage, 0, 0.2};
    m.preprocessing = core::backbones::Preprocessing::Tf();
    m.label = "MobileNet alpha 0.25 @224, GAP head (tf-tutorial)";
  } else {
    // The keras-book recipe's head: Flatten, Dense 256 relu, dropout 0.5.
    c.backbone = "vgg16";
    c.alpha = 1.0;
    c.input_size = 150;
    c.head = {core::train::Pooling::kFlatten, 256, 0.5};
    m.preprocessing = core::backbones::Preprocessing::Caffe();
    m.label = "VGG16 @150, Flatten-Dense256 head (keras-book)";
  }
  return m;
}

// Builds a random-weight two-class classifier and registers it in a fresh
// data directory under "bench-<name>".
void RegisterModels(const fs::path& data_root, const fs::path& scratch,
                    std::vector<ModelSetup>& models) {
  core::DataDir::Options dopts;
  dopts.root = data_root;
  auto dir = OrDie(core::DataDir::Open(dopts), "opening the data directory");
  core::Store::Options sopts;
  sopts.path = dir->database_path();
  auto store = OrDie(core::Store::Open(sopts), "opening the store");
  auto registry = OrDie(core::ModelRegistry::Open(*store, *dir),
                        "opening the model registry");
  for (ModelSetup& m : models) {
    auto classifier =
        OrDie(core::train::BuildClassifier(
                  m.config, 2, core::backbones::WeightsCacheOptions(),
                  /*load_weights=*/false),
              "building the classifier");
    const fs::path weights = scratch / (m.name + ".safetensors");
    if (absl::Status s = classifier->Save(weights); !s.ok())
      Fail("saving weights: " + s.ToString());
    core::ModelInfo info;
    info.id = "bench-" + m.name;
    info.display_name = m.label;
    info.model = m.config;
    info.classes = {"cat", "dog"};
    info.preprocessing.mode =
        core::backbones::Preprocessing::ModeName(m.preprocessing.mode);
    info.preprocessing.bgr = m.preprocessing.bgr;
    info.preprocessing.scale = m.preprocessing.scale;
    info.preprocessing.mean.assign(m.preprocessing.mean.begin(),
                                   m.preprocessing.mean.end());
    info.preprocessing.std.assign(m.preprocessing.std.begin(),
                                  m.preprocessing.std.end());
    info.preprocessing.input_size = m.config.input_size;
    const core::train::TrainableSummary s = classifier->Summary();
    info.parameters = s.trainable_parameters + s.non_trainable_parameters;
    m.info = OrDie(registry->Register(info, weights), "registering the model");
    fs::remove(weights);
  }
  // registry, store and data directory (its LOCK) close here, before the
  // server opens the directory.
}

// A photo-like test image: smooth colour gradients, a few shapes and
// blurred noise (so that the JPEG is neither trivially small nor pure
// noise), encoded once.
std::string MakeJpeg(int side) {
  cv::Mat img(side, side, CV_8UC3);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      img.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(60 + 120 * x / side),
                    static_cast<uint8_t>(90 + 100 * y / side),
                    static_cast<uint8_t>(200 - 120 * (x + y) / (2 * side)));
    }
  }
  cv::circle(img, {side / 3, side / 2}, side / 5, cv::Scalar(40, 80, 160),
             cv::FILLED);
  cv::rectangle(img, {side / 2, side / 5}, {side * 4 / 5, side * 3 / 5},
                cv::Scalar(200, 190, 60), cv::FILLED);
  cv::Mat noise(side, side, CV_8UC3);
  cv::theRNG().state = 12345;
  cv::randn(noise, cv::Scalar::all(128), cv::Scalar::all(40));
  cv::GaussianBlur(noise, noise, {3, 3}, 0);
  cv::addWeighted(img, 0.8, noise, 0.2, 0, img);
  std::vector<uint8_t> buf;
  if (!cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 90}))
    Fail("imencode failed");
  return std::string(buf.begin(), buf.end());
}

// ---- the server
// ---------------------------------------------------------------

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Fail("socket()");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    Fail("bind() on loopback");
  }
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

class Server {
 public:
  // `extra_args` after the options' server arguments; `cpu` >= 0 pins the
  // process (all its threads) to that CPU.
  Server(const Options& o, const fs::path& data_root, const fs::path& log_path,
         const std::vector<std::string>& extra_args = {}, int cpu = -1)
      : log_path_(log_path) {
    address_ = "127.0.0.1:" + std::to_string(FreeLoopbackPort());
    std::vector<std::string> args = {
        o.transferd,        "--listen",    address_, "--data-dir",
        data_root.string(), "--log-level", "warn"};
    // The HTTP port: the Open Inference Protocol's REST rows and /metrics
    // (the served rows' mean batch size).
    http_port_ = FreeLoopbackPort();
    args.push_back("--http-listen=127.0.0.1:" + std::to_string(http_port_));
    if (o.threads > 0) {
      args.push_back("--threads");
      args.push_back(std::to_string(o.threads));
    }
    args.push_back("--precision");
    args.push_back(o.precision);
    args.insert(args.end(), o.server_args.begin(), o.server_args.end());
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (cpu >= 0) CPU_SET(cpu, &cpus);
    // The developer's TRANSFERD_* settings must not change what is measured.
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "TRANSFERD_", 10) != 0) env.emplace_back(*e);
    }
    env.insert(env.end(), o.server_env.begin(), o.server_env.end());
    command_line_ = "";
    for (const std::string& a : args)
      command_line_ += (command_line_.empty() ? "" : " ") + a;

    std::vector<char*> argv, envp;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log = log_path.string();
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) Fail("fork()");
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      if (cpu >= 0 && sched_setaffinity(0, sizeof(cpus), &cpus) != 0) {
        _exit(126);
      }
      int fd =
          open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
  }

  ~Server() { Stop(); }

  const std::string& address() const { return address_; }
  int http_port() const { return http_port_; }

  // The _sum and _count of each of `names`, histograms of the server's
  // /metrics, over all label values, from one scrape (NaN if the page cannot
  // be read).
  std::vector<std::pair<double, double>> HistogramSumCounts(
      const std::vector<std::string>& names) const {
    std::vector<std::pair<double, double>> out(names.size(), {0, 0});
    httplib::Client client("127.0.0.1", http_port_);
    client.set_read_timeout(std::chrono::seconds(10));
    const httplib::Result res = client.Get("/metrics");
    if (!res || res->status != 200) {
      std::fill(out.begin(), out.end(),
                std::make_pair(std::nan(""), std::nan("")));
      return out;
    }
    std::istringstream lines(res->body);
    for (std::string line; std::getline(lines, line);) {
      const double value = std::atof(line.substr(line.rfind(' ') + 1).c_str());
      for (size_t i = 0; i < names.size(); ++i) {
        if (line.rfind(names[i] + "_sum", 0) == 0) out[i].first += value;
        if (line.rfind(names[i] + "_count", 0) == 0) out[i].second += value;
      }
    }
    return out;
  }
  // Training steps the server has finished (all jobs).
  double TrainingSteps() const {
    return HistogramSumCounts({"transferd_training_step_duration_seconds"})
        .front()
        .second;
  }
  const std::string& command_line() const { return command_line_; }
  pid_t pid() const { return pid_; }

  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  // Waits for grpc.health.v1 Check(service) == SERVING.
  bool WaitServing(std::chrono::seconds timeout,
                   const std::string& service = "") {
    auto channel =
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    auto health = grpc::health::v1::Health::NewStub(channel);
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && Running()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(1));
      ctx.set_wait_for_ready(true);
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(service);
      grpc::health::v1::HealthCheckResponse resp;
      grpc::Status s = health->Check(&ctx, req, &resp);
      if (s.ok() &&
          resp.status() == grpc::health::v1::HealthCheckResponse::SERVING)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // CPU seconds (user + system) the server has used so far.
  double CpuSeconds() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) return std::nan("");
    std::istringstream fields(stat.substr(paren + 2));
    std::string f;
    double utime = 0, stime = 0;
    // After "pid (comm) ": state is field 3; utime 14, stime 15.
    for (int i = 3; i <= 15 && fields >> f; ++i) {
      if (i == 14) utime = std::atof(f.c_str());
      if (i == 15) stime = std::atof(f.c_str());
    }
    return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  std::string LogTail(size_t bytes = 4000) const {
    std::ifstream in(log_path_);
    std::string all((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
    return all.size() > bytes ? all.substr(all.size() - bytes) : all;
  }

  void Stop() {
    if (!Running()) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200 && Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (Running()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  fs::path log_path_;
  std::string address_;
  int http_port_ = 0;
  std::string command_line_;
  pid_t pid_ = -1;
};

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ---- measurements
// ------------------------------------------------------------

struct Row {
  std::string name;
  double images_per_second = 0;
  double p50 = 0, p90 = 0, p99 = 0;  // ms
  double server_cores = std::nan(""), client_cores = std::nan("");
  double mean_batch = std::nan("");       // served rows: images per forward
  double mean_compute_ms = std::nan("");  // served rows: ms per batch computed
  int64_t requests = 0, errors = 0;
  std::string first_error;
};

Row Summarise(std::string name, std::vector<double> ms, double images,
              double seconds) {
  Row r;
  r.name = std::move(name);
  std::sort(ms.begin(), ms.end());
  r.images_per_second = images / seconds;
  r.p50 = Percentile(ms, 0.50);
  r.p90 = Percentile(ms, 0.90);
  r.p99 = Percentile(ms, 0.99);
  r.requests = static_cast<int64_t>(ms.size());
  return r;
}

// Run() on batches of `batch` copies of `pixels` for at least `seconds`
// after a warm-up; latencies are per Run() (per batch).
Row Offline(core::ModelRunner& runner, const std::vector<uint8_t>& image,
            int batch, double seconds, const std::string& name) {
  std::vector<uint8_t> pixels(image.size() * batch);
  for (int i = 0; i < batch; ++i)
    std::copy(image.begin(), image.end(), pixels.begin() + i * image.size());
  for (int i = 0; i < 3; ++i)
    OrDie(runner.Run(pixels.data(), batch, false), "offline warm-up");
  std::vector<double> ms;
  const auto start = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  while (Seconds(Clock::now() - start) < seconds || ms.size() < 3) {
    const auto t0 = Clock::now();
    OrDie(runner.Run(pixels.data(), batch, false), "offline forward");
    ms.push_back(Seconds(Clock::now() - t0) * 1e3);
  }
  const double elapsed = Seconds(Clock::now() - start);
  Row r = Summarise(name, ms, static_cast<double>(ms.size()) * batch, elapsed);
  r.client_cores = (ProcessCpuSeconds() - cpu0) / elapsed;
  return r;
}

// Mean milliseconds of one DecodeResized of `jpeg` to side x side.
double DecodeMs(const std::string& jpeg, int side) {
  std::vector<uint8_t> out(static_cast<size_t>(side) * side * 3);
  int n = 0;
  const auto start = Clock::now();
  while (Seconds(Clock::now() - start) < 1.0 || n < 20) {
    if (absl::Status s =
            core::DecodeResized(jpeg, core::ImageLimits(), side, out.data());
        !s.ok()) {
      Fail("DecodeResized: " + s.ToString());
    }
    ++n;
  }
  return Seconds(Clock::now() - start) * 1e3 / n;
}

// Latencies (ms) of back-to-back grpc.health.v1 Check calls for `seconds`:
// the cost of one unary round trip through the same client, connection
// and server, without any work.
std::vector<double> HealthRoundTrips(
    const std::shared_ptr<grpc::Channel>& channel, double seconds) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  std::vector<double> ms;
  const auto start = Clock::now();
  while (Seconds(Clock::now() - start) < seconds) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    const auto t0 = Clock::now();
    if (!health->Check(&ctx, req, &resp).ok()) Fail("health Check failed");
    ms.push_back(Seconds(Clock::now() - t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  return ms;
}

// The value of server flag `flag` in --server-args, else `fallback`.
double ServerFlag(const Options& o, const std::string& flag, double fallback) {
  double value = fallback;
  for (size_t i = 0; i < o.server_args.size(); ++i) {
    const std::string& a = o.server_args[i];
    if (a == flag && i + 1 < o.server_args.size())
      value = std::atof(o.server_args[i + 1].c_str());
    if (a.rfind(flag + "=", 0) == 0)
      value = std::atof(a.substr(flag.size() + 1).c_str());
  }
  return value;
}

// The queue delay the server runs with: --predict-max-queue-delay-us from
// --server-args, else the server's default.
double QueueDelayMs(const Options& o) {
  return ServerFlag(o, "--predict-max-queue-delay-us",
                    static_cast<double>(
                        core::PredictorOptions().max_queue_delay.count())) /
         1e3;
}

struct ThreadResult {
  std::vector<double> ms;
  int64_t errors = 0;
  std::string first_error;
};

// One call of a load generator's thread: "" on success, else what failed.
using Caller = std::function<std::string()>;

// One client thread: calls back to back until `end`; latencies of calls
// that complete within [window_start, end] are kept.
void ClientLoop(Caller* call, Clock::time_point window_start,
                Clock::time_point end, ThreadResult* out) {
  while (true) {
    const auto t0 = Clock::now();
    if (t0 >= end) break;
    const std::string error = (*call)();
    const auto t1 = Clock::now();
    if (t1 < window_start || t1 > end) continue;
    if (error.empty()) {
      out->ms.push_back(Seconds(t1 - t0) * 1e3);
    } else {
      ++out->errors;
      if (out->first_error.empty()) out->first_error = error;
    }
  }
}

// What the server had done at one moment: its CPU time and its Predict
// batches (images and compute time). Two of them give a row's server columns.
struct ServerSnapshot {
  explicit ServerSnapshot(const Server& server) : cpu(server.CpuSeconds()) {
    const auto h = server.HistogramSumCounts(
        {"transferd_inference_batch_size",
         "transferd_inference_compute_duration_seconds"});
    batch = h[0];
    compute = h[1];
  }
  double cpu;
  std::pair<double, double> batch, compute;  // sum, count
};

void FillServerColumns(const ServerSnapshot& a, const ServerSnapshot& b,
                       double seconds, Row& row) {
  row.server_cores = (b.cpu - a.cpu) / seconds;
  if (b.batch.second > a.batch.second) {
    row.mean_batch =
        (b.batch.first - a.batch.first) / (b.batch.second - a.batch.second);
  }
  if (b.compute.second > a.compute.second) {
    row.mean_compute_ms = 1e3 * (b.compute.first - a.compute.first) /
                          (b.compute.second - a.compute.second);
  }
}

// The measured window of a load that starts at `start`: after the warm-up,
// for --window-seconds.
std::pair<Clock::time_point, Clock::time_point> MeasuredWindow(
    const Options& o, Clock::time_point start) {
  const auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(s));
  };
  const Clock::time_point window_start = start + seconds(o.warmup_seconds);
  return {window_start, window_start + seconds(o.window_seconds)};
}

// Several servers' snapshots summed: their CPU time and batches.
ServerSnapshot Total(const std::vector<Server*>& servers) {
  ServerSnapshot total(*servers.front());
  for (size_t i = 1; i < servers.size(); ++i) {
    const ServerSnapshot one(*servers[i]);
    total.cpu += one.cpu;
    total.batch.first += one.batch.first;
    total.batch.second += one.batch.second;
    total.compute.first += one.compute.first;
    total.compute.second += one.compute.second;
  }
  return total;
}

// A closed loop of callers.size() threads, each with its own caller; the
// server columns sum `servers`.
Row Served(const Options& o, const std::vector<Server*>& servers,
           std::vector<Caller> callers, const std::string& name) {
  const int concurrency = static_cast<int>(callers.size());
  const auto start = Clock::now();
  const auto [window_start, end] = MeasuredWindow(o, start);
  std::vector<ThreadResult> results(static_cast<size_t>(concurrency));
  std::vector<std::thread> threads;
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back(ClientLoop, &callers[static_cast<size_t>(i)],
                         window_start, end, &results[static_cast<size_t>(i)]);
  }
  std::this_thread::sleep_until(window_start);
  const ServerSnapshot server0 = Total(servers);
  const double client_cpu0 = ProcessCpuSeconds();
  std::this_thread::sleep_until(end);
  const ServerSnapshot server1 = Total(servers);
  const double client_cpu1 = ProcessCpuSeconds();
  for (std::thread& t : threads) t.join();
  std::vector<double> all;
  int64_t errors = 0;
  std::string first_error;
  for (ThreadResult& r : results) {
    all.insert(all.end(), r.ms.begin(), r.ms.end());
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
  }
  const double images = static_cast<double>(all.size());
  Row row = Summarise(name + " c=" + std::to_string(concurrency),
                      std::move(all), images, o.window_seconds);
  row.errors = errors;
  row.first_error = first_error;
  FillServerColumns(server0, server1, o.window_seconds, row);
  row.client_cores = (client_cpu1 - client_cpu0) / o.window_seconds;
  return row;
}

Row Served(const Options& o, Server& server, std::vector<Caller> callers,
           const std::string& name) {
  return Served(o, std::vector<Server*>{&server}, std::move(callers), name);
}

// Open loop: one caller sends at `rate` requests/s on a fixed schedule,
// whether or not the previous call was quick; each latency counts from the
// call's scheduled time, so a late call also charges the wait before it was
// sent (no coordinated omission).
Row ServedPaced(const Options& o, Server& server, Caller call, double rate,
                const std::string& name) {
  const auto start = Clock::now();
  const auto [window_start, end] = MeasuredWindow(o, start);
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1.0 / rate));
  ThreadResult result;
  std::optional<ServerSnapshot> server0;
  double client_cpu0 = 0;
  for (auto due = start; due < end; due += interval) {
    std::this_thread::sleep_until(due);
    if (!server0 && due >= window_start) {
      server0.emplace(server);
      client_cpu0 = ProcessCpuSeconds();
    }
    const std::string error = call();
    if (due < window_start) continue;
    if (error.empty()) {
      result.ms.push_back(Seconds(Clock::now() - due) * 1e3);
    } else {
      ++result.errors;
      if (result.first_error.empty()) result.first_error = error;
    }
  }
  std::this_thread::sleep_until(end);
  const ServerSnapshot server1(server);
  const double images = static_cast<double>(result.ms.size());
  char label[64];
  std::snprintf(label, sizeof label, " %g/s", rate);
  Row row =
      Summarise(name + label, std::move(result.ms), images, o.window_seconds);
  row.errors = result.errors;
  row.first_error = result.first_error;
  if (server0) FillServerColumns(*server0, server1, o.window_seconds, row);
  row.client_cores = (ProcessCpuSeconds() - client_cpu0) / o.window_seconds;
  return row;
}

// One transferd.v1 Predict of `request` (which must outlive the caller).
Caller PredictCaller(const std::shared_ptr<grpc::Channel>& channel,
                     const v1::PredictRequest& request) {
  std::shared_ptr<v1::Inference::Stub> stub = v1::Inference::NewStub(channel);
  return [stub, &request]() -> std::string {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    v1::PredictResponse response;
    const grpc::Status s = stub->Predict(&ctx, request, &response);
    if (!s.ok()) {
      return std::to_string(s.error_code()) + " " + s.error_message();
    }
    if (response.predictions_size() != 1 ||
        response.predictions(0).status().code() != 0) {
      return "image status " + response.predictions(0).status().message();
    }
    return "";
  };
}

// transferd.v1 Predict, one image per call.
Row Served(const Options& o, Server& server,
           const std::vector<std::shared_ptr<grpc::Channel>>& channels,
           const v1::PredictRequest& request, int concurrency) {
  std::vector<Caller> callers;
  for (int i = 0; i < concurrency; ++i) {
    callers.push_back(PredictCaller(
        channels[static_cast<size_t>(i) % channels.size()], request));
  }
  return Served(o, server, std::move(callers), "served");
}

// The Open Inference Protocol's ModelInfer (gRPC), one image per call as
// raw BYTES: what a Triton client sends.
Row ServedOipGrpc(const Options& o, Server& server,
                  const std::vector<std::shared_ptr<grpc::Channel>>& channels,
                  const inference::ModelInferRequest& request,
                  int concurrency) {
  std::vector<Caller> callers;
  for (int i = 0; i < concurrency; ++i) {
    std::shared_ptr<inference::GRPCInferenceService::Stub> stub =
        inference::GRPCInferenceService::NewStub(
            channels[static_cast<size_t>(i) % channels.size()]);
    callers.push_back([stub, &request]() -> std::string {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
      inference::ModelInferResponse response;
      const grpc::Status s = stub->ModelInfer(&ctx, request, &response);
      if (!s.ok()) {
        return std::to_string(s.error_code()) + " " + s.error_message();
      }
      return response.raw_output_contents_size() == 2 ? "" : "no outputs";
    });
  }
  return Served(o, server, std::move(callers), "oip grpc");
}

// A BYTES tensor element in raw form (the protocol's framing).
std::string RawBytesElement(const std::string& bytes) {
  std::string out;
  transferd::rpc::oip::AppendBytesElement(bytes, &out);
  return out;
}

// Its REST form with binary tensor data both ways (one keep-alive
// connection per thread).
Row ServedOipRest(const Options& o, Server& server, const std::string& model,
                  const std::string& jpeg, int concurrency) {
  const std::string element = RawBytesElement(jpeg);
  const std::string header =
      "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\","
      "\"shape\":[1],\"parameters\":{\"binary_data_size\":" +
      std::to_string(element.size()) +
      "}}],\"parameters\":{\"binary_data_output\":true}}";
  auto body = std::make_shared<const std::string>(header + element);
  const std::string path = "/v2/models/" + model + "/infer";
  const httplib::Headers headers = {
      {"Inference-Header-Content-Length", std::to_string(header.size())}};
  std::vector<Caller> callers;
  for (int i = 0; i < concurrency; ++i) {
    auto client =
        std::make_shared<httplib::Client>("127.0.0.1", server.http_port());
    client->set_keep_alive(true);
    client->set_tcp_nodelay(true);
    client->set_read_timeout(std::chrono::seconds(30));
    callers.push_back([client, body, path, headers]() -> std::string {
      httplib::Result res = client->Post(path.c_str(), headers, *body,
                                         "application/octet-stream");
      if (!res) return "HTTP error " + httplib::to_string(res.error());
      if (res->status != 200) {
        return std::to_string(res->status) + " " + res->body.substr(0, 200);
      }
      return "";
    });
  }
  return Served(o, server, std::move(callers), "oip rest-binary");
}

// The first call loads and warms the model on the server; UNAVAILABLE is
// retried while the engine finishes starting.
void FirstPredict(v1::Inference::Stub& stub, const v1::PredictRequest& request,
                  Server& server) {
  const auto deadline = Clock::now() + std::chrono::seconds(300);
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(120));
    v1::PredictResponse response;
    const grpc::Status s = stub.Predict(&ctx, request, &response);
    if (s.ok()) return;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE ||
        Clock::now() > deadline || !server.Running()) {
      Fail("first Predict: " + std::to_string(s.error_code()) + " " +
           s.error_message() + "\nserver log:\n" + server.LogTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// ---- serving while training ----------------------------------------------

// Noise JPEGs (distinct, so none is de-duplicated) in a Kaggle-style folder.
void MakeTrainingImages(const fs::path& dir) {
  int n = 0;
  for (const char* split : {"train", "validation"}) {
    const int per_class = std::string(split) == "train" ? 48 : 8;
    fs::create_directories(dir / split);
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < per_class; ++i, ++n) {
        cv::Mat image(160, 160, CV_8UC3);
        cv::RNG rng(static_cast<uint64_t>(n) + 1);
        rng.fill(image, cv::RNG::UNIFORM, 0, 255);
        const fs::path path =
            dir / split /
            (std::string(label) + "." + std::to_string(n) + ".jpg");
        if (!cv::imwrite(path.string(), image))
          Fail("cannot write " + path.string());
      }
    }
  }
}

// Starts the training job and returns its name once it has run a step.
std::string StartTrainingJob(transferd::client::Client& client,
                             const fs::path& temp) {
  const fs::path images = temp / "training-images";
  MakeTrainingImages(images);
  transferd::client::UploadOptions upload;
  upload.directory = images;
  upload.dataset_id = "bench-training";
  if (auto r = client.UploadDataset(upload); !r.ok())
    Fail("upload: " + r.status().ToString());
  v1::CreateJobRequest request;
  request.set_job_id("bench-training");
  v1::JobSpec& spec = *request.mutable_spec();
  spec.set_kind(v1::JOB_KIND_TRAIN);
  spec.set_dataset("datasets/bench-training");
  spec.set_seed(1);
  v1::ModelSpec* m = spec.mutable_model();
  m->set_backbone("mobilenet");
  m->set_alpha(0.25);
  m->set_weights("none");
  m->set_input_size(128);
  m->mutable_head()->set_pooling(v1::POOLING_GLOBAL_AVERAGE);
  m->mutable_head()->set_hidden_units(0);
  v1::StageSpec* st = spec.add_stages();
  st->set_trainable_from("all");
  st->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_ADAM);
  st->mutable_optimizer()->set_learning_rate(1e-4);
  st->set_epochs(10000);
  st->set_batch_size(16);
  st->mutable_augmentation()->set_enabled(false);
  absl::StatusOr<v1::Job> job = client.CreateJob(request);
  if (!job.ok()) Fail("CreateJob: " + job.status().ToString());
  const auto deadline = Clock::now() + std::chrono::seconds(300);
  while (Clock::now() < deadline) {
    absl::StatusOr<v1::Job> now = client.GetJob(job->name());
    if (!now.ok()) Fail("GetJob: " + now.status().ToString());
    if (now->state() != v1::JOB_STATE_QUEUED &&
        now->state() != v1::JOB_STATE_RUNNING) {
      Fail("the training job ended: " + now->failure_reason());
    }
    if (now->progress().epoch() >= 2)
      return job->name();  // past the first, cache-filling epoch
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  Fail("the training job did not get going within 300 s");
}

// Images the job has trained on so far: its finished steps of 16 (the only
// job on the server), counted by the step-duration histogram, which moves
// with every step (the job's progress moves every 0.5 s).
double TrainedImages(const Server& server) {
  const double steps = server.TrainingSteps();
  if (std::isnan(steps)) Fail("cannot read the training steps from /metrics");
  return steps * 16;
}

// The job's images/s over `seconds` with no Predict load.
double TrainingRate(const Server& server, double seconds) {
  const double a = TrainedImages(server);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return (TrainedImages(server) - a) / Seconds(Clock::now() - t0);
}

std::string Fmt(double v, const char* f = "%.2f") {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

void PrintRowCells(const Row& r) {
  std::printf(
      "  %-30s %10s %9s %9s %9s %8s %8s %7lld %6s %7s", r.name.c_str(),
      Fmt(r.images_per_second, "%.1f").c_str(), Fmt(r.p50).c_str(),
      Fmt(r.p90).c_str(), Fmt(r.p99).c_str(), Fmt(r.server_cores).c_str(),
      Fmt(r.client_cores).c_str(), static_cast<long long>(r.errors),
      Fmt(r.mean_batch, "%.1f").c_str(), Fmt(r.mean_compute_ms).c_str());
}

// The column names of PrintRowCells, then `more`.
void PrintHeader(const char* more) {
  std::printf("  %-30s %10s %9s %9s %9s %8s %8s %7s %6s %7s%s\n", "",
              "images/s", "p50 ms", "p90 ms", "p99 ms", "srv CPU", "cli CPU",
              "errors", "batch", "fwd ms", more);
}

void PrintRow(const Row& r) {
  PrintRowCells(r);
  std::printf("\n");
}

}  // namespace

// Several connections: gRPC channels with identical arguments share one
// TCP connection (global subchannel pool), so each gets a distinct
// argument. One connection is read by one server poller at a time; a
// handful spreads 32 streams without a connection per thread.
std::vector<std::shared_ptr<grpc::Channel>> Connect(const Server& server,
                                                    int count) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("transferd.bench.connection", i);
    channels.push_back(grpc::CreateCustomChannel(
        server.address(), grpc::InsecureChannelCredentials(), args));
    if (!channels.back()->WaitForConnected(std::chrono::system_clock::now() +
                                           std::chrono::seconds(10))) {
      Fail("cannot connect to " + server.address());
    }
  }
  return channels;
}

// --replicas: served images/s through an alias on one server pinned to one
// core, then on one and on two serving replicas (transferd --follow of that
// server) pinned to one core each, and for reference on one replica using
// both cores; one model, this process's closed-loop callers spread
// round-robin over the servers of a row, all in the same run. The load
// generator is not pinned: on two cores it competes with the servers, most
// in the two-replica rows (its CPU is the "cli CPU" column).
void ReplicaBench(const Options& o, const ModelSetup& m,
                  const fs::path& data_root, const fs::path& temp) {
  constexpr char kAlias[] = "aliases/bench";
  const auto timeout = std::chrono::seconds(120);
  Options one_thread = o;
  one_thread.threads = 1;
  Server primary(one_thread, data_root, temp / "primary.log", {}, 0);
  if (!primary.WaitServing(timeout)) {
    Fail("transferd did not report SERVING\n" + primary.LogTail());
  }
  {
    auto models = v1::Models::NewStub(grpc::CreateChannel(
        primary.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    v1::SetAliasRequest req;
    req.set_alias(kAlias);
    req.set_model("models/" + m.info.id);
    v1::Alias alias;
    if (grpc::Status s = models->SetAlias(&ctx, req, &alias); !s.ok()) {
      Fail("SetAlias: " + s.error_message());
    }
  }
  if (!primary.WaitServing(timeout, kAlias)) {
    Fail("the alias did not become SERVING\n" + primary.LogTail());
  }
  const int side = o.image_size > 0 ? o.image_size : m.config.input_size;
  v1::PredictRequest request;
  request.set_model(kAlias);
  v1::Image* image = request.add_images();
  image->set_id("bench.jpg");
  image->set_data(MakeJpeg(side));

  auto follower = [&](const std::string& name, int cpu, int threads) {
    Options f = o;
    f.threads = threads;
    auto server = std::make_unique<Server>(
        f, temp / name, temp / (name + ".log"),
        std::vector<std::string>{"--follow=" + primary.address()}, cpu);
    if (!server->WaitServing(timeout, kAlias)) {
      Fail(name + " did not serve the alias\n" + server->LogTail());
    }
    return server;
  };
  std::vector<Row> rows;
  std::map<std::pair<std::string, int>, double> rate, per_core;
  auto measure = [&](const std::string& name,
                     const std::vector<Server*>& servers) {
    std::vector<std::vector<std::shared_ptr<grpc::Channel>>> channels;
    for (Server* s : servers) channels.push_back(Connect(*s, o.channels));
    for (int c : o.concurrency) {
      std::vector<Caller> callers;
      for (int i = 0; i < c; ++i) {
        const size_t server = static_cast<size_t>(i) % servers.size();
        const auto& mine = channels[server];
        callers.push_back(PredictCaller(
            mine[(static_cast<size_t>(i) / servers.size()) % mine.size()],
            request));
      }
      // Every server answers once before the row (connections, first batch).
      for (size_t k = 0; k < servers.size(); ++k) {
        const std::string error = callers[k % callers.size()]();
        if (!error.empty()) Fail(name + ": first Predict: " + error);
      }
      Row row = Served(o, servers, std::move(callers), name);
      rate[{name, c}] = row.images_per_second;
      per_core[{name, c}] = row.images_per_second / row.server_cores;
      PrintRow(row);
      std::fflush(stdout);
      rows.push_back(std::move(row));
    }
  };

  std::printf(
      "predict_bench --replicas: %s, %s, one image per Predict through %s; "
      "CPUs available: %u; windows %.0f s warm-up + %.0f s measured per row; "
      "%d connection(s) per server\n",
      m.label.c_str(), m.config.precision.c_str(), kAlias,
      std::thread::hardware_concurrency(), o.warmup_seconds, o.window_seconds,
      o.channels);
  PrintHeader("");
  const std::string single = "1 server, cpu0";
  const std::string f1 = "1 replica, cpu0";
  const std::string f2 = "2 replicas, cpu0+cpu1";
  const std::string wide = "1 replica, 2 cpus+threads";
  measure(single, {&primary});
  auto a = follower("replica-a", 0, 1);
  measure(f1, {a.get()});
  auto b = follower("replica-b", 1, 1);
  measure(f2, {a.get(), b.get()});
  a->Stop();
  b->Stop();
  auto c = follower("replica-c", -1, 2);
  measure(wide, {c.get()});
  c->Stop();
  for (const Row& r : rows) {
    if (r.errors > 0) {
      Fail(r.name + ": " + std::to_string(r.errors) +
           " failed calls, first: " + r.first_error);
    }
  }
  std::printf(
      "\nscaling (same run): images/s ratios, and images per second of "
      "server CPU (the load generator takes its CPU from the same cores)\n");
  for (int conc : o.concurrency) {
    const double s1 = rate[{single, conc}], r1 = rate[{f1, conc}],
                 r2 = rate[{f2, conc}], w = rate[{wide, conc}];
    std::printf(
        "  c=%-3d 2 replicas / 1 replica %.2fx (efficiency %.2f; per server "
        "core %.0f vs %.0f images/s, %.2f); 1 replica / 1 server %.2fx; "
        "2 replicas / 1 replica on 2 CPUs %.2fx\n",
        conc, r2 / r1, r2 / (2 * r1), per_core[{f2, conc}],
        per_core[{f1, conc}], per_core[{f2, conc}] / per_core[{f1, conc}],
        r1 / s1, r2 / w);
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return Percentile(v, 0.5);
}

// What the metrics add to one one-image Predict call, measured directly:
// everything the server records for it (the RPC's in-flight gauge, duration
// and code; the model's request, image, queue-time, batch-size, compute and
// end-to-end series; two queue-depth updates; the device turn's wait), in a
// loop on `threads` threads at once (contention on the shared series).
// Returns nanoseconds per call.
double MetricsNanosPerCall(int threads) {
  core::Metrics metrics({"bench", "bench", "bench"});
  core::RpcSeries& rpc = metrics.Rpc("transferd.v1.Inference/Predict");
  std::shared_ptr<core::ModelSeries> model = metrics.Model("m-bench");
  const std::vector<absl::StatusCode> ok_image = {absl::StatusCode::kOk};
  constexpr int kCalls = 200000;
  std::vector<std::thread> pool;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        rpc.Started();
        model->QueueDepth(1);
        model->Queued(0.0004);
        model->QueueDepth(0);
        metrics.TurnWaited(true, 0.0001);
        model->Batch(1, 0.001);
        model->RequestDone(absl::OkStatus(), ok_image, 0.002);
        rpc.Finished("OK", 0.0025);
      }
    });
  }
  for (std::thread& t : pool) t.join();
  return Seconds(Clock::now() - start) * 1e9 / kCalls;
}

// --metrics-cost: the same served rows on a server with metrics and one
// without. Both servers run side by side (each on its own copy of the data
// directory; the one not measured is idle) and the rows alternate between
// them (on, off, then off, on, ...), so that drift on a shared machine falls
// on both; the medians over the rounds are compared.
void MetricsCost(const Options& o, const std::vector<ModelSetup>& models,
                 const fs::path& data_root, const fs::path& temp) {
  const fs::path data_off = temp / "data-no-metrics";
  std::error_code ec;
  fs::copy(data_root, data_off, fs::copy_options::recursive, ec);
  if (ec) Fail("copying the data directory: " + ec.message());
  std::unique_ptr<Server> servers[2];  // [0]: metrics off, [1]: on
  std::vector<std::shared_ptr<grpc::Channel>> channels[2];
  for (int on = 0; on < 2; ++on) {
    Options so = o;
    if (on == 0) so.server_args.push_back("--no-metrics");
    servers[on] = std::make_unique<Server>(
        so, on == 1 ? data_root : data_off,
        temp / (on == 1 ? "transferd.log" : "transferd-no-metrics.log"));
    if (!servers[on]->WaitServing(std::chrono::seconds(120))) {
      Fail("transferd did not report SERVING\n" + servers[on]->command_line() +
           "\nlog:\n" + servers[on]->LogTail());
    }
    channels[on] = Connect(*servers[on], o.channels);
  }
  struct Samples {
    std::vector<double> c32, c1_p50, cpu_us;  // cpu_us: server CPU per image
  };
  for (const ModelSetup& model : models) {
    v1::PredictRequest request;
    request.set_model("models/" + model.info.id);
    v1::Image* image = request.add_images();
    image->set_id("bench.jpg");
    image->set_data(
        MakeJpeg(o.image_size > 0 ? o.image_size : model.config.input_size));
    Samples samples[2];
    for (int on = 0; on < 2; ++on) {
      auto stub = v1::Inference::NewStub(channels[on][0]);
      FirstPredict(*stub, request, *servers[on]);
    }
    const std::string name = model.label.substr(0, model.label.find(' '));
    for (int round = 0; round < o.metrics_cost_rounds; ++round) {
      for (int k = 0; k < 2; ++k) {
        const int on = (round % 2 == 0) == (k == 0) ? 1 : 0;
        const Row c32 = Served(o, *servers[on], channels[on], request, 32);
        const Row c1 = Served(o, *servers[on], channels[on], request, 1);
        if (c32.errors > 0 || c1.errors > 0) {
          Fail("errors while measuring: " + c32.first_error + c1.first_error);
        }
        samples[on].c32.push_back(c32.images_per_second);
        samples[on].c1_p50.push_back(c1.p50);
        samples[on].cpu_us.push_back(c32.server_cores / c32.images_per_second *
                                     1e6);
        std::printf(
            "  %-10s round %d, metrics %-3s c=32 %8.1f images/s, c=1 "
            "p50 %7.2f ms\n",
            name.c_str(), round + 1, on == 1 ? "on" : "off",
            c32.images_per_second, c1.p50);
        std::fflush(stdout);
      }
    }
    // Each round measured both servers back to back: the differences within
    // a round cancel slow drift of the machine; their median and quartiles
    // are the estimate and its spread.
    auto paired = [&](const std::vector<double>& on,
                      const std::vector<double>& off) {
      std::vector<double> d;
      for (size_t i = 0; i < on.size() && i < off.size(); ++i) {
        d.push_back((on[i] - off[i]) / off[i] * 100);
      }
      std::sort(d.begin(), d.end());
      return std::array<double, 3>{Percentile(d, 0.25), Percentile(d, 0.5),
                                   Percentile(d, 0.75)};
    };
    const auto d32 = paired(samples[1].c32, samples[0].c32);
    const auto d1 = paired(samples[1].c1_p50, samples[0].c1_p50);
    const auto dcpu = paired(samples[1].cpu_us, samples[0].cpu_us);
    std::printf(
        "  %-10s %d rounds, medians on / off and the median paired "
        "difference [quartiles]:\n",
        name.c_str(), o.metrics_cost_rounds);
    std::printf(
        "  %-10s   c=32 throughput %8.1f / %8.1f images/s  %+6.2f%% "
        "[%+.2f, %+.2f]\n",
        "", Median(samples[1].c32), Median(samples[0].c32), d32[1], d32[0],
        d32[2]);
    std::printf(
        "  %-10s   c=1 p50         %8.2f / %8.2f ms        %+6.2f%% "
        "[%+.2f, %+.2f]\n",
        "", Median(samples[1].c1_p50), Median(samples[0].c1_p50), d1[1], d1[0],
        d1[2]);
    std::printf(
        "  %-10s   server CPU      %8.0f / %8.0f us/image  %+6.2f%% "
        "[%+.2f, %+.2f]\n",
        "", Median(samples[1].cpu_us), Median(samples[0].cpu_us), dcpu[1],
        dcpu[0], dcpu[2]);
    std::printf(
        "  %-10s target (median paired difference within 2%%): "
        "throughput %s, p50 %s\n",
        name.c_str(), d32[1] >= -2 ? "PASS" : "MISS",
        d1[1] <= 2 ? "PASS" : "MISS");
    std::fflush(stdout);
  }
  for (auto& server : servers) server->Stop();
}

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!fs::exists(o.transferd))
    Fail("no transferd binary at " + o.transferd + " (--transferd)");

  // The server's device and precision rules, applied here too: offline and
  // served compute in the same precision with the same intra-op threads.
  core::DeviceOptions dev_opts;
  dev_opts.threads = o.threads;
  dev_opts.precision = o.precision;
  const core::ComputeDevice device =
      OrDie(core::SelectDevice(dev_opts), "selecting the device");

  std::string tmpl =
      (fs::temp_directory_path() / "predict-bench-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) Fail("mkdtemp");
  const fs::path temp = tmpl;
  const fs::path data_root = temp / "data";

  std::vector<ModelSetup> models;
  for (const std::string& name : o.models)
    models.push_back(Describe(name, device.precision));
  RegisterModels(data_root, temp, models);

  if (o.replicas) {
    ReplicaBench(o, models.front(), data_root, temp);
    std::error_code ec;
    if (!o.keep) fs::remove_all(temp, ec);
    return 0;
  }
  if (o.metrics_cost_rounds > 0) {
    std::printf(
        "predict_bench --metrics-cost: device %s (%s), %d torch threads, "
        "precision %s; CPUs available: %u; windows %.0f s warm-up + %.0f s "
        "measured per row\n",
        device.name.c_str(), device.description.c_str(), device.threads,
        device.precision.c_str(), std::thread::hardware_concurrency(),
        o.warmup_seconds, o.window_seconds);
    const double one = MetricsNanosPerCall(1);
    const double two = MetricsNanosPerCall(2);
    std::printf(
        "metrics recorded per one-image Predict call, measured in a loop: "
        "%.0f ns on one thread, %.0f ns of wall time per call on each of two "
        "threads at once\n",
        one, two);
    MetricsCost(o, models, data_root, temp);
    std::error_code ec;
    if (!o.keep) fs::remove_all(temp, ec);
    return 0;
  }

  Server server(o, data_root, temp / "transferd.log");
  if (!server.WaitServing(std::chrono::seconds(120))) {
    Fail("transferd did not report SERVING\n" + server.command_line() +
         "\nlog:\n" + server.LogTail());
  }
  const std::vector<std::shared_ptr<grpc::Channel>> channels =
      Connect(server, o.channels);

  std::printf(
      "predict_bench: %s, device %s (%s), %d torch threads, precision %s\n",
      server.command_line().c_str(), device.name.c_str(),
      device.description.c_str(), device.threads, device.precision.c_str());
  std::printf(
      "CPUs available: %u; windows: %.0f s warm-up + %.0f s measured per "
      "concurrency; "
      "offline >= %.0f s per batch size; %d client connection(s)\n",
      std::thread::hardware_concurrency(), o.warmup_seconds, o.window_seconds,
      o.offline_seconds, o.channels);
  {
    // Offline and served rows must run on the same allocator: glibc's malloc
    // page-faults large activations in on every batch (bench/README.md).
    transferd::client::ClientOptions co;
    co.address = server.address();
    co.timeout = std::chrono::seconds(30);
    auto client = transferd::client::Client::Create(co);
    auto info = client->GetServerInfo();
    std::printf(
        "allocator: %s in this process (offline rows), %s in transferd\n",
        core::GetBuildInfo().allocator.c_str(),
        info.ok() ? info->build().allocator().c_str()
                  : info.status().ToString().c_str());
  }
  const std::vector<double> rtt = HealthRoundTrips(channels[0], 1.0);
  const double rtt_p50 = Percentile(rtt, 0.5);
  std::printf(
      "gRPC unary round trip without work (health Check, c=1): p50 %.3f ms, "
      "p99 %.3f ms\n",
      rtt_p50, Percentile(rtt, 0.99));
  const double queue_delay_ms = QueueDelayMs(o);
  std::fflush(stdout);

  bool all_pass = true;
  // transferd.v1's served row per (model, concurrency) with no job (the
  // first round): the idle side of the serving-while-training targets.
  std::map<std::pair<std::string, int>, Row> idle_rows;
  for (ModelSetup& m : models) {
    const int size = m.config.input_size;
    const int image_side = o.image_size > 0 ? o.image_size : size;
    const std::string jpeg = MakeJpeg(image_side);
    std::vector<uint8_t> pixels(static_cast<size_t>(size) * size * 3);
    if (absl::Status s =
            core::DecodeResized(jpeg, core::ImageLimits(), size, pixels.data());
        !s.ok()) {
      Fail("DecodeResized: " + s.ToString());
    }

    // Offline, while the server is idle (this model not yet loaded there).
    core::backbones::WeightsCacheOptions wopts;
    wopts.dir = data_root / "weights";
    auto runner = OrDie(core::ModelRunner::Load(m.info, device, wopts),
                        "ModelRunner::Load");
    std::vector<Row> rows;
    rows.push_back(
        Offline(*runner, pixels, 32, o.offline_seconds, "offline batch 32"));
    rows.push_back(Offline(*runner, pixels, 1, o.offline_seconds,
                           "offline batch 1 (one forward)"));
    for (int b : o.extra_batches) {
      rows.push_back(Offline(*runner, pixels, b, o.offline_seconds,
                             "offline batch " + std::to_string(b)));
    }
    runner.reset();
    const double decode_ms = DecodeMs(jpeg, size);

    v1::PredictRequest request;
    request.set_model("models/" + m.info.id);
    v1::Image* image = request.add_images();
    image->set_id("bench.jpg");
    image->set_data(jpeg);
    auto stub = v1::Inference::NewStub(channels[0]);
    FirstPredict(*stub, request, server);
    // The same image as the Open Inference Protocol's raw BYTES tensor.
    inference::ModelInferRequest oip_request;
    oip_request.set_model_name(m.info.id);
    auto* input = oip_request.add_inputs();
    input->set_name("images");
    input->set_datatype("BYTES");
    input->add_shape(1);
    oip_request.add_raw_input_contents(RawBytesElement(jpeg));
    auto has = [&](const char* p) {
      return std::find(o.protocols.begin(), o.protocols.end(), p) !=
             o.protocols.end();
    };
    // Protocols side by side at each concurrency, in the same run; with
    // OIP rows, --protocol-rounds alternations of them all (the VM's noise
    // between two windows is several percent).
    const int rounds = o.protocols.size() > 1 ? o.protocol_rounds : 1;
    for (int c : o.concurrency) {
      for (int round = 0; round < rounds; ++round) {
        rows.push_back(Served(o, server, channels, request, c));
        if (round == 0)
          idle_rows.emplace(std::make_pair(m.name, c), rows.back());
        if (has("oip-grpc")) {
          rows.push_back(ServedOipGrpc(o, server, channels, oip_request, c));
        }
        if (has("oip-rest")) {
          rows.push_back(ServedOipRest(o, server, m.info.id, jpeg, c));
        }
      }
    }

    std::printf("\n%s (model %s, %lld parameters, precision %s)\n",
                m.label.c_str(), m.info.id.c_str(),
                static_cast<long long>(m.info.parameters),
                m.config.precision.c_str());
    std::printf(
        "  request: one %dx%d JPEG of %zu bytes; server-side decode+resize "
        "(DecodeResized) %.3f ms/image, included in served latency, not in "
        "offline rows\n",
        image_side, image_side, jpeg.size(), decode_ms);
    PrintHeader("");
    for (const Row& r : rows) PrintRow(r);
    std::printf(
        "  (offline latencies are per Run() call, i.e. per batch; CPU columns "
        "are cores busy in the server / this process; batch and fwd ms: the "
        "server's mean images and milliseconds per forward over the window, "
        "from /metrics)\n");
    for (const Row& r : rows) {
      if (r.errors > 0) {
        std::printf("  %s: %lld errors, first: %s\n", r.name.c_str(),
                    static_cast<long long>(r.errors), r.first_error.c_str());
      }
    }
    const double offline32 = rows[0].images_per_second;
    const double one_forward = rows[1].p50;
    const double serial_bound = 1.0 / (1.0 / offline32 + decode_ms / 1e3);
    std::printf(
        "  offline batch 32 with decode done serially on the same cores: %.1f "
        "images/s "
        "(%.2fx offline)\n",
        serial_bound, serial_bound / offline32);
    auto find = [&](int c) -> const Row* {
      for (const Row& r : rows) {
        if (r.name == "served c=" + std::to_string(c)) return &r;
      }
      return nullptr;
    };
    if (const Row* c32 = find(32)) {
      const double ratio = c32->images_per_second / offline32;
      const bool pass = ratio >= 0.9;
      all_pass = all_pass && pass;
      std::printf(
          "  target: served c=32 throughput / offline batch-32 throughput = "
          "%.1f / %.1f = "
          "%.2f (>= 0.90) %s\n",
          c32->images_per_second, offline32, ratio, pass ? "PASS" : "MISS");
    }
    // OIP against transferd.v1 at c=32: the median of the rounds' ratios
    // (each round's rows ran back to back).
    for (const char* protocol : {"oip grpc", "oip rest-binary"}) {
      std::vector<double> v1_rate, oip_rate;
      for (const Row& r : rows) {
        if (r.name == "served c=32") v1_rate.push_back(r.images_per_second);
        if (r.name == std::string(protocol) + " c=32") {
          oip_rate.push_back(r.images_per_second);
        }
      }
      if (oip_rate.empty() || oip_rate.size() != v1_rate.size()) continue;
      std::vector<double> ratios;
      for (size_t i = 0; i < oip_rate.size(); ++i) {
        ratios.push_back(oip_rate[i] / v1_rate[i]);
      }
      std::sort(ratios.begin(), ratios.end());
      const double ratio = Median(ratios);
      const bool pass = ratio >= 0.95;
      all_pass = all_pass && pass;
      std::printf(
          "  target: %s c=32 / transferd.v1 c=32 throughput, median of %zu "
          "rounds = %.3f (range %.3f..%.3f; >= 0.95) %s\n",
          protocol, ratios.size(), ratio, ratios.front(), ratios.back(),
          pass ? "PASS" : "MISS");
    }
    if (const Row* c1 = find(1)) {
      const double ratio = c1->p50 / one_forward;
      const bool pass = ratio <= 1.5;
      all_pass = all_pass && pass;
      std::printf(
          "  target: served c=1 p50 / one forward = %.2f ms / %.2f ms = %.2f "
          "(<= 1.50) %s\n",
          c1->p50, one_forward, ratio, pass ? "PASS" : "MISS");
      // A lone request waits the whole queue delay (0 by default) for
      // companions that never come, so c=1 pays it in full.
      const double parts = one_forward + decode_ms + queue_delay_ms + rtt_p50;
      std::printf(
          "  c=1 parts: one forward %.2f + decode %.2f + queue delay %.2f + "
          "gRPC round "
          "trip %.2f = %.2f ms; measured p50 %.2f ms (rest: hand-offs, copies, "
          "contention %.2f ms)\n",
          one_forward, decode_ms, queue_delay_ms, rtt_p50, parts, c1->p50,
          c1->p50 - parts);
    }
    std::fflush(stdout);
  }

  if (o.while_training && !models.empty() &&
      (!o.training_concurrency.empty() || !o.training_rates.empty())) {
    transferd::client::ClientOptions co;
    co.address = server.address();
    co.timeout = std::chrono::seconds(60);
    auto client = transferd::client::Client::Create(co);
    // One request per model; the callers hold references to them.
    std::vector<v1::PredictRequest> requests(models.size());
    for (size_t i = 0; i < models.size(); ++i) {
      const ModelSetup& m = models[i];
      requests[i].set_model("models/" + m.info.id);
      v1::Image* image = requests[i].add_images();
      image->set_id("bench.jpg");
      image->set_data(
          MakeJpeg(o.image_size > 0 ? o.image_size : m.config.input_size));
    }
    auto short_name = [](const ModelSetup& m) {
      return m.label.substr(0, m.label.find(' '));
    };
    const double share =
        ServerFlag(o, "--interactive-share",
                   core::DeviceArbiter::Options().interactive_share);
    // Open-loop traffic with no job: the idle side of its targets.
    std::map<std::pair<std::string, double>, Row> idle_paced;
    if (!o.training_rates.empty()) {
      std::printf(
          "\nopen-loop Predict (one caller on a fixed schedule, latency from "
          "the scheduled send time) with no job:\n");
      PrintHeader("");
      for (size_t i = 0; i < models.size(); ++i) {
        for (double rate : o.training_rates) {
          Row r =
              ServedPaced(o, server, PredictCaller(channels[0], requests[i]),
                          rate, short_name(models[i]) + " idle");
          PrintRow(r);
          idle_paced.emplace(std::make_pair(models[i].name, rate), r);
          std::fflush(stdout);
        }
      }
    }
    const std::string job = StartTrainingJob(*client, temp);
    // The job's speed drifts by up to 20% within a minute on a shared VM, so
    // each loaded row is compared with the job alone in the windows just
    // before and just after it.
    double alone_before = TrainingRate(server, o.window_seconds);
    std::printf(
        "\nserving while training: job %s (MobileNet alpha 0.25, 128 px, every "
        "layer trainable, batch 16) trains %.1f images/s with no Predict load; "
        "the server's interactive share is %.2f\n",
        job.c_str(), alone_before, share);
    PrintHeader("  train i/s  alone i/s");
    struct TrainingRow {
      const ModelSetup* model;
      int concurrency;  // closed loop; 0 for open-loop rows
      double rate;      // open loop (requests/s)
      Row row;
      double trained;
      double alone;  // mean of the job alone just before and just after
    };
    std::vector<TrainingRow> training_rows;
    // One row while the job trains: `measure` runs the load, the job's
    // images/s over the same time are read around it, and then the job alone
    // again.
    auto with_job = [&](const ModelSetup& m, int concurrency, double rate,
                        const std::function<Row()>& measure) {
      const double before = TrainedImages(server);
      const auto t0 = Clock::now();
      Row r = measure();
      const double trained =
          (TrainedImages(server) - before) / Seconds(Clock::now() - t0);
      const double alone_after = TrainingRate(server, o.window_seconds);
      const double alone = (alone_before + alone_after) / 2;
      alone_before = alone_after;
      PrintRowCells(r);
      std::printf(" %10s %10s\n", Fmt(trained, "%.1f").c_str(),
                  Fmt(alone, "%.1f").c_str());
      std::fflush(stdout);
      training_rows.push_back({&m, concurrency, rate, r, trained, alone});
    };
    for (size_t i = 0; i < models.size(); ++i) {
      const ModelSetup& m = models[i];
      for (int c : o.training_concurrency) {
        with_job(m, c, 0, [&] {
          Row row = Served(o, server, channels, requests[i], c);
          row.name = short_name(m) + " c=" + std::to_string(c) + " training";
          return row;
        });
      }
      for (double rate : o.training_rates) {
        with_job(m, 0, rate, [&] {
          return ServedPaced(o, server, PredictCaller(channels[0], requests[i]),
                             rate, short_name(m) + " training");
        });
      }
    }
    // The targets of serving while training: latency within 2x (p50) and 3x
    // (p99) of the same load with no job, and the job keeping 85% of its
    // images/s. A closed loop asks for the whole device (each caller sends
    // again as soon as it has its answer), so there the share decides and
    // only the job's side is a target; open-loop traffic within the share
    // must meet both.
    for (const TrainingRow& t : training_rows) {
      const Row* idle = nullptr;
      if (t.concurrency > 0) {
        auto found = idle_rows.find({t.model->name, t.concurrency});
        if (found != idle_rows.end()) idle = &found->second;
      } else {
        auto found = idle_paced.find({t.model->name, t.rate});
        if (found != idle_paced.end()) idle = &found->second;
      }
      const double kept = t.trained / t.alone;
      const bool job_pass = kept >= 0.85;
      if (idle == nullptr) {
        all_pass = all_pass && job_pass;
        std::printf(
            "  target: %s: job %.1f images/s = %.0f%% of %.1f alone "
            "(>= 85%%): %s\n",
            t.row.name.c_str(), t.trained, 100 * kept, t.alone,
            job_pass ? "PASS" : "MISS");
        continue;
      }
      const double p50x = t.row.p50 / idle->p50, p99x = t.row.p99 / idle->p99;
      const bool latency_pass = p50x <= 2.0 && p99x <= 3.0;
      const bool pass = job_pass && (t.concurrency > 0 ||
                                     (latency_pass && t.row.errors == 0));
      all_pass = all_pass && pass;
      std::printf(
          "  target: %s: p50 %.2f ms = %.2fx idle %.2f ms (<= 2x), p99 %.2f "
          "ms = %.2fx idle %.2f ms (<= 3x)%s, job %.1f images/s = %.0f%% of "
          "%.1f alone (>= 85%%): %s\n",
          t.row.name.c_str(), t.row.p50, p50x, idle->p50, t.row.p99, p99x,
          idle->p99,
          t.concurrency > 0 ? " [closed loop: latency not a target]" : "",
          t.trained, 100 * kept, t.alone, pass ? "PASS" : "MISS");
    }
    std::printf(
        "  (compare with the served rows above, measured with no job; train "
        "i/s is the job's images/s over the same window, alone i/s the mean "
        "of the job alone just before and just after it)\n");
    if (auto c = client->CancelJob(job); !c.ok())
      Fail("CancelJob: " + c.status().ToString());
  }

  server.Stop();
  if (o.keep) {
    std::printf("\ndata directory and server log kept in %s\n", temp.c_str());
  } else {
    std::error_code ec;
    fs::remove_all(temp, ec);
  }
  std::printf("\n%s\n", all_pass ? "all targets met"
                                 : "some targets missed (see MISS above)");
  return 0;
}
