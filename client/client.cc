#include "client/client.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include <google/protobuf/empty.pb.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/dataset_layout.h"
#include "common/hash.h"
#include "common/stream_protocol.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd::client {

namespace fs = std::filesystem;
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
  std::unique_ptr<v1::Inference::Stub> inference;
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

bool UsesTls(const ClientOptions& o) {
  return o.tls || !o.tls_ca_file.empty() || !o.tls_cert_file.empty() ||
         !o.tls_key_file.empty() || !o.tls_server_name.empty();
}

// What went wrong setting up a connection when it was TLS's doing, in words
// a user can act on; empty when the failure was not about TLS.
std::string TlsFailure(const std::string& detail, const ClientOptions& o) {
  const bool tls = UsesTls(o);
  const std::string trust = o.tls_ca_file.empty()
                                ? std::string("the system's root certificates")
                                : absl::StrCat("--tls-ca ", o.tls_ca_file);
  if (absl::StrContains(detail, "wrong version number")) {
    return "TLS handshake failed: the server does not speak TLS (a plaintext "
           "server?); connect without --tls and the --tls-* options";
  }
  if (absl::StrContains(detail, "certificate verify failed") ||
      absl::StrContains(detail, "CERTIFICATE_VERIFY_FAILED")) {
    return absl::StrCat(
        "TLS handshake failed: the server's certificate is not signed by a "
        "CA in ",
        trust, " (or has expired); give the CA that signed it with --tls-ca");
  }
  if (absl::StrContains(detail, "Peer name") &&
      absl::StrContains(detail, "not in peer certificate")) {
    std::string name = o.tls_server_name;
    if (name.empty()) name = o.address.substr(0, o.address.rfind(':'));
    return absl::StrCat(
        "TLS: the server's certificate is not valid for the name \"", name,
        "\"; connect with a name it carries (--server HOST or "
        "--tls-server-name)");
  }
  if (absl::StrContains(detail, "Ssl handshake failed") ||
      absl::StrContains(detail, "Handshake failed")) {
    return absl::StrCat("TLS handshake failed (",
                        detail.substr(detail.find("andshake failed") - 1), ")");
  }
  if (absl::StrContains(detail, "Socket closed")) {
    // The server hung up while the connection was being set up: the usual
    // sign of a TLS server spoken to in plaintext, or of a server that
    // requires a client certificate this client did not (validly) offer.
    if (!tls) {
      return "the server closed the connection during setup: it likely "
             "expects TLS; connect with --tls-ca CA.crt (or --tls)";
    }
    return o.tls_cert_file.empty()
               ? "the server closed the TLS connection during the handshake: "
                 "it likely requires a client certificate; give one with "
                 "--tls-cert and --tls-key"
               : absl::StrCat(
                     "the server closed the TLS connection during "
                     "the handshake: it likely does not accept the "
                     "client certificate ",
                     o.tls_cert_file, " (not signed by a CA it trusts?)");
  }
  return "";
}

absl::Status FromGrpc(const grpc::Status& status, const ClientOptions& options,
                      bool connected) {
  if (status.ok()) return absl::OkStatus();
  const std::string& address = options.address;
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  if (status.error_code() == grpc::UNAVAILABLE && !connected) {
    if (const std::string tls = TlsFailure(status.error_message(), options);
        !tls.empty()) {
      return absl::UnavailableError(
          absl::StrCat("cannot connect to transferd at ", address, ": ", tls));
    }
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

// The bearer token, when there is one, as "authorization" metadata.
void AddToken(grpc::ClientContext& ctx, const std::string& token) {
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

// One unary call with the client's deadline; `call(ctx, response)` invokes
// the stub method.
template <class Response, class Call>
absl::StatusOr<Response> Unary(const ClientOptions& options,
                               const std::shared_ptr<grpc::Channel>& channel,
                               Call&& call) {
  grpc::ClientContext ctx;
  AddToken(ctx, options.token);
  SetDeadline(ctx, options.timeout);
  Response response;
  grpc::Status status = call(&ctx, &response);
  if (!status.ok()) return FromGrpc(status, options, Connected(channel));
  return response;
}

// Chunk size when the server does not say (its own default).
constexpr int64_t kDefaultChunkBytes = 1024 * 1024;
// Room the server keeps for framing under max_receive_message_bytes.
constexpr int64_t kFramingBytes = 4096;

// One local file to upload.
struct LocalFile {
  fs::path full;
  // Relative to the upload folder, '/'-separated: the FileChunk.path.
  std::string rel;
  int64_t size = 0;
};

bool Hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// The regular files under `dir`, hidden names (and everything under hidden
// folders: .git, .ipynb_checkpoints) skipped, sorted by relative path so
// that the same folder always produces the same stream. Symlinked files are
// followed; symlinked folders are not, so a link loop cannot hang the walk.
absl::StatusOr<std::vector<LocalFile>> ListFiles(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir.string(), " is not a directory"));
  }
  std::vector<LocalFile> files;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec);
  for (const fs::recursive_directory_iterator end; !ec && it != end;
       it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    if (Hidden(entry.path())) {
      if (entry.is_directory(ec)) it.disable_recursion_pending();
      ec.clear();
      continue;
    }
    if (!entry.is_regular_file(ec)) {
      ec.clear();  // a dangling link or a socket: not a file to send
      continue;
    }
    LocalFile f;
    f.full = entry.path();
    f.rel = entry.path().lexically_relative(dir).generic_string();
    const uintmax_t size = entry.file_size(ec);
    if (ec) break;
    f.size = static_cast<int64_t>(size);
    files.push_back(std::move(f));
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  }
  std::sort(
      files.begin(), files.end(),
      [](const LocalFile& a, const LocalFile& b) { return a.rel < b.rel; });
  return files;
}

bool IsImageName(const std::string& rel) {
  const std::string lower = absl::AsciiStrToLower(rel);
  return absl::EndsWith(lower, ".jpg") || absl::EndsWith(lower, ".jpeg") ||
         absl::EndsWith(lower, ".png");
}

