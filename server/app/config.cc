#include "server/app/config.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/core/train/rendezvous.h"
#include "server/core/util/build_info.h"

namespace transferd::app {
namespace {

// auto | cpu | cuda | cuda:N
const CLI::Validator kDeviceSpec(
    [](std::string& value) -> std::string {
      if (value == "auto" || value == "cpu" || value == "cuda") return {};
      absl::string_view rest = value;
      int index = -1;
      if (absl::ConsumePrefix(&rest, "cuda:") &&
          absl::SimpleAtoi(rest, &index) && index >= 0) {
        return {};
      }
      return "expected auto, cpu, cuda or cuda:N";
    },
    "DEVICE");

// host:port with a port in [0, 65535]; [v6]:port allowed.
const CLI::Validator kListenAddress(
    [](std::string& value) -> std::string {
      const auto colon = value.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        return "expected HOST:PORT, e.g. 127.0.0.1:50051 or 0.0.0.0:50051";
      }
      int port = -1;
      if (!absl::SimpleAtoi(absl::string_view(value).substr(colon + 1),
                            &port) ||
          port < 0 || port > 65535) {
        return "port must be a number in 0..65535";
      }
      return {};
    },
    "HOST:PORT");

struct Binding {
  CLI::App app{"transferd: gRPC training and inference server", "transferd"};
  ServerConfig config;
  int grace_seconds = 25;
  int startup_timeout_seconds = 60;
  int64_t predict_queue_delay_us = 0;
  bool no_training_yield = false;
  int64_t interactive_burst_ms = 50;
  int min_ping_seconds = 10;
  int max_connection_idle_seconds = 0;
  int max_request_seconds = 300;
  int collective_timeout_seconds = 60;
  bool rendezvous_address_set = false;
  CLI::Option* http_listen = nullptr;
  bool no_metrics = false;
  bool insecure_no_auth = false;
};

// The HTTP port's settings (one listener for metrics, probes, dashboard and
// REST); TLS and tokens are gRPC's.
void BindHttp(Binding& b) {
  b.http_listen =
      b.app
          .add_option("--http-listen", b.config.http.listen_address,
                      "Serve HTTP (dashboard, /api/v1, /v2, /metrics, "
                      "/healthz, /readyz) on this address; given without a "
                      "value: 127.0.0.1:8080. Off by default. Uses the gRPC "
                      "TLS settings and tokens")
          ->envname("TRANSFERD_HTTP_LISTEN")
          ->expected(0, 1)
          ->check(kListenAddress | CLI::IsMember({""}));
  b.app
      .add_flag("--no-metrics", b.no_metrics,
                "Count no metrics (/metrics then answers 404); only to "
                "measure what counting costs (bench/predict_bench "
                "--metrics-cost)")
      ->envname("TRANSFERD_NO_METRICS");
  b.app
      .add_option("--http-threads", b.config.http.threads,
                  "Threads serving HTTP connections: each open keep-alive "
                  "connection holds one, event streams at most a quarter")
      ->envname("TRANSFERD_HTTP_THREADS")
      ->check(CLI::Range(4, 1024));
  b.app
      .add_flag("--metrics-require-token", b.config.http.metrics_require_token,
                "Require a viewer token on /metrics too (by default it is "
                "open, like Prometheus scrape targets usually are)")
      ->envname("TRANSFERD_METRICS_REQUIRE_TOKEN");
}

bool IsLoopback(const std::string& address);

// The HTTP settings after parsing; a usage error message, or "".
std::string FinishHttp(const Binding& b, ServerConfig& config) {
  config.engine.metrics = !b.no_metrics;
  http::HttpServer::Options& http = config.http;
  if (b.http_listen->count() > 0 && http.listen_address.empty()) {
    http.listen_address = "127.0.0.1:8080";
  }
  if (http.listen_address.empty()) {
    return http.metrics_require_token
               ? "--metrics-require-token needs --http-listen"
               : "";
  }
  // Same body and time limits as gRPC's.
  http.max_body_bytes = config.rpc.max_receive_message_bytes;
  http.max_request_time = std::chrono::seconds(b.max_request_seconds);
  http.tls_cert_file = config.rpc.tls_cert_file;
  http.tls_key_file = config.rpc.tls_key_file;
  http.tls_client_ca_file = config.rpc.tls_client_ca_file;
  if (http.metrics_require_token && config.rpc.token_file.empty()) {
    return "--metrics-require-token needs --token-file";
  }
  if (http.tls_cert_file.empty() && !config.rpc.allow_plaintext &&
      !IsLoopback(http.listen_address)) {
    return absl::StrCat("--http-listen ", http.listen_address,
                        " is not a loopback address: serve it over TLS "
                        "(--tls-cert, --tls-key) or allow plaintext "
                        "explicitly with --allow-plaintext");
  }
  return "";
}

// Secure by default: a port that others can reach needs callers to
// authenticate, with bearer tokens or client certificates, unless the
// operator says otherwise in so many words.
std::string CheckAuthentication(const Binding& b, const ServerConfig& config) {
  if (b.insecure_no_auth || !config.rpc.token_file.empty() ||
      !config.rpc.tls_client_ca_file.empty()) {
    return "";
  }
  std::string exposed;
  if (!IsLoopback(config.rpc.listen_address)) {
    exposed = absl::StrCat("--listen ", config.rpc.listen_address);
  } else if (!config.http.listen_address.empty() &&
             !IsLoopback(config.http.listen_address)) {
    exposed = absl::StrCat("--http-listen ", config.http.listen_address);
  } else {
    return "";  // loopback only: the machine's own users
  }
  return absl::StrCat(
      exposed,
      " is not a loopback address and callers would not authenticate: give "
      "bearer tokens with --token-file (or client certificates with "
      "--tls-client-ca), or accept an open server explicitly with "
      "--insecure-no-auth (docs/security.md)");
}

void Bind(Binding& b) {
  CLI::App& app = b.app;
  ServerConfig& c = b.config;
  // Settings come from three places that are merged into one argument list
  // (see ParseServerConfig); the last occurrence of a setting wins.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_version_flag("--version", core::GetBuildInfo().version);
  app.add_option("--config", c.config_file,
                 "Config file: TOML-style `key = value` lines, keys are the "
                 "long flag names without dashes (e.g. log-level = \"debug\")")
      ->envname("TRANSFERD_CONFIG");

  app.add_option("--listen", c.rpc.listen_address,
                 "Address to serve gRPC on; other interfaces than loopback "
                 "must be named explicitly (port 0 = any free port)")
      ->envname("TRANSFERD_LISTEN")
      ->check(kListenAddress)
      ->capture_default_str();
  app.add_option("--data-dir", c.engine.data_dir.root,
                 "Data directory: SQLite store, datasets, models, weights")
      ->envname("TRANSFERD_DATA_DIR")
      ->capture_default_str();
  app.add_option("--device", c.engine.device.device,
                 "Compute device: auto, cpu, cuda or cuda:N")
      ->envname("TRANSFERD_DEVICE")
      ->check(kDeviceSpec)
      ->capture_default_str();
  app.add_option("--precision", c.engine.device.precision,
                 "Default compute precision: auto (bf16 where the device has "
                 "native bf16, else fp32), fp32 or bf16")
      ->envname("TRANSFERD_PRECISION")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
  app.add_flag(
         "--allow-weight-downloads", c.engine.allow_weight_downloads,
         "Fetch missing \"imagenet\" weights from the official Keras URLs "
         "into <data-dir>/weights/ (checked against known digests)")
      ->envname("TRANSFERD_ALLOW_WEIGHT_DOWNLOADS");
  app.add_option("--threads", c.engine.device.threads,
                 "Intra-op CPU threads (0 = one per available CPU)")
      ->envname("TRANSFERD_THREADS")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--startup-timeout", b.startup_timeout_seconds,
                 "Seconds start-up waits for the data dir's lock and for the "
                 "store while another process holds them (a predecessor "
                 "still shutting down)")
      ->envname("TRANSFERD_STARTUP_TIMEOUT")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--log-format", c.log.format, "Log format: text or json")
      ->envname("TRANSFERD_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", c.log.level,
                 "Log level: trace, debug, info, warn, error")
      ->envname("TRANSFERD_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--shutdown-grace", b.grace_seconds,
                 "Seconds in-flight calls get to finish after SIGTERM/SIGINT")
      ->envname("TRANSFERD_SHUTDOWN_GRACE")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  app.add_flag("--reflection", c.rpc.reflection,
               "Serve gRPC server reflection (for grpcurl and friends)")
      ->envname("TRANSFERD_REFLECTION");
  app.add_option("--max-receive-message-bytes", c.rpc.max_receive_message_bytes,
                 "Largest gRPC message accepted, bytes")
      ->envname("TRANSFERD_MAX_RECEIVE_MESSAGE_BYTES")
      ->check(CLI::Range(64 * 1024, 1 << 30))
      ->capture_default_str();
  app.add_option("--max-send-message-bytes", c.rpc.max_send_message_bytes,
                 "Largest gRPC message sent, bytes")
      ->envname("TRANSFERD_MAX_SEND_MESSAGE_BYTES")
      ->check(CLI::Range(64 * 1024, 1 << 30))
      ->capture_default_str();
  app.add_option("--upload-chunk-bytes", c.rpc.upload_chunk_bytes,
                 "Data bytes per upload chunk that clients are told to send")
      ->envname("TRANSFERD_UPLOAD_CHUNK_BYTES")
      ->check(CLI::Range(1024, 1 << 30))
      ->capture_default_str();
  app.add_option(
         "--decoded-image-cache-bytes", c.engine.decoded_cache_bytes,
         "Memory a training job may use to keep decoded, resized images "
         "across epochs (0 = decode every epoch)")
      ->envname("TRANSFERD_DECODED_IMAGE_CACHE_BYTES")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--loader-threads", c.engine.loader_threads,
                 "Decode/augment threads of a training job's loader")
      ->envname("TRANSFERD_LOADER_THREADS")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  core::PredictorOptions& p = c.engine.predictor;
  app.add_flag("--no-training-yield", b.no_training_yield,
               "Training steps give the device to waiting Predict batches "
               "only between steps, not between backbone blocks (more job "
               "throughput, slower Predict while a job trains)")
      ->envname("TRANSFERD_NO_TRAINING_YIELD");
  app.add_option("--interactive-share", c.engine.interactive_share,
                 "While a job waits for the device, the most of its time "
                 "Predict batches take (the job keeps the rest; with no job, "
                 "Predict takes it all)")
      ->envname("TRANSFERD_INTERACTIVE_SHARE")
      ->check(CLI::Range(0.01, 0.99))
      ->capture_default_str();
  app.add_option("--interactive-burst-ms", b.interactive_burst_ms,
                 "Predict device time that may run ahead of "
                 "--interactive-share (milliseconds)")
      ->envname("TRANSFERD_INTERACTIVE_BURST_MS")
      ->check(CLI::Range(int64_t{0}, int64_t{60000}))
      ->capture_default_str();
  app.add_option("--predict-max-batch-size", p.max_batch_size,
                 "Dynamic batching: most images one Predict batch computes")
      ->envname("TRANSFERD_PREDICT_MAX_BATCH_SIZE")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--predict-max-queue-delay-us", b.predict_queue_delay_us,
                 "Dynamic batching: longest an image waits for its batch to "
                 "fill (microseconds)")
      ->envname("TRANSFERD_PREDICT_MAX_QUEUE_DELAY_US")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000'000}))
      ->capture_default_str();
  app.add_option(
         "--predict-queue-images", p.max_queued_images,
         "Images waiting to be predicted, all models together; beyond it "
         "Predict answers RESOURCE_EXHAUSTED")
      ->envname("TRANSFERD_PREDICT_QUEUE_IMAGES")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-images-per-request", p.max_images_per_request,
                 "Most images in one Predict request")
      ->envname("TRANSFERD_MAX_IMAGES_PER_REQUEST")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option(
         "--model-memory-bytes", p.memory_budget_bytes,
         "Memory for models loaded for Predict; the least recently used "
         "beyond it are unloaded")
      ->envname("TRANSFERD_MODEL_MEMORY_BYTES")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 44))
      ->capture_default_str();
  // ---- security and transport limits (docs/security.md) ----
  app.add_option("--tls-cert", c.rpc.tls_cert_file,
                 "TLS: the server's certificate chain (PEM); with --tls-key, "
                 "gRPC is served "
                 "over TLS only")
      ->envname("TRANSFERD_TLS_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", c.rpc.tls_key_file,
                 "TLS: the server's private key (PEM)")
      ->envname("TRANSFERD_TLS_KEY")
      ->check(CLI::ExistingFile);
  app.add_option(
         "--tls-client-ca", c.rpc.tls_client_ca_file,
         "Mutual TLS: require client certificates signed by these CAs (PEM)")
      ->envname("TRANSFERD_TLS_CLIENT_CA")
      ->check(CLI::ExistingFile);
  app.add_flag(
         "--allow-plaintext", c.rpc.allow_plaintext,
         "Serve plaintext gRPC on an address other than loopback (behind a TLS-"
         "terminating proxy or mesh); without TLS such an address is refused")
      ->envname("TRANSFERD_ALLOW_PLAINTEXT");
  app.add_option("--health-listen", c.rpc.health_listen_address,
                 "Also serve grpc.health.v1.Health alone, in plaintext, on "
                 "this address "
                 "(for Kubernetes gRPC probes when the main port is TLS)")
      ->envname("TRANSFERD_HEALTH_LISTEN")
      ->check(kListenAddress);
  app.add_option(
         "--token-file", c.rpc.token_file,
         "Bearer tokens, one `TOKEN ROLE [NAME]` per line (roles viewer, "
         "trainer, "
         "admin); reloaded on SIGHUP. Without it calls are not authenticated")
      ->envname("TRANSFERD_TOKEN_FILE")
      ->check(CLI::ExistingFile);
  app.add_flag("--insecure-no-auth", b.insecure_no_auth,
               "Serve an address other than loopback without --token-file or "
               "--tls-client-ca: anyone who reaches the port may train, "
               "delete models and move aliases. Without this flag such a "
               "server refuses to start")
      ->envname("TRANSFERD_INSECURE_NO_AUTH");
  app.add_option("--max-concurrent-streams", c.rpc.max_concurrent_streams,
                 "Concurrent calls per client connection")
      ->envname("TRANSFERD_MAX_CONCURRENT_STREAMS")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--grpc-memory-bytes", c.rpc.grpc_memory_bytes,
                 "Memory gRPC may use for connections and messages in flight "
                 "(resource quota)")
      ->envname("TRANSFERD_GRPC_MEMORY_BYTES")
      ->check(CLI::Range(int64_t{16} << 20, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-rpc-threads", c.rpc.max_rpc_threads,
                 "Threads gRPC may create for serving (resource quota)")
      ->envname("TRANSFERD_MAX_RPC_THREADS")
      ->check(CLI::Range(4, 4096))
      ->capture_default_str();
  app.add_option(
         "--min-ping-seconds", b.min_ping_seconds,
         "Keepalive enforcement: a client pinging more often than this is "
         "disconnected (GOAWAY ENHANCE_YOUR_CALM)")
      ->envname("TRANSFERD_MIN_PING_SECONDS")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--max-connection-idle-seconds", b.max_connection_idle_seconds,
                 "Close client connections idle this long (0 = never)")
      ->envname("TRANSFERD_MAX_CONNECTION_IDLE_SECONDS")
      ->check(CLI::Range(0, 86400 * 7))
      ->capture_default_str();
  app.add_option(
         "--max-request-seconds", b.max_request_seconds,
         "Cap on a Predict call's deadline: work still queued after this is "
         "answered DEADLINE_EXCEEDED, whatever deadline the client set")
      ->envname("TRANSFERD_MAX_REQUEST_SECONDS")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  core::DatasetLimits& d = c.engine.datasets;
  constexpr int64_t kMaxBytes = std::numeric_limits<int64_t>::max() / 4;
  app.add_option("--max-file-bytes", d.max_file_bytes,
                 "Largest uploaded file, bytes (RESOURCE_EXHAUSTED above)")
      ->envname("TRANSFERD_MAX_FILE_BYTES")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31))
      ->capture_default_str();
  app.add_option("--max-dataset-files", d.max_files, "Files in one upload")
      ->envname("TRANSFERD_MAX_DATASET_FILES")
      ->check(CLI::Range(int64_t{1}, int64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--max-dataset-bytes", d.max_dataset_bytes,
                 "Stored bytes of one dataset")
      ->envname("TRANSFERD_MAX_DATASET_BYTES")
      ->check(CLI::Range(int64_t{1}, kMaxBytes))
      ->capture_default_str();
  app.add_option("--max-total-dataset-bytes", d.max_total_bytes,
                 "Stored bytes of all datasets together")
      ->envname("TRANSFERD_MAX_TOTAL_DATASET_BYTES")
      ->check(CLI::Range(int64_t{1}, kMaxBytes))
      ->capture_default_str();
  app.add_option("--min-free-disk-bytes", d.min_free_disk_bytes,
                 "Free space uploads leave on the data directory's disk")
      ->envname("TRANSFERD_MIN_FREE_DISK_BYTES")
      ->check(CLI::Range(int64_t{0}, kMaxBytes))
      ->capture_default_str();
  app.add_option("--import-root", d.import_root,
                 "Folder on the server's volume that admins may import "
                 "datasets from (transferctl datasets upload "
                 "--from-server-path); empty: imports are off")
      ->envname("TRANSFERD_IMPORT_ROOT");
  app.add_option("--max-image-pixels", d.image.max_pixels,
                 "Largest image (width x height) accepted, checked from the "
                 "header before decoding")
      ->envname("TRANSFERD_MAX_IMAGE_PIXELS")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 32))
      ->capture_default_str();
}

