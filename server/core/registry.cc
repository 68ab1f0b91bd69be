#include "server/core/registry.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/backbones/safetensors.h"
#include "server/core/model_archive.h"
#include "server/core/train/classifier.h"
#include "server/core/train/train_json.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/store.h"

namespace transferd::core {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

constexpr const char* kColumns =
    "id, display_name, create_time_ms, source_job, parent, spec_blob, config, "
    "classes, "
    "preprocessing, history, best_epoch, evaluations, size_bytes, parameters";

std::string PreprocessingToJson(const PreprocessingInfo& p) {
  return json({{"mode", p.mode},
               {"bgr", p.bgr},
               {"scale", p.scale},
               {"mean", p.mean},
               {"std", p.std},
               {"input_size", p.input_size}})
      .dump();
}

absl::StatusOr<ModelInfo> ReadRow(const Statement& q, const DataDir& dir) {
  ModelInfo m;
  m.id = q.ColumnText(0);
  m.display_name = q.ColumnText(1);
  m.create_time = FromUnixMillis(q.ColumnInt(2));
  m.source_job = q.ColumnText(3);
  m.parent = q.ColumnText(4);
  m.spec_blob = q.ColumnText(5);
  TRANSFERD_ASSIGN_OR_RETURN(m.model,
                             train::ModelConfigFromJson(q.ColumnText(6)));
  try {
    m.classes = json::parse(q.ColumnText(7)).get<std::vector<std::string>>();
    const json p = json::parse(q.ColumnText(8));
    m.preprocessing.mode = p.at("mode").get<std::string>();
    m.preprocessing.bgr = p.at("bgr").get<bool>();
    m.preprocessing.scale = p.at("scale").get<float>();
    m.preprocessing.mean = p.at("mean").get<std::vector<float>>();
    m.preprocessing.std = p.at("std").get<std::vector<float>>();
    m.preprocessing.input_size = p.at("input_size").get<int>();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(
        "model ", m.id, ": stored metadata is malformed: ", e.what()));
  }
  TRANSFERD_ASSIGN_OR_RETURN(m.history,
                             train::HistoryFromJson(q.ColumnText(9)));
  m.best_epoch = static_cast<int>(q.ColumnInt(10));
  TRANSFERD_ASSIGN_OR_RETURN(m.evaluations,
                             train::EvaluationsFromJson(q.ColumnText(11)));
  m.size_bytes = q.ColumnInt(12);
  m.parameters = q.ColumnInt(13);
  m.weights_file = dir.models_dir() / m.id / "weights.safetensors";
  return m;
}

// The aliases pointing at `model_id`, in name order.
absl::StatusOr<std::vector<std::string>> AliasesOf(
    StoreTxn& txn, const std::string& model_id) {
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement q,
      txn.Prepare(
          "SELECT alias FROM aliases WHERE model_id = ? ORDER BY alias"));
  q.Bind(1, model_id);
  std::vector<std::string> out;
  while (true) {
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.ColumnText(0));
  }
  return out;
}

// Removes a file or folder when it goes out of scope.
struct RemoveOnExit {
  fs::path path;
  ~RemoveOnExit() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Open(
    Store& store, const DataDir& data_dir) {
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry(store, data_dir));
  std::set<std::string> known;
  TRANSFERD_RETURN_IF_ERROR(
      store.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(Statement q,
                                   txn.Prepare("SELECT id FROM models"));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          known.insert(q.ColumnText(0));
        }
        return absl::OkStatus();
      }));
  // Job checkpoints live in models/jobs/; they belong to the job queue.
  known.insert("jobs");
  TRANSFERD_ASSIGN_OR_RETURN(registry->orphans_removed_,
                             RemoveUncatalogued(data_dir.models_dir(), known));
  return registry;
}