HealthStatus FromProto(HealthCheckResponse::ServingStatus s) {
  switch (s) {
    case HealthCheckResponse::SERVING:
      return HealthStatus::kServing;
    case HealthCheckResponse::NOT_SERVING:
      return HealthStatus::kNotServing;
    case HealthCheckResponse::SERVICE_UNKNOWN:
      return HealthStatus::kServiceUnknown;
    default:
      return HealthStatus::kUnknown;
  }
}

}  // namespace

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

void QuietGrpcLogs() {
  if (const char* v = std::getenv("GRPC_VERBOSITY"); v != nullptr && *v) {
    return;
  }
  gpr_set_log_function([](gpr_log_func_args*) {});
}

bool IsUnreachable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable;
}

std::string DatasetName(std::string_view id_or_name) {
  // Debian's absl::string_view is its own type, not std::string_view.
  const std::string s(id_or_name);
  if (absl::StartsWith(s, "datasets/")) return s;
  return absl::StrCat("datasets/", s);
}

std::string JobName(std::string_view id_or_name) {
  const std::string s(id_or_name);
  if (absl::StartsWith(s, "jobs/")) return s;
  return absl::StrCat("jobs/", s);
}

std::string ModelName(std::string_view id_or_name) {
  const std::string s(id_or_name);
  if (absl::StartsWith(s, "models/") || absl::StartsWith(s, "aliases/")) {
    return s;
  }
  return absl::StrCat("models/", s);
}

std::string AliasName(std::string_view alias_or_name) {
  const std::string s(alias_or_name);
  if (absl::StartsWith(s, "aliases/")) return s;
  return absl::StrCat("aliases/", s);
}

absl::StatusOr<std::string> FileSha256(const fs::path& path) {
  return common::Sha256File(path);
}

absl::StatusOr<std::vector<std::string>> UploadPaths(const fs::path& dir) {
  absl::StatusOr<std::vector<LocalFile>> files = ListFiles(dir);
  if (!files.ok()) return files.status();
  std::vector<std::string> out;
  out.reserve(files->size());
  for (LocalFile& f : *files) out.push_back(std::move(f.rel));
  return out;
}

absl::StatusOr<DatasetLayout> DetectLayout(const fs::path& dir) {
  absl::StatusOr<std::vector<LocalFile>> files = ListFiles(dir);
  if (!files.ok()) return files.status();
  DatasetLayout layout;
  layout.files = static_cast<int64_t>(files->size());
  // The image paths, and the first of each split (train, validation, test,
  // none): the example shown comes from train when there is one.
  std::vector<std::string> images;
  std::string first[4];
  std::vector<std::string> split_dirs;  // as named on disk
  // train, validation, test: the order people read them in.
  const auto rank = [](const std::string& path) {
    const std::optional<common::Split> split = common::SplitFromFolder(path);
    if (!split.has_value()) return 3;
    return *split == common::Split::kTrain        ? 0
           : *split == common::Split::kValidation ? 1
                                                  : 2;
  };
  for (const LocalFile& f : *files) {
    const int r = rank(f.rel);
    if (r < 3) {
      const std::string top = f.rel.substr(0, f.rel.find('/'));
      if (std::find(split_dirs.begin(), split_dirs.end(), top) ==
          split_dirs.end()) {
        split_dirs.push_back(top);
      }
    }
    if (!IsImageName(f.rel)) continue;
    images.push_back(f.rel);
    if (first[r].empty()) first[r] = f.rel;
  }
  std::stable_sort(split_dirs.begin(), split_dirs.end(),
                   [&](const std::string& a, const std::string& b) {
                     return rank(a + "/") < rank(b + "/");
                   });
  layout.image_files = static_cast<int64_t>(images.size());
  layout.split_folders = std::move(split_dirs);
  if (images.empty()) return layout;
  // The server's own rules (common/dataset_layout.h) decide.
  const common::LabelSource source = common::DetectLabelSource(images);
  layout.label_source = source == common::LabelSource::kFolder
                            ? v1::LABEL_SOURCE_FOLDER
                            : v1::LABEL_SOURCE_FILENAME;
  for (const std::string& f : first) {
    if (f.empty()) continue;
    layout.example_path = f;
    break;
  }
  absl::StatusOr<std::string> label =
      source == common::LabelSource::kFolder
          ? common::LabelFromFolder(layout.example_path)
          : common::LabelFromFilename(layout.example_path);
  // A name without LABEL.ID.EXT: the server will say why at upload.
  layout.example_label = label.ok() ? *label : "";
  return layout;
}

std::string DescribeLayout(const DatasetLayout& layout) {
  std::string out;
  if (layout.split_folders.empty()) {
    out = "no split folders";
  } else {
    out = "split folders";
    for (const std::string& s : layout.split_folders) {
      absl::StrAppend(&out, " ", s, "/");
    }
  }
  switch (layout.label_source) {
    case v1::LABEL_SOURCE_FILENAME:
      absl::StrAppend(&out, "; labels from file names (",
                      fs::path(layout.example_path).filename().string(), " -> ",
                      layout.example_label, ")");
      break;
    case v1::LABEL_SOURCE_FOLDER: {
      absl::StrAppend(&out, "; class folders (", layout.example_path, " -> ",
                      layout.example_label, ")");
      // Nested folders below the class folder's parent ("train/0/0/0/x.jpg")
      // are more often storage shards than classes: say so.
      std::string_view rest = layout.example_path;
      if (!layout.split_folders.empty()) {
        rest.remove_prefix(std::min(rest.size(), rest.find('/') + 1));
      }
      if (std::count(rest.begin(), rest.end(), '/') >= 2) {
        absl::StrAppend(&out,
                        "; nested folders: if they are not classes, give "
                        "labels with --labels csv:FILE");
      }
      break;
    }
    default:
      absl::StrAppend(&out, "; no JPEG or PNG files");
      break;
  }
  absl::StrAppend(
      &out, "; ", layout.files, layout.files == 1 ? " file, " : " files, ",
      layout.image_files, layout.image_files == 1 ? " image" : " images");
  return out;
}

