// Structured log lines: a message and named fields (request_id, method,
// peer, code, duration_ms, job, model, dataset, trace_id, ...). The fields
// travel inside spdlog's payload, after the message, separated by ASCII
// unit (0x1f) and record (0x1e) separators that never occur in them (they are
// replaced); server/app/logging.cc's formatters turn them into their own JSON
// keys, or into `key=value` after the message in text mode.
//
//   LogFields(spdlog::level::info, "job started",
//             {{"job", id}, {"dataset", dataset_id}});
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace transferd::core {

struct LogField {
  const char* key;
  std::string value;
};

// The payload of a line with fields (empty values are left out).
std::string FieldsPayload(std::string_view message,
                          const std::vector<LogField>& fields);

inline void LogFields(spdlog::level::level_enum level, std::string_view message,
                      const std::vector<LogField>& fields) {
  if (!spdlog::should_log(level)) return;
  spdlog::log(level, "{}", FieldsPayload(message, fields));
}

// A payload split back into its message and fields (none for a plain line).
struct ParsedPayload {
  std::string_view message;
  std::vector<std::pair<std::string_view, std::string_view>> fields;
};
ParsedPayload ParsePayload(std::string_view payload);

}  // namespace transferd::core
