// Serving replicas (transferd --follow) as real processes on loopback: a
// primary and two followers. The followers pull the model an alias names,
// serve it with the primary's probabilities, refuse a corrupted pull and
// retry it, refuse writes naming the primary, follow an alias move within
// 5 s while clients predict through it without one failed call, keep serving
// when the primary is killed with SIGKILL (and after a restart of their own
// without it), and catch up when it returns.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/job_support.h"
#include "tests/support/subprocess.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"
#include "transferd/v1/server.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using grpc::health::v1::HealthCheckResponse;
using testing::Channel;
using ::testing::HasSubstr;
using testing::LabelledImage;
using testing::SetDeadline;
using testing::TransferdServer;
using Clock = std::chrono::steady_clock;

constexpr char kAlias[] = "aliases/catdog";

std::unique_ptr<TransferdServer> StartFollower(
    const std::string& primary, std::vector<std::string> extra = {},
    const std::string& data_dir = "") {
  TransferdServer::Options o;
  o.args = {"--follow=" + primary};
  o.args.insert(o.args.end(), extra.begin(), extra.end());
  o.data_dir = data_dir;
  return std::make_unique<TransferdServer>(o);
}

void SetAlias(const TransferdServer& server, const std::string& model) {
  auto stub = v1::Models::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::SetAliasRequest req;
  req.set_alias(kAlias);
  req.set_model(model);
  v1::Alias alias;
  grpc::Status s = stub->SetAlias(&ctx, req, &alias);
  ASSERT_TRUE(s.ok()) << s.error_message();
}

// Blocks until the health for `service` at `address` is SERVING (true), or
// the stream ends first (false).
bool WaitServing(const std::string& address, const std::string& service,
                 int seconds = 120) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(ctx, seconds);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  auto watch = health->Watch(&ctx, req);
  grpc::health::v1::HealthCheckResponse update;
  while (watch->Read(&update)) {
    if (update.status() == HealthCheckResponse::SERVING) {
      ctx.TryCancel();
      (void)watch->Finish();
      return true;
    }
  }
  (void)watch->Finish();
  return false;
}

bool WaitServing(const TransferdServer& server, const std::string& service,
                 int seconds = 120) {
  return WaitServing(server.address(), service, seconds);
}

v1::ServerInfo Info(const TransferdServer& server) {
  auto stub = v1::Server::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx, 10);
  v1::ServerInfo info;
  grpc::Status s = stub->GetServerInfo(&ctx, {}, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return info;
}

// Reads GetServerInfo until `done` holds (false after `seconds`).
template <typename Pred>
bool WaitInfo(const TransferdServer& server, Pred done, int seconds = 30) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < deadline) {
    if (done(Info(server))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

grpc::Status Predict(const TransferdServer& server,
                     const std::vector<LabelledImage>& images,
                     v1::PredictResponse* response) {
  auto stub = v1::Inference::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx, 30);
  v1::PredictRequest request;
  request.set_model(kAlias);
  for (const LabelledImage& image : images) {
    v1::Image* i = request.add_images();
    i->set_id(image.path);
    i->set_data(image.bytes);
  }
  return stub->Predict(&ctx, request, response);
}

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    primary_ = std::make_unique<TransferdServer>(
        TransferdServer::WithDataDir(primary_dir_.path() + "/data"));
    ASSERT_TRUE(primary_->ok()) << primary_->Log();
    images_ = testing::TinyDataset(8);
    testing::UploadImages(*primary_, "tiny", images_);
    for (const std::string id : {"first", "second"}) {
      v1::JobSpec spec = testing::SmallSpec("tiny", 2);
      spec.set_seed(id == "first" ? 1 : 2);
      v1::Job job;
      grpc::Status s = testing::CreateJob(*primary_, spec, &job, id);
      ASSERT_TRUE(s.ok()) << s.error_message();
      job = testing::WaitForJob(*primary_, "jobs/" + id);
      ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.failure_reason();
      models_.push_back(job.result_model());
    }
    SetAlias(*primary_, models_[0]);
    ASSERT_TRUE(WaitServing(*primary_, kAlias));
  }

  // Data directories that outlive a server process (restarts).
  testing::TempDir primary_dir_, follower_dir_;
  std::unique_ptr<TransferdServer> primary_;
  std::vector<LabelledImage> images_;
  std::vector<std::string> models_;
};

