#include "server/rpc/service_util.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/registry.h"
#include "server/core/util/catalog_util.h"

namespace transferd::rpc {

absl::StatusOr<std::string> IdFromName(std::string_view field,
                                       std::string_view collection,
                                       const std::string& name) {
  const std::string prefix = absl::StrCat(std::string(collection), "/");
  if (!absl::StartsWith(name, prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), ": expected \"", prefix,
                     "{id}\", got \"", name.substr(0, 200), "\""));
  }
  std::string id = name.substr(prefix.size());
  if (absl::Status s = core::ValidateResourceId("id", id); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), ": ", s.message()));
  }
  return id;
}

absl::StatusOr<std::string> ModelIdFromName(core::ModelRegistry& models,
                                            const std::string& field,
                                            const std::string& name) {
  if (absl::StartsWith(name, "aliases/")) {
    std::string alias = name.substr(std::string_view("aliases/").size());
    if (absl::Status s = core::ValidateResourceId("alias", alias); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", s.message()));
    }
    return models.ResolveAlias(alias);
  }
  if (!absl::StartsWith(name, "models/")) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": expected \"models/{id}\" or "
                     "\"aliases/{alias}\", got \"",
                     name.substr(0, 200), "\""));
  }
  absl::StatusOr<std::string> id = IdFromName(field, "models", name);
  if (!id.ok()) return id;
  if (absl::Status s = models.Get(*id).status(); !s.ok()) return s;
  return id;
}

grpc::Status NotReady() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is starting or shutting down; retry shortly");
}

grpc::Status Admit(const grpc::CallbackServerContext* ctx,
                   const core::Engine& engine, const Authorizer& auth,
                   Role role, std::string_view method) {
  if (grpc::Status s = auth.Check(*ctx, role, method); !s.ok()) return s;
  if (!engine.ready()) return NotReady();
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                 const grpc::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace transferd::rpc
