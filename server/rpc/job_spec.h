// JobSpec (the API) to the engine's TrainConfig: named recipes, field-by-field
// overrides, defaults, and the checks that need no engine state, each
// failing with INVALID_ARGUMENT naming the field ("spec.stages[1].optimizer.
// learning_rate must be > 0, got -1"). Also the way back, for the job's
// resolved_spec.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/core/train/train_config.h"
#include "transferd/v1/jobs.pb.h"

namespace transferd::rpc {

struct ResolvedJob {
  core::train::TrainConfig config;
  std::string dataset_id;
  std::string base_model;  // model id (FINE_TUNE)
};

// `default_precision` is the engine's ("fp32" or "bf16") for
// PRECISION_UNSPECIFIED. FINE_TUNE takes the network from `base_model_config`
// (the base model's).
absl::StatusOr<ResolvedJob> ResolveJobSpec(
    const transferd::v1::JobSpec& spec, const std::string& default_precision,
    const core::train::ModelConfig* base_model_config);

// The spec as it will run, every field set.
transferd::v1::JobSpec ToResolvedSpec(const transferd::v1::JobSpec& spec,
                                      const ResolvedJob& resolved);

}  // namespace transferd::rpc
