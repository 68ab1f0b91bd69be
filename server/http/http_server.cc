#include "server/http/http_server.h"

#include <httplib.h>

#include <chrono>
#include <fstream>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"
#include "server/core/api/engine_api.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"
#include "server/http/assets.h"
#include "server/http/event_stream.h"
#include "server/http/http_util.h"
#include "server/http/json_api.h"
#include "server/http/oip_rest.h"

namespace transferd::http {
namespace {

struct HostPort {
  std::string host;
  int port = 0;
};

// "127.0.0.1:8080", "0.0.0.0:0", "[::1]:8080", "localhost:8080".
absl::StatusOr<HostPort> ParseHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address \"", address, "\": expected HOST:PORT"));
  }
  HostPort out;
  out.host = address.substr(0, colon);
  if (out.host.size() >= 2 && out.host.front() == '[' &&
      out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  if (!absl::SimpleAtoi(address.substr(colon + 1), &out.port) || out.port < 0 ||
      out.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address \"", address, "\": port must be in 0..65535"));
  }
  return out;
}

absl::Status CheckReadable(const std::string& path, const char* what) {
  if (std::ifstream(path).good()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("cannot read the ", what, " file ", path));
}

bool IsAsset(const std::string& path) {
  for (const Asset& asset : DashboardAssets()) {
    if (asset.path == path) return true;
  }
  return false;
}

constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

// The host part of a Host header ("127.0.0.1:8080" -> "127.0.0.1",
// "[::1]:8080" -> "::1").
std::string HostName(const std::string& host) {
  if (!host.empty() && host.front() == '[') {
    const size_t end = host.find(']');
    return end == std::string::npos ? host : host.substr(1, end - 1);
  }
  const size_t colon = host.find(':');
  return colon == std::string::npos ? host : host.substr(0, colon);
}

bool IsIpLiteral(const std::string& name) {
  in6_addr v6;
  in_addr v4;
  return inet_pton(AF_INET, name.c_str(), &v4) == 1 ||
         inet_pton(AF_INET6, name.c_str(), &v6) == 1;
}