absl::StatusOr<std::string> DescribeLayout(const fs::path& dir) {
  absl::StatusOr<DatasetLayout> layout = DetectLayout(dir);
  if (!layout.ok()) return layout.status();
  return DescribeLayout(*layout);
}

namespace {

// A PEM file's text; empty for no file (or one that cannot be read: the
// connection then fails with the TLS library's reason).
std::string ReadText(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::unique_ptr<Client> Client::Create(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  // A restarted server is found again within a couple of seconds (gRPC's
  // default reconnect backoff grows to two minutes): WatchJob relies on it.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto stubs = std::make_unique<Stubs>();
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls || !options.tls_ca_file.empty() ||
      !options.tls_cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs =
        ReadText(options.tls_ca_file);  // empty: the system's roots
    ssl.pem_cert_chain = ReadText(options.tls_cert_file);
    ssl.pem_private_key = ReadText(options.tls_key_file);
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  stubs->channel =
      grpc::CreateCustomChannel(options.address, credentials, args);
  stubs->server = v1::Server::NewStub(stubs->channel);
  stubs->datasets = v1::Datasets::NewStub(stubs->channel);
  stubs->jobs = v1::Jobs::NewStub(stubs->channel);
  stubs->models = v1::Models::NewStub(stubs->channel);
  stubs->inference = v1::Inference::NewStub(stubs->channel);
  stubs->health = Health::NewStub(stubs->channel);
  return std::unique_ptr<Client>(new Client(options, std::move(stubs)));
}

Client::Client(ClientOptions options, std::unique_ptr<Stubs> stubs)
    : options_(std::move(options)), stubs_(std::move(stubs)) {}

Client::~Client() = default;

absl::StatusOr<v1::ServerInfo> Client::GetServerInfo() {
  return Unary<v1::ServerInfo>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ServerInfo* out) {
        return stubs_->server->GetServerInfo(ctx, v1::GetServerInfoRequest(),
                                             out);
      });
}

absl::StatusOr<HealthStatus> Client::CheckHealth(
    const std::string& service, std::chrono::milliseconds wait) {
  HealthCheckRequest request;
  request.set_service(service);
  if (wait.count() <= 0) {
    grpc::ClientContext ctx;
    AddToken(ctx, options_.token);
    SetDeadline(ctx, options_.timeout);
    HealthCheckResponse response;
    grpc::Status status = stubs_->health->Check(&ctx, request, &response);
    if (status.error_code() == grpc::NOT_FOUND) {
      return HealthStatus::kServiceUnknown;
    }
    if (!status.ok()) {
      return FromGrpc(status, options_, Connected(stubs_->channel));
    }
    return FromProto(response.status());
  }

  // Watch until SERVING or the deadline, waiting for the server to appear.
  grpc::ClientContext ctx;
  AddToken(ctx, options_.token);
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
  return FromGrpc(status, options_, false);
}

absl::StatusOr<v1::ListDatasetsResponse> Client::ListDatasets(
    const v1::ListDatasetsRequest& request) {
  return Unary<v1::ListDatasetsResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListDatasetsResponse* out) {
        return stubs_->datasets->ListDatasets(ctx, request, out);
      });
}

absl::StatusOr<v1::Dataset> Client::GetDataset(const std::string& name) {
  v1::GetDatasetRequest request;
  request.set_name(name);
  return Unary<v1::Dataset>(options_, stubs_->channel,
                            [&](grpc::ClientContext* ctx, v1::Dataset* out) {
                              return stubs_->datasets->GetDataset(ctx, request,
                                                                  out);
                            });
}

absl::Status Client::DeleteDataset(const std::string& name) {
  v1::DeleteDatasetRequest request;
  request.set_name(name);
  return Unary<google::protobuf::Empty>(
             options_, stubs_->channel,
             [&](grpc::ClientContext* ctx, google::protobuf::Empty* out) {
               return stubs_->datasets->DeleteDataset(ctx, request, out);
             })
      .status();
}

absl::StatusOr<int64_t> Client::UploadChunkBytes() {
  int64_t chunk_bytes = kDefaultChunkBytes;
  absl::StatusOr<v1::ServerInfo> info = GetServerInfo();
  if (!info.ok() && IsUnreachable(info.status())) return info.status();
  if (info.ok()) {
    const v1::Limits& limits = info->limits();
    if (limits.upload_chunk_bytes() > 0)
      chunk_bytes = limits.upload_chunk_bytes();
    // A chunk must fit the server's receive limit with its framing.
    if (limits.max_receive_message_bytes() > 2 * kFramingBytes) {
      chunk_bytes = std::min(
          chunk_bytes, limits.max_receive_message_bytes() - kFramingBytes);
    }
  }
  return chunk_bytes;
}