// Serving replica (docs/replicas.md): follow a primary's aliases.
void BindFollow(Binding& b) {
  CLI::App& app = b.app;
  replica::FollowerOptions& f = b.config.follow;
  app.add_option("--follow", f.primary,
                 "Run as a read-only serving replica of the primary at "
                 "HOST:PORT: no jobs or uploads, the primary's aliases kept "
                 "in sync (models pulled, checked, cached, warmed)")
      ->envname("TRANSFERD_FOLLOW")
      ->check(kListenAddress);
  app.add_option("--follow-token-file", f.token_file,
                 "File whose first line is the bearer token sent to the "
                 "primary (a viewer token is enough)")
      ->envname("TRANSFERD_FOLLOW_TOKEN_FILE")
      ->check(CLI::ExistingFile);
  app.add_flag("--follow-tls", f.tls,
               "Reach the primary over TLS, trusting the system's roots "
               "(implied by --follow-ca and --follow-cert)")
      ->envname("TRANSFERD_FOLLOW_TLS");
  app.add_option("--follow-ca", f.tls_ca_file,
                 "TLS to the primary: CA bundle that signed its certificate "
                 "(PEM)")
      ->envname("TRANSFERD_FOLLOW_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--follow-cert", f.tls_cert_file,
                 "Mutual TLS to the primary: this replica's client "
                 "certificate (PEM), with --follow-key")
      ->envname("TRANSFERD_FOLLOW_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--follow-key", f.tls_key_file,
                 "Mutual TLS to the primary: the client certificate's key "
                 "(PEM)")
      ->envname("TRANSFERD_FOLLOW_KEY")
      ->check(CLI::ExistingFile);
  app.add_option("--follow-server-name", f.tls_server_name,
                 "TLS to the primary: the name its certificate must carry, "
                 "when it differs from the --follow host")
      ->envname("TRANSFERD_FOLLOW_SERVER_NAME");
  app.add_option("--follow-keep-models", b.config.engine.replica_keep_models,
                 "Serving replica: models no alias names kept in the local "
                 "cache (an alias moved back needs no pull)")
      ->envname("TRANSFERD_FOLLOW_KEEP_MODELS")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  app.add_option("--follow-test-corrupt-pulls", f.test_corrupt_pulls,
                 "Fault injection for tests: change one byte of the first N "
                 "model pulls on arrival (the hash check refuses them)")
      ->envname("TRANSFERD_FOLLOW_TEST_CORRUPT_PULLS")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
}

