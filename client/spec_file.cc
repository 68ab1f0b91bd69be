#include "client/spec_file.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace transferd::client {
namespace {

nlohmann::json Scalar(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  // A quoted scalar carries the non-specific tag "!": always a string.
  if (node.Tag() == "!") return text;
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "~" || lower == "null") return nullptr;
  if (lower == "true") return true;
  if (lower == "false") return false;
  int64_t integer = 0;
  if (absl::SimpleAtoi(text, &integer)) return integer;
  double number = 0;
  if (absl::SimpleAtod(text, &number) && std::isfinite(number) &&
      lower.find_first_of("0123456789") != std::string::npos) {
    return number;
  }
  return text;
}

absl::StatusOr<nlohmann::json> ToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nlohmann::json(nullptr);
    case YAML::NodeType::Scalar:
      return Scalar(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const YAML::Node& item : node) {
        absl::StatusOr<nlohmann::json> v = ToJson(item);
        if (!v.ok()) return v.status();
        out.push_back(std::move(*v));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", kv.first.Mark().line + 1,
                           ": a mapping key must be a plain name"));
        }
        const std::string key = kv.first.Scalar();
        if (out.contains(key)) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", kv.first.Mark().line + 1,
                           ": duplicate key \"", key, "\""));
        }
        absl::StatusOr<nlohmann::json> v = ToJson(kv.second);
        if (!v.ok()) return v.status();
        out[key] = std::move(*v);
      }
      return out;
    }
  }
  return nlohmann::json(nullptr);
}

}  // namespace

absl::StatusOr<std::string> SpecTextToJson(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') return text;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON or YAML: line ", e.mark.line + 1,
                     ", column ", e.mark.column + 1, ": ", e.msg));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        "a spec file holds one JobSpec: a JSON object or a YAML mapping");
  }
  absl::StatusOr<nlohmann::json> json = ToJson(root);
  if (!json.ok()) return json.status();
  return json->dump();
}

}  // namespace transferd::client