namespace {

// The first message of an upload: what is coming and where it goes.
void FillUploadHeader(const UploadOptions& options, const UploadProgress& state,
                      v1::UploadHeader* header) {
  header->set_dataset_id(options.dataset_id);
  header->set_display_name(options.display_name);
  header->set_label_source(options.label_source);
  if (options.split_policy.has_value()) {
    *header->mutable_split_policy() = *options.split_policy;
  }
  header->set_expected_files(state.files_total);
  header->set_expected_bytes(state.bytes_total);
  header->set_server_path(options.server_path);
}

// Calls `progress` (when set) with `state`, its elapsed time measured from
// the reporter's creation.
std::function<void()> Reporter(const ProgressCallback& progress,
                               UploadProgress& state) {
  const auto start = std::chrono::steady_clock::now();
  return [&progress, &state, start] {
    if (!progress) return;
    state.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    progress(state);
  };
}

// How sending one file ended.
enum class FileSent { kAll, kServerEnded };

// Sends `f` through `writer` as chunks of at most `chunk_bytes`, each built
// in `chunk` (part of `request`), counting it in `state` and calling
// `report()` after every chunk. kServerEnded: a Write failed, the call's
// status says why. An error is a local failure (cancelled, unreadable
// file): the caller abandons the call.
template <class Cancelled, class Report>
absl::StatusOr<FileSent> SendFile(
    const LocalFile& f, const std::string* label, int64_t chunk_bytes,
    const Cancelled& cancelled, const Report& report,
    grpc::ClientWriter<v1::UploadDatasetRequest>& writer,
    const v1::UploadDatasetRequest& request, v1::FileChunk* chunk,
    UploadProgress& state) {
  std::ifstream in(f.full, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read ", f.full.string(), ": ", std::strerror(errno)));
  }
  bool first = true;
  bool last = false;
  while (!last) {
    if (cancelled()) {
      return absl::CancelledError(
          "upload cancelled; the server keeps nothing of it");
    }
    chunk->Clear();
    if (first) {
      chunk->set_path(f.rel);
      chunk->set_size(f.size);
      if (label != nullptr) chunk->set_label(*label);
    }
    // Read straight into the message: one chunk in memory at a time.
    std::string* data = chunk->mutable_data();
    data->resize(static_cast<size_t>(chunk_bytes));
    in.read(data->data(), static_cast<std::streamsize>(chunk_bytes));
    if (in.bad()) {
      return absl::DataLossError(
          absl::StrCat("error reading ", f.full.string()));
    }
    data->resize(static_cast<size_t>(in.gcount()));
    // The file ends where reading does, not where the listing said: a
    // file that changed meanwhile is sent as it is now and the server
    // rejects just that file (SIZE_MISMATCH) instead of the whole upload.
    last = in.eof() || in.peek() == std::ifstream::traits_type::eof();
    chunk->set_last(last);
    if (!writer.Write(request)) return FileSent::kServerEnded;
    first = false;
    state.bytes_sent += static_cast<int64_t>(data->size());
    if (last) ++state.files_sent;
    report();
  }
  return FileSent::kAll;
}

}  // namespace

namespace {

// After an upload's header: waits for the server's initial metadata, which
// says the header was accepted (common/stream_protocol.h); false when the
// server has ended the call instead (then Finish() says why).
template <class Request>
bool UploadAccepted(grpc::ClientContext& ctx,
                    grpc::ClientWriter<Request>& writer) {
  writer.WaitForInitialMetadata();
  const auto& metadata = ctx.GetServerInitialMetadata();
  const auto it = metadata.find(common::kUploadAcceptedMetadata);
  return it != metadata.end() && it->second == common::kUploadAcceptedValue;
}

}  // namespace

namespace {

// The SHA-256 of every file, from the cache where path, size and
// modification time are unchanged; the cache is rewritten afterwards.
std::vector<std::string> HashFiles(const UploadOptions& options,
                                   const std::vector<LocalFile>& files,
                                   absl::Status* error) {
  fs::path dir = options.hash_cache_dir;
  if (dir.empty()) {
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
      dir = fs::path(xdg) / "transferctl";
    } else if (const char* home = std::getenv("HOME"); home && *home) {
      dir = fs::path(home) / ".cache" / "transferctl";
    }
  }
  std::error_code ec;
  const std::string folder =
      fs::absolute(options.directory, ec).lexically_normal().string();
  common::Sha256 key;
  key.Update(folder.data(), folder.size());
  const fs::path cache =
      dir.empty() ? fs::path()
                  : dir / ("hashes-" + key.HexDigest().substr(0, 16) + ".tsv");
  std::map<std::string, std::string> cached;  // "rel\tsize\tmtime" -> sha
  if (!cache.empty()) {
    std::ifstream in(cache);
    std::string line;
    while (std::getline(in, line)) {
      const size_t tab = line.rfind('\t');
      if (tab != std::string::npos)
        cached[line.substr(0, tab)] = line.substr(tab + 1);
    }
  }
  std::vector<std::string> out;
  std::string text;
  for (const LocalFile& f : files) {
    const auto mtime = fs::last_write_time(f.full, ec).time_since_epoch();
    const std::string id = absl::StrCat(
        f.rel, "\t", f.size, "\t",
        std::chrono::duration_cast<std::chrono::nanoseconds>(mtime).count());
    auto it = cached.find(id);
    std::string sha;
    if (it != cached.end()) {
      sha = it->second;
    } else {
      absl::StatusOr<std::string> h = common::Sha256File(f.full);
      if (!h.ok()) {
        *error = h.status();
        return {};
      }
      sha = *std::move(h);
    }
    absl::StrAppend(&text, id, "\t", sha, "\n");
    out.push_back(std::move(sha));
  }
  if (!cache.empty()) {
    fs::create_directories(dir, ec);
    const fs::path tmp = cache.string() + ".tmp";
    {
      std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
      o << text;
    }
    fs::rename(tmp, cache, ec);  // a cache: failing to write it is harmless
  }
  return out;
}

}  // namespace