// Data-parallel training (docs/distributed.md): a worker joins a
// coordinator; every other server coordinates its jobs' ranks.
void BindCluster(Binding& b) {
  CLI::App& app = b.app;
  cluster::WorkerOptions& w = b.config.worker;
  app.add_option("--coordinator", w.coordinator,
                 "Run as a worker of the coordinator transferd at HOST:PORT: "
                 "join its cluster and run ranks of its data-parallel jobs "
                 "(JobSpec.replicas)")
      ->envname("TRANSFERD_COORDINATOR")
      ->check(kListenAddress);
  app.add_option("--worker-name", w.name,
                 "Worker: its name in the cluster, unique among the "
                 "coordinator's workers (default: the host name)")
      ->envname("TRANSFERD_WORKER_NAME");
  app.add_option("--worker-token-file", w.token_file,
                 "Worker: file whose first line is the bearer token sent to "
                 "the coordinator (a token of the worker role)")
      ->envname("TRANSFERD_WORKER_TOKEN_FILE")
      ->check(CLI::ExistingFile);
  app.add_flag("--coordinator-tls", w.tls,
               "Worker: reach the coordinator over TLS, trusting the "
               "system's roots (implied by --coordinator-ca and "
               "--coordinator-cert)")
      ->envname("TRANSFERD_COORDINATOR_TLS");
  app.add_option("--coordinator-ca", w.tls_ca_file,
                 "Worker: CA bundle that signed the coordinator's "
                 "certificate (PEM)")
      ->envname("TRANSFERD_COORDINATOR_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--coordinator-cert", w.tls_cert_file,
                 "Worker: client certificate for mutual TLS to the "
                 "coordinator (PEM), with --coordinator-key")
      ->envname("TRANSFERD_COORDINATOR_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--coordinator-key", w.tls_key_file,
                 "Worker: the client certificate's key (PEM)")
      ->envname("TRANSFERD_COORDINATOR_KEY")
      ->check(CLI::ExistingFile);
  app.add_option("--coordinator-server-name", w.tls_server_name,
                 "Worker: the name the coordinator's certificate must carry, "
                 "when it differs from the --coordinator host")
      ->envname("TRANSFERD_COORDINATOR_SERVER_NAME");
  app.add_option("--rendezvous-address", b.config.engine.rendezvous_address,
                 "This server's address as the other ranks reach it: a "
                 "coordinator's TCPStore and Gloo connections, a worker's "
                 "Gloo connections (a worker's default: what its host name "
                 "resolves to)")
      ->envname("TRANSFERD_RENDEZVOUS_ADDRESS")
      ->capture_default_str();
  app.add_option("--rendezvous-port", b.config.engine.rendezvous_port,
                 "Coordinator: TCP port of the c10d TCPStore its "
                 "data-parallel jobs host (torchrun's MASTER_PORT)")
      ->envname("TRANSFERD_RENDEZVOUS_PORT")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--collective-timeout-seconds", b.collective_timeout_seconds,
                 "Data-parallel ranks: a collective (or the rendezvous) that "
                 "takes longer fails, so a lost rank ends its run within "
                 "this time")
      ->envname("TRANSFERD_COLLECTIVE_TIMEOUT_SECONDS")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
}

