#include "server/rpc/request_log.h"

#include <chrono>
#include <random>
#include <string>

#include <grpcpp/server_context.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_format.h"
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

class RequestLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit RequestLogInterceptor(grpc::experimental::ServerRpcInfo* info)
      : info_(info), start_(std::chrono::steady_clock::now()) {}

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
      const double ms = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start_)
                            .count();
      const std::string_view method = info_->method();
      const auto level = method.rfind("/grpc.health.", 0) == 0
                             ? spdlog::level::debug
                         : status.error_code() == grpc::INTERNAL ||
                                 status.error_code() == grpc::UNKNOWN ||
                                 status.error_code() == grpc::DATA_LOSS
                             ? spdlog::level::err
                             : spdlog::level::info;
      spdlog::log(level, "rpc {} request_id={} peer={} code={} ms={:.1f}{}{}",
                  method, request_id_, info_->server_context()->peer(),
                  CodeName(status.error_code()), ms,
                  status.ok() ? "" : " message=",
                  status.ok() ? "" : status.error_message());
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  std::chrono::steady_clock::time_point start_;
  std::string request_id_;
};

class RequestLogInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RequestLogInterceptor(info);
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRequestLogInterceptorFactory() {
  return std::make_unique<RequestLogInterceptorFactory>();
}

std::string RequestId(const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it == md.end()) return {};
  return std::string(it->second.data(), it->second.size());
}

}  // namespace transferd::rpc
