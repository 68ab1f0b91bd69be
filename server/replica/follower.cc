#include "server/replica/follower.h"

#include <map>
#include <set>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "server/core/engine.h"
#include "server/core/replica.h"
#include "server/core/util/build_info.h"
#include "server/core/util/log.h"
#include "server/peer/peer_channel.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd::replica {

namespace v1 = transferd::v1;
using Clock = std::chrono::steady_clock;
using core::LogFields;

namespace {

constexpr int kPullTries = 3;
constexpr std::chrono::seconds kMaxPullPause{300};
constexpr std::chrono::seconds kPullStall{30};
constexpr char kModels[] = "models/";
constexpr char kAliases[] = "aliases/";

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(static_cast<int>(status.error_code()), " ",
                      status.error_message());
}

}  // namespace

struct Follower::Impl {
  FollowerOptions options;
  core::Engine& engine;
  core::Replica& replica;
  std::string token;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Models::Stub> stub;

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  // The calls under way, cancelled by Stop() and by the watchdog.
  grpc::ClientContext* watch_ctx = nullptr;
  grpc::ClientContext* pull_ctx = nullptr;
  // While the thread waits in the watch's Read: since when (the watchdog
  // cancels a read that hears nothing for three heartbeats).
  std::optional<Clock::time_point> reading_since;
  // While a pull runs: when its last chunk arrived (the watchdog cancels a
  // pull that stalls for kPullStall).
  Clock::time_point pull_progress;
  std::chrono::seconds heartbeat{5};
  int corrupt_left = 0;
  std::thread thread, watchdog;
  // Only the following thread touches it.
  struct PullBackoff {
    std::chrono::seconds pause{0};
    Clock::time_point next_try;
  };
  std::map<std::string, PullBackoff> pull_backoff;

