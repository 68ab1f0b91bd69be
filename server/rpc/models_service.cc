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

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "server/core/engine.h"
#include "server/core/jobs.h"
#include "server/core/model_archive.h"
#include "server/core/registry.h"
#include "server/core/train/train_config.h"
#include "server/core/util/catalog_util.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"
namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;

// ExportModel: the archive is written to tmp/ first, then streamed a chunk
// at a time (one write in flight); the file is removed when the call ends,
// however it ends.
class ExportReactor final
    : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  static constexpr int64_t kChunkBytes = 1 << 20;

  ExportReactor(core::Engine& engine, const core::ModelInfo& model)
      : engine_(engine) {
    path_ =
        engine.data_dir().tmp_dir() / ("export-" + core::RandomHex(8) + ".tar");
    absl::StatusOr<int64_t> size = core::WriteModelArchive(model, path_);
    std::lock_guard<std::mutex> lock(mu_);
    if (!size.ok()) {
      FinishLocked(ToGrpcStatus(size.status()));
      return;
    }
    total_ = *size;
    in_.open(path_, std::ios::binary);
    if (!in_) {
      FinishLocked(grpc::Status(grpc::StatusCode::INTERNAL,
                                "cannot read the archive back"));
      return;
    }
    buffer_.resize(static_cast<size_t>(std::min(kChunkBytes, total_)));
    NextLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(
          grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    NextLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    in_.close();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    delete this;
  }

 private:
  void NextLocked() {
    if (finished_) return;
    if (cancelled_) {
      FinishLocked(grpc::Status::CANCELLED);
      return;
    }
    if (offset_ >= total_) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (engine_.shutting_down()) {
      FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       "the server is shutting down; export again later"));
      return;
    }
    const int64_t n = std::min<int64_t>(kChunkBytes, total_ - offset_);
    if (!in_.read(buffer_.data(), n)) {
      FinishLocked(grpc::Status(grpc::StatusCode::INTERNAL,
                                "cannot read the archive back"));
      return;
    }
    hash_.Update(buffer_.data(), static_cast<size_t>(n));
    chunk_.Clear();
    chunk_.set_data(buffer_.data(), static_cast<size_t>(n));
    chunk_.set_offset(offset_);
    chunk_.set_total_bytes(total_);
    offset_ += n;
    if (offset_ == total_) chunk_.set_sha256(hash_.HexDigest());
    writing_ = true;
    StartWrite(&chunk_);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  core::Engine& engine_;
  std::filesystem::path path_;
  std::mutex mu_;
  std::ifstream in_;
  std::vector<char> buffer_;
  common::Sha256 hash_;
  v1::ExportModelChunk chunk_;
  int64_t total_ = 0;
  int64_t offset_ = 0;
  bool writing_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
};

