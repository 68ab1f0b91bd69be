#include "server/cluster/worker.h"

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/hash.h"
#include "server/core/cluster.h"
#include "server/core/engine.h"
#include "server/core/train/collective.h"
#include "server/core/train/train_json.h"
#include "server/core/train/trainer.h"
#include "server/core/util/build_info.h"
#include "server/core/util/log.h"
#include "server/core/util/torch_util.h"
#include "server/peer/peer_channel.h"
#include "server/rpc/conversions.h"
#include "transferd/v1/cluster.grpc.pb.h"

namespace transferd::cluster {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using core::LogFields;

namespace {

constexpr int kFetchBatch = 1000;

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(static_cast<int>(status.error_code()), " ",
                      status.error_message());
}

bool IsHexSha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// A stored file's extension: a dot and up to 8 lower-case letters or digits.
bool SafeExtension(const std::string& e) {
  if (e.empty() || e.size() > 9 || e[0] != '.') return false;
  for (size_t i = 1; i < e.size(); ++i) {
    const char c = e[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

}  // namespace

struct Worker::Impl {
  WorkerOptions options;
  core::Engine& engine;
  std::string token;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Cluster::Stub> stub;

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  grpc::ClientContext* join_ctx = nullptr;
  std::string worker_id;
  // The rank running now (one at a time) and its thread.
  bool busy = false;
  std::thread rank_thread;
  std::atomic<bool> cancel_rank{false};
  std::thread thread;

  Impl(WorkerOptions o, core::Engine& e) : options(std::move(o)), engine(e) {}

  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu);
    return stopping;
  }

  void Authorize(grpc::ClientContext& ctx) const {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  }

  fs::path ContentDir() const {
    return engine.data_dir().cache_dir() / "cluster-content";
  }

  void Run() {
    std::chrono::milliseconds backoff = options.min_backoff;
    std::string last_logged;
    engine.worker_state().Update([&](core::WorkerSelfStatus& s) {
      s.coordinator = options.coordinator;
    });
    while (!Stopping()) {
      grpc::ClientContext ctx;
      Authorize(ctx);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) break;
        join_ctx = &ctx;
      }
      v1::JoinClusterRequest request;
      request.set_name(options.name);
      rpc::DeviceToProto(engine.device(), request.mutable_device());
      request.set_version(core::GetBuildInfo().version);
      std::unique_ptr<grpc::ClientReader<v1::ClusterMessage>> reader =
          stub->Join(&ctx, request);
      v1::ClusterMessage message;
      bool joined = false;
      while (reader->Read(&message)) {
        if (!message.worker_id().empty()) {
          joined = true;
          backoff = options.min_backoff;
          {
            std::lock_guard<std::mutex> lock(mu);
            worker_id = message.worker_id();
          }
          engine.worker_state().Update([](core::WorkerSelfStatus& s) {
            s.connected = true;
            s.last_error.clear();
          });
          LogFields(spdlog::level::info, "joined the coordinator",
                    {{"coordinator", options.coordinator},
                     {"worker", message.worker_id()},
                     {"name", options.name}});
          last_logged.clear();
        }
        if (message.has_assignment()) Accept(message.assignment());
      }
      const grpc::Status status = reader->Finish();
      {
        std::lock_guard<std::mutex> lock(mu);
        join_ctx = nullptr;
      }
      if (Stopping()) break;
      const std::string error = absl::StrCat(
          "membership on ", options.coordinator,
          " ended: ", status.ok() ? "the stream closed" : Describe(status));
      engine.worker_state().Update([&](core::WorkerSelfStatus& s) {
        s.connected = false;
        s.last_error = error;
      });
      if (joined || error != last_logged) {
        LogFields(spdlog::level::warn, "not a member of the cluster",
                  {{"error", error}});
        last_logged = error;
      }
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, backoff, [&] { return stopping; });
      backoff = std::min(options.max_backoff, backoff * 2);
    }
  }

  void Report(const v1::RankReport& report) {
    grpc::ClientContext ctx;
    Authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    v1::RankReportResponse response;
    const grpc::Status s = stub->ReportRank(&ctx, report, &response);
    if (!s.ok()) {
      LogFields(spdlog::level::warn, "rank report not delivered",
                {{"run", report.run_id()}, {"error", Describe(s)}});
    }
  }

  void Accept(const v1::RankAssignment& a) {
    std::string id;
    {
      std::lock_guard<std::mutex> lock(mu);
      id = worker_id;
      if (!busy) {
        busy = true;
        if (rank_thread.joinable()) rank_thread.join();
        cancel_rank = false;
        rank_thread = std::thread([this, a, id] {
          RunRank(a, id);
          std::lock_guard<std::mutex> l(mu);
          busy = false;
        });
        return;
      }
    }
    v1::RankReport r;
    r.set_worker_id(id);
    r.set_run_id(a.run_id());
    r.set_rank(a.rank());
    r.set_error("the worker is running another rank");
    Report(r);
  }

  // Fetches the contents of `files` missing from the cache.
  absl::Status Fetch(const std::vector<const v1::ShardFile*>& missing,
                     v1::RankReport& report) {
    const int64_t max_file = engine.datasets().limits().max_file_bytes;
    std::error_code ec;
    fs::create_directories(ContentDir(), ec);
    std::map<std::string, std::string> extension;
    for (const v1::ShardFile* f : missing) {
      extension[f->sha256()] = f->extension();
    }
    for (size_t begin = 0; begin < missing.size(); begin += kFetchBatch) {
      const size_t end = std::min(missing.size(), begin + kFetchBatch);
      v1::FetchContentRequest request;
      for (size_t i = begin; i < end; ++i) {
        request.add_sha256(missing[i]->sha256());
      }
      grpc::ClientContext ctx;
      Authorize(ctx);
      std::unique_ptr<grpc::ClientReader<v1::ContentChunk>> reader =
          stub->FetchContent(&ctx, request);
      v1::ContentChunk chunk;
      std::string current, bytes;
      absl::Status problem;
      while (reader->Read(&chunk)) {
        if (cancel_rank) {
          ctx.TryCancel();
          break;
        }
        if (chunk.sha256() != current) {
          current = chunk.sha256();
          bytes.clear();
        }
        if (!extension.count(current)) {
          problem = absl::DataLossError(
              absl::StrCat("the coordinator sent content ", current,
                           " that was not asked for"));
          ctx.TryCancel();
          break;
        }
        bytes.append(chunk.data());
        if (static_cast<int64_t>(bytes.size()) > max_file) {
          problem = absl::ResourceExhaustedError(absl::StrCat(
              "content ", current, " exceeds the per-file limit of ", max_file,
              " bytes (--max-file-bytes)"));
          ctx.TryCancel();
          break;
        }
        if (!chunk.last()) continue;
        common::Sha256 sha;
        sha.Update(bytes);
        if (sha.HexDigest() != current) {
          problem = absl::DataLossError(absl::StrCat(
              "content ", current, " arrived with other bytes (SHA-256 ",
              sha.HexDigest(), ")"));
          ctx.TryCancel();
          break;
        }
        const fs::path path = ContentDir() / (current + extension[current]);
        const fs::path tmp = path.string() + ".part";
        {
          std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
          out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
          if (!out) {
            problem = absl::InternalError(
                absl::StrCat("cannot write ", tmp.string()));
            ctx.TryCancel();
            break;
          }
        }
        fs::rename(tmp, path, ec);
        report.set_files_fetched(report.files_fetched() + 1);
        report.set_bytes_fetched(report.bytes_fetched() +
                                 static_cast<int64_t>(bytes.size()));
        bytes.clear();
      }
      const grpc::Status status = reader->Finish();
      if (!problem.ok()) return problem;
      if (cancel_rank) return absl::CancelledError("the worker is stopping");
      if (!status.ok()) {
        return absl::UnavailableError(
            absl::StrCat("fetching the dataset: ", Describe(status)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status RunRankSteps(const v1::RankAssignment& a,
                            v1::RankReport& report) {
    absl::StatusOr<core::train::TrainConfig> config =
        core::train::ConfigFromJson(a.config_json());
    if (!config.ok()) return config.status();
    core::train::TrainData data;
    data.dataset_id = std::string(absl::StripPrefix(a.dataset(), "datasets/"));
    data.classes.assign(a.classes().begin(), a.classes().end());
    std::vector<const v1::ShardFile*> missing;
    std::set<std::string> asked;
    for (const v1::ShardFile& f : a.files()) {
      if (!IsHexSha256(f.sha256()) || !SafeExtension(f.extension())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "assignment names a bad file \"", f.sha256(), f.extension(), "\""));
      }
      if (f.label() < 0 ||
          f.label() >= static_cast<int64_t>(data.classes.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("assignment labels a file ", f.label(), " of ",
                         data.classes.size(), " classes"));
      }
      const fs::path path = ContentDir() / (f.sha256() + f.extension());
      std::error_code ec;
      const bool have =
          fs::exists(path, ec) &&
          static_cast<int64_t>(fs::file_size(path, ec)) == f.bytes();
      if (!have && asked.insert(f.sha256()).second) missing.push_back(&f);
      if (have) report.set_files_cached(report.files_cached() + 1);
      core::data::Example e{path.string(), f.label()};
      switch (static_cast<int>(f.split())) {
        case static_cast<int>(common::Split::kTrain):
          data.train.push_back(e);
          break;
        case static_cast<int>(common::Split::kValidation):
          data.validation.push_back(e);
          break;
        case static_cast<int>(common::Split::kTest):
          data.test.push_back(e);
          break;
        default:
          break;
      }
    }
    if (absl::Status s = Fetch(missing, report); !s.ok()) return s;

    v1::RankReport ready;
    ready.set_worker_id(report.worker_id());
    ready.set_run_id(a.run_id());
    ready.set_rank(a.rank());
    ready.set_ready(true);
    Report(ready);

    core::train::RendezvousOptions r;
    r.master_addr = a.master_addr();
    r.master_port = a.master_port();
    r.local_addr = options.advertise_address;
    r.rank = a.rank();
    r.world_size = a.world_size();
    r.run_id = a.run_id();
    r.timeout = std::chrono::seconds(std::max(1, a.timeout_seconds()));
    absl::StatusOr<std::shared_ptr<core::train::Collective>> group =
        core::train::JoinProcessGroup(r, core::ToTorchDevice(engine.device()));
    if (!group.ok()) return group.status();

    core::train::TrainerEnv env;
    env.device = engine.device();
    env.weights = engine.weights_cache();
    env.cache_dir = engine.data_dir().cache_dir();
    env.checkpoint_dir =
        engine.data_dir().cache_dir() / "cluster-runs" / a.run_id();
    env.loader_threads = engine.options().loader_threads;
    env.decoded_cache_bytes = engine.options().decoded_cache_bytes;
    env.arbiter = &engine.arbiter();
    env.collective = *group;
    env.weights_from_rank0 = true;
    absl::StatusOr<std::unique_ptr<core::train::Trainer>> trainer =
        core::train::Trainer::Create(*config, data, env);
    if (!trainer.ok()) return trainer.status();
    core::train::TrainerCallbacks callbacks;
    callbacks.cancelled = [this] { return cancel_rank.load(); };
    absl::StatusOr<core::train::TrainResult> result =
        (*trainer)->Run(callbacks);
    report.set_collective_seconds((*group)->seconds());
    std::error_code ec;
    fs::remove_all(env.checkpoint_dir, ec);
    return result.status();
  }

  void RunRank(const v1::RankAssignment& a, const std::string& id) {
    const std::string what =
        absl::StrCat(a.job(), " rank ", a.rank(), " of ", a.world_size());
    engine.worker_state().Update(
        [&](core::WorkerSelfStatus& s) { s.running = what; });
    LogFields(spdlog::level::info, "rank started",
              {{"job", a.job()},
               {"run", a.run_id()},
               {"rank", std::to_string(a.rank())},
               {"world", std::to_string(a.world_size())}});
    v1::RankReport report;
    report.set_worker_id(id);
    report.set_run_id(a.run_id());
    report.set_rank(a.rank());
    absl::Status status;
    try {
      status = RunRankSteps(a, report);
    } catch (const std::exception& e) {
      status = absl::InternalError(e.what());
    }
    report.set_ok(status.ok());
    report.set_error(std::string(status.message()));
    LogFields(status.ok() ? spdlog::level::info : spdlog::level::warn,
              "rank ended",
              {{"job", a.job()},
               {"run", a.run_id()},
               {"status", status.ok() ? "ok" : status.ToString()},
               {"files_fetched", std::to_string(report.files_fetched())},
               {"files_cached", std::to_string(report.files_cached())}});
    Report(report);
    engine.worker_state().Update(
        [](core::WorkerSelfStatus& s) { s.running.clear(); });
  }
};

absl::StatusOr<std::unique_ptr<Worker>> Worker::Start(WorkerOptions options,
                                                      core::Engine& engine) {
  auto impl = std::make_unique<Impl>(std::move(options), engine);
  const WorkerOptions& o = impl->options;
  absl::StatusOr<std::string> token =
      peer::ReadBearerToken(o.token_file, "--worker-token-file", "coordinator");
  if (!token.ok()) return token.status();
  impl->token = *std::move(token);
  peer::ChannelOptions channel;
  channel.address = o.coordinator;
  channel.tls = o.tls;
  channel.ca_file = o.tls_ca_file;
  channel.cert_file = o.tls_cert_file;
  channel.key_file = o.tls_key_file;
  channel.server_name = o.tls_server_name;
  channel.user_agent =
      absl::StrCat("transferd-worker/", core::GetBuildInfo().version);
  channel.max_receive_message_bytes = 256 * 1024 * 1024;
  impl->channel = peer::Connect(channel);
  impl->stub = v1::Cluster::NewStub(impl->channel);
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Worker::~Worker() { Stop(); }

void Worker::Stop() {
  if (impl_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
    if (impl_->join_ctx != nullptr) impl_->join_ctx->TryCancel();
  }
  impl_->cancel_rank = true;
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::thread rank;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    rank = std::move(impl_->rank_thread);
  }
  if (rank.joinable()) rank.join();
}

}  // namespace transferd::cluster
