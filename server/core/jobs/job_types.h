// The job layer's value types: kinds and states, progress, events, a new job
// as the API hands it over, a stored job, and a PREDICT job's per-file
// results. Shared by the queue (jobs.h, which re-exports them), the store and
// the runners; no LibTorch or protobuf types.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dataset_layout.h"
#include "server/core/train/eval_metrics.h"
#include "server/core/train/train_config.h"

namespace transferd::core {

enum class JobKind { kTrain = 1, kFineTune = 2, kPredict = 3 };
enum class JobState {
  kQueued = 1,
  kRunning = 2,
  kSucceeded = 3,
  kFailed = 4,
  kCancelled = 5
};
bool IsTerminal(JobState state);
const char* JobStateName(JobState state);
// "train", "fine_tune", "predict" (metric labels).
const char* JobKindLabel(JobKind kind);

struct JobProgress {
  int stage = 0, stages = 0;  // 0-based stage index
  int epoch = 0, epochs = 0;  // over the whole job
  int64_t step = 0, steps = 0;
  double eta_seconds = 0;
};

struct JobEvent {
  enum class Type {
    kStateChanged = 1,
    kStageStarted = 2,
    kStep = 3,
    kEpochEnd = 4,
    kCheckpointSaved = 5,
    kEvaluation = 6,
    kLog = 7,
  };
  int64_t sequence = 0;
  std::chrono::system_clock::time_point time;
  Type type = Type::kLog;
  // kStateChanged: state and message; kLog: level and message.
  JobState state = JobState::kQueued;
  std::string level;
  std::string message;
  // kStageStarted.
  int stage = 0;
  std::string stage_name;
  train::TrainableSummary trainable;
  bool uses_feature_cache = false;
  // kStep, kEpochEnd, kCheckpointSaved (epoch, bytes), kEvaluation.
  train::StepReport step;
  train::EpochReport epoch;
  int checkpoint_epoch = 0;
  int64_t checkpoint_bytes = 0;
  train::EvaluationReport evaluation;
  // The job's trace id (set by the store from the job's record).
  std::string trace_id;
};

// What the API layer hands over: the spec as the client sent it and as
// resolved (both opaque here), and the engine's config.
struct NewJob {
  std::string id;  // empty: "j-<8 hex>"
  JobKind kind = JobKind::kTrain;
  std::string dataset_id;
  std::string base_model;  // FINE_TUNE: the model id to start from
  std::string spec_blob;
  std::string resolved_blob;
  train::TrainConfig config;
  std::string trace_id;  // W3C trace id of the creating call, or ""
};

struct JobRecord {
  std::string id;
  JobKind kind = JobKind::kTrain;
  JobState state = JobState::kQueued;
  std::string failure_reason;
  std::string dataset_id;
  std::string base_model;
  std::string spec_blob;
  std::string resolved_blob;
  train::TrainConfig config;
  std::string trace_id;  // W3C trace id of the call that created it, or ""
  std::chrono::system_clock::time_point create_time, start_time,
      end_time;  // 0 = not yet
  JobProgress progress;
  std::vector<train::EpochReport> history;
  train::TrainableSummary trainable;
  std::vector<train::EvaluationReport> evaluations;
  std::string result_model;  // model id
  int64_t last_event_sequence = 0;
  int resumes = 0;
};

// One file's result in a PREDICT job.
// PREDICT results keep every class's probability up to this many classes;
// beyond, only the top_k (a 1,049-class model would store 1,049 floats per
// file).
inline constexpr int kAllProbabilitiesMaxClasses = 64;

struct FilePredictionRecord {
  std::string client_path;
  common::Split split = common::Split::kNone;
  std::string true_label;  // the dataset's label
  std::string label;       // predicted class ("" when the file failed)
  // Every class's probability in the model's class order, when the model
  // has at most kAllProbabilitiesMaxClasses classes; empty otherwise.
  std::vector<float> probabilities;
  // The job's top_k classes, most probable first.
  std::vector<train::ClassProbability> top;
  // The true class's probability (for the loss); -1 when the file has no
  // label among the model's classes.
  float true_probability = -1;
  int status_code = 0;  // absl::StatusCode; 0 = OK
  std::string status_message;
};

struct PredictionsPage {
  std::vector<std::string> classes;  // the model's, for probabilities
  std::vector<FilePredictionRecord> predictions;
  std::string next_page_token;
};

}  // namespace transferd::core