absl::StatusOr<ModelInfo> ModelRegistry::Register(ModelInfo info,
                                                  const fs::path& weights) {
  // One registration at a time: the existence check, the folder's rename and
  // the row's insert must not interleave with another for the same id.
  std::lock_guard<std::mutex> registering(register_mu_);
  if (info.id.empty()) info.id = "m-" + RandomHex(4);
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("model id", info.id));
  if (info.id == "jobs") {
    return absl::InvalidArgumentError("model id \"jobs\" is reserved");
  }
  if (Get(info.id).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("model \"", info.id, "\" already exists"));
  }
  std::error_code ec;
  const fs::path staging = data_dir_.tmp_dir() / ("model-" + RandomHex(8));
  fs::create_directories(staging, ec);
  fs::copy_file(weights, staging / "weights.safetensors", ec);
  if (ec) {
    fs::remove_all(staging, ec);
    return absl::InternalError(
        absl::StrCat("cannot copy ", weights.string(), ": ", ec.message()));
  }
  info.size_bytes =
      static_cast<int64_t>(fs::file_size(staging / "weights.safetensors", ec));
  const std::string metadata =
      json({{"id", info.id},
            {"classes", info.classes},
            {"model", json::parse(train::ModelConfigToJson(info.model))},
            {"preprocessing",
             json::parse(PreprocessingToJson(info.preprocessing))}})
          .dump(2);
  TRANSFERD_RETURN_IF_ERROR(
      WriteFileAtomically(staging / "model.json", metadata));
  const fs::path final_dir = data_dir_.models_dir() / info.id;
  fs::remove_all(final_dir, ec);
  fs::rename(staging, final_dir, ec);
  if (ec) {
    fs::remove_all(staging, ec);
    return absl::InternalError(
        absl::StrCat("cannot move the model into ", final_dir.string()));
  }
  TRANSFERD_RETURN_IF_ERROR(SyncDirectory(data_dir_.models_dir()));
  info.weights_file = final_dir / "weights.safetensors";
  info.create_time =
      FromUnixMillis(UnixMillis(std::chrono::system_clock::now()));
  absl::Status inserted =
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q, txn.Prepare(absl::StrCat(
                             "INSERT INTO models (", kColumns,
                             ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")));
        q.Bind(1, info.id)
            .Bind(2, info.display_name.empty() ? info.id : info.display_name)
            .Bind(3, UnixMillis(info.create_time))
            .Bind(4, info.source_job)
            .Bind(5, info.parent)
            .BindBlob(6, info.spec_blob)
            .Bind(7, train::ModelConfigToJson(info.model))
            .Bind(8, json(info.classes).dump())
            .Bind(9, PreprocessingToJson(info.preprocessing))
            .Bind(10, train::HistoryToJson(info.history))
            .Bind(11, static_cast<int64_t>(info.best_epoch))
            .Bind(12, train::EvaluationsToJson(info.evaluations))
            .Bind(13, info.size_bytes)
            .Bind(14, info.parameters);
        return q.Run();
      });
  if (!inserted.ok()) {
    fs::remove_all(final_dir, ec);
    return inserted;
  }
  if (info.display_name.empty()) info.display_name = info.id;
  info.aliases.clear();
  return info;
}

absl::StatusOr<ModelInfo> ModelRegistry::Get(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("model id", id));
  std::optional<absl::StatusOr<ModelInfo>> found;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(absl::StrCat("SELECT ", kColumns,
                                     " FROM models WHERE id = ?")));
        q.Bind(1, id);
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) return absl::OkStatus();
        found = ReadRow(q, data_dir_);
        if (found->ok()) {
          TRANSFERD_ASSIGN_OR_RETURN((*found)->aliases, AliasesOf(txn, id));
        }
        return absl::OkStatus();
      }));
  if (!found.has_value())
    return absl::NotFoundError(absl::StrCat("model \"", id, "\" not found"));
  return *std::move(found);
}

absl::StatusOr<std::vector<ModelInfo>> ModelRegistry::List(
    int page_size, const std::string& page_token,
    std::string* next_page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(page_size, ClampPageSize(page_size));
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t offset, ParsePageToken(page_token));
  std::vector<ModelInfo> out;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q, txn.Prepare(absl::StrCat(
                             "SELECT ", kColumns,
                             " FROM models ORDER BY create_time_ms DESC, id "
                             "LIMIT ? OFFSET ?")));
        q.Bind(1, static_cast<int64_t>(page_size) + 1).Bind(2, offset);
        TRANSFERD_ASSIGN_OR_RETURN(
            more, ReadPage(q, page_size, [&](const Statement& row) {
              TRANSFERD_ASSIGN_OR_RETURN(ModelInfo m, ReadRow(row, data_dir_));
              out.push_back(std::move(m));
              return absl::OkStatus();
            }));
        for (ModelInfo& m : out) {
          TRANSFERD_ASSIGN_OR_RETURN(m.aliases, AliasesOf(txn, m.id));
        }
        return absl::OkStatus();
      }));
  if (next_page_token != nullptr)
    *next_page_token = more ? std::to_string(offset + page_size) : "";
  return out;
}

