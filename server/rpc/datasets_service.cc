#include "server/rpc/datasets_service.h"

#include <memory>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/datasets.h"
#include "server/core/util/executor.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;

// Reads the stream message by message. The header opens a DatasetUpload;
// each chunk goes straight into it, so memory holds one file at most. Any
// error ends the call at once and the upload's destructor removes its files.
class UploadReactor final
    : public grpc::ServerReadReactor<v1::UploadDatasetRequest> {
 public:
  UploadReactor(core::api::EngineApi& api, grpc::CallbackServerContext* ctx,
                v1::UploadDatasetResponse* response)
      : api_(api), ctx_(ctx), response_(response) {
    StartRead(&request_);
  }

  // Each message is handled on the engine's executor (checking and
  // decoding images, writing files, the commit's SQLite transaction), never
  // on gRPC's threads; the next read starts once it is handled.
  void OnReadDone(bool ok) override {
    api_.executor().Schedule([this, ok] { HandleRead(ok); });
  }

  void OnDone() override { delete this; }

 private:
  // Ends with StartRead or Finish and touches nothing after either.
  void HandleRead(bool ok) {
    if (!ok) {
      // The client half-closed (or went away: then Finish is a no-op).
      Done(ctx_->IsCancelled() ? grpc::Status::CANCELLED : Commit());
      return;
    }
    if (api_.shutting_down()) {
      Done(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "the server is shutting down; the upload was discarded"));
      return;
    }
    const bool header = request_.has_header();
    absl::Status status = Handle();
    if (!status.ok()) {
      Done(ToGrpcStatus(status));
      return;
    }
    // The header passed: tell the client to send the files (before it,
    // the client sends nothing more; see common/stream_protocol.h).
    if (header) AcceptUpload(*ctx_, *this);
    StartRead(&request_);
  }

  absl::Status Handle() {
    if (request_.has_header()) {
      if (upload_ != nullptr) {
        return absl::InvalidArgumentError(
            "header: sent twice (it must come once, first)");
      }
      absl::StatusOr<core::UploadSpec> spec = SpecFromHeader(request_.header());
      if (!spec.ok()) return spec.status();
      absl::StatusOr<std::unique_ptr<core::DatasetUpload>> upload =
          api_.BeginUpload(*std::move(spec));
      if (!upload.ok()) return upload.status();
      upload_ = *std::move(upload);
      return absl::OkStatus();
    }
    if (!request_.has_chunk()) {
      return absl::InvalidArgumentError(
          "request carries neither a header nor a chunk");
    }
    if (upload_ == nullptr) {
      return absl::InvalidArgumentError(
          "header: the first message must be the header");
    }
    const v1::FileChunk& c = request_.chunk();
    core::UploadChunk chunk;
    chunk.path = c.path();
    chunk.label = c.label();
    chunk.size = c.size();
    chunk.data = c.data();
    chunk.last = c.last();
    return upload_->Add(chunk);
  }

  grpc::Status Commit() {
    if (upload_ == nullptr) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: the stream ended before the header");
    }
    absl::StatusOr<core::UploadResult> result = upload_->Commit();
    if (!result.ok()) return ToGrpcStatus(result.status());
    ToProto(result->dataset, response_->mutable_dataset());
    for (const core::RejectedFile& r : result->rejected) {
      ToProto(r, response_->add_rejected());
    }
    response_->set_accepted_files(result->accepted_files);
    response_->set_duplicate_files(result->duplicate_files);
    return grpc::Status::OK;
  }

  void Done(const grpc::Status& status) {
    upload_.reset();  // removes an uncommitted upload's files before answering
    Finish(status);
  }

  core::api::EngineApi& api_;
  grpc::CallbackServerContext* ctx_;
  v1::UploadDatasetResponse* response_;
  v1::UploadDatasetRequest request_;
  std::unique_ptr<core::DatasetUpload> upload_;
};

// Answers one request at once.
class RejectingReader final
    : public grpc::ServerReadReactor<v1::UploadDatasetRequest> {
 public:
  explicit RejectingReader(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerReadReactor<v1::UploadDatasetRequest>*
DatasetsService::UploadDataset(grpc::CallbackServerContext* ctx,
                               v1::UploadDatasetResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Datasets.UploadDataset");
      !s.ok()) {
    return new RejectingReader(s);
  }
  return new UploadReactor(api_, ctx, response);
}

grpc::ServerUnaryReactor* DatasetsService::GetDataset(
    grpc::CallbackServerContext* ctx, const v1::GetDatasetRequest* request,
    v1::Dataset* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Datasets.GetDataset");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::DatasetInfo> info = api_.GetDataset(request->name());
  if (!info.ok()) return Answer(ctx, ToGrpcStatus(info.status()));
  ToProto(*info, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* DatasetsService::ListDatasets(
    grpc::CallbackServerContext* ctx, const v1::ListDatasetsRequest* request,
    v1::ListDatasetsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kViewer, "Datasets.ListDatasets");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<core::api::Page<core::DatasetInfo>> page =
      api_.ListDatasets({request->page_size(), request->page_token()});
  if (!page.ok()) return Answer(ctx, ToGrpcStatus(page.status()));
  for (const core::DatasetInfo& d : page->items) {
    ToProto(d, response->add_datasets());
  }
  response->set_next_page_token(page->next_page_token);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* DatasetsService::DeleteDataset(
    grpc::CallbackServerContext* ctx, const v1::DeleteDatasetRequest* request,
    google::protobuf::Empty* /*response*/) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kAdmin, "Datasets.DeleteDataset");
      !s.ok())
    return Answer(ctx, s);
  return Answer(ctx, ToGrpcStatus(api_.DeleteDataset(request->name())));
}

}  // namespace transferd::rpc