TEST_F(ReplicaTest,
       FollowersServeThePrimarysModelsAndFollowAMoveWithoutErrors) {
  // Follower A's first pull arrives with one byte changed.
  auto a =
      StartFollower(primary_->address(), {"--follow-test-corrupt-pulls=1"});
  // Follower B also answers health on a plaintext health-only port, where
  // Kubernetes probes a TLS server: the alias's status is there too.
  const std::string b_health =
      "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  auto b = StartFollower(primary_->address(), {"--health-listen=" + b_health});
  ASSERT_TRUE(a->ok()) << a->Log();
  ASSERT_TRUE(b->ok()) << b->Log();
  ASSERT_TRUE(WaitServing(*a, kAlias)) << a->Log();
  ASSERT_TRUE(WaitServing(*b, kAlias)) << b->Log();
  ASSERT_TRUE(WaitServing(b_health, kAlias, 10)) << b->Log();

  // Same model, same probabilities as the primary's.
  v1::PredictResponse on_primary, on_a, on_b;
  ASSERT_TRUE(Predict(*primary_, images_, &on_primary).ok());
  ASSERT_TRUE(Predict(*a, images_, &on_a).ok());
  ASSERT_TRUE(Predict(*b, images_, &on_b).ok());
  EXPECT_EQ(on_a.model(), models_[0]);
  EXPECT_EQ(on_b.model(), models_[0]);
  ASSERT_EQ(on_a.predictions_size(), on_primary.predictions_size());
  ASSERT_EQ(on_b.predictions_size(), on_primary.predictions_size());
  for (int i = 0; i < on_primary.predictions_size(); ++i) {
    const auto& p = on_primary.predictions(i);
    const auto& pa = on_a.predictions(i);
    const auto& pb = on_b.predictions(i);
    EXPECT_EQ(pa.label(), p.label());
    ASSERT_EQ(pa.scores_size(), p.scores_size());
    for (int c = 0; c < p.scores_size(); ++c) {
      EXPECT_EQ(pa.scores(c).probability(), pb.scores(c).probability()) << i;
      EXPECT_NEAR(pa.scores(c).probability(), p.scores(c).probability(), 1e-6)
          << i;
    }
  }

  // The corrupted pull was refused by the hash check and pulled again.
  // The status is written once the sync finished, just after the alias
  // flipped.
  ASSERT_TRUE(WaitInfo(*a, [](const v1::ServerInfo& i) {
    return i.replica().in_sync();
  })) << a->Log();
  ASSERT_TRUE(WaitInfo(*b, [](const v1::ServerInfo& i) {
    return i.replica().in_sync();
  })) << b->Log();
  const v1::ServerInfo info_a = Info(*a);
  ASSERT_TRUE(info_a.has_replica());
  EXPECT_EQ(info_a.replica().primary(), primary_->address());
  EXPECT_TRUE(info_a.replica().primary_connected());
  EXPECT_TRUE(info_a.replica().in_sync());
  EXPECT_EQ(info_a.replica().pulls(), 1);
  EXPECT_EQ(info_a.replica().pulls_refused(), 1);
  EXPECT_THAT(a->Log(), HasSubstr("differs from the primary's"));
  const v1::ServerInfo info_b = Info(*b);
  EXPECT_EQ(info_b.replica().pulls(), 1);
  EXPECT_EQ(info_b.replica().pulls_refused(), 0);
  ASSERT_EQ(info_b.replica().aliases_size(), 1);
  EXPECT_EQ(info_b.replica().aliases(0).alias(), kAlias);
  EXPECT_EQ(info_b.replica().aliases(0).model(), models_[0]);
  EXPECT_TRUE(info_b.replica().aliases(0).ready());
  EXPECT_FALSE(Info(*primary_).has_replica());

  // Writes, and reads of jobs and datasets, name the primary.
  {
    auto models = v1::Models::NewStub(Channel(*a));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::SetAliasRequest req;
    req.set_alias(kAlias);
    req.set_model(models_[1]);
    v1::Alias alias;
    grpc::Status s = models->SetAlias(&ctx, req, &alias);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr(primary_->address()));
  }
  {
    v1::Job job;
    grpc::Status s =
        testing::CreateJob(*a, testing::SmallSpec("tiny", 1), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("read-only serving replica"));
  }
  {
    auto jobs = v1::Jobs::NewStub(Channel(*b));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::ListJobsResponse resp;
    grpc::Status s = jobs->ListJobs(&ctx, {}, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr(primary_->address()));
  }
  {
    auto datasets = v1::Datasets::NewStub(Channel(*b));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::UploadDatasetResponse resp;
    auto upload = datasets->UploadDataset(&ctx, &resp);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_dataset_id("x");
    upload->Write(header);
    upload->WritesDone();
    grpc::Status s = upload->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }

  // Clients predict through the alias on both followers throughout the
  // move; every call must succeed, and each follower must answer with the
  // new model within 5 s of the move on the primary.
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, calls{0};
  std::vector<std::string> errors;
  std::mutex errors_mu;
  struct Seen {
    std::atomic<int64_t> first_new_ns{0};
  } seen[2];
  const std::vector<LabelledImage> one(images_.begin(), images_.begin() + 1);
  std::vector<std::thread> loops;
  TransferdServer* followers[2] = {a.get(), b.get()};
  for (int f = 0; f < 2; ++f) {
    loops.emplace_back([&, f] {
      while (!stop.load()) {
        v1::PredictResponse r;
        grpc::Status s = Predict(*followers[f], one, &r);
        calls.fetch_add(1);
        if (!s.ok()) {
          failures.fetch_add(1);
          std::lock_guard<std::mutex> lock(errors_mu);
          errors.push_back(s.error_message());
          continue;
        }
        if (r.model() == models_[1] && seen[f].first_new_ns.load() == 0) {
          seen[f].first_new_ns.store(Clock::now().time_since_epoch().count());
        }
      }
    });
  }
  // Some calls before the move.
  const auto pause = std::chrono::milliseconds(5);
  while (calls.load() < 20) std::this_thread::sleep_for(pause);
  const auto move_start = Clock::now();
  SetAlias(*primary_, models_[1]);
  const auto limit = move_start + std::chrono::seconds(30);
  while (
      (seen[0].first_new_ns.load() == 0 || seen[1].first_new_ns.load() == 0) &&
      Clock::now() < limit) {
    std::this_thread::yield();
  }
  // And some after.
  const int after = calls.load() + 20;
  while (calls.load() < after && failures.load() < 100) {
    std::this_thread::sleep_for(pause);
  }
  stop.store(true);
  for (std::thread& t : loops) t.join();
  EXPECT_EQ(failures.load(), 0) << (errors.empty() ? "" : errors.front());
  for (int f = 0; f < 2; ++f) {
    ASSERT_NE(seen[f].first_new_ns.load(), 0) << "follower " << f;
    const double seconds =
        std::chrono::duration<double>(
            Clock::time_point(Clock::duration(seen[f].first_new_ns.load())) -
            move_start)
            .count();
    EXPECT_LT(seconds, 5.0) << "follower " << f;
    std::cout << "follower " << f << " served the moved alias after " << seconds
              << " s\n";
  }
  EXPECT_TRUE(WaitInfo(*a, [&](const v1::ServerInfo& i) {
    return i.replica().in_sync() && i.replica().aliases_size() == 1 &&
           i.replica().aliases(0).model() == models_[1];
  }));
}

