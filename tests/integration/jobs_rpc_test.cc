// transferd.v1.Jobs and Models against the real binary: field-level spec
// errors, a small real training job watched to the end, late and concurrent
// watchers, cancellation, a dataset in use, a caller's trace id carried by
// its job, and a kill -9 in the middle of a job followed by a restart that
// resumes it from its checkpoint.
#include <signal.h>

#include <filesystem>
#include <map>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/job_support.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd {
namespace {

namespace fs = std::filesystem;
namespace v1 = transferd::v1;
using testing::Channel;
using testing::CreateJob;
using ::testing::HasSubstr;
using testing::SetDeadline;
using testing::SmallSpec;
using testing::TransferdServer;

// Uploads `per_class` images per class to train/ and half as many to
// validation/ (none when with_validation is false).
void Upload(const TransferdServer& server, const std::string& id, int per_class,
            bool with_validation = true) {
  testing::UploadImages(server, id,
                        testing::TinyDataset(per_class, with_validation));
}

// Reads a job's events from `after` until the stream ends (follow: until the
// job finishes); stops early once `until` returns true.
std::vector<v1::JobEvent> Watch(
    const TransferdServer& server, const std::string& name, int64_t after,
    bool follow,
    const std::function<bool(const v1::JobEvent&)>& until = nullptr,
    grpc::Status* status = nullptr) {
  auto stub = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx, 300);
  v1::WatchJobRequest req;
  req.set_name(name);
  req.set_after_sequence(after);
  req.set_follow(follow);
  auto reader = stub->WatchJob(&ctx, req);
  std::vector<v1::JobEvent> events;
  v1::JobEvent e;
  while (reader->Read(&e)) {
    events.push_back(e);
    if (until && until(e)) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (status != nullptr) *status = s;
  return events;
}

v1::Job GetJob(const TransferdServer& server, const std::string& name) {
  auto stub = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::GetJobRequest req;
  req.set_name(name);
  v1::Job job;
  grpc::Status s = stub->GetJob(&ctx, req, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job;
}

void ExpectInvalid(const TransferdServer& server, const v1::JobSpec& spec,
                   const std::string& mentions) {
  v1::Job job;
  grpc::Status s = CreateJob(server, spec, &job);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT)
      << mentions << ": " << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr(mentions));
}

