#include "server/rpc/datasets_service.h"

#include <memory>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/datasets.h"
#include "server/core/util/executor.h"
#include "server/core/util/status_macros.h"
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
  UploadReactor(core::api::EngineApi& api, const Authorizer& auth,
                grpc::CallbackServerContext* ctx,
                v1::UploadDatasetResponse* response)
      : api_(api), auth_(auth), ctx_(ctx), response_(response) {
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
      if (!request_.header().server_path().empty()) {
        // Reading the server's own volume is for admins.
        if (grpc::Status s =
                Admit(ctx_, api_, auth_, Role::kAdmin,
                      "Datasets.UploadDataset with header.server_path");
            !s.ok()) {
          return absl::PermissionDeniedError(s.error_message());
        }
        server_path_ = request_.header().server_path();
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
    if (!server_path_.empty()) {
      return absl::InvalidArgumentError(
          "an import (header.server_path) takes no chunks");
    }
    const v1::FileChunk& c = request_.chunk();
    core::UploadChunk chunk;
    chunk.path = c.path();
    chunk.label = c.label();
    chunk.size = c.size();
    chunk.data = c.data();
    chunk.last = c.last();
    chunk.sha256 = c.sha256();
    return upload_->Add(chunk);
  }

  grpc::Status Commit() {
    if (upload_ == nullptr) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: the stream ended before the header");
    }
    if (!server_path_.empty()) {
      if (absl::Status s = upload_->AddServerFolder(server_path_); !s.ok())
        return ToGrpcStatus(s);
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
  const Authorizer& auth_;
  grpc::CallbackServerContext* ctx_;
  v1::UploadDatasetResponse* response_;
  v1::UploadDatasetRequest request_;
  std::unique_ptr<core::DatasetUpload> upload_;
  std::string server_path_;  // an import from the server's volume
};

// Collects each content's chunks and stages it when its last chunk arrives
// (on the executor, as UploadReactor does). Contents staged before an error
// stay staged: that is what makes the transfer resumable.
class StageReactor final
    : public grpc::ServerReadReactor<v1::StageContentRequest> {
 public:
  StageReactor(core::api::EngineApi& api, grpc::CallbackServerContext* ctx,
               v1::StageContentResponse* response)
      : api_(api), ctx_(ctx), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    api_.executor().Schedule([this, ok] { HandleRead(ok); });
  }

  void OnDone() override { delete this; }

 private:
  void HandleRead(bool ok) {
    if (!ok) {
      if (ctx_->IsCancelled()) {
        Finish(grpc::Status::CANCELLED);
      } else if (!sha256_.empty()) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "the stream ended inside content " + sha256_ +
                                " (its last chunk must set last)"));
      } else {
        Finish(grpc::Status::OK);
      }
      return;
    }
    if (api_.shutting_down()) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the server is shutting down; contents staged so "
                          "far are kept"));
      return;
    }
    if (absl::Status s = Handle(); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    StartRead(&request_);
  }

  absl::Status Handle() {
    if (sha256_.empty()) {
      if (request_.sha256().empty()) {
        return absl::InvalidArgumentError(
            "a content's first chunk must carry its sha256");
      }
      sha256_ = request_.sha256();
      declared_ = request_.size();
      data_.clear();
    } else if (!request_.sha256().empty() && request_.sha256() != sha256_) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk of ", request_.sha256(), " arrived while ",
                       sha256_, " was still open"));
    }
    TRANSFERD_ASSIGN_OR_RETURN(const int64_t max_bytes, api_.MaxFileBytes());
    if (static_cast<int64_t>(data_.size() + request_.data().size()) >
        max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("content ", sha256_, " exceeds the per-file limit of ",
                       max_bytes, " bytes (--max-file-bytes)"));
    }
    data_.append(request_.data());
    if (!request_.last()) return absl::OkStatus();
    if (declared_ != 0 && declared_ != static_cast<int64_t>(data_.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("content ", sha256_, " declared ", declared_,
                       " bytes, received ", data_.size()));
    }
    TRANSFERD_RETURN_IF_ERROR(api_.StageContent(sha256_, data_));
    response_->set_contents(response_->contents() + 1);
    response_->set_bytes(response_->bytes() +
                         static_cast<int64_t>(data_.size()));
    sha256_.clear();
    data_ = std::string();
    return absl::OkStatus();
  }

  core::api::EngineApi& api_;
  grpc::CallbackServerContext* ctx_;
  v1::StageContentResponse* response_;
  v1::StageContentRequest request_;
  std::string sha256_;  // the open content, if any
  int64_t declared_ = 0;
  std::string data_;
};

// Answers one request at once.
template <class Request>
class RejectingReader final : public grpc::ServerReadReactor<Request> {
 public:
  explicit RejectingReader(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerReadReactor<v1::UploadDatasetRequest>*
DatasetsService::UploadDataset(grpc::CallbackServerContext* ctx,
                               v1::UploadDatasetResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Datasets.UploadDataset");
      !s.ok()) {
    return new RejectingReader<v1::UploadDatasetRequest>(s);
  }
  return new UploadReactor(api_, auth_, ctx, response);
}

grpc::ServerReadReactor<v1::StageContentRequest>* DatasetsService::StageContent(
    grpc::CallbackServerContext* ctx, v1::StageContentResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Datasets.StageContent");
      !s.ok()) {
    return new RejectingReader<v1::StageContentRequest>(s);
  }
  return new StageReactor(api_, ctx, response);
}

grpc::ServerUnaryReactor* DatasetsService::FindContent(
    grpc::CallbackServerContext* ctx, const v1::FindContentRequest* request,
    v1::FindContentResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Datasets.FindContent");
      !s.ok())
    return Answer(ctx, s);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  // Up to 10000 lookups: on the executor, not a gRPC thread.
  api_.executor().Schedule([this, request, response, reactor] {
    const std::vector<std::string> hashes(request->sha256().begin(),
                                          request->sha256().end());
    absl::StatusOr<std::vector<bool>> held = api_.HasContent(hashes);
    if (!held.ok()) {
      reactor->Finish(ToGrpcStatus(held.status()));
      return;
    }
    for (size_t i = 0; i < held->size(); ++i) {
      if (!(*held)[i]) response->add_missing(static_cast<int32_t>(i));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
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
