// transferd.v1.Models: models, aliases, and export and import of archives
// (server/core/model_archive.h) over the engine's registry.
#include "server/rpc/models_service.h"

#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/model_transfer.h"
#include "server/core/util/executor.h"
#include "server/rpc/alias_watch.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"
namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;

// ExportModel: the archive is written to tmp/ on the engine's executor, then
// streamed a chunk at a time (one write in flight), each chunk read on the
// executor too; the file is removed when the call ends, however it ends.
class ExportReactor final
    : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  static constexpr int64_t kChunkBytes = 1 << 20;

  ExportReactor(core::api::EngineApi& api, core::ModelInfo model) : api_(api) {
    api_.executor().Schedule([this, model = std::move(model)] {
      absl::StatusOr<std::unique_ptr<core::ModelExport>> exported =
          api_.ExportModel(model);
      std::unique_lock<std::mutex> lock(mu_);
      if (!exported.ok()) {
        Act(lock, FinishLocked(ToGrpcStatus(exported.status())));
        return;
      }
      export_ = *std::move(exported);
      Act(lock, NextLocked());
    });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      if (!finished_) {
        finished_ = true;
        Finish(
            grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      }
      return;
    }
    reading_ = true;
    api_.executor().Schedule([this] {
      std::unique_lock<std::mutex> lock(mu_);
      reading_ = false;
      Act(lock, NextLocked());
    });
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    // Otherwise the write or the executor's next step sees cancelled_.
    if (!writing_ && !reading_ && export_ != nullptr && !finished_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    export_.reset();  // removes the file
    delete this;
  }

 private:
  // What an executor step does once it has let go of mu_: gRPC may call
  // OnDone as soon as Finish is called, so nothing of this reactor may be
  // touched after it (or after StartWrite, whose completion may finish).
  struct Step {
    enum { kNothing, kWrite, kFinish } what = kNothing;
    grpc::Status status;
  };

  void Act(std::unique_lock<std::mutex>& lock, const Step& step) {
    lock.unlock();
    if (step.what == Step::kWrite) StartWrite(&chunk_);
    if (step.what == Step::kFinish) Finish(step.status);
  }

  Step FinishLocked(grpc::Status status) {
    if (finished_) return {};
    finished_ = true;
    return {Step::kFinish, std::move(status)};
  }

  // With mu_ held: the next chunk into chunk_, or the end.
  Step NextLocked() {
    if (finished_) return {};
    if (cancelled_) return FinishLocked(grpc::Status::CANCELLED);
    if (export_->done()) return FinishLocked(grpc::Status::OK);
    if (api_.shutting_down()) {
      return FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       "the server is shutting down; export again later"));
    }
    const int64_t offset = export_->offset();
    absl::StatusOr<std::string_view> data = export_->Next(kChunkBytes);
    if (!data.ok()) return FinishLocked(ToGrpcStatus(data.status()));
    chunk_.Clear();
    chunk_.set_data(data->data(), data->size());
    chunk_.set_offset(offset);
    chunk_.set_total_bytes(export_->total_bytes());
    if (export_->done()) chunk_.set_sha256(export_->sha256());
    writing_ = true;
    return {Step::kWrite, grpc::Status::OK};
  }

  core::api::EngineApi& api_;
  std::mutex mu_;
  std::unique_ptr<core::ModelExport> export_;
  v1::ExportModelChunk chunk_;
  bool writing_ = false;
  bool reading_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
};

class FinishedExport final
    : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  explicit FinishedExport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// ImportModel: the header, then the archive's bytes, into a core::ModelImport
// (a file in tmp/, bounded by the dataset size limit and the free-disk
// floor); at the end of the stream the registry checks and registers it.
// Every message is handled on the engine's executor, one at a time (the next
// read starts when the last one is handled); the file is removed when the
// call ends, however it ends.
class ImportReactor final
    : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  ImportReactor(core::api::EngineApi& api, grpc::CallbackServerContext* ctx,
                v1::Model* response)
      : api_(api), ctx_(ctx), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    api_.executor().Schedule([this, ok] { Handle(ok); });
  }

  void OnDone() override {
    import_.reset();  // removes the file
    delete this;
  }

 private:
  // On the executor. Ends with StartRead or Finish, and touches nothing
  // after either (the next callback, or OnDone, may run at once).
  void Handle(bool ok) {
    if (!ok) {
      // The client half-closed (or went away: then Finish is a no-op).
      Done(ctx_->IsCancelled() ? grpc::Status::CANCELLED : Commit());
      return;
    }
    if (api_.shutting_down()) {
      Done(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "the server is shutting down; the import was discarded"));
      return;
    }
    const bool header = request_.has_header();
    if (absl::Status status = Take(); !status.ok()) {
      Done(ToGrpcStatus(status));
      return;
    }
    if (header) AcceptUpload(*ctx_, *this);
    StartRead(&request_);
  }

  absl::Status Take() {
    if (request_.has_header()) {
      if (import_ != nullptr) {
        return absl::InvalidArgumentError(
            "header: sent twice (it must come once, first)");
      }
      core::ModelImportSpec spec;
      spec.model_id = request_.header().model_id();
      spec.display_name = request_.header().display_name();
      spec.total_bytes = request_.header().total_bytes();
      absl::StatusOr<std::unique_ptr<core::ModelImport>> import =
          api_.BeginModelImport(std::move(spec));
      if (!import.ok()) return import.status();
      import_ = *std::move(import);
      return absl::OkStatus();
    }
    if (request_.payload_case() != v1::ImportModelRequest::kData) {
      return absl::InvalidArgumentError(
          "request carries neither a header nor data");
    }
    if (import_ == nullptr) {
      return absl::InvalidArgumentError(
          "header: the first message must be the header");
    }
    return import_->Append(request_.data());
  }

  grpc::Status Commit() {
    if (import_ == nullptr) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: the stream ended before the header");
    }
    absl::StatusOr<core::ModelInfo> model = import_->Commit();
    if (!model.ok()) return ToGrpcStatus(model.status());
    ToProto(*model, response_);
    return grpc::Status::OK;
  }

  void Done(const grpc::Status& status) {
    import_.reset();  // the temporary file goes before the answer
    Finish(status);
  }

  core::api::EngineApi& api_;
  grpc::CallbackServerContext* ctx_;
  v1::Model* response_;
  v1::ImportModelRequest request_;
  std::unique_ptr<core::ModelImport> import_;
};

