#include "server/rpc/service_util.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/catalog_util.h"

namespace transferd::rpc {

absl::StatusOr<std::string> IdFromName(std::string_view field, std::string_view collection,
                                       const std::string& name) {
  const std::string prefix = absl::StrCat(std::string(collection), "/");
  if (!absl::StartsWith(name, prefix)) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": expected \"", prefix,
                                                   "{id}\", got \"", name.substr(0, 200), "\""));
  }
  std::string id = name.substr(prefix.size());
  if (absl::Status s = core::ValidateResourceId("id", id); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", s.message()));
  }
  return id;
}

grpc::Status NotReady() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is starting or shutting down; retry shortly");
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const grpc::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace transferd::rpc
