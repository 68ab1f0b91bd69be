#include "server/rpc/request_log.h"

#include <chrono>
#include <random>
#include <string>

#include <grpcpp/server_context.h>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "server/core/util/log.h"
#include "server/core/util/metrics.h"
#include "server/rpc/request_context.h"

namespace transferd::rpc {
namespace {

using grpc::experimental::InterceptionHookPoints;

bool ValidRequestId(grpc::string_ref id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%016x", rng());
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "?";
  }
}

// The method label: the services' own methods by name, anything else (an
// unknown method a client made up) as "other", so the label stays bounded.
std::string MethodLabel(const std::string& method) {
  for (const char* prefix :
       {"/transferd.v1.", "/grpc.health.v1.", "/grpc.reflection."}) {
    if (absl::StartsWith(method, prefix)) return method.substr(1);
  }
  return "other";
}

class RequestLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  RequestLogInterceptor(grpc::experimental::ServerRpcInfo* info,
                        core::Metrics* metrics)
      : info_(info), start_(std::chrono::steady_clock::now()) {
    if (metrics != nullptr) {
      rpc_ = &metrics->Rpc(MethodLabel(info_->method()));
      rpc_->Started();
    }
  }

  ~RequestLogInterceptor() override {
    // A call torn down without a status (the client went away).
    if (rpc_ != nullptr) rpc_->Finished("CANCELLED", Seconds());
  }

  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start_)
        .count();
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* md = methods->GetRecvInitialMetadata();
      auto it = md->find(kRequestIdKey);
      if (it != md->end() && ValidRequestId(it->second)) {
        request_id_.assign(it->second.data(), it->second.size());
      } else {
        if (it != md->end()) md->erase(it);
        request_id_ = NewRequestId();
        // The map holds string_refs: point them at strings this interceptor
        // owns; it lives as long as the call.
        md->emplace(grpc::string_ref(kRequestIdKey),
                    grpc::string_ref(request_id_));
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      if (!request_id_.empty()) {
        methods->GetSendInitialMetadata()->emplace(kRequestIdKey, request_id_);
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      const double ms = Seconds() * 1000;
      if (rpc_ != nullptr) {
        rpc_->Finished(CodeName(status.error_code()), ms / 1000);
        rpc_ = nullptr;
      }
      const std::string_view method = info_->method();
      const auto level = method.rfind("/grpc.health.", 0) == 0
                             ? spdlog::level::debug
                         : status.error_code() == grpc::INTERNAL ||
                                 status.error_code() == grpc::UNKNOWN ||
                                 status.error_code() == grpc::DATA_LOSS
                             ? spdlog::level::err
                             : spdlog::level::info;
      if (spdlog::should_log(level))
        core::LogFields(
            level, "rpc",
            {{"method", std::string(method)},
             {"request_id", request_id_},
             {"peer", info_->server_context()->peer()},
             {"code", CodeName(status.error_code())},
             {"duration_ms", absl::StrFormat("%.1f", ms)},
             {"trace_id", TraceId(*info_->server_context())},
             {"message", status.ok() ? "" : status.error_message()}});
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  std::chrono::steady_clock::time_point start_;
  std::string request_id_;
  core::RpcSeries* rpc_ = nullptr;  // until the call is counted
};

class RequestLogInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RequestLogInterceptorFactory(core::Metrics* metrics)
      : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RequestLogInterceptor(info, metrics_);
  }

 private:
  core::Metrics* metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRequestLogInterceptorFactory(core::Metrics* metrics) {
  return std::make_unique<RequestLogInterceptorFactory>(metrics);
}

std::string TraceIdOf(std::string_view traceparent) {
  // version "-" trace-id "-" parent-id "-" flags, lower-case hex.
  if (traceparent.size() < 55) return "";
  auto hex = [](std::string_view s) {
    for (char c : s) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
  };
  const std::string_view version = traceparent.substr(0, 2);
  const std::string_view trace = traceparent.substr(3, 32);
  const std::string_view parent = traceparent.substr(36, 16);
  if (!hex(version) || version == "ff" || traceparent[2] != '-' ||
      traceparent[35] != '-' || traceparent[52] != '-' || !hex(trace) ||
      !hex(parent) || !hex(traceparent.substr(53, 2))) {
    return "";
  }
  // Version 00 has exactly these fields; later versions may append more.
  if (version == "00" && traceparent.size() != 55) return "";
  if (trace.find_first_not_of('0') == std::string_view::npos) return "";
  if (parent.find_first_not_of('0') == std::string_view::npos) return "";
  return std::string(trace);
}

std::string TraceId(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kTraceparentKey);
  if (it == md.end()) return "";
  return TraceIdOf(std::string_view(it->second.data(), it->second.size()));
}

std::string RequestId(const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it == md.end()) return {};
  return std::string(it->second.data(), it->second.size());
}

}  // namespace transferd::rpc