namespace {

// Stages the contents the server lacks (each once), then creates the
// dataset with every file by reference.
absl::StatusOr<v1::UploadDatasetResponse> UploadByContent(
    v1::Datasets::Stub& stub, const ClientOptions& client_options,
    const std::shared_ptr<grpc::Channel>& channel, const UploadOptions& options,
    const std::vector<LocalFile>& files, const std::vector<std::string>& hashes,
    const std::vector<bool>& held, int64_t chunk_bytes, UploadProgress& state,
    const ProgressCallback& progress) {
  const auto report = Reporter(progress, state);
  const auto cancelled = [&] {
    return options.cancel != nullptr &&
           options.cancel->load(std::memory_order_relaxed);
  };
  // The dataset's stream opens first: a refused header (id taken or
  // invalid, role, quota) is said before any byte is sent, and the id stays
  // reserved while the contents go.
  grpc::ClientContext upload_ctx;
  AddToken(upload_ctx, client_options.token);
  if (options.deadline.count() > 0) SetDeadline(upload_ctx, options.deadline);
  v1::UploadDatasetResponse response;
  auto upload = stub.UploadDataset(&upload_ctx, &response);
  const auto upload_failed = [&]() -> absl::Status {
    grpc::Status status = upload->Finish();
    return status.ok() ? absl::InternalError("the upload ended early")
                       : FromGrpc(status, client_options, Connected(channel));
  };
  const auto abandon = [&](absl::Status why) -> absl::Status {
    upload_ctx.TryCancel();
    (void)upload->Finish();
    return why;
  };
  {
    v1::UploadDatasetRequest header;
    FillUploadHeader(options, state, header.mutable_header());
    if (!upload->Write(header) || !UploadAccepted(upload_ctx, *upload)) {
      return upload_failed();
    }
  }

  std::set<std::string> staged;  // contents the server holds now
  for (size_t i = 0; i < files.size(); ++i) {
    if (!held[i]) continue;
    staged.insert(hashes[i]);
    ++state.files_sent;
    ++state.files_held;
    state.bytes_sent += files[i].size;
    state.bytes_held += files[i].size;
  }
  report();

  // Step 2: the missing contents, each stored by the server as it ends.
  if (state.files_held < state.files_total) {
    grpc::ClientContext ctx;
    AddToken(ctx, client_options.token);
    if (options.deadline.count() > 0) SetDeadline(ctx, options.deadline);
    v1::StageContentResponse response;
    auto writer = stub.StageContent(&ctx, &response);
    v1::StageContentRequest request;
    bool broken = false;
    for (size_t i = 0; i < files.size() && !broken; ++i) {
      if (held[i]) continue;
      const LocalFile& f = files[i];
      if (staged.count(hashes[i]) >
          0) {  // the same bytes earlier in the folder
        ++state.files_sent;
        state.bytes_sent += f.size;
        report();
        continue;
      }
      std::ifstream in(f.full, std::ios::binary);
      if (!in) {
        ctx.TryCancel();
        (void)writer->Finish();
        return abandon(absl::FailedPreconditionError(absl::StrCat(
            "cannot read ", f.full.string(), ": ", std::strerror(errno))));
      }
      bool first = true;
      bool last = false;
      while (!last) {
        if (cancelled()) {
          // A graceful end: the server stores every content that arrived
          // whole (a half-sent one is dropped), so a rerun resumes there.
          (void)writer->WritesDone();
          (void)writer->Finish();
          return abandon(absl::CancelledError(absl::StrCat(
              "upload cancelled; the ", state.files_sent - state.files_held,
              " files sent so far stay on the server and will not be sent "
              "again")));
        }
        request.Clear();
        if (first) {
          request.set_sha256(hashes[i]);
          request.set_size(f.size);
        }
        std::string* data = request.mutable_data();
        data->resize(static_cast<size_t>(chunk_bytes));
        in.read(data->data(), static_cast<std::streamsize>(chunk_bytes));
        data->resize(static_cast<size_t>(in.gcount()));
        last = in.eof() || in.peek() == std::ifstream::traits_type::eof();
        request.set_last(last);
        if (!writer->Write(request)) {
          broken = true;
          break;
        }
        first = false;
        state.bytes_sent += static_cast<int64_t>(data->size());
        if (last) {
          ++state.files_sent;
          staged.insert(hashes[i]);
        }
        report();
      }
    }
    if (!broken) (void)writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (!status.ok()) {
      return abandon(FromGrpc(status, client_options, Connected(channel)));
    }
  }

  // Step 3: every file by reference, on the dataset's stream.
  v1::UploadDatasetRequest request;
  {
    v1::FileChunk* chunk = request.mutable_chunk();
    for (size_t i = 0; i < files.size(); ++i) {
      chunk->Clear();
      chunk->set_path(files[i].rel);
      chunk->set_size(files[i].size);
      chunk->set_sha256(hashes[i]);
      chunk->set_last(true);
      const auto label = options.explicit_labels.find(files[i].rel);
      if (label != options.explicit_labels.end())
        chunk->set_label(label->second);
      if (!upload->Write(request)) break;
    }
    (void)upload->WritesDone();
  }
  grpc::Status status = upload->Finish();
  if (!status.ok()) return FromGrpc(status, client_options, Connected(channel));
  return response;
}

}  // namespace

absl::StatusOr<std::vector<bool>> Client::FindContent(
    const std::vector<std::string>& sha256) {
  std::vector<bool> held(sha256.size(), true);
  constexpr size_t kBatch = 5000;
  for (size_t begin = 0; begin < sha256.size(); begin += kBatch) {
    v1::FindContentRequest request;
    const size_t end = std::min(sha256.size(), begin + kBatch);
    for (size_t i = begin; i < end; ++i) request.add_sha256(sha256[i]);
    absl::StatusOr<v1::FindContentResponse> response =
        Unary<v1::FindContentResponse>(
            options_, stubs_->channel,
            [&](grpc::ClientContext* ctx, v1::FindContentResponse* out) {
              return stubs_->datasets->FindContent(ctx, request, out);
            });
    if (!response.ok()) return response.status();
    for (int32_t m : response->missing()) {
      if (m < 0 || static_cast<size_t>(m) >= end - begin) {
        return absl::InternalError(
            "FindContent answered an index out of range");
      }
      held[begin + static_cast<size_t>(m)] = false;
    }
  }
  return held;
}

