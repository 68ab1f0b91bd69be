#include "server/core/api/engine_api.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/status_macros.h"

namespace transferd::core::api {
namespace {

// (absl's string_view is its own type in Debian's build: plain C strings.)
constexpr char kModels[] = "models/";
constexpr char kAliases[] = "aliases/";
constexpr size_t kAliasesLength = sizeof(kAliases) - 1;

absl::Status Prefixed(std::string_view field, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(std::string(field), ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::string> IdFromName(std::string_view field,
                                       std::string_view collection,
                                       const std::string& name) {
  const std::string prefix = absl::StrCat(std::string(collection), "/");
  if (!absl::StartsWith(name, prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), ": expected \"", prefix,
                     "{id}\", got \"", name.substr(0, 200), "\""));
  }
  std::string id = name.substr(prefix.size());
  if (absl::Status s = ValidateResourceId("id", id); !s.ok()) {
    return Prefixed(field, s);
  }
  return id;
}

// ---- Server ----

bool EngineApi::ready() const { return engine_.ready(); }

bool EngineApi::shutting_down() const { return engine_.shutting_down(); }

absl::Status EngineApi::CheckReady() const {
  if (engine_.ready()) return absl::OkStatus();
  return absl::UnavailableError(
      "the server is starting or shutting down; retry shortly");
}

absl::Status EngineApi::CheckPrimary(std::string_view what) const {
  if (!engine_.read_only()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("this server is a read-only serving replica of ",
                   engine_.options().follow_primary, ": ", std::string(what),
                   " on the primary"));
}

EngineInfo EngineApi::Info() const { return engine_.Info(); }

std::optional<ReplicaStatus> EngineApi::Replica() const {
  if (!engine_.ready() || engine_.replica() == nullptr) return std::nullopt;
  return engine_.replica()->Status();
}

Executor& EngineApi::executor() { return engine_.executor(); }

// ---- Datasets ----

absl::StatusOr<std::unique_ptr<DatasetUpload>> EngineApi::BeginUpload(
    UploadSpec spec) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("upload datasets"));
  return engine_.datasets().BeginUpload(std::move(spec));
}

absl::StatusOr<std::vector<bool>> EngineApi::HasContent(
    const std::vector<std::string>& sha256) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("upload datasets"));
  if (sha256.size() > kMaxContentQuery) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256: at most ", kMaxContentQuery, " per call, got ",
                     sha256.size()));
  }
  return engine_.datasets().HasContent(sha256);
}

absl::Status EngineApi::StageContent(const std::string& sha256,
                                     std::string_view bytes) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("upload datasets"));
  return engine_.datasets().StageContent(sha256, bytes);
}

absl::StatusOr<int64_t> EngineApi::MaxFileBytes() {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  return engine_.datasets().limits().max_file_bytes;
}

absl::StatusOr<DatasetInfo> EngineApi::GetDataset(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("datasets live"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id,
                             IdFromName("name", "datasets", name));
  return engine_.datasets().Get(id);
}

absl::StatusOr<Page<DatasetInfo>> EngineApi::ListDatasets(
    const PageRequest& page) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("datasets live"));
  Page<DatasetInfo> out;
  TRANSFERD_ASSIGN_OR_RETURN(
      out.items, engine_.datasets().List(page.page_size, page.page_token,
                                         &out.next_page_token));
  return out;
}

absl::Status EngineApi::DeleteDataset(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("delete datasets"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id,
                             IdFromName("name", "datasets", name));
  return engine_.datasets().Delete(id);
}

// ---- Jobs ----