// Started by torchrun or a Kubeflow PyTorchJob (WORLD_SIZE > 1 and RANK,
// MASTER_ADDR, MASTER_PORT set) without --coordinator: rank 0 is the
// coordinator (its TCPStore on MASTER_PORT, reached at MASTER_ADDR), every
// other rank a worker of MASTER_ADDR on this server's own gRPC port. Empty
// when not started so, else a usage error.
std::string ApplyTorchrunEnv(Binding& b, ServerConfig& config) {
  const char* world = std::getenv("WORLD_SIZE");
  if (world == nullptr || std::string(world) == "1" ||
      !config.worker.coordinator.empty() || !config.follow.primary.empty()) {
    return "";
  }
  absl::StatusOr<core::train::RendezvousOptions> torchrun =
      core::train::RendezvousFromEnv();
  if (!torchrun.ok()) {
    return absl::StrCat("started by torchrun (WORLD_SIZE=", world,
                        ") but RANK, MASTER_ADDR or MASTER_PORT is missing or "
                        "malformed: ",
                        torchrun.status().message());
  }
  if (torchrun->world_size == 1) return "";
  if (torchrun->rank == 0) {
    if (!b.rendezvous_address_set) {
      config.engine.rendezvous_address = torchrun->master_addr;
    }
    if (b.app.get_option("--rendezvous-port")->count() == 0) {
      config.engine.rendezvous_port = torchrun->master_port;
    }
    return "";
  }
  const std::string& listen = config.rpc.listen_address;
  config.worker.coordinator =
      absl::StrCat(torchrun->master_addr, listen.substr(listen.rfind(':')));
  return "";
}

