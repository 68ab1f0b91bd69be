// transferctl_lib: a thin, synchronous wrapper over the transferd.v1 stubs.
// All logic lives on the server; this only connects, sets deadlines and turns
// gRPC statuses into absl::Status with messages a person can act on.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "transferd/v1/datasets.pb.h"
#include "transferd/v1/jobs.pb.h"
#include "transferd/v1/models.pb.h"
#include "transferd/v1/server.pb.h"

namespace transferd::client {

struct ClientOptions {
  // HOST:PORT of transferd.
  std::string address = "127.0.0.1:50051";
  // Deadline of each unary call.
  std::chrono::milliseconds timeout{30000};
};

enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };
const char* HealthStatusName(HealthStatus status);

class Client {
 public:
  // Creates the channel; connecting happens on the first call.
  static std::unique_ptr<Client> Create(const ClientOptions& options);
  ~Client();

  const std::string& address() const { return options_.address; }

  absl::StatusOr<transferd::v1::ServerInfo> GetServerInfo();

  // grpc.health.v1 status of `service` ("" = the whole server). With
  // wait > 0, waits up to `wait` for the server to come up and report
  // SERVING, and returns the last status seen when it does not.
  absl::StatusOr<HealthStatus> CheckHealth(
      const std::string& service,
      std::chrono::milliseconds wait = std::chrono::milliseconds(0));

  absl::StatusOr<transferd::v1::ListDatasetsResponse> ListDatasets(
      const transferd::v1::ListDatasetsRequest& request);
  absl::StatusOr<transferd::v1::ListJobsResponse> ListJobs(
      const transferd::v1::ListJobsRequest& request);
  absl::StatusOr<transferd::v1::ListModelsResponse> ListModels(
      const transferd::v1::ListModelsRequest& request);

 private:
  struct Stubs;
  Client(ClientOptions options, std::unique_ptr<Stubs> stubs);

  ClientOptions options_;
  std::unique_ptr<Stubs> stubs_;
};

// True when `status` means the server could not be reached (or is going
// away): the CLI's exit code 3.
bool IsUnreachable(const absl::Status& status);

}  // namespace transferd::client
