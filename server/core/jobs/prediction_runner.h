// The runner of PREDICT jobs: runs a registered model over a dataset's files
// in batches (decoding on two threads, the device taken in turns with the
// predictor), stores one row per file, continues after the stored rows when
// resumed, and ends with metrics per split when the dataset's labels are the
// model's classes.
#pragma once

#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset_layout.h"
#include "server/core/jobs/job_runner.h"

namespace transferd::core {

// The splits a PREDICT job runs over (empty: every file); INVALID_ARGUMENT
// naming spec.predict.splits for an unknown name.
absl::StatusOr<std::vector<common::Split>> PredictSplits(
    const train::TrainConfig& config);

class PredictionRunner : public JobRunner {
 public:
  explicit PredictionRunner(RunnerEnv env) : env_(std::move(env)) {}
  absl::Status Run(JobRecord& job, JobContext& ctx) override;

 private:
  RunnerEnv env_;
};

}  // namespace transferd::core