std::string FinishCluster(Binding& b, ServerConfig& config) {
  cluster::WorkerOptions& w = config.worker;
  config.engine.collective_timeout =
      std::chrono::seconds(b.collective_timeout_seconds);
  if (std::string error = ApplyTorchrunEnv(b, config); !error.empty()) {
    return error;
  }
  if (w.coordinator.empty()) {
    const bool stray = !w.name.empty() || !w.token_file.empty() || w.tls ||
                       !w.tls_ca_file.empty() || !w.tls_cert_file.empty() ||
                       !w.tls_key_file.empty() || !w.tls_server_name.empty();
    return stray ? "the --worker-* and --coordinator-* settings need "
                   "--coordinator ADDRESS"
                 : "";
  }
  if (!config.follow.primary.empty()) {
    return "--coordinator and --follow exclude each other (a replica serves, "
           "a worker trains)";
  }
  if (w.tls_cert_file.empty() != w.tls_key_file.empty()) {
    return "--coordinator-cert and --coordinator-key go together";
  }
  if (w.name.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) == 0) w.name = host;
  }
  if (w.name.empty()) return "--worker-name: the host name is unknown; set it";
  config.engine.worker = true;
  // A worker's Gloo address: explicit, or resolved from its host name.
  w.advertise_address = b.rendezvous_address_set
                            ? config.engine.rendezvous_address
                            : std::string();
  return "";
}

