#include "client/client.h"

#include <optional>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd::client {

namespace v1 = transferd::v1;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

struct Client::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Server::Stub> server;
  std::unique_ptr<v1::Datasets::Stub> datasets;
  std::unique_ptr<v1::Jobs::Stub> jobs;
  std::unique_ptr<v1::Models::Stub> models;
  std::unique_ptr<Health::Stub> health;
};

namespace {

// Why a connection failed, in a few words, from gRPC's detail text.
std::string ConnectFailure(const std::string& detail) {
  if (absl::StrContains(detail, "Connection refused")) {
    return "connection refused";
  }
  if (absl::StrContains(detail, "DNS") ||
      absl::StrContains(detail, "resolve")) {
    return "the host name does not resolve";
  }
  if (absl::StrContains(detail, "No route") ||
      absl::StrContains(detail, "unreachable")) {
    return "no route to host";
  }
  return "no connection";
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& address,
                      bool connected) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  if (status.error_code() == grpc::UNAVAILABLE && !connected) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach transferd at ", address, " (",
        ConnectFailure(status.error_message()),
        "); is the server running? Set --server or TRANSFERD_ADDR"));
  }
  if (status.error_code() == grpc::DEADLINE_EXCEEDED && !connected) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach transferd at ", address,
                     " (no answer before the deadline)"));
  }
  return absl::Status(code, status.error_message());
}

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

bool Connected(const std::shared_ptr<grpc::Channel>& channel) {
  return channel->GetState(false) == GRPC_CHANNEL_READY;
}

// One unary call with the client's deadline; `call(ctx, response)` invokes
// the stub method.
template <class Response, class Call>
absl::StatusOr<Response> Unary(const ClientOptions& options,
                               const std::shared_ptr<grpc::Channel>& channel,
                               Call&& call) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options.timeout);
  Response response;
  grpc::Status status = call(&ctx, &response);
  if (!status.ok()) return FromGrpc(status, options.address, Connected(channel));
  return response;
}

HealthStatus FromProto(HealthCheckResponse::ServingStatus s) {
  switch (s) {
    case HealthCheckResponse::SERVING: return HealthStatus::kServing;
    case HealthCheckResponse::NOT_SERVING: return HealthStatus::kNotServing;
    case HealthCheckResponse::SERVICE_UNKNOWN:
      return HealthStatus::kServiceUnknown;
    default: return HealthStatus::kUnknown;
  }
}

}  // namespace

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kServing: return "SERVING";
    case HealthStatus::kNotServing: return "NOT_SERVING";
    case HealthStatus::kServiceUnknown: return "SERVICE_UNKNOWN";
    default: return "UNKNOWN";
  }
}

bool IsUnreachable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable;
}

std::unique_ptr<Client> Client::Create(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  auto stubs = std::make_unique<Stubs>();
  stubs->channel = grpc::CreateCustomChannel(
      options.address, grpc::InsecureChannelCredentials(), args);
  stubs->server = v1::Server::NewStub(stubs->channel);
  stubs->datasets = v1::Datasets::NewStub(stubs->channel);
  stubs->jobs = v1::Jobs::NewStub(stubs->channel);
  stubs->models = v1::Models::NewStub(stubs->channel);
  stubs->health = Health::NewStub(stubs->channel);
  return std::unique_ptr<Client>(new Client(options, std::move(stubs)));
}

Client::Client(ClientOptions options, std::unique_ptr<Stubs> stubs)
    : options_(std::move(options)), stubs_(std::move(stubs)) {}

Client::~Client() = default;

absl::StatusOr<v1::ServerInfo> Client::GetServerInfo() {
  return Unary<v1::ServerInfo>(
      options_, stubs_->channel, [&](grpc::ClientContext* ctx, v1::ServerInfo* out) {
        return stubs_->server->GetServerInfo(ctx, v1::GetServerInfoRequest(), out);
      });
}

absl::StatusOr<HealthStatus> Client::CheckHealth(const std::string& service,
                                                 std::chrono::milliseconds wait) {
  HealthCheckRequest request;
  request.set_service(service);
  if (wait.count() <= 0) {
    grpc::ClientContext ctx;
    SetDeadline(ctx, options_.timeout);
    HealthCheckResponse response;
    grpc::Status status = stubs_->health->Check(&ctx, request, &response);
    if (status.error_code() == grpc::NOT_FOUND) {
      return HealthStatus::kServiceUnknown;
    }
    if (!status.ok()) {
      return FromGrpc(status, options_.address, Connected(stubs_->channel));
    }
    return FromProto(response.status());
  }

  // Watch until SERVING or the deadline, waiting for the server to appear.
  grpc::ClientContext ctx;
  SetDeadline(ctx, wait);
  ctx.set_wait_for_ready(true);
  auto reader = stubs_->health->Watch(&ctx, request);
  HealthCheckResponse response;
  std::optional<HealthStatus> last;
  while (reader->Read(&response)) {
    last = FromProto(response.status());
    if (*last == HealthStatus::kServing) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (last.has_value()) return *last;
  return FromGrpc(status, options_.address, false);
}

absl::StatusOr<v1::ListDatasetsResponse> Client::ListDatasets(
    const v1::ListDatasetsRequest& request) {
  return Unary<v1::ListDatasetsResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListDatasetsResponse* out) {
        return stubs_->datasets->ListDatasets(ctx, request, out);
      });
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(
    const v1::ListJobsRequest& request) {
  return Unary<v1::ListJobsResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListJobsResponse* out) {
        return stubs_->jobs->ListJobs(ctx, request, out);
      });
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels(
    const v1::ListModelsRequest& request) {
  return Unary<v1::ListModelsResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListModelsResponse* out) {
        return stubs_->models->ListModels(ctx, request, out);
      });
}

}  // namespace transferd::client