absl::StatusOr<JobView> EngineApi::CreateJob(const JobSubmission& submission) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("create jobs"));
  train::JobRequest request = submission.request;
  // An unknown dataset is said first, before what the spec may lack.
  if (!request.dataset_id.empty()) {
    if (absl::StatusOr<DatasetInfo> dataset =
            engine_.datasets().Get(request.dataset_id);
        !dataset.ok() && absl::IsNotFound(dataset.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.dataset: ", dataset.status().message()));
    }
  }
  // FINE_TUNE and PREDICT take the base model's network; an alias is
  // resolved now, so the job keeps the model it was given. A model that
  // does not exist is a bad argument of this call, not a missing resource.
  std::optional<train::ModelConfig> base;
  std::string base_model;
  if (request.kind != train::RequestKind::kTrain &&
      !request.base_model_name.empty()) {
    absl::StatusOr<std::string> id =
        ModelIdOf("spec.base_model", request.base_model_name);
    absl::StatusOr<ModelInfo> model =
        id.ok() ? engine_.models().Get(*id) : id.status();
    if (!model.ok()) {
      if (!absl::IsNotFound(model.status())) return model.status();
      return absl::InvalidArgumentError(
          absl::StrCat("spec.base_model: ", model.status().message()));
    }
    base = model->model;
    request.base_model_id = *id;
    base_model = absl::StrCat(kModels, *id);
  }
  TRANSFERD_ASSIGN_OR_RETURN(
      train::ResolvedJob resolved,
      train::ResolveJob(request, engine_.device().precision,
                        base ? &*base : nullptr));
  NewJob job;
  job.id = submission.job_id;
  job.trace_id = submission.trace_id;
  switch (request.kind) {
    case train::RequestKind::kTrain:
      job.kind = JobKind::kTrain;
      break;
    case train::RequestKind::kFineTune:
      job.kind = JobKind::kFineTune;
      break;
    case train::RequestKind::kPredict:
      job.kind = JobKind::kPredict;
      break;
  }
  job.dataset_id = resolved.dataset_id;
  job.base_model = resolved.base_model;
  job.spec_blob = submission.spec_blob;
  job.resolved_blob = submission.encode_resolved(resolved, base_model);
  job.config = resolved.config;
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord created,
                             engine_.jobs().Create(std::move(job)));
  return View(std::move(created));
}

absl::StatusOr<std::string> EngineApi::JobId(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("jobs live"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, IdFromName("name", "jobs", name));
  TRANSFERD_RETURN_IF_ERROR(engine_.jobs().Get(id).status());
  return id;
}

absl::StatusOr<JobView> EngineApi::GetJob(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("jobs live"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, IdFromName("name", "jobs", name));
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord job, engine_.jobs().Get(id));
  return View(std::move(job));
}

absl::StatusOr<Page<JobView>> EngineApi::ListJobs(const JobQuery& query) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("jobs live"));
  Page<JobView> out;
  TRANSFERD_ASSIGN_OR_RETURN(
      std::vector<JobRecord> jobs,
      engine_.jobs().List(query.page.page_size, query.page.page_token,
                          query.state, query.kind, &out.next_page_token));
  std::vector<std::pair<std::string, std::vector<std::string>>> datasets;
  out.items.reserve(jobs.size());
  for (JobRecord& job : jobs) {
    std::vector<std::string> classes = ClassesOf(job, &datasets);
    out.items.push_back({std::move(job), std::move(classes)});
  }
  return out;
}

absl::StatusOr<JobView> EngineApi::CancelJob(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("cancel jobs"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, IdFromName("name", "jobs", name));
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord job, engine_.jobs().Cancel(id));
  return View(std::move(job));
}

absl::StatusOr<PredictionsPage> EngineApi::ListJobPredictions(
    const std::string& name, const PageRequest& page) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("jobs live"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, IdFromName("name", "jobs", name));
  return engine_.jobs().Predictions(id, page.page_size, page.page_token);
}

