// The runner of TRAIN and FINE_TUNE jobs: resolves the dataset's examples,
// runs a train::Trainer with callbacks that turn its progress into events,
// and registers the best weights as a model in the ModelRegistry.
#pragma once

#include <utility>

#include "server/core/jobs/job_runner.h"

namespace transferd::core {

class TrainingRunner : public JobRunner {
 public:
  explicit TrainingRunner(RunnerEnv env) : env_(std::move(env)) {}
  absl::Status Run(JobRecord& job, JobContext& ctx) override;

 private:
  RunnerEnv env_;
};

}  // namespace transferd::core
