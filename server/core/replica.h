// The local half of a read-only serving replica (transferd --follow): what
// the replica serves and how far it is in sync, and the operations that
// bring its registry to the primary's aliases. The half that talks to the
// primary (server/replica/follower.h) is gRPC and drives this one; nothing
// here includes gRPC headers.
//
// The replica's own registry is its model cache: a model pulled from the
// primary is imported under the primary's id (ids are immutable versions, so
// an id held here is never pulled again), warmed, and only then does the
// local alias move to it; Predict through the alias never meets a cold or
// missing model. Models no alias names are kept up to `keep_models`, most
// recently named first, so an alias moved back is served without a pull.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/model_transfer.h"

namespace transferd::core {

class Engine;
class Metrics;

struct ReplicaAliasStatus {
  std::string alias;
  std::string model_id;          // served here now
  std::string primary_model_id;  // what the primary names
  bool ready = false;
};

struct ReplicaStatus {
  std::string primary;
  bool primary_connected = false;
  std::optional<std::chrono::system_clock::time_point> last_contact;
  std::optional<std::chrono::system_clock::time_point> last_sync;
  bool in_sync = false;
  std::string last_error;
  int64_t pulls = 0, pulls_refused = 0, pulls_failed = 0, pulled_bytes = 0;
  std::vector<ReplicaAliasStatus> aliases;
};

// How a pull ended (metrics' result label).
enum class PullResult { kOk, kRefused, kFailed };

class Replica {
 public:
  struct Options {
    std::string primary;  // the address followed, for messages and status
    int keep_models = 8;  // models no alias names, kept as cache
    std::chrono::milliseconds warm_timeout{300000};
  };
  Replica(Engine& engine, Options options);
  ~Replica();
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  const Options& options() const { return options_; }
  ReplicaStatus Status();

  // ---- What the follower reports ----
  void Connected(bool connected, const std::string& error);
  // A snapshot or heartbeat arrived.
  void Contact();
  void PullDone(PullResult result, int64_t bytes, const std::string& error);
  void Error(const std::string& error);

  // ---- Local operations ----
  // The model is in the local registry (pulled before).
  bool HasModel(const std::string& model_id);
  // An import of the primary's archive of `model_id` into the local
  // registry, bounded like any import (size limit, free-disk floor).
  absl::StatusOr<std::unique_ptr<ModelImport>> BeginPull(
      const std::string& model_id, int64_t total_bytes);
  // Brings the local aliases to `target` (alias -> model id): each model
  // present here is warmed, and its alias moves once it is ready; aliases
  // the primary no longer has are deleted; a model not here (its pull
  // failed) leaves its alias where it was. Then the cache is trimmed.
  // `cancelled` ends the waits early (shutdown). OK when every alias is as
  // the primary names it.
  absl::Status Apply(const std::map<std::string, std::string>& target,
                     const std::function<bool()>& cancelled);
  // Wakes an Apply waiting for a warm-up, to see `cancelled`.
  void Interrupt();

 private:
  // Warms `ids` and waits until each is ready (or failed to load, or the
  // timeout, or `cancelled`); returns the ones ready.
  std::vector<std::string> WarmAll(const std::vector<std::string>& ids,
                                   const std::function<bool()>& cancelled);
  void TrimCache(const std::map<std::string, std::string>& target);

  Engine& engine_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;  // a model became ready or failed
  ReplicaStatus status_;
  // Models WarmAll waits for: ready, failed to load, or still loading.
  std::map<std::string, std::optional<bool>> load_outcome_;
  // Models named by an alias, most recent last (the cache's order).
  std::vector<std::string> recently_named_;
};

}  // namespace transferd::core
