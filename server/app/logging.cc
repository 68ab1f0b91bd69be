#include "server/app/logging.h"

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <grpc/support/log.h>
#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "server/core/util/log.h"

namespace transferd::app {
namespace {

// Fields whose values are numbers in JSON.
bool NumericField(std::string_view key) {
  return key == "duration_ms" || key == "status" || key == "epoch" ||
         key == "bytes";
}

// {"ts":"2026-11-28T04:16:52.123456Z","level":"info","thread":123,
//  "msg":"rpc","method":"...","request_id":"...",...}: every field of a
// structured line (core/util/log.h) is its own key.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    nlohmann::json line;
    line["ts"] =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(msg.time),
                         absl::UTCTimeZone());
    line["level"] =
        std::string(spdlog::level::to_string_view(msg.level).data(),
                    spdlog::level::to_string_view(msg.level).size());
    line["thread"] = msg.thread_id;
    const core::ParsedPayload parsed = core::ParsePayload(
        std::string_view(msg.payload.data(), msg.payload.size()));
    line["msg"] = std::string(parsed.message);
    for (const auto& [key, value] : parsed.fields) {
      const std::string k(key);
      if (k == "ts" || k == "level" || k == "thread" || k == "msg") continue;
      double number = 0;
      if (NumericField(key) && absl::SimpleAtod(std::string(value), &number)) {
        line[k] = number;
      } else {
        line[k] = std::string(value);
      }
    }
    const std::string text =
        line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// %* in text mode: the message, then each field as key=value (quoted when
// it holds a space, a quote or an '=').
class FieldsFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const core::ParsedPayload parsed = core::ParsePayload(
        std::string_view(msg.payload.data(), msg.payload.size()));
    Append(dest, parsed.message);
    for (const auto& [key, value] : parsed.fields) {
      dest.push_back(' ');
      Append(dest, key);
      dest.push_back('=');
      const bool quote = value.empty() ||
                         value.find_first_of(" \"=") != std::string_view::npos;
      if (quote) dest.push_back('"');
      for (char c : value) {
        if (quote && (c == '"' || c == '\\')) dest.push_back('\\');
        dest.push_back(c);
      }
      if (quote) dest.push_back('"');
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<FieldsFlag>();
  }

 private:
  static void Append(spdlog::memory_buf_t& dest, std::string_view text) {
    dest.append(text.data(), text.data() + text.size());
  }
};

// gRPC's own log lines go through the same logger, so --log-format json
// stays one JSON object per line: message, source=grpc, file and line.
void GrpcLog(gpr_log_func_args* args) {
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = spdlog::level::info;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) level = spdlog::level::warn;
  core::LogFields(level, args->message == nullptr ? "" : args->message,
                  {{"source", "grpc"},
                   {"file", args->file == nullptr ? "" : args->file},
                   {"line", std::to_string(args->line)}});
}

}  // namespace

void SetUpLogging(const LogOptions& options) {
  std::shared_ptr<spdlog::logger> logger;
  if (options.format == "json") {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_formatter(std::make_unique<JsonFormatter>());
    logger = std::make_shared<spdlog::logger>("transferd", sink);
  } else {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<FieldsFlag>('*').set_pattern(
        "%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %*");
    sink->set_formatter(std::move(formatter));
    logger = std::make_shared<spdlog::logger>("transferd", sink);
  }
  logger->set_level(spdlog::level::from_str(options.level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  gpr_set_log_function(GrpcLog);
}

}  // namespace transferd::app
