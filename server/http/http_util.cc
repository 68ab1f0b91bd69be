#include "server/http/http_util.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/http/http_server.h"

namespace transferd::http {

void SetError(httplib::Response& res, const absl::Status& status,
              int http_status) {
  res.status = http_status != 0 ? http_status : HttpStatusFor(status.code());
  nlohmann::json body = {{"error",
                          {{"code", res.status},
                           {"status", absl::StatusCodeToString(status.code())},
                           {"message", std::string(status.message())}}}};
  res.set_content(
      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
      "application/json");
}

absl::Status CheckRole(const auth::Authorizer& auth,
                       const httplib::Request& req, auth::Role role) {
  auth::Authorizer::Caller caller;
  caller.carrier = "header";
  if (req.has_header("Authorization")) {
    caller.authorization = req.get_header_value("Authorization");
  }
  return auth.Check(caller, role, absl::StrCat(req.method, " ", req.path));
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  // Only fails for messages that cannot be printed (an Any of an unknown
  // type); transferd.v1 has none.
  if (!google::protobuf::util::MessageToJsonString(message, &out, options)
           .ok()) {
    return "{}";
  }
  return out;
}

void SetJson(httplib::Response& res, const google::protobuf::Message& message) {
  res.status = 200;
  res.set_content(ToJson(message), "application/json");
}

absl::Status FromJson(const std::string& body,
                      google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status =
      google::protobuf::util::JsonStringToMessage(body, message, options);
  if (status.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the body is not a valid ", message->GetTypeName(),
                   " in JSON: ", std::string(status.message())));
}

}  // namespace transferd::http
