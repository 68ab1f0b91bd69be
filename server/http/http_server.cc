#include "server/http/http_server.h"

#include <httplib.h>

#include <chrono>
#include <fstream>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"
#include "server/core/api/engine_api.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"

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

// The error body every route answers with; `http_status` 0: the standard
// mapping of the code.
void SetError(httplib::Response& res, const absl::Status& status,
              int http_status = 0) {
  res.status = http_status != 0 ? http_status : HttpStatusFor(status.code());
  nlohmann::json body = {{"error",
                          {{"code", res.status},
                           {"status", absl::StatusCodeToString(status.code())},
                           {"message", std::string(status.message())}}}};
  res.set_content(
      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
      "application/json");
}

auth::Authorizer::Caller CallerOf(const httplib::Request& req) {
  auth::Authorizer::Caller caller;
  caller.carrier = "header";
  if (req.has_header("Authorization")) {
    caller.authorization = req.get_header_value("Authorization");
  }
  return caller;
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
  const int threads = std::max(1, options.threads);
  server->server_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  server->server_->set_payload_max_length(1 << 20);
  server->server_->set_read_timeout(std::chrono::seconds(10));
  server->server_->set_write_timeout(std::chrono::seconds(10));
  server->server_->set_keep_alive_timeout(30);
  server->Route();

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
  });
  return server;
}

void HttpServer::Route() {
  httplib::Server& s = *server_;
  // Every path but the probes and (unless asked) /metrics needs a token.
  s.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        const bool open_path =
            req.path == "/healthz" || req.path == "/readyz" ||
            (req.path == "/metrics" && !options_.metrics_require_token);
        if (open_path) return httplib::Server::HandlerResponse::Unhandled;
        absl::Status allowed =
            auth_->Check(CallerOf(req), auth::Role::kViewer,
                         absl::StrCat(req.method, " ", req.path));
        if (allowed.ok()) return httplib::Server::HandlerResponse::Unhandled;
        SetError(res, allowed);
        return httplib::Server::HandlerResponse::Handled;
      });
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (api_->ready() && !api_->shutting_down()) {
      res.set_content("ready\n", "text/plain");
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
  // Unknown paths, and methods a path does not take.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
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
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpServer::~HttpServer() { Shutdown(); }

}  // namespace transferd::http
