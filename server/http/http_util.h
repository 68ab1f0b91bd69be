// What the HTTP port's handlers share: the JSON error body, the caller of a
// request, and the proto3 JSON encoding of the transferd.v1 messages.
// Included by server/http/*.cc only (it pulls in httplib.h).
#pragma once

#include <httplib.h>

#include <string>

#include "absl/status/status.h"
#include "server/auth/auth.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace transferd::http {

// {"error": {"code": 404, "status": "NOT_FOUND", "message": "..."}}, code
// being the HTTP status: `http_status`, or 0 for the standard mapping of the
// status's code (HttpStatusFor).
void SetError(httplib::Response& res, const absl::Status& status,
              int http_status = 0);

// The caller's role check on the HTTP port: its "Authorization: Bearer"
// header against `auth`, the call named "METHOD /path" in the messages.
absl::Status CheckRole(const auth::Authorizer& auth,
                       const httplib::Request& req, auth::Role role);

// The message as proto3 JSON with the .proto's field names (snake_case, as
// in docs/api.md), every scalar field printed (zeros too), enums by name;
// 64-bit integers are strings, as the proto3 JSON mapping says.
std::string ToJson(const google::protobuf::Message& message);
// Answers 200 with `message` as JSON.
void SetJson(httplib::Response& res, const google::protobuf::Message& message);
// Parses a request body into `message`; INVALID_ARGUMENT naming the problem
// (unknown fields are errors, as a typo must not pass silently).
absl::Status FromJson(const std::string& body,
                      google::protobuf::Message* message);

}  // namespace transferd::http
