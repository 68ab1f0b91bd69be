// The job tables in the store: jobs (one row each, with their run state),
// job_events (numbered per job) and job_predictions (a PREDICT job's per-file
// results). Every read and write of those tables goes through JobStore; it
// owns no threads and tells no one about new events (the queue does).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset_layout.h"
#include "server/core/jobs/job_types.h"

namespace transferd::core {

class Store;

class JobStore {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // `clock` gives create and event times (null: system_clock::now).
  JobStore(Store* store, Clock clock);

  // Reads the last event sequence number of every job; returns the ids of the
  // jobs left RUNNING, in creation order.
  absl::StatusOr<std::vector<std::string>> Load();

  // Stores a validated job QUEUED with its first event (1, state changed to
  // QUEUED, "queued") in one write. ALREADY_EXISTS for a taken id.
  absl::Status Insert(const NewJob& job);
  absl::StatusOr<JobRecord> Get(const std::string& id);
  // Newest first, optionally only one state / kind.
  absl::StatusOr<std::vector<JobRecord>> List(int page_size,
                                              const std::string& page_token,
                                              std::optional<JobState> state,
                                              std::optional<JobKind> kind,
                                              std::string* next_page_token);
  // The oldest job left RUNNING, else the oldest QUEUED one.
  std::optional<std::string> NextQueued();
  // How many jobs are in each state (states without jobs are absent).
  absl::StatusOr<std::map<JobState, int64_t>> CountByState();
  // "jobs/<id>" of the oldest unfinished job whose `column` is `value`; ""
  // when none.
  std::string UserOf(const char* column, const std::string& value);

  // Stores `event` with the job's next sequence number and the clock's time;
  // a state change also updates the job's state, failure reason and start /
  // end times.
  absl::Status Append(const std::string& id, JobEvent event);
  absl::Status SetState(const std::string& id, JobState state,
                        const std::string& message);
  // Up to `limit` events with sequence > after, in order.
  absl::StatusOr<std::vector<JobEvent>> Events(const std::string& id,
                                               int64_t after, int limit);
  // Progress, history, trainable summary, evaluations, result model, resumes.
  absl::Status SaveRunState(const JobRecord& job);

  // PREDICT jobs. The index after the last stored row (0 when none).
  absl::StatusOr<int64_t> NextPredictionIndex(const std::string& id);
  // Stores rows[i] as file `first + i` of the job, from split splits[i].
  absl::Status PutPredictions(const std::string& id, int64_t first,
                              const std::vector<FilePredictionRecord>& rows,
                              const std::vector<common::Split>& splits);
  // In dataset order, paged (0 = 500, capped at 10000). FAILED_PRECONDITION
  // for other kinds of job.
  absl::StatusOr<PredictionsPage> Predictions(const std::string& id,
                                              int page_size,
                                              const std::string& page_token);

 private:
  Store* store_;
  Clock clock_;
  std::mutex seq_mu_;
  std::map<std::string, int64_t> last_seq_;
  std::map<std::string, std::string> trace_;  // job id -> trace id, if any
};

}  // namespace transferd::core