class FinishedExport final
    : public grpc::ServerWriteReactor<v1::ExportModelChunk> {
 public:
  explicit FinishedExport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// ImportModel: the header, then the archive's bytes into a file in tmp/
// (bounded by the dataset size limit and the free-disk floor); at the end of
// the stream the registry checks and registers it. The file is removed when
// the call ends, however it ends.
class ImportReactor final
    : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  ImportReactor(core::Engine& engine, grpc::CallbackServerContext* ctx,
                v1::Model* response)
      : engine_(engine), ctx_(ctx), response_(response) {
    max_bytes_ = engine.options().datasets.max_dataset_bytes;
    min_free_ = engine.options().datasets.min_free_disk_bytes;
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed (or went away: then Finish is a no-op).
      Done(ctx_->IsCancelled() ? grpc::Status::CANCELLED : Commit());
      return;
    }
    if (engine_.shutting_down()) {
      Done(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "the server is shutting down; the import was discarded"));
      return;
    }
    absl::Status status = Handle();
    if (!status.ok()) {
      Done(ToGrpcStatus(status));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override {
    Discard();
    delete this;
  }

 private:
  static constexpr int64_t kDiskCheckEvery = 64ll << 20;

  absl::Status CheckDisk(int64_t more) {
    std::error_code ec;
    const std::filesystem::space_info space =
        std::filesystem::space(path_.parent_path(), ec);
    if (ec) return absl::OkStatus();
    if (static_cast<int64_t>(space.available) - more < min_free_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the import would leave less than min_free_disk_bytes (",
                       min_free_, ") free on the data directory's disk"));
    }
    return absl::OkStatus();
  }

  absl::Status Handle() {
    if (request_.has_header()) {
      if (started_) {
        return absl::InvalidArgumentError(
            "header: sent twice (it must come once, first)");
      }
      started_ = true;
      header_ = request_.header();
      if (header_.total_bytes() < 0) {
        return absl::InvalidArgumentError(
            "header.total_bytes must not be negative");
      }
      if (header_.total_bytes() > max_bytes_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("header.total_bytes: ", header_.total_bytes(),
                         " is above the limit of ", max_bytes_,
                         " bytes (max_dataset_bytes)"));
      }
      if (!header_.model_id().empty()) {
        if (absl::Status s =
                core::ValidateResourceId("header.model_id", header_.model_id());
            !s.ok()) {
          return s;
        }
        if (engine_.models().Get(header_.model_id()).ok()) {
          return absl::AlreadyExistsError(absl::StrCat(
              "model \"", header_.model_id(), "\" already exists"));
        }
      }
      path_ = engine_.data_dir().tmp_dir() /
              ("import-" + core::RandomHex(8) + ".tar");
      out_.open(path_, std::ios::binary | std::ios::trunc);
      if (!out_)
        return absl::InternalError("cannot create the import's temporary file");
      return CheckDisk(header_.total_bytes());
    }
    if (request_.payload_case() != v1::ImportModelRequest::kData) {
      return absl::InvalidArgumentError(
          "request carries neither a header nor data");
    }
    if (!started_)
      return absl::InvalidArgumentError(
          "header: the first message must be the header");
    const std::string& data = request_.data();
    const int64_t after = received_ + static_cast<int64_t>(data.size());
    if (after > max_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the archive is larger than the limit of ", max_bytes_,
                       " bytes (max_dataset_bytes)"));
    }
    if (header_.total_bytes() > 0 && after > header_.total_bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data: more than header.total_bytes (",
                       header_.total_bytes(), ") bytes sent"));
    }
    if (after / kDiskCheckEvery != received_ / kDiskCheckEvery) {
      if (absl::Status s = CheckDisk(0); !s.ok()) return s;
    }
    out_.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out_)
      return absl::InternalError("cannot write the import's temporary file");
    received_ = after;
    return absl::OkStatus();
  }

  grpc::Status Commit() {
    if (!started_) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "header: the stream ended before the header");
    }
    if (header_.total_bytes() > 0 && received_ != header_.total_bytes()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("the stream ended after ", received_,
                                       " of the ", header_.total_bytes(),
                                       " bytes header.total_bytes announced"));
    }
    out_.close();
    if (!out_)
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "cannot write the archive");
    absl::StatusOr<core::ModelInfo> model = engine_.models().Import(
        path_, header_.model_id(), header_.display_name());
    if (!model.ok()) return ToGrpcStatus(model.status());
    ToProto(*model, response_);
    return grpc::Status::OK;
  }

  void Discard() {
    if (out_.is_open()) out_.close();
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove(path_, ec);
      path_.clear();
    }
  }

  void Done(const grpc::Status& status) {
    Discard();  // the temporary file goes before the answer
    Finish(status);
  }

  core::Engine& engine_;
  grpc::CallbackServerContext* ctx_;
  v1::Model* response_;
  v1::ImportModelRequest request_;
  v1::ImportModelHeader header_;
  bool started_ = false;
  std::filesystem::path path_;
  std::ofstream out_;
  int64_t received_ = 0;
  int64_t max_bytes_ = 0;
  int64_t min_free_ = 0;
};

