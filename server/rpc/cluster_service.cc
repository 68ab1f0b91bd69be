#include "server/rpc/cluster_service.h"

#include <deque>
#include <optional>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/core/api/engine_api.h"
#include "server/core/cluster.h"
#include "server/core/engine.h"
#include "server/core/util/build_info.h"
#include "server/core/util/log.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {

namespace v1 = transferd::v1;

namespace {

// Content chunks sent to a worker.
constexpr size_t kContentChunkBytes = 1 << 20;
// Contents one FetchContent call may ask for.
constexpr int kMaxFetch = 10000;

// A server-streaming call refused before it starts.
template <class Message>
class Refused final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit Refused(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

v1::ClusterMessage AssignmentToProto(const core::RankAssignment& a) {
  v1::ClusterMessage m;
  v1::RankAssignment* o = m.mutable_assignment();
  o->set_job(absl::StrCat("jobs/", a.job_id));
  o->set_run_id(a.run_id);
  o->set_rank(a.rank);
  o->set_world_size(a.world_size);
  o->set_master_addr(a.master_addr);
  o->set_master_port(a.master_port);
  o->set_config_json(a.config_json);
  for (const std::string& c : a.classes) o->add_classes(c);
  for (const core::ShardFile& f : a.files) {
    v1::ShardFile* s = o->add_files();
    s->set_sha256(f.sha256);
    s->set_extension(f.extension);
    s->set_label(f.label);
    s->set_split(static_cast<v1::Split>(static_cast<int>(f.split)));
    s->set_bytes(f.bytes);
  }
  o->set_timeout_seconds(a.timeout_seconds);
  o->set_dataset(absl::StrCat("datasets/", a.dataset_id));
  return m;
}

}  // namespace

// One worker's membership stream. Messages wait in a queue until written;
// heartbeats are only offered to an idle stream. gRPC may run a reaction
// inline from StartWrite or Finish, so neither is called with mu_ held.
class ClusterService::Member final
    : public grpc::ServerWriteReactor<v1::ClusterMessage> {
 public:
  Member(ClusterService& service, int heartbeat_seconds)
      : service_(service), heartbeat_seconds_(heartbeat_seconds) {}

  // Begins writing: the member id first, then whatever was offered.
  void Start(const std::string& id) {
    v1::ClusterMessage welcome;
    welcome.set_worker_id(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      id_ = id;
      queue_.push_front(std::move(welcome));
      started_ = true;
    }
    WriteNext();
  }

  // Queues `m`; false when the stream has ended.
  bool Offer(v1::ClusterMessage m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finish_called_) return false;
      queue_.push_back(std::move(m));
    }
    WriteNext();
    return true;
  }

  void Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finish_called_ || writing_ || !queue_.empty() || !started_) return;
      queue_.emplace_back();
    }
    WriteNext();
  }

  void Close(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finish_called_) return;
      finish_called_ = true;
      if (writing_) {
        finish_pending_ = status;
        return;
      }
    }
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (finish_pending_.has_value()) {
        finish = std::move(finish_pending_);
        finish_pending_.reset();
      } else if (!ok && !finish_called_) {
        finish_called_ = true;
        finish =
            grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away");
      }
    }
    if (finish.has_value()) {
      Finish(*finish);
      return;
    }
    WriteNext();
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override {
    std::string id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = id_;
    }
    if (!id.empty()) {
      if (core::ClusterRegistry* cluster = service_.engine_.cluster()) {
        cluster->Leave(id);
      }
      core::LogFields(spdlog::level::info, "worker left", {{"worker", id}});
    }
    service_.Remove(this);
  }

 private:
  void WriteNext() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!started_ || writing_ || finish_called_ || queue_.empty()) return;
      current_ = std::move(queue_.front());
      queue_.pop_front();
      current_.set_heartbeat_seconds(heartbeat_seconds_);
      writing_ = true;
    }
    StartWrite(&current_);
  }

  ClusterService& service_;
  const int heartbeat_seconds_;
  std::mutex mu_;
  std::string id_;
  std::deque<v1::ClusterMessage> queue_;
  v1::ClusterMessage current_;
  bool started_ = false;
  bool writing_ = false;
  bool finish_called_ = false;
  std::optional<grpc::Status> finish_pending_;
};

ClusterService::ClusterService(core::api::EngineApi& api, core::Engine& engine,
                               const auth::Authorizer& auth,
                               std::chrono::milliseconds heartbeat)
    : api_(api), engine_(engine), auth_(auth), heartbeat_(heartbeat) {
  thread_ = std::thread([this] { Heartbeats(); });
}

ClusterService::~ClusterService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ClusterService::Heartbeats() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, heartbeat_, [&] { return stop_; });
    if (stop_) break;
    const std::set<std::shared_ptr<Member>> members = members_;
    const bool closing = api_.shutting_down();
    lock.unlock();
    for (const auto& m : members) {
      if (closing) {
        m->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the coordinator is shutting down"));
      } else {
        m->Heartbeat();
      }
    }
    lock.lock();
  }
}

void ClusterService::Remove(Member* member) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = members_.begin(); it != members_.end(); ++it) {
    if (it->get() == member) {
      members_.erase(it);
      return;
    }
  }
}