std::string FinishFollow(ServerConfig& config) {
  const replica::FollowerOptions& f = config.follow;
  if (f.primary.empty()) {
    const bool stray = !f.token_file.empty() || f.tls ||
                       !f.tls_ca_file.empty() || !f.tls_cert_file.empty() ||
                       !f.tls_key_file.empty() || f.test_corrupt_pulls > 0;
    return stray ? "the --follow-* settings need --follow PRIMARY" : "";
  }
  if (f.tls_cert_file.empty() != f.tls_key_file.empty()) {
    return "--follow-cert and --follow-key go together";
  }
  config.engine.follow_primary = f.primary;
  return "";
}

// 127.0.0.0/8, localhost or [::1].
bool IsLoopback(const std::string& address) {
  const std::string host = address.substr(0, address.rfind(':'));
  return absl::StartsWith(host, "127.") || host == "localhost" ||
         host == "[::1]";
}

ParseOutcome UsageError(std::string message) {
  ParseOutcome outcome;
  outcome.exit_code = 2;
  outcome.output = std::move(message) + "\n";
  return outcome;
}

// The config file named by --config (last one wins) or TRANSFERD_CONFIG.
std::string FindConfigFile(const std::vector<std::string>& args) {
  std::string path;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      path = args[i + 1];
    } else if (absl::StartsWith(args[i], "--config=")) {
      path = args[i].substr(9);
    }
  }
  if (path.empty()) {
    if (const char* env = std::getenv("TRANSFERD_CONFIG")) path = env;
  }
  return path;
}

