#include "server/rpc/inference_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/core/api/engine_api.h"
#include "server/rpc/conversions.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {
namespace {

namespace v1 = transferd::v1;

// A PredictStream refused before it started.
class FinishedStream final
    : public grpc::ServerBidiReactor<v1::PredictStreamRequest,
                                     v1::PredictStreamResponse> {
 public:
  explicit FinishedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// PredictStream: each request becomes one predictor call; answers are
// written one at a time in completion order. At most kMaxInFlight requests
// are outstanding per stream (reading pauses beyond), so a fast client cannot
// queue unbounded work. The stream finishes once the client half-closed and
// every answer is written, or on the first failed write or a cancel, after
// the predictor answered everything it was given.
class PredictStreamReactor final
    : public grpc::ServerBidiReactor<v1::PredictStreamRequest,
                                     v1::PredictStreamResponse> {
 public:
  PredictStreamReactor(core::api::EngineApi& api,
                       grpc::CallbackServerContext* ctx,
                       std::chrono::milliseconds max_request_time)
      : api_(api),
        ctx_(ctx),
        max_request_time_(max_request_time),
        cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    StartRead(&request_);
  }

  // reading_ stays true until this decides whether to read again, so an
  // answer arriving meanwhile never starts a second read.
  void OnReadDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!ok || broken_) {
      reading_ = false;
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    v1::PredictStreamRequest request = std::move(request_);
    ++in_flight_;
    lock.unlock();
    Submit(std::move(request));
    lock.lock();
    if (in_flight_ < kMaxInFlight && !broken_) {
      StartRead(&request_);
    } else {
      reading_ = false;
      MaybeFinishLocked();
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      cancelled_->store(true);
      answers_.clear();
    } else {
      answers_.pop_front();
    }
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = true;
    cancelled_->store(true);
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  static constexpr int kMaxInFlight = 64;

  void Submit(v1::PredictStreamRequest request) {
    const std::string request_id = request.request_id();
    const std::string image_id = request.image().id();
    const int top_k = request.top_k();
    core::PredictCall call;
    call.images.push_back(std::move(*request.mutable_image()->mutable_data()));
    call.flip_tta = request.horizontal_flip_tta();
    call.deadline = SteadyDeadline(ctx_, max_request_time_);
    call.cancelled = cancelled_;
    call.done = [this, request_id, image_id, top_k](absl::Status status,
                                                    core::PredictOutcome out) {
      v1::PredictStreamResponse answer;
      answer.set_request_id(request_id);
      v1::ImagePrediction* p = answer.mutable_prediction();
      if (!status.ok()) {
        core::ImageResult failed;
        failed.status = status;
        PredictionToProto(image_id, failed, {}, p);
      } else {
        answer.set_model(absl::StrCat("models/", out.model_id));
        PredictionToProto(image_id, out.images.at(0), out.classes, p, top_k);
      }
      Answered(std::move(answer));
    };
    if (absl::Status s = CheckTopK(top_k); !s.ok()) {
      call.done(s, {});  // this request's answer carries the error
      return;
    }
    api_.Predict(request.model(), std::move(call));
  }

  // One request is answered: queue its response and read more if paused.
  void Answered(v1::PredictStreamResponse answer) {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    if (!broken_) {
      answers_.push_back(std::move(answer));
      WriteNextLocked();
      if (!reading_ && !reads_done_ && in_flight_ < kMaxInFlight) {
        reading_ = true;
        StartRead(&request_);
      }
    }
    MaybeFinishLocked();
  }

  void WriteNextLocked() {
    if (writing_ || answers_.empty() || broken_) return;
    writing_ = true;
    StartWrite(&answers_.front());
  }

  void MaybeFinishLocked() {
    if (finished_ || in_flight_ > 0 || writing_ || reading_) return;
    if (broken_) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the stream was cancelled"));
    } else if (reads_done_ && answers_.empty()) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  core::api::EngineApi& api_;
  grpc::CallbackServerContext* ctx_;
  const std::chrono::milliseconds max_request_time_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::mutex mu_;
  v1::PredictStreamRequest request_;
  bool reading_ = true;
  bool reads_done_ = false;
  bool writing_ = false;
  bool broken_ = false;
  bool finished_ = false;
  int in_flight_ = 0;
  std::deque<v1::PredictStreamResponse> answers_;
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Predict(
    grpc::CallbackServerContext* ctx, const v1::PredictRequest* request,
    v1::PredictResponse* response) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Inference.Predict");
      !s.ok())
    return Answer(ctx, s);
  if (absl::Status s = CheckTopK(request->top_k()); !s.ok()) {
    return Answer(ctx, ToGrpcStatus(s));
  }
  auto* reactor = new CancellableReactor();
  core::PredictCall call;
  call.images.reserve(request->images_size());
  for (const v1::Image& image : request->images())
    call.images.push_back(image.data());
  call.flip_tta = request->horizontal_flip_tta();
  call.deadline = SteadyDeadline(ctx, max_request_time_);
  call.cancelled = reactor->cancelled();
  call.done = [reactor, request, response](absl::Status status,
                                           core::PredictOutcome out) {
    if (!status.ok()) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    response->set_model(absl::StrCat("models/", out.model_id));
    for (int i = 0; i < request->images_size(); ++i) {
      PredictionToProto(request->images(i).id(), out.images.at(i), out.classes,
                        response->add_predictions(), request->top_k());
    }
    reactor->Finish(grpc::Status::OK);
  };
  api_.Predict(request->model(), std::move(call));
  return reactor;
}

