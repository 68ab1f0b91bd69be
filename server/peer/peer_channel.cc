#include "server/peer/peer_channel.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace transferd::peer {
namespace {

std::string ReadText(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::string> ReadBearerToken(const std::string& path,
                                            const std::string& flag,
                                            const std::string& peer) {
  if (path.empty()) return std::string();
  std::ifstream in(path);
  std::string line;
  while (in && std::getline(in, line)) {
    line = std::string(absl::StripAsciiWhitespace(line));
    if (!line.empty()) return line;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, " ", path, ": no token (the first non-empty line is sent to the ",
      peer, ")"));
}

std::shared_ptr<grpc::Channel> Connect(const ChannelOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_receive_message_bytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // HTTP/2 pings find a connection that died silently (a network that drops
  // packets): without them a new call would go out on the dead connection
  // until the kernel gives up on it. 20 s respects the peer's default
  // --min-ping-seconds (10).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetUserAgentPrefix(o.user_agent);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (o.tls || !o.ca_file.empty() || !o.cert_file.empty() ||
      !o.server_name.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadText(o.ca_file);
    ssl.pem_cert_chain = ReadText(o.cert_file);
    ssl.pem_private_key = ReadText(o.key_file);
    credentials = grpc::SslCredentials(ssl);
    if (!o.server_name.empty()) args.SetSslTargetNameOverride(o.server_name);
  }
  return grpc::CreateCustomChannel(o.address, credentials, args);
}

}  // namespace transferd::peer