TEST(JobsRpcTest, InvalidSpecsNameTheField) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Upload(server, "small", 4);
  Upload(server, "trainonly", 4, /*with_validation=*/false);

  v1::JobSpec spec = SmallSpec("small", 1);
  spec.mutable_stages(0)->mutable_optimizer()->set_learning_rate(-1);
  ExpectInvalid(server, spec, "spec.stages[0].optimizer.learning_rate");
  spec = SmallSpec("small", 1);
  spec.mutable_stages(0)->set_batch_size(0);
  ExpectInvalid(server, spec, "spec.stages[0].batch_size");
  spec = SmallSpec("small", 1);
  spec.mutable_stages(0)->set_trainable_from("conv_dw_99");
  ExpectInvalid(server, spec, "conv_dw_99");
  spec = SmallSpec("nosuch", 1);
  ExpectInvalid(server, spec, "spec.dataset");
  // An unknown dataset is said before what else the spec lacks.
  spec = SmallSpec("nosuch", 1);
  spec.clear_model();
  spec.clear_stages();
  ExpectInvalid(server, spec, "spec.dataset: dataset \"nosuch\" not found");
  spec = SmallSpec("trainonly", 1);
  ExpectInvalid(server, spec, "spec.selection_metric");
  spec = SmallSpec("small", 1);
  spec.set_recipe("keras-notebook");
  ExpectInvalid(server, spec, "spec.recipe");
  spec = SmallSpec("small", 1);
  spec.mutable_model()->set_backbone("lenet");
  ExpectInvalid(server, spec, "lenet");
  spec = SmallSpec("small", 1);
  spec.mutable_model()->set_input_size(8);
  ExpectInvalid(server, spec, "spec.model.input_size");
  spec = SmallSpec("small", 1);
  spec.set_kind(v1::JOB_KIND_UNSPECIFIED);
  ExpectInvalid(server, spec, "spec.kind");
  // Weights a new model starts from that are not there: refused at
  // submission (FAILED_PRECONDITION naming the file and the folder), not
  // accepted and failed later. Downloads are off by default.
  for (const char* weights : {"imagenet", "mine.h5"}) {
    spec = SmallSpec("small", 1);
    spec.mutable_model()->set_weights(weights);
    v1::Job refused;
    grpc::Status s = CreateJob(server, spec, &refused);
    EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
    EXPECT_THAT(s.error_message(),
                HasSubstr(std::string(weights) == "imagenet"
                              ? "mobilenet_2_5_224_tf_no_top.h5"
                              : "mine.h5"));
    EXPECT_THAT(s.error_message(), HasSubstr("/weights"));
  }
  // Nothing was queued.
  auto stub = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub->ListJobs(&ctx, v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST(JobsRpcTest, TrainsWatchedToTheEndAndRegistersTheModel) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Upload(server, "small", 8);
  v1::JobSpec spec = SmallSpec("small", 2);
  v1::StageSpec* tune = spec.add_stages();
  tune->set_name("tune");
  tune->set_trainable_from("conv_dw_12");
  tune->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_RMSPROP);
  tune->mutable_optimizer()->set_learning_rate(1e-4);
  tune->set_epochs(1);
  tune->set_batch_size(4);
  tune->set_batch_norm_inference(true);
  v1::Job job;
  grpc::Status s = CreateJob(server, spec, &job, "first");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(job.name(), "jobs/first");
  EXPECT_EQ(job.resolved_spec().stages(0).optimizer().epsilon(), 1e-7);
  EXPECT_FALSE(job.resolved_spec().stages(0).batch_norm_inference());
  EXPECT_TRUE(job.resolved_spec().stages(1).batch_norm_inference());

  // Two watchers at once see the same events, numbered 1, 2, 3, ...
  std::vector<v1::JobEvent> other;
  std::thread second([&] { other = Watch(server, "jobs/first", 0, true); });
  grpc::Status watched;
  std::vector<v1::JobEvent> events =
      Watch(server, "jobs/first", 0, true, nullptr, &watched);
  second.join();
  ASSERT_TRUE(watched.ok()) << watched.error_message();
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.size(), other.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(other[i].SerializeAsString(), events[i].SerializeAsString());
  }
  ASSERT_TRUE(events.back().has_state_changed()) << events.back().DebugString();
  EXPECT_EQ(events.back().state_changed().state(), v1::JOB_STATE_SUCCEEDED)
      << GetJob(server, "jobs/first").failure_reason() << "\n"
      << server.Log();

  std::map<v1::JobEvent::EventCase, int> kinds;
  std::vector<int> stage_tensors;
  for (const v1::JobEvent& e : events) {
    ++kinds[e.event_case()];
    if (e.has_stage_started())
      stage_tensors.push_back(
          e.stage_started().trainable().trainable_tensors());
  }
  EXPECT_EQ(kinds[v1::JobEvent::kEpochEnd], 3);
  EXPECT_EQ(kinds[v1::JobEvent::kStageStarted], 2);
  EXPECT_GE(kinds[v1::JobEvent::kCheckpointSaved], 3);
  EXPECT_GE(kinds[v1::JobEvent::kStep], 3);
  ASSERT_EQ(stage_tensors.size(), 2u);
  EXPECT_LT(stage_tensors[0],
            stage_tensors[1]);  // more is trainable in stage 2

  // A late watcher from sequence k gets exactly the rest.
  const std::vector<v1::JobEvent> rest = Watch(server, "jobs/first", 5, false);
  ASSERT_EQ(rest.size(), events.size() - 5);
  EXPECT_EQ(rest.front().sequence(), 6);

  {
    // Listings leave out the history and the resolved spec.
    auto stub = v1::Jobs::NewStub(Channel(server));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::ListJobsResponse list;
    ASSERT_TRUE(stub->ListJobs(&ctx, v1::ListJobsRequest(), &list).ok());
    ASSERT_EQ(list.jobs_size(), 1);
    EXPECT_EQ(list.jobs(0).history_size(), 0);
    EXPECT_FALSE(list.jobs(0).has_resolved_spec());
    EXPECT_EQ(list.jobs(0).state(), v1::JOB_STATE_SUCCEEDED);
  }
  const v1::Job done = GetJob(server, "jobs/first");
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(
      done.resolved_spec().stages(1).batch_norm_inference());  // as stored
  EXPECT_EQ(done.history_size(), 3);
  EXPECT_TRUE(done.history(0).has_val_accuracy());
  EXPECT_EQ(done.result_model(), "models/first");
  EXPECT_EQ(done.last_event_sequence(), events.back().sequence());
  ASSERT_GE(done.evaluations_size(), 1);

  auto models = v1::Models::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::GetModelRequest req;
  req.set_name("models/first");
  v1::Model model;
  ASSERT_TRUE(models->GetModel(&ctx, req, &model).ok());
  EXPECT_THAT(model.classes(), ::testing::ElementsAre("cat", "dog"));
  EXPECT_EQ(model.source_job(), "jobs/first");
  EXPECT_EQ(model.history_size(), 3);
  EXPECT_EQ(model.preprocessing().mode(), v1::Preprocessing::MODE_TF);
  EXPECT_GT(model.size_bytes(), 0);
  EXPECT_TRUE(fs::exists(fs::path(server.data_dir()) / "models" / "first" /
                         "weights.safetensors"));
}

