// Job spec files for `transferctl train --spec FILE`: protobuf JSON, or the
// same structure written in YAML (field names as in the proto, enum values
// by name), turned into the JSON that protobuf's parser reads.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace transferd::client {

// `text` as JSON: returned as it is when it is a JSON object (first
// non-blank character '{'), else parsed as YAML whose top level must be a
// mapping. Plain YAML scalars become JSON numbers when they read as numbers
// (1e-4, 20), true/false when they are booleans, null for ~ and null, else
// strings; quoted scalars always stay strings. INVALID_ARGUMENT with the
// line and column of a YAML syntax error.
absl::StatusOr<std::string> SpecTextToJson(const std::string& text);

}  // namespace transferd::client
