// Data-parallel jobs on a real cluster on loopback: a coordinator transferd
// and worker transferd processes (--coordinator), real gRPC membership,
// dataset shipping and torch c10d Gloo between them.
#include <signal.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "tests/support/job_support.h"
#include "tests/support/subprocess.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using testing::Channel;
using ::testing::HasSubstr;
using testing::SetDeadline;
using testing::TransferdServer;

v1::ServerInfo Info(const TransferdServer& server) {
  auto stub = v1::Server::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ServerInfo info;
  EXPECT_TRUE(
      stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok());
  return info;
}

// Waits (polling GetServerInfo, 60 s at most) until the coordinator lists
// `n` workers.
bool WaitForWorkers(const TransferdServer& coordinator, int n) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (std::chrono::steady_clock::now() < deadline) {
    if (Info(coordinator).cluster().workers_size() == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Follows the job's events, calling `on_event` for each, until it ends.
v1::Job Follow(const TransferdServer& server, const std::string& name,
               const std::function<void(const v1::JobEvent&)>& on_event) {
  auto stub = v1::Jobs::NewStub(Channel(server));
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, 600);
    v1::WatchJobRequest req;
    req.set_name(name);
    req.set_follow(true);
    auto reader = stub->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) on_event(e);
    EXPECT_TRUE(reader->Finish().ok());
  }
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::GetJobRequest req;
  req.set_name(name);
  v1::Job job;
  EXPECT_TRUE(stub->GetJob(&ctx, req, &job).ok());
  return job;
}

std::vector<std::string> Logs(const TransferdServer& server,
                              const std::string& name) {
  std::vector<std::string> out;
  Follow(server, name, [&](const v1::JobEvent& e) {
    if (e.has_log()) out.push_back(e.log().message());
  });
  return out;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    coordinator_ = std::make_unique<TransferdServer>(TransferdServer::WithArgs(
        {"--threads=1",
         "--rendezvous-port=" + std::to_string(testing::FreeLoopbackPort()),
         "--collective-timeout-seconds=20"}));
    ASSERT_TRUE(coordinator_->ok()) << coordinator_->Log();
    testing::UploadImages(*coordinator_, "tiny", testing::TinyDataset(8));
  }

  std::unique_ptr<TransferdServer> StartWorker(const std::string& name) {
    auto w = std::make_unique<TransferdServer>(TransferdServer::WithArgs(
        {"--threads=1", "--coordinator=" + coordinator_->address(),
         "--worker-name=" + name}));
    EXPECT_TRUE(w->ok()) << w->Log();
    return w;
  }

  std::unique_ptr<TransferdServer> coordinator_;
};

TEST_F(ClusterTest, WorkersJoinTrainRanksLikeOneProcessAndGetTheDataOnce) {
  std::unique_ptr<TransferdServer> worker = StartWorker("w1");
  ASSERT_TRUE(WaitForWorkers(*coordinator_, 1)) << coordinator_->Log();
  const v1::ServerInfo info = Info(*coordinator_);
  EXPECT_EQ(info.cluster().role(), "coordinator");
  EXPECT_EQ(info.cluster().workers(0).name(), "w1");
  EXPECT_EQ(info.cluster().workers(0).device().name(), "cpu");
  const v1::ServerInfo self = Info(*worker);
  EXPECT_EQ(self.cluster().role(), "worker");
  EXPECT_TRUE(self.cluster().connected());
  EXPECT_EQ(self.cluster().coordinator(), coordinator_->address());

  // One process with batch 8 against two ranks of batch 4 (16 training
  // images, 2 steps an epoch either way).
  v1::JobSpec solo = testing::SmallSpec("tiny", 3);
  solo.mutable_stages(0)->set_batch_size(8);
  v1::Job job;
  ASSERT_TRUE(testing::CreateJob(*coordinator_, solo, &job, "solo").ok());
  const v1::Job one = testing::WaitForJob(*coordinator_, "jobs/solo");
  ASSERT_EQ(one.state(), v1::JOB_STATE_SUCCEEDED) << one.failure_reason();

  v1::JobSpec two = testing::SmallSpec("tiny", 3);
  two.set_replicas(2);
  ASSERT_TRUE(testing::CreateJob(*coordinator_, two, &job, "two").ok());
  const std::vector<std::string> logs = Logs(*coordinator_, "jobs/two");
  const v1::Job done = testing::WaitForJob(*coordinator_, "jobs/two");
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED)
      << done.failure_reason() << coordinator_->Log() << worker->Log();
  EXPECT_EQ(done.resolved_spec().replicas(), 2);
  EXPECT_THAT(logs, ::testing::Contains(
                        HasSubstr("2 ranks: this server (rank 0) and w1")));
  // 16 training and 8 validation images went to the worker.
  EXPECT_THAT(logs, ::testing::Contains(HasSubstr("workers fetched 24 files")));
  ASSERT_EQ(one.history_size(), 3);
  ASSERT_EQ(done.history_size(), 3);
  for (int e = 0; e < 3; ++e) {
    EXPECT_NEAR(one.history(e).loss(), done.history(e).loss(), 1e-5)
        << "epoch " << e + 1;
    EXPECT_NEAR(one.history(e).val_loss(), done.history(e).val_loss(), 1e-5)
        << "epoch " << e + 1;
  }
  EXPECT_FALSE(done.result_model().empty());

  // A second job on the same dataset ships nothing.
  ASSERT_TRUE(testing::CreateJob(*coordinator_, two, &job, "again").ok());
  EXPECT_THAT(Logs(*coordinator_, "jobs/again"),
              ::testing::Contains(
                  HasSubstr("workers fetched 0 files (0 bytes) and found 24")));
  EXPECT_EQ(testing::WaitForJob(*coordinator_, "jobs/again").state(),
            v1::JOB_STATE_SUCCEEDED);

  // A second worker with a name in use is refused; the first stays.
  auto twin = std::make_unique<TransferdServer>(TransferdServer::WithArgs(
      {"--threads=1", "--coordinator=" + coordinator_->address(),
       "--worker-name=w1"}));
  ASSERT_TRUE(twin->ok());
  EXPECT_EQ(Info(*coordinator_).cluster().workers_size(), 1);
}

