// Output formatting shared by transferctl's commands: JSON printing, sizes,
// durations and timestamps, and the human-readable text of jobs and models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <google/protobuf/repeated_ptr_field.h>
#include <google/protobuf/timestamp.pb.h>

#include "transferd/v1/common.pb.h"
#include "transferd/v1/jobs.pb.h"

namespace transferd::client::commands {

// `message` as indented protobuf JSON (proto field names, defaults shown)
// on stdout.
void PrintJson(const google::protobuf::Message& message);

// `message` as protobuf JSON on one line, without a trailing newline.
std::string OneLineJson(const google::protobuf::Message& message);

// 1536 -> "1.5 KiB".
std::string HumanBytes(int64_t n);

// Seconds as "M:SS" or "H:MM:SS"; "--:--" when unknown or too long.
std::string Duration(double seconds);

// 1234567 -> "1,234,567".
std::string Thousands(int64_t n);

// A timestamp as "2024-05-01 12:34:56Z" (UTC); "-" when unset.
std::string When(const google::protobuf::Timestamp& t);

// A learning rate or similar: "0.0001" -> "1e-04", 0.5 -> "0.5".
std::string Num(double v);

std::string SplitName(v1::Split split);

// "JOB_STATE_SUCCEEDED" -> "SUCCEEDED".
std::string StateText(v1::JobState state);

// "JOB_KIND_FINE_TUNE" -> "FINE_TUNE".
std::string KindText(v1::JobKind kind);

// A google.rpc.Code by name: 5 -> "NOT_FOUND".
const char* CodeName(int code);

// A training stage on one line: trainable layers, optimizer, epochs, batch
// size, augmentation and early stopping.
std::string StageText(const v1::StageSpec& s);

// The network: backbone, weights, input size, precision and head; "" when
// no backbone is set.
std::string ModelSpecText(const v1::ModelSpec& m);

std::string TrainableText(const v1::TrainableSummary& t);

// The epoch history as a table; nothing when empty.
void PrintHistory(
    const google::protobuf::RepeatedPtrField<v1::EpochMetrics>& history);

// Evaluations with their confusion matrices; `classes` names the rows when
// the matrices do not.
void PrintEvaluations(
    const google::protobuf::RepeatedPtrField<v1::Evaluation>& evaluations,
    const std::vector<std::string>& classes);

}  // namespace transferd::client::commands