// A CreateJob carrying a W3C traceparent: the job and each of its events
// carry the trace id; a job created without one carries none.
TEST(JobsRpcTest, TheCreatingCallsTraceIdReachesTheJobAndItsEvents) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Upload(server, "small", 4);
  auto stub = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ctx.AddMetadata("traceparent",
                  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  v1::CreateJobRequest req;
  req.set_job_id("traced");
  *req.mutable_spec() = SmallSpec("small", 1);
  v1::Job job;
  ASSERT_TRUE(stub->CreateJob(&ctx, req, &job).ok());
  EXPECT_EQ(job.trace_id(), "0af7651916cd43dd8448eb211c80319c");
  const std::vector<v1::JobEvent> events =
      Watch(server, "jobs/traced", 0, /*follow=*/true);
  ASSERT_GE(events.size(), 2u);
  for (const v1::JobEvent& e : events) {
    EXPECT_EQ(e.trace_id(), "0af7651916cd43dd8448eb211c80319c")
        << e.ShortDebugString();
  }
  v1::Job plain;
  ASSERT_TRUE(CreateJob(server, SmallSpec("small", 1), &plain, "plain").ok());
  EXPECT_EQ(plain.trace_id(), "");
  EXPECT_EQ(testing::WaitForJob(server, "jobs/plain").trace_id(), "");
}

TEST(JobsRpcTest, CancelStopsARunningJobAndDeleteWaitsForIt) {
  TransferdServer server;
  ASSERT_TRUE(server.ok()) << server.Log();
  Upload(server, "small", 8);
  v1::Job job;
  ASSERT_TRUE(CreateJob(server, SmallSpec("small", 500), &job, "long").ok());
  v1::Job queued;
  ASSERT_TRUE(CreateJob(server, SmallSpec("small", 1), &queued, "queued").ok());

  // Running: the dataset cannot be deleted.
  Watch(server, "jobs/long", 0, true,
        [](const v1::JobEvent& e) { return e.has_step(); });
  {
    auto stub = v1::Datasets::NewStub(Channel(server));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::DeleteDatasetRequest req;
    req.set_name("datasets/small");
    google::protobuf::Empty empty;
    grpc::Status s = stub->DeleteDataset(&ctx, req, &empty);
    EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("jobs/long"));
  }
  auto stub = v1::Jobs::NewStub(Channel(server));
  for (const char* name : {"jobs/queued", "jobs/long"}) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::CancelJobRequest req;
    req.set_name(name);
    v1::Job j;
    ASSERT_TRUE(stub->CancelJob(&ctx, req, &j).ok());
  }
  const std::vector<v1::JobEvent> events = Watch(server, "jobs/long", 0, true);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state_changed().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(GetJob(server, "jobs/queued").state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(GetJob(server, "jobs/long").history_size(), 500);
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::CancelJobRequest req;
    req.set_name("jobs/long");
    v1::Job j;
    EXPECT_EQ(stub->CancelJob(&ctx, req, &j).error_code(),
              grpc::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::GetJobRequest req;
    req.set_name("jobs/none");
    v1::Job j;
    EXPECT_EQ(stub->GetJob(&ctx, req, &j).error_code(), grpc::NOT_FOUND);
  }
}

TEST(JobsRpcTest, Kill9MidJobThenRestartResumesFromTheCheckpoint) {
  testing::TempDir dir;
  const std::string data_dir = (fs::path(dir.path()) / "data").string();
  int64_t seen = 0;
  {
    TransferdServer server(TransferdServer::WithDataDir(data_dir));
    ASSERT_TRUE(server.ok()) << server.Log();
    Upload(server, "small", 8);
    v1::Job job;
    ASSERT_TRUE(CreateJob(server, SmallSpec("small", 6), &job, "durable").ok());
    // Kill it right after the second epoch's checkpoint.
    const auto events =
        Watch(server, "jobs/durable", 0, true, [](const v1::JobEvent& e) {
          return e.has_checkpoint_saved() && e.checkpoint_saved().epoch() == 2;
        });
    ASSERT_FALSE(events.empty());
    seen = events.back().sequence();
    ASSERT_TRUE(server.Stop(SIGKILL, std::chrono::seconds(10)).has_value());
  }
  TransferdServer again(TransferdServer::WithDataDir(data_dir));
  ASSERT_TRUE(again.ok()) << again.Log();
  // Reconnecting from the last sequence seen: nothing lost or repeated.
  const auto events = Watch(again, "jobs/durable", seen, true);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().sequence(), seen + 1);
  EXPECT_EQ(events.back().state_changed().state(), v1::JOB_STATE_SUCCEEDED)
      << again.Log();
  const v1::Job job = GetJob(again, "jobs/durable");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_GE(job.resumes(), 1);
  ASSERT_EQ(job.history_size(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(job.history(i).epoch(), i + 1);
  // The resumed run did not start over: epochs 1 and 2 (checkpointed before
  // the kill) were not trained again. Epoch 3 may appear twice: once before
  // the kill if it ended before its checkpoint was written, once resumed.
  for (const auto& e : events) {
    if (e.has_epoch_end()) {
      EXPECT_GE(e.epoch_end().epoch(), 3) << e.DebugString();
    }
  }
}

}  // namespace
}  // namespace transferd