  Impl(FollowerOptions o, core::Engine& e)
      : options(std::move(o)), engine(e), replica(*e.replica()) {
    corrupt_left = options.test_corrupt_pulls;
  }

  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu);
    return stopping;
  }

  void Authorize(grpc::ClientContext& ctx) const {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  }

  void Run() {
    std::chrono::milliseconds backoff = options.min_backoff;
    bool was_connected = false;
    std::string last_logged_error;
    while (!Stopping()) {
      grpc::ClientContext ctx;
      Authorize(ctx);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) break;
        watch_ctx = &ctx;
      }
      std::unique_ptr<grpc::ClientReader<v1::AliasSnapshot>> reader =
          stub->WatchAliases(&ctx, v1::WatchAliasesRequest());
      v1::AliasSnapshot snapshot;
      bool heard = false;
      while (Read(*reader, &snapshot)) {
        if (!heard) {
          heard = true;
          backoff = options.min_backoff;
          replica.Connected(true, "");
          LogFields(spdlog::level::info, "following the primary",
                    {{"primary", options.primary}});
          was_connected = true;
          last_logged_error.clear();
        }
        replica.Contact();
        if (snapshot.heartbeat_seconds() > 0) {
          std::lock_guard<std::mutex> lock(mu);
          heartbeat = std::chrono::seconds(snapshot.heartbeat_seconds());
        }
        Sync(snapshot);
      }
      const grpc::Status status = reader->Finish();
      {
        std::lock_guard<std::mutex> lock(mu);
        watch_ctx = nullptr;
      }
      if (Stopping()) break;
      const std::string error = absl::StrCat(
          "watch on the primary ", options.primary,
          " ended: ", status.ok() ? "the stream closed" : Describe(status));
      replica.Connected(false, error);
      if (was_connected || error != last_logged_error) {
        LogFields(spdlog::level::warn,
                  "primary lost; serving the last synced models",
                  {{"primary", options.primary}, {"message", error}});
        was_connected = false;
        last_logged_error = error;
      }
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, backoff, [&] { return stopping; });
      backoff = std::min(options.max_backoff, backoff * 2);
    }
  }

  bool Read(grpc::ClientReader<v1::AliasSnapshot>& reader,
            v1::AliasSnapshot* snapshot) {
    {
      std::lock_guard<std::mutex> lock(mu);
      reading_since = Clock::now();
    }
    const bool ok = reader.Read(snapshot);
    std::lock_guard<std::mutex> lock(mu);
    reading_since.reset();
    return ok && !stopping;
  }

  // Cancels a watch that has heard nothing for three heartbeats.
  void Watchdog() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::milliseconds(500),
                  [&] { return stopping; });
      if (stopping) break;
      const auto now = Clock::now();
      if (reading_since.has_value() && watch_ctx != nullptr &&
          now - *reading_since > 3 * heartbeat) {
        watch_ctx->TryCancel();
        reading_since.reset();
      }
      if (pull_ctx != nullptr && now - pull_progress > kPullStall) {
        pull_ctx->TryCancel();
        pull_progress = now;
      }
    }
  }

  void Sync(const v1::AliasSnapshot& snapshot) {
    std::map<std::string, std::string> target;
    for (const v1::Alias& a : snapshot.aliases()) {
      if (!absl::StartsWith(a.name(), kAliases) ||
          !absl::StartsWith(a.model(), kModels)) {
        replica.Error(absl::StrCat("the primary sent an alias named \"",
                                   a.name().substr(0, 100), "\" -> \"",
                                   a.model().substr(0, 100), "\"; ignored"));
        continue;
      }
      target[a.name().substr(sizeof(kAliases) - 1)] =
          a.model().substr(sizeof(kModels) - 1);
    }
    std::set<std::string> wanted;
    for (const auto& [alias, id] : target) wanted.insert(id);
    for (const std::string& id : wanted) {
      if (replica.HasModel(id)) continue;
      // A model whose pulls keep failing (a primary that cannot export it, a
      // replica that cannot build it) is tried again after a growing pause,
      // not at every heartbeat.
      auto backoff = pull_backoff.find(id);
      if (backoff != pull_backoff.end() &&
          Clock::now() < backoff->second.next_try) {
        continue;
      }
      bool pulled = false;
      for (int attempt = 1; attempt <= kPullTries && !Stopping() && !pulled;
           ++attempt) {
        pulled = Pull(id, attempt);
      }
      if (pulled) {
        pull_backoff.erase(id);
      } else if (!Stopping()) {
        PullBackoff& b = pull_backoff[id];
        b.pause = std::min(kMaxPullPause, b.pause == std::chrono::seconds(0)
                                              ? std::chrono::seconds(5)
                                              : b.pause * 2);
        b.next_try = Clock::now() + b.pause;
      }
    }
    // Models no alias names any more are not retried.
    for (auto it = pull_backoff.begin(); it != pull_backoff.end();) {
      it = wanted.count(it->first) > 0 ? std::next(it) : pull_backoff.erase(it);
    }
    if (Stopping()) return;
    absl::Status applied = replica.Apply(target, [this] { return Stopping(); });
    if (!applied.ok() && !Stopping()) {
      LogFields(spdlog::level::warn, "replica not in sync",
                {{"message", std::string(applied.message())}});
    }
  }

  // One ExportModel of `id` into a local import; true once registered.
  bool Pull(const std::string& id, int attempt) {
    const auto start = Clock::now();
    grpc::ClientContext ctx;
    Authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return false;
      pull_ctx = &ctx;
      pull_progress = Clock::now();
    }
    v1::ExportModelRequest request;
    request.set_name(absl::StrCat(kModels, id));
    std::unique_ptr<grpc::ClientReader<v1::ExportModelChunk>> reader =
        stub->ExportModel(&ctx, request);
    v1::ExportModelChunk chunk;
    std::unique_ptr<core::ModelImport> import;
    common::Sha256 hash;
    int64_t received = 0, total = -1;
    std::string primary_sha, refused, failed;
    while (reader->Read(&chunk)) {
      {
        std::lock_guard<std::mutex> lock(mu);
        pull_progress = Clock::now();
      }
      if (import == nullptr) {
        total = chunk.total_bytes();
        absl::StatusOr<std::unique_ptr<core::ModelImport>> begun =
            replica.BeginPull(id, total);
        if (!begun.ok()) {
          failed =
              absl::StrCat("cannot store it here: ", begun.status().message());
          ctx.TryCancel();
          break;
        }
        import = *std::move(begun);
      }
      if (chunk.offset() != received || chunk.total_bytes() != total) {
        refused = absl::StrCat("chunk at offset ", chunk.offset(), " where ",
                               received, " was expected");
        ctx.TryCancel();
        break;
      }
      std::string* data = chunk.mutable_data();
      if (!data->empty() && received == 0 && TakeCorruption()) {
        (*data)[data->size() / 2] ^= 0x5a;
      }
      hash.Update(*data);
      received += static_cast<int64_t>(data->size());
      if (absl::Status s = import->Append(*data); !s.ok()) {
        failed = absl::StrCat("cannot store it here: ", s.message());
        ctx.TryCancel();
        break;
      }
      if (!chunk.sha256().empty()) primary_sha = chunk.sha256();
    }
    const grpc::Status status = reader->Finish();
    {
      std::lock_guard<std::mutex> lock(mu);
      pull_ctx = nullptr;
    }
    if (refused.empty() && failed.empty()) {
      if (!status.ok()) {
        failed = Describe(status);
      } else if (import == nullptr || received != total ||
                 primary_sha.empty()) {
        refused = absl::StrCat("the archive ended after ", received, " of ",
                               total, " bytes without its hash");
      } else if (hash.HexDigest() != absl::AsciiStrToLower(primary_sha)) {
        refused = absl::StrCat("SHA-256 ", hash.HexDigest(),
                               " of the bytes received differs from the "
                               "primary's ",
                               primary_sha);
      } else if (absl::StatusOr<core::ModelInfo> model = import->Commit();
                 !model.ok()) {
        refused =
            absl::StrCat("the archive is invalid: ", model.status().message());
      }
    }
    import.reset();  // the temporary file, unless registered
    const double seconds =
        std::chrono::duration<double>(Clock::now() - start).count();
    if (refused.empty() && failed.empty()) {
      replica.PullDone(core::PullResult::kOk, received, "");
      LogFields(spdlog::level::info, "model pulled from the primary",
                {{"model", id},
                 {"bytes", std::to_string(received)},
                 {"seconds", absl::StrCat(seconds)}});
      return true;
    }
    const bool was_refused = !refused.empty();
    const std::string message = absl::StrCat(
        "pull of model ", id, " (try ", attempt, " of ", kPullTries, ") ",
        was_refused ? "refused: " : "failed: ", was_refused ? refused : failed);
    replica.PullDone(
        was_refused ? core::PullResult::kRefused : core::PullResult::kFailed,
        received, message);
    if (!Stopping()) {
      LogFields(spdlog::level::warn, "model pull did not succeed",
                {{"model", id}, {"message", message}});
    }
    return false;
  }

  bool TakeCorruption() {
    std::lock_guard<std::mutex> lock(mu);
    if (corrupt_left <= 0) return false;
    --corrupt_left;
    return true;
  }
};

