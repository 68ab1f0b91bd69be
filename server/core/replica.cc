#include "server/core/replica.h"

#include <algorithm>
#include <limits>
#include <set>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/util/log.h"

namespace transferd::core {

Replica::Replica(Engine& engine, Options options)
    : engine_(engine), options_(std::move(options)) {
  status_.primary = options_.primary;
  engine_.predictor().AddReadyListener(
      [this](const std::string& id, bool ready) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = load_outcome_.find(id);
          if (it == load_outcome_.end() || it->second.has_value()) return;
          it->second = ready;
        }
        cv_.notify_all();
      });
}

Replica::~Replica() = default;

ReplicaStatus Replica::Status() {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicaStatus out = status_;
  for (ReplicaAliasStatus& a : out.aliases) {
    a.ready = !a.model_id.empty() && engine_.predictor().Ready(a.model_id);
  }
  return out;
}

void Replica::Connected(bool connected, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  status_.primary_connected = connected;
  if (connected) {
    status_.last_contact = std::chrono::system_clock::now();
  } else {
    status_.in_sync = false;
  }
  if (!error.empty()) status_.last_error = error;
}

void Replica::Contact() {
  std::lock_guard<std::mutex> lock(mu_);
  status_.primary_connected = true;
  status_.last_contact = std::chrono::system_clock::now();
}

void Replica::PullDone(PullResult result, int64_t bytes,
                       const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  status_.pulled_bytes += bytes;
  switch (result) {
    case PullResult::kOk:
      ++status_.pulls;
      break;
    case PullResult::kRefused:
      ++status_.pulls_refused;
      break;
    case PullResult::kFailed:
      ++status_.pulls_failed;
      break;
  }
  if (!error.empty()) status_.last_error = error;
  if (Metrics* m = engine_.metrics()) {
    m->ReplicaPull(result == PullResult::kOk        ? "ok"
                   : result == PullResult::kRefused ? "refused"
                                                    : "failed",
                   bytes);
  }
}

void Replica::Error(const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  status_.last_error = error;
}

bool Replica::HasModel(const std::string& model_id) {
  return engine_.models().Get(model_id).ok();
}

absl::StatusOr<std::unique_ptr<ModelImport>> Replica::BeginPull(
    const std::string& model_id, int64_t total_bytes) {
  TransferLimits limits;
  limits.max_bytes = engine_.options().datasets.max_dataset_bytes;
  limits.min_free_disk_bytes = engine_.options().datasets.min_free_disk_bytes;
  ModelImportSpec spec;
  spec.model_id = model_id;
  spec.total_bytes = total_bytes;
  return ModelImport::Begin(engine_.models(), engine_.data_dir(), limits,
                            std::move(spec));
}

std::vector<std::string> Replica::WarmAll(
    const std::vector<std::string>& ids,
    const std::function<bool()>& cancelled) {
  // Waited for before Ready() is read: a load that ends in between is seen.
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& id : ids) load_outcome_[id] = std::nullopt;
  }
  std::vector<std::string> ready, waiting;
  for (const std::string& id : ids) {
    if (engine_.predictor().Ready(id)) {
      ready.push_back(id);
    } else {
      waiting.push_back(id);
      engine_.predictor().Warm(id);
    }
  }
  const auto deadline =
      std::chrono::steady_clock::now() + options_.warm_timeout;
  std::unique_lock<std::mutex> lock(mu_);
  for (const std::string& id : waiting) {
    cv_.wait_until(lock, deadline, [&] {
      return cancelled() || load_outcome_[id].has_value();
    });
    if (load_outcome_[id].value_or(false)) ready.push_back(id);
  }
  for (const std::string& id : ids) load_outcome_.erase(id);
  return ready;
}

void Replica::Interrupt() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

namespace {

// The local aliases, all pages.
absl::StatusOr<std::map<std::string, std::string>> LocalAliases(
    ModelRegistry& registry) {
  std::map<std::string, std::string> local;
  std::string token;
  do {
    std::string next;
    absl::StatusOr<std::vector<AliasInfo>> page =
        registry.ListAliases(1000, token, &next);
    if (!page.ok()) return page.status();
    for (const AliasInfo& a : *page) local[a.alias] = a.model_id;
    token = next;
  } while (!token.empty());
  return local;
}

}  // namespace