EventRead EngineApi::ReadEvents(const std::string& job_id, int64_t after,
                                int limit, bool follow) {
  EventRead read;
  // Two rounds at most: a job can finish between reading its events and
  // reading its state; then its last events are read once more.
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<std::vector<JobEvent>> events =
        engine_.jobs().Events(job_id, after, limit);
    if (!events.ok()) return {{}, true, events.status()};
    if (!events->empty()) {
      read.events = *std::move(events);
      return read;
    }
    // Caught up: done unless following a job that can still change.
    absl::StatusOr<JobRecord> job = engine_.jobs().Get(job_id);
    if (!job.ok()) return {{}, true, job.status()};
    const bool terminal = IsTerminal(job->state);
    if (terminal && job->last_event_sequence > after) continue;
    read.end = !follow || terminal;
    return read;
  }
  return read;
}

int64_t EngineApi::Watch(const std::string& job_id,
                         std::function<void()> wake) {
  return engine_.jobs().Subscribe(job_id, std::move(wake));
}

void EngineApi::Unwatch(int64_t handle) { engine_.jobs().Unsubscribe(handle); }

bool EngineApi::jobs_stopping() { return engine_.jobs().stopping(); }

std::vector<std::string> EngineApi::ClassesOf(
    const JobRecord& job,
    std::vector<std::pair<std::string, std::vector<std::string>>>* datasets) {
  if (job.kind == JobKind::kPredict) return job.config.predict_classes;
  for (const auto& [id, classes] : *datasets) {
    if (id == job.dataset_id) return classes;
  }
  std::vector<std::string> classes;
  // A deleted dataset leaves its jobs' matrices unnamed.
  if (absl::StatusOr<DatasetInfo> d = engine_.datasets().Get(job.dataset_id);
      d.ok()) {
    classes = d->classes;
  }
  datasets->emplace_back(job.dataset_id, classes);
  return classes;
}

JobView EngineApi::View(JobRecord job) {
  std::vector<std::pair<std::string, std::vector<std::string>>> datasets;
  std::vector<std::string> classes = ClassesOf(job, &datasets);
  return {std::move(job), std::move(classes)};
}

// ---- Models and aliases ----

absl::StatusOr<std::string> EngineApi::ModelIdOf(std::string_view field,
                                                 const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  if (absl::StartsWith(name, kAliases)) {
    std::string alias = name.substr(kAliasesLength);
    if (absl::Status s = ValidateResourceId("alias", alias); !s.ok()) {
      return Prefixed(field, s);
    }
    return engine_.models().ResolveAlias(alias);
  }
  if (!absl::StartsWith(name, kModels)) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(field),
        ": expected \"models/{id}\" or \"aliases/{alias}\", got \"",
        name.substr(0, 200), "\""));
  }
  return IdFromName(field, "models", name);
}

absl::StatusOr<std::string> EngineApi::ResolveModel(std::string_view field,
                                                    const std::string& name) {
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, ModelIdOf(field, name));
  // An alias names an existing model (one cannot be deleted while an alias
  // points at it); "models/{id}" is checked.
  if (!absl::StartsWith(name, kAliases)) {
    TRANSFERD_RETURN_IF_ERROR(engine_.models().Get(id).status());
  }
  return id;
}

absl::StatusOr<std::string> EngineApi::ResolveServingName(
    const std::string& name, const std::string& version) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  if (absl::Status valid = ValidateResourceId("model name", name);
      !valid.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "model '", name.substr(0, 200), "' not found (", valid.message(), ")"));
  }
  absl::StatusOr<std::string> id = engine_.models().ResolveAlias(name);
  if (absl::IsNotFound(id.status())) {
    // The predictor's cached metadata: no registry read per call.
    if (!engine_.predictor().Known(name)) {
      return absl::NotFoundError(absl::StrCat(
          "model '", name, "' not found: neither an alias nor a model id"));
    }
    id = name;
  }
  if (!id.ok()) return id.status();
  if (!version.empty() && version != *id) {
    return absl::NotFoundError(absl::StrCat(
        "model '", name, "' has no version '", version.substr(0, 200),
        "'; its version is '", *id, "' (the model id it names)"));
  }
  return id;
}

