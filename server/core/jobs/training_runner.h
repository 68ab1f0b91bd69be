// The runner of TRAIN and FINE_TUNE jobs: resolves the dataset's examples,
// runs a train::Trainer with callbacks that turn its progress into events,
// and registers the best weights as a model in the ModelRegistry. A job with
// replicas > 1 runs data-parallel: this server is rank 0 and reserved
// workers (ClusterRegistry) the other ranks; a run that loses a rank is run
// again from the last checkpoint (docs/distributed.md).
#pragma once

#include <utility>

#include "absl/status/statusor.h"
#include "server/core/jobs/job_runner.h"
#include "server/core/train/trainer.h"

namespace transferd::core {

class TrainingRunner : public JobRunner {
 public:
  explicit TrainingRunner(RunnerEnv env) : env_(std::move(env)) {}
  absl::Status Run(JobRecord& job, JobContext& ctx) override;

 private:
  absl::StatusOr<train::TrainResult> RunReplicated(
      JobRecord& job, JobContext& ctx, const train::TrainData& data,
      train::TrainerEnv env, const train::TrainerCallbacks& callbacks);

  RunnerEnv env_;
};

}  // namespace transferd::core
