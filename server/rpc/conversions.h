// Every conversion between the engine's structs and enums and the
// transferd.v1 messages, in one place: explicit switches, never a cast
// between enums whose numbers happen to match. Services call these and
// nothing else converts.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <google/protobuf/timestamp.pb.h>

#include "absl/status/statusor.h"
#include "server/core/api/engine_api.h"
#include "server/core/datasets.h"
#include "server/core/jobs.h"
#include "server/core/model_info.h"
#include "server/core/predictor.h"
#include "server/core/train/job_request.h"
#include "transferd/v1/datasets.pb.h"
#include "transferd/v1/inference.pb.h"
#include "transferd/v1/jobs.pb.h"
#include "transferd/v1/models.pb.h"
#include "transferd/v1/server.pb.h"

namespace transferd::core {
struct EngineInfo;
}  // namespace transferd::core

namespace transferd::rpc {

google::protobuf::Timestamp Ts(std::chrono::system_clock::time_point t);

v1::JobState StateToProto(core::JobState state);
v1::JobKind KindToProto(core::JobKind kind);
// INVALID_ARGUMENT naming `field` for UNSPECIFIED or an unknown number.
absl::StatusOr<core::JobState> StateFromProto(v1::JobState state,
                                              const char* field);
absl::StatusOr<core::JobKind> KindFromProto(v1::JobKind kind,
                                            const char* field);

void EpochToProto(const core::train::EpochReport& e, v1::EpochMetrics* out);
// `classes` names the confusion matrix's rows (empty: left unnamed).
void EvaluationToProto(const core::train::EvaluationReport& e,
                       const std::vector<std::string>& classes,
                       v1::Evaluation* out);
// `lean`: without the confusion matrix (listings).
void EvaluationToProto(const core::train::EvaluationReport& e,
                       const std::vector<std::string>& classes,
                       v1::Evaluation* out, bool lean);
void SummaryToProto(const core::train::TrainableSummary& s,
                    v1::TrainableSummary* out);

void ToProto(const core::JobRecord& in, v1::Job* out);
// The record, its confusion matrices naming the view's classes.
void ToProto(const core::api::JobView& in, v1::Job* out);
// `classes`: the job's (PredictionsPage::classes), naming `top`.
void ToProto(const core::FilePredictionRecord& in,
             const std::vector<std::string>& classes, v1::FilePrediction* out);
void ToProto(const core::JobEvent& in, v1::JobEvent* out);
void ToProto(const core::ModelInfo& in, v1::Model* out);
void ToProto(const core::AliasInfo& in, v1::Alias* out);
// What a listing holds of a job or a model, the same on gRPC and HTTP: no
// history, no confusion matrices, no resolved spec (jobs), no class names
// (models: class_count stays), so that a page of 50 stays well under 1 MiB
// with a thousand classes. Get returns everything (ToProto).
void ToListingProto(const core::api::JobView& in, v1::Job* out);
void ToListingProto(const core::ModelInfo& in, v1::Model* out);

// The request of a CreateJob, resource names parsed and enums checked;
// INVALID_ARGUMENT naming the field otherwise. spec.base_model is kept as a
// name (EngineApi::CreateJob resolves it).
absl::StatusOr<core::train::JobRequest> JobRequestFromProto(
    const v1::JobSpec& spec);
// The spec as it will run, every field set; `base_model` is the resolved
// "models/{id}" (empty for none).
v1::JobSpec ToResolvedSpec(const v1::JobSpec& spec,
                           const core::train::ResolvedJob& resolved,
                           const std::string& base_model);

// What the engine says of itself (build, device, CPU, backbones, start time,
// store version) into `out`; the rest of `out` (limits, services, the gRPC
// version) is left as it is.
void ServerInfoToProto(const core::EngineInfo& info, v1::ServerInfo* out);
// A compute device, both ways (GetServerInfo, a worker's Cluster.Join).
void DeviceToProto(const core::ComputeDevice& device, v1::DeviceInfo* out);
core::ComputeDevice DeviceFromProto(const v1::DeviceInfo& device);
// The google.rpc code of a per-image status.
int32_t ItemCode(absl::StatusCode code);
// One image's answer: its status, and its label, class scores and `top_k`
// most probable classes (0: PredictRequest.top_k's default) when OK.
void PredictionToProto(const std::string& id, const core::ImageResult& r,
                       const std::vector<std::string>& classes,
                       v1::ImagePrediction* out, int top_k = 0);
// INVALID_ARGUMENT "top_k: ..." for a negative value.
absl::Status CheckTopK(int32_t top_k);

v1::Split SplitToProto(common::Split split);
v1::LabelSource LabelSourceToProto(common::LabelSource source);
// INVALID_ARGUMENT for an unknown number (UNSPECIFIED is kAuto).
absl::StatusOr<common::LabelSource> LabelSourceFromProto(
    v1::LabelSource source);
v1::RejectReason RejectReasonToProto(core::RejectReason reason);
// The upload's header as the engine's UploadSpec; INVALID_ARGUMENT for
// unknown enum values.
absl::StatusOr<core::UploadSpec> SpecFromHeader(const v1::UploadHeader& h);
void ToProto(const core::RejectedFile& in, v1::RejectedFile* out);
void ToProto(const core::DatasetInfo& in, v1::Dataset* out);

}  // namespace transferd::rpc
