// The coordinator's side of data-parallel training: the workers connected
// now (each a transferd started with --coordinator, holding a Cluster.Join
// stream open) and the ranks assigned to them.
//
// A data-parallel job (TrainConfig::replicas > 1) reserves idle workers,
// sends each its rank (Assign), waits until every rank has its data
// (Report with ready), then joins the run's process group as rank 0. A
// worker is busy from its assignment until it reports the rank's end or
// leaves, so it never runs two runs' process groups at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset_layout.h"
#include "server/core/device.h"

namespace transferd::core {

// One dataset file of an assignment: the content by SHA-256.
struct ShardFile {
  std::string sha256;
  std::string extension;  // ".jpg"
  int64_t label = 0;
  common::Split split = common::Split::kTrain;
  int64_t bytes = 0;
};

struct RankAssignment {
  std::string job_id, run_id, dataset_id;
  int rank = 0, world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::string config_json;  // train::ConfigToJson
  std::vector<std::string> classes;
  std::vector<ShardFile> files;
  int timeout_seconds = 60;
};

struct RankReport {
  std::string worker_id, run_id;
  int rank = 0;
  // ready: the rank has its data and joins the process group now. Else the
  // rank ended: ok, or error says why.
  bool ready = false;
  bool ok = false;
  std::string error;
  int64_t files_fetched = 0, bytes_fetched = 0, files_cached = 0;
  double collective_seconds = 0;
};

struct ClusterWorker {
  std::string id, name, peer;
  ComputeDevice device;
  std::chrono::system_clock::time_point join_time;
  std::string job;  // job id of the rank it runs; empty when idle
  std::string run;  // that rank's run id
};

// A worker's own view (server/cluster/worker.cc keeps it current).
struct WorkerSelfStatus {
  std::string coordinator;
  bool connected = false;
  std::string last_error;
  std::string running;  // "jobs/{id} rank R of N", empty when idle
};

class WorkerState {
 public:
  WorkerSelfStatus Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  template <typename Fn>
  void Update(Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    fn(status_);
  }

 private:
  mutable std::mutex mu_;
  WorkerSelfStatus status_;
};

// What GetServerInfo says about the cluster.
struct ClusterView {
  std::string role;       // "coordinator", "worker" or "" (replica)
  WorkerSelfStatus self;  // worker
  std::vector<ClusterWorker> workers;  // coordinator
};

class ClusterRegistry {
 public:
  // Sends an assignment down the worker's stream; false when it is gone.
  // Never called with the registry's lock held.
  using Deliver = std::function<bool(const RankAssignment&)>;

  // A new member. ALREADY_EXISTS when a connected worker has the name.
  absl::StatusOr<std::string> Join(ClusterWorker worker, Deliver deliver);
  // The member is gone (its stream ended). Its rank, if any, is over.
  void Leave(const std::string& id);
  std::vector<ClusterWorker> Workers() const;

  // Reserves idle workers for `job_id`: `want` of them, or as many as are
  // idle once at least `need` are. Waits for workers to join or finish,
  // calling `waiting(idle)` when the idle count changes, until `cancelled()`
  // (polled every 200 ms): CANCELLED then.
  absl::StatusOr<std::vector<std::string>> Reserve(
      const std::string& job_id, int need, int want,
      const std::function<bool()>& cancelled,
      const std::function<void(int idle)>& waiting);
  // Sends rank `a` to a reserved worker; false when it has left.
  bool Assign(const std::string& worker_id, const RankAssignment& a);
  // Gives reserved workers that were not assigned back.
  void Unreserve(const std::vector<std::string>& ids);

  // A worker's report. NOT_FOUND when it is not a member, or not on that
  // run. A final report frees the worker.
  absl::Status Report(const RankReport& report);
  // Waits until `count` ranks of `run_id` reported ready (OK), one reported
  // a failure or left (UNAVAILABLE naming it), `cancelled()` (CANCELLED) or
  // `timeout` passed (DEADLINE_EXCEEDED).
  absl::Status WaitReady(const std::string& run_id, int count,
                         std::chrono::milliseconds timeout,
                         const std::function<bool()>& cancelled);
  // The final reports of `run_id` that arrived, waiting up to `timeout` for
  // `count` of them (workers that left count as arrived, without a report).
  std::vector<RankReport> WaitFinal(const std::string& run_id, int count,
                                    std::chrono::milliseconds timeout);

 private:
  struct Member {
    ClusterWorker info;
    Deliver deliver;
    bool reserved = false;
  };
  struct Run {
    int ready = 0;
    std::vector<RankReport> final;
    int left = 0;  // workers of the run that left without a final report
    std::string failure;
  };
  int IdleLocked() const;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Member> members_;
  std::map<std::string, Run> runs_;
  int64_t next_id_ = 1;
};

}  // namespace transferd::core
