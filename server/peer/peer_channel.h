// A transferd's gRPC channel to another transferd (a replica to its primary,
// a worker to its coordinator): the bearer token read from a file, TLS or
// plaintext, reconnect backoff and keepalive pings.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace transferd::peer {

struct ChannelOptions {
  std::string address;  // host:port
  // TLS: on when `tls` or any file or the server name is set. CA bundle
  // (empty: the system's roots), client certificate and key (mutual TLS),
  // the name the peer's certificate must carry.
  bool tls = false;
  std::string ca_file, cert_file, key_file, server_name;
  std::string user_agent;  // "transferd-replica/0.1.0"
  int max_receive_message_bytes = 64 * 1024 * 1024;
};

// The first non-empty line of `path` (whitespace stripped), "" for an empty
// path; INVALID_ARGUMENT naming `flag` when the file holds no token.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path,
                                            const std::string& flag,
                                            const std::string& peer);

std::shared_ptr<grpc::Channel> Connect(const ChannelOptions& options);

}  // namespace transferd::peer