TEST_F(ClusterTest, AKilledWorkerEndsTheRunAndTheJobResumesWithTheRest) {
  std::unique_ptr<TransferdServer> worker = StartWorker("w1");
  ASSERT_TRUE(WaitForWorkers(*coordinator_, 1)) << coordinator_->Log();
  // The backbone trains too (no feature cache): epochs take long enough
  // for the kill to land mid-run.
  v1::JobSpec spec = testing::SmallSpec("tiny", 12);
  spec.mutable_stages(0)->set_trainable_from("all");
  spec.set_replicas(2);
  spec.set_min_replicas(1);
  v1::Job job;
  ASSERT_TRUE(testing::CreateJob(*coordinator_, spec, &job, "faulty").ok());
  std::vector<std::string> logs;
  bool killed = false;
  const v1::Job done =
      Follow(*coordinator_, "jobs/faulty", [&](const v1::JobEvent& e) {
        if (e.has_log()) logs.push_back(e.log().message());
        if (!killed && e.has_epoch_end() && e.epoch_end().epoch() == 2) {
          killed = true;
          worker->Stop(SIGKILL, std::chrono::seconds(10));
        }
      });
  ASSERT_TRUE(killed);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.failure_reason();
  EXPECT_THAT(logs, ::testing::Contains(HasSubstr("run 1 lost a rank")));
  EXPECT_THAT(
      logs, ::testing::Contains(HasSubstr("run 2: 1 rank: this server alone")));
  // Every epoch is in the history once, from the checkpoints on.
  ASSERT_EQ(done.history_size(), 12);
  for (int e = 0; e < 12; ++e) EXPECT_EQ(done.history(e).epoch(), e + 1);
  EXPECT_EQ(Info(*coordinator_).cluster().workers_size(), 0);
}

TEST_F(ClusterTest, WithoutEnoughRanksTheJobWaitsForAWorkerToReturn) {
  std::unique_ptr<TransferdServer> worker = StartWorker("w1");
  ASSERT_TRUE(WaitForWorkers(*coordinator_, 1)) << coordinator_->Log();
  v1::JobSpec spec = testing::SmallSpec("tiny", 8);
  spec.mutable_stages(0)->set_trainable_from("all");
  spec.set_replicas(2);  // min_replicas defaults to 2: wait for both
  v1::Job job;
  ASSERT_TRUE(testing::CreateJob(*coordinator_, spec, &job, "patient").ok());
  std::vector<std::string> logs;
  std::unique_ptr<TransferdServer> returned;
  const v1::Job done =
      Follow(*coordinator_, "jobs/patient", [&](const v1::JobEvent& e) {
        if (e.has_epoch_end() && e.epoch_end().epoch() == 2 && worker) {
          worker->Stop(SIGKILL, std::chrono::seconds(10));
        }
        if (!e.has_log()) return;
        logs.push_back(e.log().message());
        // The job waits with no worker idle; one comes back (a new process
        // with the same name and data directory).
        if (!returned && absl::StrContains(e.log().message(),
                                           "waiting for workers: 0 idle")) {
          TransferdServer::Options o =
              TransferdServer::WithDataDir(worker->data_dir());
          o.args = {"--threads=1", "--coordinator=" + coordinator_->address(),
                    "--worker-name=w1"};
          returned = std::make_unique<TransferdServer>(o);
        }
      });
  ASSERT_NE(returned, nullptr);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.failure_reason();
  EXPECT_THAT(logs, ::testing::Contains(HasSubstr("run 1 lost a rank")));
  EXPECT_THAT(logs, ::testing::Contains(HasSubstr(
                        "run 2: 2 ranks: this server (rank 0) and w1")));
  // The returning worker kept its data: nothing was fetched again.
  EXPECT_THAT(logs, ::testing::Contains(
                        HasSubstr("run 2: workers fetched 0 files (0 bytes)")));
  ASSERT_EQ(done.history_size(), 8);
  for (int e = 0; e < 8; ++e) EXPECT_EQ(done.history(e).epoch(), e + 1);
}

TEST_F(ClusterTest, ReplicasAreCheckedAndAWorkerTakesNoWorkers) {
  v1::JobSpec spec = testing::SmallSpec("tiny", 1);
  spec.set_replicas(2);
  spec.set_min_replicas(3);
  v1::Job job;
  grpc::Status s = testing::CreateJob(*coordinator_, spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.min_replicas"));
  spec.set_replicas(0);
  spec.clear_min_replicas();
  s = testing::CreateJob(*coordinator_, spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("spec.replicas"));

  // A worker runs no data-parallel jobs of its own.
  std::unique_ptr<TransferdServer> worker = StartWorker("w1");
  testing::UploadImages(*worker, "tiny", testing::TinyDataset(4));
  spec.set_replicas(2);
  ASSERT_TRUE(testing::CreateJob(*worker, spec, &job, "own").ok());
  const v1::Job failed = testing::WaitForJob(*worker, "jobs/own");
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(failed.failure_reason(), HasSubstr("takes no workers"));
}

}  // namespace
}  // namespace transferd