absl::StatusOr<std::unique_ptr<Follower>> Follower::Start(
    FollowerOptions options, core::Engine& engine) {
  if (engine.replica() == nullptr) {
    return absl::FailedPreconditionError(
        "the engine was not started as a replica (follow_primary)");
  }
  auto impl = std::make_unique<Impl>(std::move(options), engine);
  const FollowerOptions& o = impl->options;
  absl::StatusOr<std::string> token =
      peer::ReadBearerToken(o.token_file, "--follow-token-file", "primary");
  if (!token.ok()) return token.status();
  impl->token = *std::move(token);
  peer::ChannelOptions channel;
  channel.address = o.primary;
  channel.tls = o.tls;
  channel.ca_file = o.tls_ca_file;
  channel.cert_file = o.tls_cert_file;
  channel.key_file = o.tls_key_file;
  channel.server_name = o.tls_server_name;
  channel.user_agent =
      absl::StrCat("transferd-replica/", core::GetBuildInfo().version);
  impl->channel = peer::Connect(channel);
  impl->stub = v1::Models::NewStub(impl->channel);
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] { raw->Run(); });
  raw->watchdog = std::thread([raw] { raw->Watchdog(); });
  return std::unique_ptr<Follower>(new Follower(std::move(impl)));
}

Follower::Follower(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Follower::~Follower() { Stop(); }

void Follower::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping && !impl_->thread.joinable()) return;
    impl_->stopping = true;
    if (impl_->watch_ctx != nullptr) impl_->watch_ctx->TryCancel();
    if (impl_->pull_ctx != nullptr) impl_->pull_ctx->TryCancel();
  }
  impl_->cv.notify_all();
  impl_->replica.Interrupt();
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
}

}  // namespace transferd::replica