// What a browser page of another site could make a user's browser send:
//  - Fetch Metadata: Sec-Fetch-Site other than same-origin or none (typed or
//    bookmarked) is another site's <img>, form, script or fetch; refused
//    except for the page's own files and the probes (`exempt`);
//  - an Origin header naming another host than the request's (browsers
//    without Fetch Metadata);
//  - on a loopback listener without tokens (`names_allowed` false), a Host
//    that is a DNS name other than localhost: a DNS rebinding attack makes
//    another site's page same-origin with this server, and only the name
//    it uses tells it apart; X-Forwarded-Host counts only when names are
//    allowed (with tokens a rebinding page has none; off loopback, without
//    tokens, the network is trusted anyway).
absl::Status CheckBrowserRequest(const httplib::Request& req,
                                 bool names_allowed, bool exempt) {
  const std::string site = req.get_header_value("Sec-Fetch-Site");
  if (!exempt && !site.empty() && site != "same-origin" && site != "none") {
    return absl::PermissionDeniedError(absl::StrCat(
        "cross-site request refused (Sec-Fetch-Site: ", site.substr(0, 40),
        ")"));
  }
  const std::string host = names_allowed && req.has_header("X-Forwarded-Host")
                               ? req.get_header_value("X-Forwarded-Host")
                               : req.get_header_value("Host");
  if (!SameOrigin(req.get_header_value("Origin"), host)) {
    return absl::PermissionDeniedError(
        absl::StrCat("cross-origin request refused: Origin ",
                     req.get_header_value("Origin").substr(0, 100),
                     " is not this server (", host.substr(0, 100), ")"));
  }
  const std::string name = HostName(host);
  if (!names_allowed && !exempt && !name.empty() && name != "localhost" &&
      !IsIpLiteral(name)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "host name \"", name.substr(0, 100),
        "\" refused: a loopback listener without --token-file answers only "
        "IP addresses and localhost (protection against DNS rebinding); use "
        "an address, or set a token file"));
  }
  return absl::OkStatus();
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const Options& options, core::api::EngineApi& api, core::Metrics* metrics,
    const auth::Authorizer& auth) {
  absl::StatusOr<HostPort> address = ParseHostPort(options.listen_address);
  if (!address.ok()) return address.status();
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "HTTP TLS needs both a certificate and a key");
  }
  std::unique_ptr<HttpServer> server(new HttpServer);
  server->options_ = options;
  server->loopback_ = address->host == "localhost" || address->host == "::1" ||
                      absl::StartsWith(address->host, "127.");
  server->api_ = &api;
  server->metrics_ = metrics;
  server->auth_ = &auth;
  if (!options.tls_cert_file.empty()) {
    for (const auto& [path, what] :
         {std::pair{options.tls_cert_file, "TLS certificate"},
          std::pair{options.tls_key_file, "TLS key"}}) {
      if (absl::Status s = CheckReadable(path, what); !s.ok()) return s;
    }
    if (!options.tls_client_ca_file.empty()) {
      if (absl::Status s =
              CheckReadable(options.tls_client_ca_file, "TLS client CA");
          !s.ok()) {
        return s;
      }
    }
    auto ssl = std::make_unique<httplib::SSLServer>(
        options.tls_cert_file.c_str(), options.tls_key_file.c_str(),
        options.tls_client_ca_file.empty()
            ? nullptr
            : options.tls_client_ca_file.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "HTTP TLS: the certificate, key or client CA could not be loaded "
          "(PEM files, matching key)");
    }
    server->server_ = std::move(ssl);
    server->tls_ = true;
  } else {
    server->server_ = std::make_unique<httplib::Server>();
  }
  server->Configure();
  server->Guard();
  server->Route();
  server->HandleErrorsAndLog();

  httplib::Server& s = *server->server_;
  if (address->port == 0) {
    server->port_ = s.bind_to_any_port(address->host);
  } else if (s.bind_to_port(address->host, address->port)) {
    server->port_ = address->port;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", options.listen_address,
                     " (address in use, or not a local address?)"));
  }
  server->thread_ = std::thread([raw = server.get()] {
    if (!raw->server_->listen_after_bind()) {
      spdlog::error("http: the listener on port {} stopped", raw->port_);
    }
    raw->listener_done_ = true;
  });
  // stop() does nothing before the listener runs: a Shutdown right after
  // Start would otherwise wait forever.
  while (!server->server_->is_running() && !server->listener_done_) {
    std::this_thread::yield();
  }
  return server;
}

void HttpServer::Configure() {
  const int threads = std::max(4, options_.threads);
  streams_ = std::make_unique<EventStreams>(*api_, threads / 4);
  server_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  server_->set_payload_max_length(
      static_cast<size_t>(std::max<int64_t>(options_.max_body_bytes, 1024)));
  server_->set_read_timeout(std::chrono::seconds(10));
  server_->set_write_timeout(std::chrono::seconds(10));
  // An idle keep-alive connection holds a thread: let it go soon.
  server_->set_keep_alive_timeout(5);
  // Headers and body go out in separate writes: without TCP_NODELAY, Nagle
  // holds the body until the client's delayed ACK (tens of ms per answer).
  server_->set_tcp_nodelay(true);
  // A client that keeps its connection busy keeps it (httplib's default
  // closes it after 5 requests).
  server_->set_keep_alive_max_count(10000);
}

void HttpServer::Guard() {
  httplib::Server& s = *server_;
  // Every response: no sniffing, no framing, no referrer, and a
  // Content-Security-Policy without inline scripts or styles (the page's
  // scripts and styles are its own files; images it shows are blob: URLs of
  // the files the user chose). No CORS header is ever sent.
  s.set_post_routing_handler(
      [](const httplib::Request&, httplib::Response& res) {
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("X-Frame-Options", "DENY");
        res.set_header("Referrer-Policy", "no-referrer");
        res.set_header("Content-Security-Policy", kContentSecurityPolicy);
      });
  // Every path but the probes, the page's own files and (unless asked)
  // /metrics needs a token; a request another site's page made is refused
  // whatever it carries (CheckBrowserRequest). (httplib still reads and
  // drops the body of a refused request: it is never taken for the next
  // one; http_api_test checks it.)
  s.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        const bool probe = req.path == "/healthz" || req.path == "/readyz" ||
                           IsOipHealthPath(req.path);
        const bool page = req.method == "GET" && IsAsset(req.path);
        if (absl::Status s = CheckBrowserRequest(
                req, auth_->enabled() || !loopback_, /*exempt=*/probe || page);
            !s.ok()) {
          SetError(res, s);
          return httplib::Server::HandlerResponse::Handled;
        }
        const bool open_path =
            probe || page ||
            (req.path == "/metrics" && !options_.metrics_require_token);
        if (open_path) return httplib::Server::HandlerResponse::Unhandled;
        absl::Status allowed = CheckRole(*auth_, req, auth::Role::kViewer);
        if (allowed.ok()) return httplib::Server::HandlerResponse::Unhandled;
        SetError(res, allowed);
        return httplib::Server::HandlerResponse::Handled;
      });
}