grpc::ServerBidiReactor<v1::PredictStreamRequest, v1::PredictStreamResponse>*
InferenceService::PredictStream(grpc::CallbackServerContext* ctx) {
  if (grpc::Status s =
          Admit(ctx, api_, auth_, Role::kTrainer, "Inference.PredictStream");
      !s.ok()) {
    return new FinishedStream(s);
  }
  return new PredictStreamReactor(api_, ctx, max_request_time_);
}

void InferenceService::EngineReady(
    std::vector<grpc::HealthCheckServiceInterface*> health) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!health_.empty() || health.empty()) return;
    health_ = std::move(health);
  }
  api_.AddModelReadyListener(
      [gate = gate_](const std::string& model_id, bool ready) {
        std::lock_guard<std::mutex> lock(gate->mu);
        if (gate->self != nullptr) gate->self->ModelReady(model_id, ready);
      });
  api_.AddAliasListener([gate = gate_](const std::string& alias,
                                       const std::string& /*model_id*/) {
    std::lock_guard<std::mutex> lock(gate->mu);
    if (gate->self != nullptr) gate->self->AliasChanged(alias);
  });
  std::string token;
  do {
    absl::StatusOr<core::api::Page<core::AliasInfo>> page =
        api_.ListAliases({1000, token});
    if (!page.ok()) {
      spdlog::warn("aliases: {}", std::string(page.status().message()));
      break;
    }
    for (const core::AliasInfo& a : page->items) AliasChanged(a.alias);
    token = page->next_page_token;
  } while (!token.empty());
}

void InferenceService::Detach() {
  std::lock_guard<std::mutex> lock(gate_->mu);
  gate_->self = nullptr;
}

void InferenceService::AliasChanged(const std::string& alias) {
  bool ready = false;
  std::string model_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The registry's answer now, read under mu_: a listener's call and
    // EngineReady's listing may arrive in either order, and whichever runs
    // last must leave the current model (NOT_FOUND: deleted).
    absl::StatusOr<std::string> now =
        api_.ResolveModel("alias", absl::StrCat("aliases/", alias));
    if (now.ok()) model_id = *now;
    if (model_id.empty()) {
      aliases_.erase(alias);
    } else {
      aliases_[alias] = model_id;
      ready = api_.ModelReady(model_id);
    }
    for (auto* h : health_) h->SetServingStatus(HealthName(alias), ready);
  }
  if (!model_id.empty() && !ready) api_.WarmModel(model_id);
}

void InferenceService::ModelReady(const std::string& model_id, bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [alias, id] : aliases_) {
    if (id != model_id) continue;
    for (auto* h : health_) h->SetServingStatus(HealthName(alias), ready);
  }
}

}  // namespace transferd::rpc