void ModelRegistry::SetInUseCheck(
    std::function<std::string(const std::string&)> in_use) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ = std::move(in_use);
}

absl::Status ModelRegistry::Delete(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("model id", id));
  std::function<std::string(const std::string&)> in_use;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use = in_use_;
  }
  if (in_use) {
    const std::string user = in_use(id);
    if (!user.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", id, "\" is used by ", user));
    }
  }
  bool deleted = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        // In the same transaction as the delete: SetAlias cannot slip in
        // between.
        TRANSFERD_ASSIGN_OR_RETURN(std::vector<std::string> aliases,
                                   AliasesOf(txn, id));
        if (!aliases.empty()) {
          return absl::FailedPreconditionError(
              absl::StrCat("model \"", id, "\" is the target of ",
                           aliases.size() == 1 ? "alias " : "aliases ",
                           absl::StrJoin(aliases, ", "), "; delete or move ",
                           aliases.size() == 1 ? "it" : "them", " first"));
        }
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement d, txn.Prepare("DELETE FROM models WHERE id = ?"));
        d.Bind(1, id);
        TRANSFERD_RETURN_IF_ERROR(d.Run());
        deleted = txn.Changes() > 0;
        return absl::OkStatus();
      }));
  if (!deleted)
    return absl::NotFoundError(absl::StrCat("model \"", id, "\" not found"));
  std::error_code ec;
  fs::remove_all(data_dir_.models_dir() / id, ec);
  return absl::OkStatus();
}

// ---- Import
// -------------------------------------------------------------------

absl::StatusOr<ModelInfo> ModelRegistry::Import(
    const fs::path& archive, const std::string& id,
    const std::string& display_name) {
  if (!id.empty()) {
    TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("model id", id));
    if (Get(id).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("model \"", id, "\" already exists"));
    }
  }
  if (display_name.size() > 1024) {
    return absl::InvalidArgumentError("display_name: longer than 1024 bytes");
  }
  const RemoveOnExit weights{data_dir_.tmp_dir() /
                             ("import-" + RandomHex(8) + ".safetensors")};
  TRANSFERD_ASSIGN_OR_RETURN(ModelInfo info,
                             ReadModelArchive(archive, weights.path));

  // The tensors must be exactly the classifier model.json describes.
  absl::StatusOr<backbones::NamedTensors> tensors =
      backbones::ReadSafetensors(weights.path);
  if (!tensors.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid model archive: weights.safetensors: ",
                     tensors.status().message()));
  }
  try {
    absl::StatusOr<train::Classifier> classifier = train::BuildClassifier(
        info.model, static_cast<int>(info.classes.size()),
        backbones::WeightsCacheOptions(),
        /*load_weights=*/false);
    if (!classifier.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a valid model archive: model.json: ",
                       classifier.status().message()));
    }
    absl::Status loaded = (*classifier)->LoadStateTensors(*tensors);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "not a valid model archive: weights.safetensors does not fit the ",
          info.model.backbone,
          " classifier in model.json: ", loaded.message()));
    }
    const train::TrainableSummary summary = (*classifier)->Summary();
    info.parameters =
        summary.trainable_parameters + summary.non_trainable_parameters;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a valid model archive: building its classifier failed: ",
        e.what()));
  }
  tensors->clear();

  const std::string archived_id = info.id;
  info.id = id;
  // Without an id: the archive's, when it is valid and free here.
  if (info.id.empty() && archived_id != "jobs" &&
      ValidateResourceId("model id", archived_id).ok() &&
      absl::IsNotFound(Get(archived_id).status())) {
    info.id = archived_id;
  }
  if (!display_name.empty()) info.display_name = display_name;
  info.source_job.clear();
  // A parent is kept only when it names a model of this registry.
  if (!info.parent.empty() &&
      !Get(info.parent.substr(std::string_view("models/").size())).ok()) {
    info.parent.clear();
  }
  info.aliases.clear();
  absl::StatusOr<ModelInfo> registered = Register(info, weights.path);
  if (absl::IsAlreadyExists(registered.status()) && id.empty() &&
      info.id == archived_id) {
    info.id.clear();  // taken meanwhile: let Register choose
    registered = Register(info, weights.path);
  }
  return registered;
}

// ---- Aliases
// ------------------------------------------------------------------

void ModelRegistry::AddAliasListener(
    std::function<void(const std::string& alias, const std::string& model_id)>
        listener) {
  std::lock_guard<std::mutex> lock(mu_);
  alias_listeners_.push_back(std::move(listener));
}

