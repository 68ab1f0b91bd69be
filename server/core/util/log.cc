#include "server/core/util/log.h"

namespace transferd::core {
namespace {

constexpr char kUnit = '\x1f';    // before each field
constexpr char kRecord = '\x1e';  // between a field's key and value

void AppendClean(std::string& out, std::string_view text) {
  for (char c : text) out.push_back(c == kUnit || c == kRecord ? ' ' : c);
}

}  // namespace

std::string FieldsPayload(std::string_view message,
                          const std::vector<LogField>& fields) {
  std::string out;
  AppendClean(out, message);
  for (const LogField& f : fields) {
    if (f.value.empty()) continue;
    out.push_back(kUnit);
    AppendClean(out, f.key);
    out.push_back(kRecord);
    AppendClean(out, f.value);
  }
  return out;
}

ParsedPayload ParsePayload(std::string_view payload) {
  ParsedPayload out;
  size_t end = payload.find(kUnit);
  out.message = payload.substr(0, end);
  while (end != std::string_view::npos) {
    const size_t start = end + 1;
    end = payload.find(kUnit, start);
    std::string_view field = payload.substr(
        start, end == std::string_view::npos ? end : end - start);
    const size_t sep = field.find(kRecord);
    if (sep == std::string_view::npos) continue;
    out.fields.emplace_back(field.substr(0, sep), field.substr(sep + 1));
  }
  return out;
}

}  // namespace transferd::core
