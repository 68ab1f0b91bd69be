#include "server/core/cluster.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace transferd::core {

absl::StatusOr<std::string> ClusterRegistry::Join(ClusterWorker worker,
                                                  Deliver deliver) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, m] : members_) {
    if (m.info.name == worker.name) {
      return absl::AlreadyExistsError(absl::StrCat(
          "a worker named \"", worker.name, "\" is connected (from ",
          m.info.peer, "); give each worker its own --worker-name"));
    }
  }
  worker.id = absl::StrCat("w", next_id_++);
  worker.join_time = std::chrono::system_clock::now();
  worker.job.clear();
  worker.run.clear();
  const std::string id = worker.id;
  members_[id] = Member{std::move(worker), std::move(deliver), false};
  cv_.notify_all();
  return id;
}

void ClusterRegistry::Leave(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end()) return;
  const ClusterWorker& w = it->second.info;
  if (!w.run.empty()) {
    Run& run = runs_[w.run];
    ++run.left;
    if (run.failure.empty()) {
      run.failure =
          absl::StrCat("worker ", w.name, " (", w.peer, ") left the cluster");
    }
  }
  members_.erase(it);
  cv_.notify_all();
}

std::vector<ClusterWorker> ClusterRegistry::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ClusterWorker> out;
  for (const auto& [id, m] : members_) out.push_back(m.info);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

int ClusterRegistry::IdleLocked() const {
  int idle = 0;
  for (const auto& [id, m] : members_) {
    if (!m.reserved && m.info.run.empty()) ++idle;
  }
  return idle;
}

absl::StatusOr<std::vector<std::string>> ClusterRegistry::Reserve(
    const std::string& job_id, int need, int want,
    const std::function<bool()>& cancelled,
    const std::function<void(int idle)>& waiting) {
  std::unique_lock<std::mutex> lock(mu_);
  int last_idle = -1;
  while (true) {
    const int idle = IdleLocked();
    if (idle >= need) break;
    if (idle != last_idle && waiting) {
      last_idle = idle;
      lock.unlock();
      waiting(idle);
      lock.lock();
      continue;
    }
    if (cancelled && cancelled()) {
      return absl::CancelledError("cancelled while waiting for workers");
    }
    cv_.wait_for(lock, std::chrono::milliseconds(200));
  }
  std::vector<std::string> ids;
  for (auto& [id, m] : members_) {
    if (static_cast<int>(ids.size()) == want) break;
    if (m.reserved || !m.info.run.empty()) continue;
    m.reserved = true;
    m.info.job = job_id;
    ids.push_back(id);
  }
  return ids;
}

bool ClusterRegistry::Assign(const std::string& worker_id,
                             const RankAssignment& a) {
  Deliver deliver;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = members_.find(worker_id);
    if (it == members_.end()) return false;
    it->second.reserved = false;
    it->second.info.job = a.job_id;
    it->second.info.run = a.run_id;
    runs_[a.run_id];
    deliver = it->second.deliver;
  }
  if (deliver(a)) return true;
  Leave(worker_id);
  return false;
}

void ClusterRegistry::Unreserve(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& id : ids) {
    auto it = members_.find(id);
    if (it == members_.end() || !it->second.reserved) continue;
    it->second.reserved = false;
    it->second.info.job.clear();
  }
  cv_.notify_all();
}

absl::Status ClusterRegistry::Report(const RankReport& report) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(report.worker_id);
  if (it == members_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", report.worker_id, " is not a member"));
  }
  ClusterWorker& w = it->second.info;
  if (w.run != report.run_id) {
    return absl::NotFoundError(
        absl::StrCat("worker ", w.name, " is not on run ", report.run_id));
  }
  Run& run = runs_[report.run_id];
  if (report.ready) {
    ++run.ready;
  } else {
    if (!report.ok && run.failure.empty()) {
      run.failure = absl::StrCat("rank ", report.rank, " on worker ", w.name,
                                 " failed: ", report.error);
    }
    run.final.push_back(report);
    w.run.clear();
    w.job.clear();
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status ClusterRegistry::WaitReady(
    const std::string& run_id, int count, std::chrono::milliseconds timeout,
    const std::function<bool()>& cancelled) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    Run& run = runs_[run_id];
    if (!run.failure.empty()) return absl::UnavailableError(run.failure);
    if (run.ready >= count) return absl::OkStatus();
    if (cancelled && cancelled()) {
      return absl::CancelledError("cancelled while the workers got ready");
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          run.ready, " of ", count, " workers were ready within the timeout"));
    }
    cv_.wait_for(lock, std::chrono::milliseconds(200));
  }
}

std::vector<RankReport> ClusterRegistry::WaitFinal(
    const std::string& run_id, int count, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] {
    const Run& run = runs_[run_id];
    return static_cast<int>(run.final.size()) + run.left >= count;
  });
  std::vector<RankReport> out = runs_[run_id].final;
  runs_.erase(run_id);
  return out;
}

}  // namespace transferd::core