// Config file entries as "--key=value" arguments.
absl::StatusOr<std::vector<std::string>> ConfigFileArgs(
    const CLI::App& app, const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": cannot be read"));
  }
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": ", e.what()));
  }
  std::vector<std::string> args;
  for (const CLI::ConfigItem& item : items) {
    if (!item.parents.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ": sections are not supported ([",
                       item.parents.front(), "])"));
    }
    const CLI::Option* opt = app.get_option_no_throw("--" + item.name);
    if (opt == nullptr || item.name == "config") {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ": unknown setting \"", item.name,
                       "\" (settings are the long flag names, see --help)"));
    }
    if (item.inputs.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ": setting \"", item.name,
                       "\" needs exactly one value"));
    }
    args.push_back(absl::StrCat("--", item.name, "=", item.inputs.front()));
  }
  return args;
}

}  // namespace

ParseOutcome ParseServerConfig(int argc, const char* const* argv) {
  Binding b;
  Bind(b);
  BindHttp(b);
  BindFollow(b);
  BindCluster(b);

  // Precedence flag > environment > config file > default, by building one
  // argument list in increasing precedence: file, environment, command line.
  const std::vector<std::string> cli_args(argv + std::min(argc, 1),
                                          argv + argc);
  std::vector<std::string> args;
  const std::string config_file = FindConfigFile(cli_args);
  if (!config_file.empty()) {
    auto file_args = ConfigFileArgs(b.app, config_file);
    if (!file_args.ok())
      return UsageError(std::string(file_args.status().message()));
    args = std::move(*file_args);
  }
  for (const CLI::Option* opt : b.app.get_options()) {
    const std::string& env = opt->get_envname();
    if (env.empty() || opt->get_lnames().empty()) continue;
    const char* value = std::getenv(env.c_str());
    if (value != nullptr && *value != '\0') {
      args.push_back(absl::StrCat("--", opt->get_lnames().front(), "=", value));
    }
  }
  args.insert(args.end(), cli_args.begin(), cli_args.end());
  std::reverse(args.begin(), args.end());  // CLI11 consumes from the back

  ParseOutcome outcome;
  std::ostringstream out;
  std::ostringstream err;
  try {
    b.app.parse(args);
  } catch (const CLI::ParseError& e) {
    outcome.exit_code = b.app.exit(e, out, err);
    if (outcome.exit_code != 0) outcome.exit_code = 2;
    outcome.output = out.str() + err.str();
    return outcome;
  }
  ServerConfig config = std::move(b.config);
  config.config_file = config_file;
  config.rpc.shutdown_grace = std::chrono::seconds(b.grace_seconds);
  config.engine.startup_timeout =
      std::chrono::seconds(b.startup_timeout_seconds);
  config.engine.predictor.max_queue_delay =
      std::chrono::microseconds(b.predict_queue_delay_us);
  config.engine.training_yields = !b.no_training_yield;
  config.engine.interactive_burst =
      std::chrono::milliseconds(b.interactive_burst_ms);
  config.rpc.min_ping_interval = std::chrono::seconds(b.min_ping_seconds);
  config.rpc.max_connection_idle =
      std::chrono::seconds(b.max_connection_idle_seconds);
  config.rpc.max_request_time = std::chrono::seconds(b.max_request_seconds);
  if (config.rpc.tls_cert_file.empty() != config.rpc.tls_key_file.empty()) {
    return UsageError("--tls-cert and --tls-key go together");
  }
  const bool tls = !config.rpc.tls_cert_file.empty();
  if (!tls && !config.rpc.tls_client_ca_file.empty()) {
    return UsageError("--tls-client-ca needs TLS: --tls-cert and --tls-key");
  }
  if (!tls && !config.rpc.allow_plaintext &&
      !IsLoopback(config.rpc.listen_address)) {
    return UsageError(
        absl::StrCat("--listen ", config.rpc.listen_address,
                     " is not a loopback address: serve it over TLS "
                     "(--tls-cert, --tls-key) or allow "
                     "plaintext explicitly with --allow-plaintext (e.g. behind "
                     "a TLS-terminating mesh)"));
  }
  if (config.rpc.upload_chunk_bytes >
      config.rpc.max_receive_message_bytes - 4096) {
    return UsageError(absl::StrCat("--upload-chunk-bytes (",
                                   config.rpc.upload_chunk_bytes,
                                   ") must leave 4096 bytes of framing under "
                                   "--max-receive-message-bytes (",
                                   config.rpc.max_receive_message_bytes, ")"));
  }
  if (std::string error = FinishHttp(b, config); !error.empty()) {
    return UsageError(error);
  }
  if (std::string error = FinishFollow(config); !error.empty()) {
    return UsageError(error);
  }
  b.rendezvous_address_set =
      b.app.get_option("--rendezvous-address")->count() > 0;
  if (std::string error = FinishCluster(b, config); !error.empty()) {
    return UsageError(error);
  }
  if (std::string error = CheckAuthentication(b, config); !error.empty()) {
    return UsageError(error);
  }
  outcome.config = std::move(config);
  return outcome;
}

std::vector<SettingDoc> DescribeSettings() {
  Binding b;
  Bind(b);
  BindHttp(b);
  BindFollow(b);
  BindCluster(b);
  std::vector<SettingDoc> docs;
  for (const CLI::Option* opt : b.app.get_options()) {
    if (opt->get_lnames().empty()) continue;
    const std::string name = opt->get_lnames().front();
    if (name == "help" || name == "version") continue;
    docs.push_back(SettingDoc{"--" + name, opt->get_envname(),
                              opt->get_default_str(), opt->get_description()});
  }
  return docs;
}

}  // namespace transferd::app
