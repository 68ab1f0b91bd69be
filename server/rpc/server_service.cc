#include "server/rpc/server_service.h"

#include <chrono>

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/core/util/build_info.h"
#include "server/rpc/service_util.h"

namespace transferd::rpc {

namespace v1 = transferd::v1;

ServerService::ServerService(core::api::EngineApi& api,
                             const auth::Authorizer& auth, v1::Limits limits,
                             std::vector<std::string> implemented)
    : api_(api),
      auth_(auth),
      limits_(std::move(limits)),
      implemented_(std::move(implemented)) {}

grpc::ServerUnaryReactor* ServerService::GetServerInfo(
    grpc::CallbackServerContext* ctx,
    const v1::GetServerInfoRequest* /*request*/, v1::ServerInfo* response) {
  // Answered while the engine starts too (it says what the server is).
  if (grpc::Status s =
          CheckCaller(auth_, *ctx, Role::kViewer, "Server.GetServerInfo");
      !s.ok()) {
    return Answer(ctx, s);
  }
  const core::BuildInfo& build = core::GetBuildInfo();
  const core::EngineInfo info = api_.Info();

  response->set_version(build.version);
  v1::BuildInfo* b = response->mutable_build();
  b->set_revision(build.revision);
  b->set_build_type(build.build_type);
  b->set_compiler(build.compiler);
  b->set_torch_version(build.torch_version);
  b->set_grpc_version(grpc::Version());
  b->set_protobuf_version(
      google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION));
  b->set_torch_cuda(build.torch_cuda);

  v1::DeviceInfo* d = response->mutable_device();
  d->set_name(info.device.name);
  d->set_description(info.device.description);
  d->set_threads(info.device.threads);
  d->set_memory_bytes(info.device.memory_bytes);
  d->set_default_precision(info.device.precision == "bf16"
                               ? v1::PRECISION_BF16
                               : v1::PRECISION_FP32);

  v1::CpuFeatures* c = response->mutable_cpu();
  c->set_avx2(info.cpu.avx2);
  c->set_avx512f(info.cpu.avx512f);
  c->set_avx512_bf16(info.cpu.avx512_bf16);
  c->set_amx_tile(info.cpu.amx_tile);
  c->set_amx_bf16(info.cpu.amx_bf16);
  c->set_onednn(info.cpu.onednn);
  c->set_logical_cpus(info.cpu.logical_cpus);

  for (const core::BackboneDescription& bb : info.backbones) {
    v1::BackboneInfo* out = response->add_backbones();
    out->set_name(bb.name);
    out->set_keras_name(bb.keras_name);
    for (double a : bb.alphas) out->add_alphas(a);
    out->set_default_input_size(bb.default_input_size);
    out->set_min_input_size(bb.min_input_size);
    out->set_parameters(bb.parameters);
    for (const std::string& w : bb.weights_available) {
      out->add_weights_available(w);
    }
  }

  *response->mutable_limits() = limits_;
  *response->mutable_start_time() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
          std::chrono::duration_cast<std::chrono::nanoseconds>(
              info.start_time.time_since_epoch())
              .count());
  for (const std::string& s : implemented_) {
    response->add_implemented_services(s);
  }
  response->set_store_schema_version(info.store_schema_version);

  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace transferd::rpc
