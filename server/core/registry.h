// The model registry: trained classifiers as immutable versions. Each
// version is a folder <data>/models/<id>/ holding weights.safetensors (the
// whole classifier) and model.json (everything needed to rebuild and serve
// it: the model config, classes, preprocessing), plus a catalog row with its
// metrics. A version is written to tmp/ first and renamed into place before
// its row is inserted; a folder without a row is removed at start.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/model_info.h"

namespace transferd::core {

class DataDir;
class Store;

class ModelRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Open(
      Store& store, const DataDir& data_dir);

  // Registers a version: copies `weights` into its folder. `info.id` empty =
  // "m-<8 hex>". ALREADY_EXISTS for a taken id.
  absl::StatusOr<ModelInfo> Register(ModelInfo info,
                                     const std::filesystem::path& weights);

  absl::StatusOr<ModelInfo> Get(const std::string& id);
  absl::StatusOr<std::vector<ModelInfo>> List(int page_size,
                                              const std::string& page_token,
                                              std::string* next_page_token);
  // FAILED_PRECONDITION while an alias points at it or `in_use` names a
  // user.
  absl::Status Delete(const std::string& id);
  void SetInUseCheck(std::function<std::string(const std::string& id)> in_use);

  // Imports an archive written by WriteModelArchive (model_archive.h): checks
  // the tar, model.json and the weights (by building the classifier and
  // loading them), then registers it like Register. `id` / `display_name`
  // empty = chosen by the server / the archive's. INVALID_ARGUMENT for a bad
  // archive; nothing is left behind on any error.
  absl::StatusOr<ModelInfo> Import(const std::filesystem::path& archive,
                                   const std::string& id,
                                   const std::string& display_name);

  // Creates or moves an alias. INVALID_ARGUMENT for a malformed alias,
  // NOT_FOUND for an unknown model.
  absl::StatusOr<AliasInfo> SetAlias(const std::string& alias,
                                     const std::string& model_id);
  // NOT_FOUND for an unknown alias.
  absl::Status DeleteAlias(const std::string& alias);
  // The model id an alias points at; NOT_FOUND "alias 'x' not found".
  absl::StatusOr<std::string> ResolveAlias(const std::string& alias);
  // Aliases in name order.
  absl::StatusOr<std::vector<AliasInfo>> ListAliases(
      int page_size, const std::string& page_token,
      std::string* next_page_token);
  // Called after an alias is set, moved or deleted (model_id "" when
  // deleted), on the calling thread, outside the registry's lock; must not
  // block.
  void AddAliasListener(
      std::function<void(const std::string& alias, const std::string& model_id)>
          listener);

  int orphans_removed() const { return orphans_removed_; }

 private:
  ModelRegistry(Store& store, const DataDir& data_dir)
      : store_(store), data_dir_(data_dir) {}

  Store& store_;
  const DataDir& data_dir_;
  int orphans_removed_ = 0;
  std::mutex mu_;
  std::mutex register_mu_;  // serialises Register
  std::function<std::string(const std::string&)> in_use_;
  std::vector<std::function<void(const std::string&, const std::string&)>>
      alias_listeners_;
  // ResolveAlias's answers (nullopt: no such alias), forgotten by SetAlias
  // and DeleteAlias (this process is the store's only writer);
  // `alias_generation_` changes with every write, so a read that raced one
  // is not cached. Cleared beyond kAliasCacheEntries names.
  static constexpr size_t kAliasCacheEntries = 4096;
  std::unordered_map<std::string, std::optional<std::string>> alias_cache_;
  uint64_t alias_generation_ = 0;
  void ForgetAlias(const std::string& alias);

  void NotifyAlias(const std::string& alias, const std::string& model_id);
};

}  // namespace transferd::core