TEST_F(ReplicaTest, FollowersOutliveThePrimaryAndCatchUpWhenItReturns) {
  const std::string follower_dir = follower_dir_.path() + "/data";
  const int http_port = testing::FreeLoopbackPort();
  auto a = StartFollower(
      primary_->address(),
      {"--http-listen=127.0.0.1:" + std::to_string(http_port)}, follower_dir);
  auto b = StartFollower(primary_->address());
  ASSERT_TRUE(a->ok()) << a->Log();
  ASSERT_TRUE(b->ok()) << b->Log();
  ASSERT_TRUE(WaitServing(*a, kAlias)) << a->Log();
  ASSERT_TRUE(WaitServing(*b, kAlias)) << b->Log();
  v1::PredictResponse before;
  ASSERT_TRUE(Predict(*a, images_, &before).ok());

  // SIGKILL: no goodbye; the follower sees its connection drop.
  const std::string primary_dir = primary_->data_dir();
  const std::string primary_address = primary_->address();
  ASSERT_TRUE(primary_->Stop(SIGKILL, std::chrono::seconds(10)).has_value());
  EXPECT_TRUE(WaitInfo(*a, [](const v1::ServerInfo& i) {
    return !i.replica().primary_connected() && !i.replica().in_sync() &&
           !i.replica().last_error().empty();
  })) << a->Log();
  EXPECT_TRUE(WaitInfo(*b, [](const v1::ServerInfo& i) {
    return !i.replica().primary_connected();
  })) << b->Log();
  v1::PredictResponse after;
  grpc::Status s;
  for (TransferdServer* follower : {a.get(), b.get()}) {
    s = Predict(*follower, images_, &after);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(after.model(), models_[0]);
    for (int i = 0; i < before.predictions_size(); ++i) {
      EXPECT_EQ(after.predictions(i).label(), before.predictions(i).label());
    }
    EXPECT_TRUE(WaitServing(*follower, kAlias, 10));
  }
  // Still ready (it serves what it has); the probe's details and the
  // metrics say the primary is lost.
  {
    httplib::Client http("127.0.0.1", http_port);
    httplib::Result ready = http.Get("/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200);
    EXPECT_THAT(ready->body, HasSubstr("primary lost, not in sync"));
    httplib::Result metrics = http.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_THAT(metrics->body, HasSubstr("\ntransferd_replica_primary_up 0"));
    EXPECT_THAT(metrics->body,
                HasSubstr("transferd_replica_pulls_total{result=\"ok\"} 1"));
  }

  // A follower restarted while the primary is gone serves its cache.
  const std::optional<testing::ExitStatus> stopped =
      a->Stop(SIGTERM, std::chrono::seconds(30));
  ASSERT_TRUE(stopped.has_value());
  EXPECT_TRUE(stopped->exited && stopped->code == 0) << a->Log();
  EXPECT_THAT(a->Log(), HasSubstr("stopped cleanly"));
  a.reset();
  auto restarted = StartFollower(primary_address, {}, follower_dir);
  ASSERT_TRUE(restarted->ok()) << restarted->Log();
  ASSERT_TRUE(WaitServing(*restarted, kAlias)) << restarted->Log();
  s = Predict(*restarted, images_, &after);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(after.model(), models_[0]);
  EXPECT_FALSE(Info(*restarted).replica().primary_connected());

  // The primary returns at the same address; an alias move reaches the
  // follower.
  TransferdServer::Options o = TransferdServer::WithDataDir(primary_dir);
  o.listen = primary_address;
  primary_.reset();
  primary_ = std::make_unique<TransferdServer>(o);
  ASSERT_TRUE(primary_->ok()) << primary_->Log();
  SetAlias(*primary_, models_[1]);
  EXPECT_TRUE(WaitInfo(*restarted, [&](const v1::ServerInfo& i) {
    return i.replica().primary_connected() && i.replica().in_sync() &&
           i.replica().aliases_size() == 1 &&
           i.replica().aliases(0).model() == models_[1];
  })) << restarted->Log();
  s = Predict(*restarted, images_, &after);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(after.model(), models_[1]);
}

}  // namespace
}  // namespace transferd