absl::Status Replica::Apply(const std::map<std::string, std::string>& target,
                            const std::function<bool()>& cancelled) {
  ModelRegistry& registry = engine_.models();
  absl::StatusOr<std::map<std::string, std::string>> local =
      LocalAliases(registry);
  if (!local.ok()) return local.status();
  // The target's models held here, each looked up once.
  std::set<std::string> held;
  for (const auto& [alias, id] : target) {
    if (held.count(id) == 0 && HasModel(id)) held.insert(id);
  }
  // Only the models an alias moves to are warmed: an alias already in place
  // is served as it is (its model reloads on demand if it was unloaded).
  std::vector<std::string> moving;
  for (const auto& [alias, id] : target) {
    auto it = local->find(alias);
    if (it != local->end() && it->second == id) continue;
    if (held.count(id) > 0 &&
        std::find(moving.begin(), moving.end(), id) == moving.end()) {
      moving.push_back(id);
    }
  }
  const std::vector<std::string> warmed = WarmAll(moving, cancelled);
  const std::set<std::string> warm(warmed.begin(), warmed.end());

  std::string problem;
  for (const auto& [alias, id] : target) {
    auto it = local->find(alias);
    if (it != local->end() && it->second == id) continue;
    // Ready now, not only when WarmAll returned: loading another model may
    // have unloaded it since.
    if (warm.count(id) == 0 || !engine_.predictor().Ready(id)) {
      if (problem.empty()) {
        problem = absl::StrCat("alias '", alias, "': model ", id, " is ",
                               held.count(id) > 0 ? "not warm" : "not pulled",
                               "; the alias stays at ",
                               it == local->end() ? "nothing" : it->second);
      }
      continue;
    }
    absl::StatusOr<AliasInfo> set = registry.SetAlias(alias, id);
    if (!set.ok()) return set.status();
    LogFields(spdlog::level::info, "replica alias moved",
              {{"alias", alias},
               {"model", id},
               {"was", it == local->end() ? "" : it->second}});
  }
  for (const auto& [alias, id] : *local) {
    if (target.count(alias) > 0) continue;
    if (absl::Status s = registry.DeleteAlias(alias);
        !s.ok() && !absl::IsNotFound(s)) {
      return s;
    }
    LogFields(spdlog::level::info, "replica alias deleted",
              {{"alias", alias}, {"was", id}});
  }

  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [alias, id] : target) {
      if (held.count(id) == 0) continue;
      recently_named_.erase(
          std::remove(recently_named_.begin(), recently_named_.end(), id),
          recently_named_.end());
      recently_named_.push_back(id);
    }
  }
  TrimCache(target);

  absl::StatusOr<std::map<std::string, std::string>> now =
      LocalAliases(registry);
  if (!now.ok()) return now.status();
  std::lock_guard<std::mutex> lock(mu_);
  status_.aliases.clear();
  for (const auto& [alias, id] : target) {
    ReplicaAliasStatus a;
    a.alias = alias;
    a.primary_model_id = id;
    if (auto it = now->find(alias); it != now->end()) a.model_id = it->second;
    status_.aliases.push_back(std::move(a));
  }
  status_.in_sync = problem.empty() && *now == target;
  if (status_.in_sync) {
    status_.last_sync = std::chrono::system_clock::now();
    status_.last_error.clear();
    return absl::OkStatus();
  }
  if (problem.empty()) problem = "the local aliases differ from the primary's";
  status_.last_error = problem;
  return absl::UnavailableError(problem);
}

void Replica::TrimCache(const std::map<std::string, std::string>& target) {
  std::set<std::string> named;
  for (const auto& [alias, id] : target) named.insert(id);
  std::vector<ModelInfo> models;
  std::string token;
  do {
    std::string next;
    absl::StatusOr<std::vector<ModelInfo>> page =
        engine_.models().List(1000, token, &next);
    if (!page.ok()) return;
    models.insert(models.end(), page->begin(), page->end());
    token = next;
  } while (!token.empty());
  std::vector<std::string> recent;
  {
    std::lock_guard<std::mutex> lock(mu_);
    recent = recently_named_;
  }
  // Unnamed models, least recently named first (never named this run:
  // oldest registration first).
  std::vector<std::pair<int64_t, std::string>> unnamed;
  for (const ModelInfo& m : models) {
    if (named.count(m.id) > 0 || !m.aliases.empty()) continue;
    auto it = std::find(recent.begin(), recent.end(), m.id);
    const int64_t rank =
        it == recent.end()
            ? std::numeric_limits<int64_t>::min() +
                  std::chrono::duration_cast<std::chrono::nanoseconds>(
                      m.create_time.time_since_epoch())
                      .count()
            : static_cast<int64_t>(it - recent.begin());
    unnamed.emplace_back(rank, m.id);
  }
  std::sort(unnamed.begin(), unnamed.end());
  const int excess =
      static_cast<int>(unnamed.size()) - std::max(0, options_.keep_models);
  for (int i = 0; i < excess; ++i) {
    const std::string& id = unnamed[static_cast<size_t>(i)].second;
    if (absl::Status s = engine_.models().Delete(id); !s.ok()) {
      LogFields(spdlog::level::warn, "replica cache: model not removed",
                {{"model", id}, {"message", std::string(s.message())}});
      continue;
    }
    engine_.predictor().Forget(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      recently_named_.erase(
          std::remove(recently_named_.begin(), recently_named_.end(), id),
          recently_named_.end());
    }
    LogFields(spdlog::level::info, "replica cache: model removed",
              {{"model", id}});
  }
}

}  // namespace transferd::core