void ModelRegistry::NotifyAlias(const std::string& alias,
                                const std::string& model_id) {
  std::vector<std::function<void(const std::string&, const std::string&)>>
      listeners;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listeners = alias_listeners_;
  }
  for (const auto& listener : listeners) listener(alias, model_id);
}

absl::StatusOr<AliasInfo> ModelRegistry::SetAlias(const std::string& alias,
                                                  const std::string& model_id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("alias", alias));
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("model id", model_id));
  AliasInfo out{alias, model_id,
                FromUnixMillis(UnixMillis(std::chrono::system_clock::now()))};
  bool found = false;
  TRANSFERD_RETURN_IF_ERROR(store_.Transaction([&](StoreTxn& txn)
                                                   -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare("SELECT 1 FROM models WHERE id = ?"));
    q.Bind(1, model_id);
    TRANSFERD_ASSIGN_OR_RETURN(found, q.Step());
    if (!found) return absl::OkStatus();
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement u,
        txn.Prepare(
            "INSERT INTO aliases (alias, model_id, update_time_ms) VALUES (?, "
            "?, ?) "
            "ON CONFLICT (alias) DO UPDATE SET model_id = excluded.model_id, "
            "update_time_ms = excluded.update_time_ms"));
    u.Bind(1, alias).Bind(2, model_id).Bind(3, UnixMillis(out.update_time));
    return u.Run();
  }));
  if (!found)
    return absl::NotFoundError(
        absl::StrCat("model \"", model_id, "\" not found"));
  ForgetAlias(alias);
  NotifyAlias(alias, model_id);
  return out;
}

absl::Status ModelRegistry::DeleteAlias(const std::string& alias) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("alias", alias));
  bool deleted = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement d, txn.Prepare("DELETE FROM aliases WHERE alias = ?"));
        d.Bind(1, alias);
        TRANSFERD_RETURN_IF_ERROR(d.Run());
        deleted = txn.Changes() > 0;
        return absl::OkStatus();
      }));
  if (!deleted)
    return absl::NotFoundError(absl::StrCat("alias '", alias, "' not found"));
  ForgetAlias(alias);
  NotifyAlias(alias, "");
  return absl::OkStatus();
}

void ModelRegistry::ForgetAlias(const std::string& alias) {
  // Forgotten, not stored: two writers may finish out of order, the store
  // alone knows which came last; the next read asks it.
  std::lock_guard<std::mutex> lock(mu_);
  ++alias_generation_;
  alias_cache_.erase(alias);
}

absl::StatusOr<std::string> ModelRegistry::ResolveAlias(
    const std::string& alias) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("alias", alias));
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = alias_cache_.find(alias);
    if (it != alias_cache_.end()) {
      if (!it->second.has_value()) {
        return absl::NotFoundError(
            absl::StrCat("alias '", alias, "' not found"));
      }
      return *it->second;
    }
    generation = alias_generation_;
  }
  std::optional<std::string> model_id;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT model_id FROM aliases WHERE alias = ?"));
        q.Bind(1, alias);
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) model_id = q.ColumnText(0);
        return absl::OkStatus();
      }));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (alias_generation_ == generation) {
      if (alias_cache_.size() >= kAliasCacheEntries) alias_cache_.clear();
      alias_cache_[alias] = model_id;
    }
  }
  if (!model_id.has_value())
    return absl::NotFoundError(absl::StrCat("alias '", alias, "' not found"));
  return *std::move(model_id);
}

absl::StatusOr<std::vector<AliasInfo>> ModelRegistry::ListAliases(
    int page_size, const std::string& page_token,
    std::string* next_page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(page_size, ClampPageSize(page_size));
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t offset, ParsePageToken(page_token));
  std::vector<AliasInfo> out;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(
      store_.Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT alias, model_id, update_time_ms FROM aliases "
                        "ORDER BY alias LIMIT ? OFFSET ?"));
        q.Bind(1, static_cast<int64_t>(page_size) + 1).Bind(2, offset);
        TRANSFERD_ASSIGN_OR_RETURN(
            more, ReadPage(q, page_size, [&](const Statement& row) {
              out.push_back(AliasInfo{row.ColumnText(0), row.ColumnText(1),
                                      FromUnixMillis(row.ColumnInt(2))});
              return absl::OkStatus();
            }));
        return absl::OkStatus();
      }));
  if (next_page_token != nullptr)
    *next_page_token = more ? std::to_string(offset + page_size) : "";
  return out;
}

}  // namespace transferd::core