absl::StatusOr<ModelInfo> EngineApi::GetModel(const std::string& name) {
  TRANSFERD_ASSIGN_OR_RETURN(std::string id, ModelIdOf("name", name));
  return engine_.models().Get(id);
}

absl::StatusOr<Page<ModelInfo>> EngineApi::ListModels(const PageRequest& page) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  Page<ModelInfo> out;
  TRANSFERD_ASSIGN_OR_RETURN(
      out.items, engine_.models().List(page.page_size, page.page_token,
                                       &out.next_page_token));
  return out;
}

absl::Status EngineApi::DeleteModel(const std::string& name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("delete models"));
  // Only "models/{id}": deleting through an alias would be ambiguous.
  TRANSFERD_ASSIGN_OR_RETURN(std::string id,
                             IdFromName("name", "models", name));
  TRANSFERD_RETURN_IF_ERROR(engine_.models().Delete(id));
  // Unloaded, its metadata and metric series gone: an import that reuses
  // the id is served fresh.
  engine_.predictor().Forget(id);
  return absl::OkStatus();
}

absl::StatusOr<AliasInfo> EngineApi::SetAlias(const std::string& alias_name,
                                              const std::string& model_name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("set aliases"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string alias,
                             IdFromName("alias", "aliases", alias_name));
  TRANSFERD_ASSIGN_OR_RETURN(std::string id,
                             IdFromName("model", "models", model_name));
  return engine_.models().SetAlias(alias, id);
}

absl::Status EngineApi::DeleteAlias(const std::string& alias_name) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("delete aliases"));
  TRANSFERD_ASSIGN_OR_RETURN(std::string alias,
                             IdFromName("alias", "aliases", alias_name));
  return engine_.models().DeleteAlias(alias);
}

absl::StatusOr<Page<AliasInfo>> EngineApi::ListAliases(
    const PageRequest& page) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  Page<AliasInfo> out;
  TRANSFERD_ASSIGN_OR_RETURN(
      out.items, engine_.models().ListAliases(page.page_size, page.page_token,
                                              &out.next_page_token));
  return out;
}

absl::StatusOr<std::unique_ptr<ModelExport>> EngineApi::ExportModel(
    const ModelInfo& model) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  return ModelExport::Create(model, engine_.data_dir());
}

absl::StatusOr<std::unique_ptr<ModelImport>> EngineApi::BeginModelImport(
    ModelImportSpec spec) {
  TRANSFERD_RETURN_IF_ERROR(CheckReady());
  TRANSFERD_RETURN_IF_ERROR(CheckPrimary("import models"));
  TransferLimits limits;
  limits.max_bytes = engine_.options().datasets.max_dataset_bytes;
  limits.min_free_disk_bytes = engine_.options().datasets.min_free_disk_bytes;
  return ModelImport::Begin(engine_.models(), engine_.data_dir(), limits,
                            std::move(spec));
}

// ---- Inference ----

void EngineApi::Predict(const std::string& model_name, PredictCall call) {
  // An unknown "models/{id}" is answered by the predictor, whose cached
  // metadata spares the registry read on every call.
  absl::StatusOr<std::string> id = ModelIdOf("model", model_name);
  if (!id.ok()) {
    call.done(id.status(), {});
    return;
  }
  call.model_id = *std::move(id);
  engine_.predictor().Submit(std::move(call));
}

bool EngineApi::ModelReady(const std::string& model_id) {
  return engine_.predictor().Ready(model_id);
}

void EngineApi::WarmModel(const std::string& model_id) {
  engine_.predictor().Warm(model_id);
}

void EngineApi::AddModelReadyListener(
    std::function<void(const std::string& model_id, bool ready)> listener) {
  engine_.predictor().AddReadyListener(std::move(listener));
}

void EngineApi::AddAliasListener(
    std::function<void(const std::string& alias, const std::string& model_id)>
        listener) {
  engine_.models().AddAliasListener(std::move(listener));
}

}  // namespace transferd::core::api