grpc::ServerWriteReactor<v1::ClusterMessage>* ClusterService::Join(
    grpc::CallbackServerContext* ctx, const v1::JoinClusterRequest* request) {
  using Refuse = Refused<v1::ClusterMessage>;
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kWorker, "Cluster.Join");
      !s.ok()) {
    return new Refuse(s);
  }
  core::ClusterRegistry* cluster = engine_.cluster();
  if (cluster == nullptr) {
    return new Refuse(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "this server takes no workers (it is a worker or a replica)"));
  }
  if (request->name().empty()) {
    return new Refuse(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "name: must not be empty"));
  }
  const std::string& version = core::GetBuildInfo().version;
  if (request->version() != version) {
    return new Refuse(
        grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                     absl::StrCat("worker version ", request->version(),
                                  " differs from the coordinator's ", version,
                                  ": ranks must run the same transferd")));
  }
  const int heartbeat_seconds = static_cast<int>(std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(heartbeat_).count()));
  auto member = std::make_shared<Member>(*this, heartbeat_seconds);
  core::ClusterWorker worker;
  worker.name = request->name();
  worker.peer = ctx->peer();
  worker.device = DeviceFromProto(request->device());
  std::weak_ptr<Member> weak = member;
  absl::StatusOr<std::string> id =
      cluster->Join(worker, [weak](const core::RankAssignment& a) {
        std::shared_ptr<Member> m = weak.lock();
        return m != nullptr && m->Offer(AssignmentToProto(a));
      });
  if (!id.ok()) return new Refuse(ToGrpcStatus(id.status()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    members_.insert(member);
  }
  core::LogFields(spdlog::level::info, "worker joined",
                  {{"worker", *id},
                   {"name", worker.name},
                   {"peer", worker.peer},
                   {"device", worker.device.name}});
  member->Start(*id);
  return member.get();
}

grpc::ServerUnaryReactor* ClusterService::ReportRank(
    grpc::CallbackServerContext* ctx, const v1::RankReport* request,
    v1::RankReportResponse* /*response*/) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kWorker, "Cluster.ReportRank");
      !s.ok()) {
    return Answer(ctx, s);
  }
  core::ClusterRegistry* cluster = engine_.cluster();
  if (cluster == nullptr) {
    return Answer(ctx, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                    "this server takes no workers"));
  }
  core::RankReport r;
  r.worker_id = request->worker_id();
  r.run_id = request->run_id();
  r.rank = request->rank();
  r.ready = request->ready();
  r.ok = request->ok();
  r.error = request->error();
  r.files_fetched = request->files_fetched();
  r.bytes_fetched = request->bytes_fetched();
  r.files_cached = request->files_cached();
  r.collective_seconds = request->collective_seconds();
  return Answer(ctx, ToGrpcStatus(cluster->Report(r)));
}

// Streams each asked content, reading the next one from the catalog as the
// previous chunk is written (one content in memory at a time).
class ContentStream final : public grpc::ServerWriteReactor<v1::ContentChunk> {
 public:
  ContentStream(core::DatasetCatalog& datasets, std::vector<std::string> ids)
      : datasets_(datasets), ids_(std::move(ids)) {
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (offset_ >= bytes_.size()) {
      if (index_ == ids_.size()) {
        Finish(grpc::Status::OK);
        return;
      }
      absl::StatusOr<std::string> bytes = datasets_.HeldContent(ids_[index_]);
      if (!bytes.ok()) {
        Finish(ToGrpcStatus(bytes.status()));
        return;
      }
      bytes_ = *std::move(bytes);
      offset_ = 0;
      sha256_ = ids_[index_++];
    }
    const size_t n = std::min(kContentChunkBytes, bytes_.size() - offset_);
    chunk_.Clear();
    chunk_.set_sha256(sha256_);
    chunk_.set_data(bytes_.substr(offset_, n));
    offset_ += n;
    chunk_.set_last(offset_ >= bytes_.size());
    if (chunk_.last()) {
      bytes_.clear();
      offset_ = 0;
    }
    StartWrite(&chunk_);
  }

  core::DatasetCatalog& datasets_;
  std::vector<std::string> ids_;
  size_t index_ = 0;
  std::string sha256_;
  std::string bytes_;
  size_t offset_ = 0;
  v1::ContentChunk chunk_;
};

grpc::ServerWriteReactor<v1::ContentChunk>* ClusterService::FetchContent(
    grpc::CallbackServerContext* ctx, const v1::FetchContentRequest* request) {
  using Refuse = Refused<v1::ContentChunk>;
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kWorker, "Cluster.FetchContent");
      !s.ok()) {
    return new Refuse(s);
  }
  if (request->sha256_size() > kMaxFetch) {
    return new Refuse(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("sha256: at most ", kMaxFetch, " contents per call, got ",
                     request->sha256_size())));
  }
  if (request->sha256_size() == 0) {
    return new Refuse(grpc::Status::OK);
  }
  return new ContentStream(engine_.datasets(),
                           std::vector<std::string>(request->sha256().begin(),
                                                    request->sha256().end()));
}

}  // namespace transferd::rpc