absl::StatusOr<v1::UploadDatasetResponse> Client::UploadDataset(
    const UploadOptions& options, const ProgressCallback& progress) {
  if (!options.server_path.empty()) {
    // An import: the header alone, then the server's answer.
    grpc::ClientContext ctx;
    AddToken(ctx, options_.token);
    if (options.deadline.count() > 0) SetDeadline(ctx, options.deadline);
    v1::UploadDatasetResponse response;
    auto writer = stubs_->datasets->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest request;
    FillUploadHeader(options, UploadProgress(), request.mutable_header());
    if (writer->Write(request) && UploadAccepted(ctx, *writer)) {
      (void)writer->WritesDone();
    }
    grpc::Status status = writer->Finish();
    if (!status.ok()) {
      return FromGrpc(status, options_, Connected(stubs_->channel));
    }
    return response;
  }
  absl::StatusOr<std::vector<LocalFile>> files = ListFiles(options.directory);
  if (!files.ok()) return files.status();
  if (!options.explicit_labels.empty()) {
    files->erase(std::remove_if(files->begin(), files->end(),
                                [&](const LocalFile& f) {
                                  return options.explicit_labels.count(f.rel) ==
                                         0;
                                }),
                 files->end());
  }
  if (files->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no files to upload under ", options.directory.string()));
  }

  // The server says how large chunks should be; an unreachable server fails
  // here, before anything is read.
  absl::StatusOr<int64_t> chunk_bytes = UploadChunkBytes();
  if (!chunk_bytes.ok()) return chunk_bytes.status();

  UploadProgress state;
  state.files_total = static_cast<int64_t>(files->size());
  for (const LocalFile& f : *files) state.bytes_total += f.size;

  {
    absl::Status hash_error;
    const std::vector<std::string> hashes =
        HashFiles(options, *files, &hash_error);
    if (!hash_error.ok()) return hash_error;
    absl::StatusOr<std::vector<bool>> held = FindContent(hashes);
    if (held.ok()) {
      return UploadByContent(*stubs_->datasets, options_, stubs_->channel,
                             options, *files, hashes, *held, *chunk_bytes,
                             state, progress);
    }
    // An older server without FindContent gets the whole stream.
    if (!absl::IsUnimplemented(held.status())) return held.status();
  }

  // No deadline by default: a large dataset takes as long as it takes. The
  // caller stops it through options.cancel (or options.deadline).
  grpc::ClientContext ctx;
  AddToken(ctx, options_.token);
  if (options.deadline.count() > 0) SetDeadline(ctx, options.deadline);
  v1::UploadDatasetResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
      stubs_->datasets->UploadDataset(&ctx, &response);

  // The server ended the call (Write returned false) or all was sent: its
  // status (RESOURCE_EXHAUSTED, ALREADY_EXISTS, ...) comes with Finish.
  const auto finish = [&]() -> absl::StatusOr<v1::UploadDatasetResponse> {
    grpc::Status status = writer->Finish();
    if (!status.ok()) {
      return FromGrpc(status, options_, Connected(stubs_->channel));
    }
    return response;
  };
  // Stops the call for a local reason; the server discards what it got.
  const auto abandon = [&](absl::Status why) -> absl::Status {
    ctx.TryCancel();
    (void)writer->Finish();
    return why;
  };
  const auto cancelled = [&] {
    return options.cancel != nullptr &&
           options.cancel->load(std::memory_order_relaxed);
  };

  v1::UploadDatasetRequest request;
  FillUploadHeader(options, state, request.mutable_header());
  if (!writer->Write(request)) return finish();
  // Nothing more is sent until the server has checked the header (role, id,
  // quota): a refusal comes now, not after the whole upload.
  if (!UploadAccepted(ctx, *writer)) return finish();

  const auto report = Reporter(progress, state);
  report();

  v1::FileChunk* chunk = request.mutable_chunk();
  for (const LocalFile& f : *files) {
    const auto label = options.explicit_labels.find(f.rel);
    absl::StatusOr<FileSent> sent = SendFile(
        f, label == options.explicit_labels.end() ? nullptr : &label->second,
        *chunk_bytes, cancelled, report, *writer, request, chunk, state);
    if (!sent.ok()) return abandon(sent.status());
    if (*sent == FileSent::kServerEnded) return finish();
  }
  if (cancelled()) {
    return abandon(absl::CancelledError(
        "upload cancelled; the server keeps nothing of it"));
  }
  (void)writer->WritesDone();
  return finish();
}