class FinishedImport final
    : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  explicit FinishedImport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

class FinishedWatch final : public grpc::ServerWriteReactor<v1::AliasSnapshot> {
 public:
  explicit FinishedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

ModelsService::ModelsService(core::api::EngineApi& api,
                             const auth::Authorizer& auth,
                             std::chrono::milliseconds alias_heartbeat)
    : api_(api),
      auth_(auth),
      alias_watch_(std::make_unique<AliasWatchHub>(api, alias_heartbeat)) {}

ModelsService::~ModelsService() = default;

grpc::ServerUnaryReactor* ModelsService::GetModel(
    grpc::CallbackServerContext* ctx, const v1::GetModelRequest* request,
    v1::Model* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Models.GetModel");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::ModelInfo> model = api_.GetModel(request->name());
  if (!model.ok()) return Answer(ctx, ToGrpcStatus(model.status()));
  ToProto(*model, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::ListModels(
    grpc::CallbackServerContext* ctx, const v1::ListModelsRequest* request,
    v1::ListModelsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Models.ListModels");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::api::Page<core::ModelInfo>> models =
      api_.ListModels({request->page_size(), request->page_token()});
  if (!models.ok()) return Answer(ctx, ToGrpcStatus(models.status()));
  for (const core::ModelInfo& m : models->items) {
    ToListingProto(m, response->add_models());  // GetModel has the rest
  }
  response->set_next_page_token(models->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteModel(
    grpc::CallbackServerContext* ctx, const v1::DeleteModelRequest* request,
    google::protobuf::Empty*) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kAdmin, "Models.DeleteModel");
      !s.ok())
    return Answer(ctx, s);
  return Answer(ctx, ToGrpcStatus(api_.DeleteModel(request->name())));
}

grpc::ServerUnaryReactor* ModelsService::SetAlias(
    grpc::CallbackServerContext* ctx, const v1::SetAliasRequest* request,
    v1::Alias* response) {
  if (grpc::Status s = Admit(ctx, api_, auth_, Role::kAdmin, "Models.SetAlias");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::AliasInfo> set =
      api_.SetAlias(request->alias(), request->model());
  if (!set.ok()) return Answer(ctx, ToGrpcStatus(set.status()));
  ToProto(*set, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteAlias(
    grpc::CallbackServerContext* ctx, const v1::DeleteAliasRequest* request,
    google::protobuf::Empty*) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kAdmin, "Models.DeleteAlias");
      !s.ok())
    return Answer(ctx, s);
  return Answer(ctx, ToGrpcStatus(api_.DeleteAlias(request->alias())));
}

grpc::ServerUnaryReactor* ModelsService::ListAliases(
    grpc::CallbackServerContext* ctx, const v1::ListAliasesRequest* request,
    v1::ListAliasesResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Models.ListAliases");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::api::Page<core::AliasInfo>> aliases =
      api_.ListAliases({request->page_size(), request->page_token()});
  if (!aliases.ok()) return Answer(ctx, ToGrpcStatus(aliases.status()));
  for (const core::AliasInfo& a : aliases->items) {
    ToProto(a, response->add_aliases());
  }
  response->set_next_page_token(aliases->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::ExportModelChunk>* ModelsService::ExportModel(
    grpc::CallbackServerContext* ctx, const v1::ExportModelRequest* request) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Models.ExportModel");
      !s.ok()) {
    return new FinishedExport(s);
  }
  absl::StatusOr<core::ModelInfo> model = api_.GetModel(request->name());
  if (!model.ok()) return new FinishedExport(ToGrpcStatus(model.status()));
  return new ExportReactor(api_, *model);
}

grpc::ServerReadReactor<v1::ImportModelRequest>* ModelsService::ImportModel(
    grpc::CallbackServerContext* ctx, v1::Model* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Models.ImportModel");
      !s.ok()) {
    return new FinishedImport(s);
  }
  return new ImportReactor(api_, ctx, response);
}

grpc::ServerWriteReactor<v1::AliasSnapshot>* ModelsService::WatchAliases(
    grpc::CallbackServerContext* ctx, const v1::WatchAliasesRequest*) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Models.WatchAliases");
      !s.ok()) {
    return new FinishedWatch(s);
  }
  return alias_watch_->Watch();
}

}  // namespace transferd::rpc
