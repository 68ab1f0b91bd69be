#include "server/core/engine.h"

#include <random>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/core/status_macros.h"

namespace transferd::core {
namespace {

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    absl::StrAppendFormat(&out, "%02x", rd() & 0xff);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options) {
  std::unique_ptr<Engine> engine(new Engine);
  TRANSFERD_ASSIGN_OR_RETURN(engine->device_, SelectDevice(options.device));
  TRANSFERD_ASSIGN_OR_RETURN(engine->data_dir_,
                             DataDir::Open(options.data_dir));
  Store::Options store_options;
  store_options.path = engine->data_dir_->database_path();
  store_options.busy_timeout_ms = options.store_busy_timeout_ms;
  TRANSFERD_ASSIGN_OR_RETURN(engine->store_, Store::Open(store_options));

  TRANSFERD_ASSIGN_OR_RETURN(std::optional<std::string> id,
                             engine->store_->GetMeta("instance_id"));
  if (!id.has_value()) {
    id = RandomHex(8);
    TRANSFERD_RETURN_IF_ERROR(engine->store_->SetMeta("instance_id", *id));
    TRANSFERD_RETURN_IF_ERROR(engine->store_->SetMeta(
        "created_at", absl::FormatTime(absl::RFC3339_sec, absl::Now(),
                                       absl::UTCTimeZone())));
  }
  engine->instance_id_ = *id;
  engine->start_time_ = std::chrono::system_clock::now();
  return engine;
}

Engine::~Engine() { (void)Shutdown(); }

EngineInfo Engine::Info() const {
  EngineInfo info;
  info.device = device_;
  info.cpu = GetCpuFeatures();
  info.start_time = start_time_;
  info.store_schema_version = store_ ? store_->schema_version() : 0;
  info.instance_id = instance_id_;
  return info;
}

void Engine::BeginShutdown() { shutting_down_.store(true); }

absl::Status Engine::Shutdown() {
  BeginShutdown();
  absl::Status status;
  if (store_) {
    status = store_->Close();
    store_.reset();
  }
  data_dir_.reset();
  return status;
}

}  // namespace transferd::core