absl::StatusOr<v1::Job> Client::CreateJob(const v1::CreateJobRequest& request) {
  return Unary<v1::Job>(options_, stubs_->channel,
                        [&](grpc::ClientContext* ctx, v1::Job* out) {
                          return stubs_->jobs->CreateJob(ctx, request, out);
                        });
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& name) {
  v1::GetJobRequest request;
  request.set_name(name);
  return Unary<v1::Job>(options_, stubs_->channel,
                        [&](grpc::ClientContext* ctx, v1::Job* out) {
                          return stubs_->jobs->GetJob(ctx, request, out);
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

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& name) {
  v1::CancelJobRequest request;
  request.set_name(name);
  return Unary<v1::Job>(options_, stubs_->channel,
                        [&](grpc::ClientContext* ctx, v1::Job* out) {
                          return stubs_->jobs->CancelJob(ctx, request, out);
                        });
}

namespace {

// Calls ctx->TryCancel() as soon as *cancel turns true, from a helper
// thread polling every 50 ms, until the guard is destroyed. Nothing runs
// when cancel is null.
class CancelGuard {
 public:
  CancelGuard(grpc::ClientContext* ctx, const std::atomic<bool>* cancel) {
    if (cancel == nullptr) return;
    thread_ = std::thread([this, ctx, cancel] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!done_) {
        if (cancel->load(std::memory_order_relaxed)) {
          ctx->TryCancel();
          return;
        }
        cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
    });
  }
  ~CancelGuard() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  CancelGuard(const CancelGuard&) = delete;
  CancelGuard& operator=(const CancelGuard&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

std::string Seconds(std::chrono::milliseconds ms) {
  const double s = static_cast<double>(ms.count()) / 1000;
  return s == static_cast<double>(static_cast<int64_t>(s))
             ? absl::StrCat(static_cast<int64_t>(s))
             : absl::StrCat(s);
}

// One WatchJob call for the events after `*last`, passing new ones to
// `on_event` and advancing `*last`; `*received` tells whether any event
// arrived. Returns the call's status.
grpc::Status WatchOnce(v1::Jobs::Stub& jobs, const std::string& token,
                       const std::string& name, bool follow,
                       const std::atomic<bool>* cancel,
                       const JobEventCallback& on_event, int64_t* last,
                       bool* received) {
  grpc::ClientContext ctx;
  AddToken(ctx, token);
  v1::WatchJobRequest request;
  request.set_name(name);
  request.set_after_sequence(*last);
  request.set_follow(follow);
  *received = false;
  grpc::Status status;
  {
    CancelGuard guard(&ctx, cancel);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader =
        jobs.WatchJob(&ctx, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      *received = true;
      // The server sends each event once; a resent one is skipped anyway,
      // so a reconnect never shows an event twice.
      if (event.sequence() <= *last) continue;
      *last = event.sequence();
      if (on_event) on_event(event);
    }
    status = reader->Finish();
  }
  return status;
}

// How waiting to reconnect ended.
enum class Reconnect { kConnected, kCancelled, kGaveUp };

// Pauses until `resume` (in slices, to notice a cancel), then waits for
// `channel` to connect again, up to `give_up`.
template <class Cancelled>
Reconnect AwaitReconnect(grpc::Channel& channel,
                         std::chrono::steady_clock::time_point resume,
                         std::chrono::steady_clock::time_point give_up,
                         const Cancelled& cancelled) {
  using Clock = std::chrono::steady_clock;
  while (Clock::now() < resume) {
    if (cancelled()) return Reconnect::kCancelled;
    std::this_thread::sleep_for(std::min<Clock::duration>(
        std::chrono::milliseconds(50), resume - Clock::now()));
  }
  // (gRPC deadlines are system_clock time points.)
  const auto slice = [&] {
    return std::chrono::system_clock::now() +
           std::min<Clock::duration>(std::chrono::milliseconds(100),
                                     give_up - Clock::now());
  };
  while (!channel.WaitForConnected(slice())) {
    if (cancelled()) return Reconnect::kCancelled;
    if (Clock::now() >= give_up) return Reconnect::kGaveUp;
  }
  return Reconnect::kConnected;
}

}  // namespace

absl::Status Client::WatchJob(const std::string& name, int64_t after_sequence,
                              bool follow, const JobEventCallback& on_event,
                              const WatchOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto cancelled = [&] {
    return options.cancel != nullptr &&
           options.cancel->load(std::memory_order_relaxed);
  };
  const auto stopped = [] {
    return absl::CancelledError("watch stopped; the job is not affected");
  };
  int64_t last = after_sequence;
  // When the current outage began; unset while the stream is healthy.
  std::optional<Clock::time_point> broken_since;
  std::chrono::milliseconds backoff = options.initial_backoff;
  for (int attempt = 0;; ++attempt) {
    if (cancelled()) return stopped();
    bool received = false;
    const grpc::Status status =
        WatchOnce(*stubs_->jobs, options_.token, name, follow, options.cancel,
                  on_event, &last, &received);
    if (cancelled()) return stopped();
    if (status.ok()) return absl::OkStatus();
    // UNAVAILABLE: the server went away (shutdown, restart, network) or is
    // not ready yet. CANCELLED that this client did not ask for: a server in
    // its shutdown grace period cancels the calls it has not answered, such
    // as a reconnect that reached it just before it closed. Both mean "try
    // again"; any other status is the watch's answer.
    if (status.error_code() != grpc::UNAVAILABLE &&
        status.error_code() != grpc::CANCELLED) {
      return FromGrpc(status, options_, true);
    }
    // Nothing reachable at the very first attempt is the usual "cannot
    // reach" error, at once. (The server's own "starting or shutting down"
    // answer proves it was reached: that one is retried.)
    if (attempt == 0 && !received && !Connected(stubs_->channel) &&
        status.error_code() == grpc::UNAVAILABLE &&
        !absl::StrContains(status.error_message(), "shutting down")) {
      return FromGrpc(status, options_, false);
    }
    const Clock::time_point now = Clock::now();
    if (received || !broken_since.has_value()) {
      broken_since = now;
      backoff = options.initial_backoff;
    }
    const Clock::time_point give_up = *broken_since + options.reconnect_for;
    const auto lost = [&] {
      return absl::UnavailableError(absl::StrCat(
          "lost the event stream of ", name, " from transferd at ",
          options_.address, " and could not get it back within ",
          Seconds(options.reconnect_for), " s (", status.error_message(),
          "); the server is gone or unreachable"));
    };
    if (now >= give_up) return lost();
    if (options.on_reconnect) {
      options.on_reconnect(
          absl::UnavailableError(status.error_message().empty()
                                     ? "the server cancelled the stream"
                                     : status.error_message()),
          last);
    }
    // Pause (in slices, to notice a cancel), then wait for the channel to
    // connect again, up to the end of the budget.
    const Clock::time_point resume = std::min(now + backoff, give_up);
    backoff = std::min(backoff * 2, options.max_backoff);
    switch (AwaitReconnect(*stubs_->channel, resume, give_up, cancelled)) {
      case Reconnect::kConnected:
        break;
      case Reconnect::kCancelled:
        return stopped();
      case Reconnect::kGaveUp:
        return lost();
    }
  }
}

absl::StatusOr<v1::ListJobPredictionsResponse> Client::ListJobPredictions(
    const v1::ListJobPredictionsRequest& request) {
  return Unary<v1::ListJobPredictionsResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListJobPredictionsResponse* out) {
        return stubs_->jobs->ListJobPredictions(ctx, request, out);
      });
}

absl::StatusOr<v1::PredictResponse> Client::Predict(
    const v1::PredictRequest& request) {
  return Unary<v1::PredictResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::PredictResponse* out) {
        return stubs_->inference->Predict(ctx, request, out);
      });
}