void HttpServer::Route() {
  httplib::Server& s = *server_;
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (api_->ready() && !api_->shutting_down()) {
      std::string body = "ready\n";
      // A replica stays ready without its primary (it serves what it has);
      // the details say so.
      if (std::optional<core::ReplicaStatus> r = api_->Replica()) {
        absl::StrAppend(&body, "replica of ", r->primary, ": primary ",
                        r->primary_connected ? "connected" : "lost", ", ",
                        r->in_sync ? "in sync" : "not in sync", "\n");
        if (!r->last_error.empty()) {
          absl::StrAppend(&body, "last error: ", r->last_error, "\n");
        }
      }
      res.set_content(body, "text/plain");
      return;
    }
    res.status = 503;
    res.set_content("not ready: the server is starting or shutting down\n",
                    "text/plain");
  });
  if (metrics_ != nullptr) {
    s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_->Scrape(),
                      "text/plain; version=0.0.4; charset=utf-8");
    });
  }
  // The dashboard: its files, served to anyone (they hold no data; every
  // call they make carries the token the user enters).
  for (const Asset& asset : DashboardAssets()) {
    s.Get(std::string(asset.path),
          [&asset](const httplib::Request&, httplib::Response& res) {
            res.set_header("Cache-Control", "no-cache");
            res.set_content(asset.body.data(), asset.body.size(),
                            std::string(asset.content_type).c_str());
          });
  }
  JsonApiOptions api_options;
  api_options.max_request_time = options_.max_request_time;
  api_options.server_info_base = options_.server_info_base;
  AddJsonApiRoutes(s, *api_, *auth_, api_options, *streams_);
  AddOipRoutes(s, *api_, *auth_, options_.max_request_time);
}

void HttpServer::HandleErrorsAndLog() {
  httplib::Server& s = *server_;
  // Unknown paths, and methods a path does not take.
  s.set_error_handler([max_body = options_.max_body_bytes](
                          const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a route's own error
    if (res.status == 404) {
      SetError(res,
               absl::NotFoundError(absl::StrCat("no route for ", req.method,
                                                " ", req.path.substr(0, 200))));
    } else if (res.status == 405) {
      SetError(res,
               absl::UnimplementedError(
                   absl::StrCat(req.method, " is not supported on ", req.path)),
               405);
    } else if (res.status == 413) {
      SetError(res,
               absl::ResourceExhaustedError(absl::StrCat(
                   "the request body is larger than the limit of ", max_body,
                   " bytes (--max-receive-message-bytes)")),
               413);
    }
  });
  s.set_exception_handler([](const httplib::Request& req,
                             httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("http {} {}: {}", req.method, req.path, what);
    SetError(res, absl::InternalError("the request failed on the server"));
  });
  s.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const auto level = req.path == "/metrics" || req.path == "/healthz" ||
                               req.path == "/readyz"
                           ? spdlog::level::debug
                           : spdlog::level::info;
    core::LogFields(level, "http",
                    {{"method", req.method},
                     {"path", req.path.substr(0, 200)},
                     {"peer", req.remote_addr},
                     {"status", std::to_string(res.status)}});
  });
}

void HttpServer::Shutdown() {
  if (streams_ != nullptr) streams_->Stop();
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpServer::~HttpServer() { Shutdown(); }

}  // namespace transferd::http
