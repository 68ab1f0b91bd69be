// JSON forms of the training types, used to keep job configs, events and
// metric histories in the store (so a restarted server can resume a job
// exactly as it was submitted). Parsing never throws: DATA_LOSS names what
// was malformed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/train/train_config.h"

namespace transferd::core::train {

std::string ConfigToJson(const TrainConfig& config);
absl::StatusOr<TrainConfig> ConfigFromJson(const std::string& json);

std::string ModelConfigToJson(const ModelConfig& model);
absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& json);

std::string HistoryToJson(const std::vector<EpochReport>& history);
absl::StatusOr<std::vector<EpochReport>> HistoryFromJson(
    const std::string& json);

std::string EvaluationsToJson(const std::vector<EvaluationReport>& evaluations);
absl::StatusOr<std::vector<EvaluationReport>> EvaluationsFromJson(
    const std::string& json);

std::string SummaryToJson(const TrainableSummary& summary);
absl::StatusOr<TrainableSummary> SummaryFromJson(const std::string& json);

}  // namespace transferd::core::train