class FinishedImport final
    : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  explicit FinishedImport(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* ModelsService::GetModel(
    grpc::CallbackServerContext* ctx, const v1::GetModelRequest* request,
    v1::Model* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Models.GetModel");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> id =
      ModelIdFromName(engine_.models(), "name", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
  if (!model.ok()) return Answer(ctx, ToGrpcStatus(model.status()));
  ToProto(*model, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::ListModels(
    grpc::CallbackServerContext* ctx, const v1::ListModelsRequest* request,
    v1::ListModelsResponse* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Models.ListModels");
      !s.ok())
    return Answer(ctx, s);
  std::string next;
  absl::StatusOr<std::vector<core::ModelInfo>> models =
      engine_.models().List(request->page_size(), request->page_token(), &next);
  if (!models.ok()) return Answer(ctx, ToGrpcStatus(models.status()));
  for (const core::ModelInfo& m : *models) ToProto(m, response->add_models());
  response->set_next_page_token(next);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteModel(
    grpc::CallbackServerContext* ctx, const v1::DeleteModelRequest* request,
    google::protobuf::Empty*) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kAdmin, "Models.DeleteModel");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> id =
      IdFromName("name", "models", request->name());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  return Answer(ctx, ToGrpcStatus(engine_.models().Delete(*id)));
}

grpc::ServerUnaryReactor* ModelsService::SetAlias(
    grpc::CallbackServerContext* ctx, const v1::SetAliasRequest* request,
    v1::Alias* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kAdmin, "Models.SetAlias");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> alias =
      IdFromName("alias", "aliases", request->alias());
  if (!alias.ok()) return Answer(ctx, ToGrpcStatus(alias.status()));
  absl::StatusOr<std::string> id =
      IdFromName("model", "models", request->model());
  if (!id.ok()) return Answer(ctx, ToGrpcStatus(id.status()));
  absl::StatusOr<core::AliasInfo> set = engine_.models().SetAlias(*alias, *id);
  if (!set.ok()) return Answer(ctx, ToGrpcStatus(set.status()));
  ToProto(*set, response);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::DeleteAlias(
    grpc::CallbackServerContext* ctx, const v1::DeleteAliasRequest* request,
    google::protobuf::Empty*) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kAdmin, "Models.DeleteAlias");
      !s.ok())
    return Answer(ctx, s);
  absl::StatusOr<std::string> alias =
      IdFromName("alias", "aliases", request->alias());
  if (!alias.ok()) return Answer(ctx, ToGrpcStatus(alias.status()));
  return Answer(ctx, ToGrpcStatus(engine_.models().DeleteAlias(*alias)));
}

grpc::ServerUnaryReactor* ModelsService::ListAliases(
    grpc::CallbackServerContext* ctx, const v1::ListAliasesRequest* request,
    v1::ListAliasesResponse* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Models.ListAliases");
      !s.ok())
    return Answer(ctx, s);
  std::string next;
  absl::StatusOr<std::vector<core::AliasInfo>> aliases =
      engine_.models().ListAliases(request->page_size(), request->page_token(),
                                   &next);
  if (!aliases.ok()) return Answer(ctx, ToGrpcStatus(aliases.status()));
  for (const core::AliasInfo& a : *aliases) ToProto(a, response->add_aliases());
  response->set_next_page_token(next);
  return Answer(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::ExportModelChunk>* ModelsService::ExportModel(
    grpc::CallbackServerContext* ctx, const v1::ExportModelRequest* request) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kViewer, "Models.ExportModel");
      !s.ok()) {
    return new FinishedExport(s);
  }
  absl::StatusOr<std::string> id =
      ModelIdFromName(engine_.models(), "name", request->name());
  if (!id.ok()) return new FinishedExport(ToGrpcStatus(id.status()));
  absl::StatusOr<core::ModelInfo> model = engine_.models().Get(*id);
  if (!model.ok()) return new FinishedExport(ToGrpcStatus(model.status()));
  return new ExportReactor(engine_, *model);
}

grpc::ServerReadReactor<v1::ImportModelRequest>* ModelsService::ImportModel(
    grpc::CallbackServerContext* ctx, v1::Model* response) {
  if (grpc::Status s =
          Admit(ctx, engine_, auth_, Role::kTrainer, "Models.ImportModel");
      !s.ok()) {
    return new FinishedImport(s);
  }
  return new ImportReactor(engine_, ctx, response);
}

}  // namespace transferd::rpc