absl::StatusOr<v1::Model> Client::GetModel(const std::string& name) {
  v1::GetModelRequest request;
  request.set_name(name);
  return Unary<v1::Model>(options_, stubs_->channel,
                          [&](grpc::ClientContext* ctx, v1::Model* out) {
                            return stubs_->models->GetModel(ctx, request, out);
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

absl::Status Client::DeleteModel(const std::string& name) {
  v1::DeleteModelRequest request;
  request.set_name(name);
  return Unary<google::protobuf::Empty>(
             options_, stubs_->channel,
             [&](grpc::ClientContext* ctx, google::protobuf::Empty* out) {
               return stubs_->models->DeleteModel(ctx, request, out);
             })
      .status();
}

absl::StatusOr<v1::Alias> Client::SetAlias(const std::string& alias,
                                           const std::string& model) {
  v1::SetAliasRequest request;
  request.set_alias(alias);
  request.set_model(model);
  return Unary<v1::Alias>(options_, stubs_->channel,
                          [&](grpc::ClientContext* ctx, v1::Alias* out) {
                            return stubs_->models->SetAlias(ctx, request, out);
                          });
}

absl::Status Client::DeleteAlias(const std::string& alias) {
  v1::DeleteAliasRequest request;
  request.set_alias(alias);
  return Unary<google::protobuf::Empty>(
             options_, stubs_->channel,
             [&](grpc::ClientContext* ctx, google::protobuf::Empty* out) {
               return stubs_->models->DeleteAlias(ctx, request, out);
             })
      .status();
}

absl::StatusOr<v1::ListAliasesResponse> Client::ListAliases(
    const v1::ListAliasesRequest& request) {
  return Unary<v1::ListAliasesResponse>(
      options_, stubs_->channel,
      [&](grpc::ClientContext* ctx, v1::ListAliasesResponse* out) {
        return stubs_->models->ListAliases(ctx, request, out);
      });
}

absl::StatusOr<ExportResult> Client::ExportModel(
    const std::string& name, const fs::path& path,
    std::chrono::milliseconds deadline) {
  const fs::path part = path.string() + ".part";
  std::ofstream out(part, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create ", part.string(), ": ", std::strerror(errno)));
  }
  const auto fail = [&](absl::Status why) -> absl::Status {
    out.close();
    std::error_code ec;
    fs::remove(part, ec);
    return why;
  };
  grpc::ClientContext ctx;
  AddToken(ctx, options_.token);
  if (deadline.count() > 0) SetDeadline(ctx, deadline);
  v1::ExportModelRequest request;
  request.set_name(name);
  std::unique_ptr<grpc::ClientReader<v1::ExportModelChunk>> reader =
      stubs_->models->ExportModel(&ctx, request);
  v1::ExportModelChunk chunk;
  int64_t total = -1;
  int64_t received = 0;
  std::string server_sha256;
  const auto abandon = [&](absl::Status why) -> absl::Status {
    ctx.TryCancel();
    (void)reader->Finish();
    return fail(std::move(why));
  };
  while (reader->Read(&chunk)) {
    if (total < 0) total = chunk.total_bytes();
    if (chunk.total_bytes() != total || chunk.offset() < 0 ||
        chunk.offset() + static_cast<int64_t>(chunk.data().size()) > total) {
      return abandon(absl::DataLossError(
          absl::StrCat("the server sent a chunk outside the archive (offset ",
                       chunk.offset(), ", ", chunk.data().size(),
                       " bytes, total ", chunk.total_bytes(), ")")));
    }
    out.seekp(chunk.offset());
    out.write(chunk.data().data(),
              static_cast<std::streamsize>(chunk.data().size()));
    if (!out) {
      return abandon(
          absl::DataLossError(absl::StrCat("error writing ", part.string())));
    }
    received += static_cast<int64_t>(chunk.data().size());
    if (!chunk.sha256().empty()) server_sha256 = chunk.sha256();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok())
    return fail(FromGrpc(status, options_, Connected(stubs_->channel)));
  out.close();
  if (!out)
    return fail(
        absl::DataLossError(absl::StrCat("error writing ", part.string())));
  if (total < 0 || received != total) {
    return fail(absl::DataLossError(
        absl::StrCat("the archive is incomplete: got ", received, " of ",
                     std::max<int64_t>(total, 0), " bytes")));
  }
  absl::StatusOr<std::string> sha256 = FileSha256(part);
  if (!sha256.ok()) return fail(sha256.status());
  if (server_sha256.empty() || *sha256 != server_sha256) {
    return fail(absl::DataLossError(absl::StrCat(
        "the archive's SHA-256 is ", *sha256, " but the server said ",
        server_sha256.empty() ? "nothing" : server_sha256)));
  }
  std::error_code ec;
  fs::rename(part, path, ec);
  if (ec) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cannot rename ", part.string(), " to ", path.string(),
                     ": ", ec.message())));
  }
  return ExportResult{path, total, *sha256};
}

absl::StatusOr<v1::Model> Client::ImportModel(
    const fs::path& archive, const std::string& model_id,
    const std::string& display_name, std::chrono::milliseconds deadline) {
  std::ifstream in(archive, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read ", archive.string(), ": ", std::strerror(errno)));
  }
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(archive, ec));
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat ", archive.string()));
  absl::StatusOr<int64_t> chunk_bytes = UploadChunkBytes();
  if (!chunk_bytes.ok()) return chunk_bytes.status();

  grpc::ClientContext ctx;
  AddToken(ctx, options_.token);
  if (deadline.count() > 0) SetDeadline(ctx, deadline);
  v1::Model response;
  std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> writer =
      stubs_->models->ImportModel(&ctx, &response);
  const auto finish = [&]() -> absl::StatusOr<v1::Model> {
    grpc::Status status = writer->Finish();
    if (!status.ok())
      return FromGrpc(status, options_, Connected(stubs_->channel));
    return response;
  };
  v1::ImportModelRequest request;
  v1::ImportModelHeader* header = request.mutable_header();
  header->set_model_id(model_id);
  header->set_display_name(display_name);
  header->set_total_bytes(size);
  if (!writer->Write(request)) return finish();
  if (!UploadAccepted(ctx, *writer)) return finish();
  int64_t sent = 0;
  while (sent < size) {
    std::string* data = request.mutable_data();
    data->resize(static_cast<size_t>(std::min(*chunk_bytes, size - sent)));
    in.read(data->data(), static_cast<std::streamsize>(data->size()));
    if (in.gcount() != static_cast<std::streamsize>(data->size())) {
      ctx.TryCancel();
      (void)writer->Finish();
      return absl::DataLossError(
          absl::StrCat("error reading ", archive.string()));
    }
    if (!writer->Write(request)) return finish();
    sent += static_cast<int64_t>(data->size());
  }
  (void)writer->WritesDone();
  return finish();
}

}  // namespace transferd::client
