// transferd.v1.Inference against the real binary, with a model a real job
// trained: predicting the validation images reproduces the job's validation
// accuracy exactly (no train/serve skew), and so does a PREDICT job over the
// same split; bad images fail alone with a precise status while the server
// keeps serving; an alias has its own health status, SERVING once its model
// is loaded and warmed; PredictStream answers every request once; stalled
// watchers and uploads do not hold Predict up.
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/job_support.h"
#include "tests/support/test_images.h"
#include "tests/support/transferd_server.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"
#include "transferd/v1/models.grpc.pb.h"

namespace transferd {
namespace {

namespace v1 = transferd::v1;
using testing::Channel;
using ::testing::HasSubstr;
using testing::LabelledImage;
using testing::SetDeadline;
using testing::TransferdServer;

class InferenceRpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TransferdServer(
        TransferdServer::WithArgs({"--predict-max-queue-delay-us=1000"}));
    ASSERT_TRUE(server_->ok()) << server_->Log();
    images_ = new std::vector<LabelledImage>(testing::TinyDataset(12));
    testing::UploadImages(*server_, "tiny", *images_);
    v1::Job job;
    grpc::Status s = testing::CreateJob(*server_, testing::SmallSpec("tiny", 3),
                                        &job, "train1");
    ASSERT_TRUE(s.ok()) << s.error_message();
    job_ = new v1::Job(testing::WaitForJob(*server_, "jobs/train1"));
    ASSERT_EQ(job_->state(), v1::JOB_STATE_SUCCEEDED) << job_->failure_reason();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete images_;
    delete job_;
    server_ = nullptr;
  }

  static std::vector<LabelledImage> Validation() {
    std::vector<LabelledImage> out;
    for (const LabelledImage& i : *images_) {
      if (i.split == "validation") out.push_back(i);
    }
    return out;
  }

  static double JobAccuracy(const v1::Job& job, const std::string& split) {
    for (const v1::Evaluation& e : job.evaluations()) {
      if (e.split() == split) return e.accuracy();
    }
    ADD_FAILURE() << "no " << split << " evaluation in job " << job.name();
    return -1;
  }

  static grpc::Status Predict(const v1::PredictRequest& request,
                              v1::PredictResponse* response) {
    auto stub = v1::Inference::NewStub(Channel(*server_));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return stub->Predict(&ctx, request, response);
  }

  static void ExpectServing() {
    auto stub = grpc::health::v1::Health::NewStub(Channel(*server_));
    grpc::ClientContext ctx;
    SetDeadline(ctx, 10);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }

  static TransferdServer* server_;
  static std::vector<LabelledImage>* images_;
  static v1::Job* job_;
};

TransferdServer* InferenceRpcTest::server_ = nullptr;
std::vector<LabelledImage>* InferenceRpcTest::images_ = nullptr;
v1::Job* InferenceRpcTest::job_ = nullptr;

TEST_F(InferenceRpcTest, TopKListsTheMostProbableClasses) {
  v1::PredictRequest request;
  request.set_model(job_->result_model());
  v1::Image* image = request.add_images();
  image->set_id("a");
  image->set_data((*images_)[0].bytes);
  v1::PredictResponse response;
  // Two classes: the label alone by default.
  ASSERT_TRUE(Predict(request, &response).ok());
  ASSERT_EQ(response.predictions(0).top_size(), 1);
  EXPECT_EQ(response.predictions(0).top(0).label(),
            response.predictions(0).label());
  request.set_top_k(5);  // at most the class count
  ASSERT_TRUE(Predict(request, &response).ok());
  const v1::ImagePrediction& p = response.predictions(0);
  ASSERT_EQ(p.top_size(), 2);
  EXPECT_EQ(p.top(0).label(), p.label());
  EXPECT_GE(p.top(0).probability(), p.top(1).probability());
  request.set_top_k(-1);
  grpc::Status s = Predict(request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("top_k"));
  ExpectServing();
}

TEST_F(InferenceRpcTest, ValidationImagesReproduceTheJobsValidationAccuracy) {
  const std::vector<LabelledImage> validation = Validation();
  v1::PredictRequest request;
  request.set_model(job_->result_model());
  for (const LabelledImage& image : validation) {
    v1::Image* i = request.add_images();
    i->set_id(image.path);
    i->set_data(image.bytes);
  }
  v1::PredictResponse response;
  grpc::Status s = Predict(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.model(), job_->result_model());
  ASSERT_EQ(response.predictions_size(), static_cast<int>(validation.size()));
  int correct = 0;
  for (size_t i = 0; i < validation.size(); ++i) {
    const v1::ImagePrediction& p = response.predictions(static_cast<int>(i));
    EXPECT_EQ(p.id(), validation[i].path);
    EXPECT_EQ(p.status().code(), 0) << p.status().message();
    ASSERT_EQ(p.scores_size(), 2);
    EXPECT_EQ(p.scores(0).label(), "cat");
    EXPECT_NEAR(p.scores(0).probability() + p.scores(1).probability(), 1.0,
                1e-5);
    correct += p.label() == validation[i].label;
  }
  const double accuracy =
      static_cast<double>(correct) / static_cast<double>(validation.size());
  EXPECT_DOUBLE_EQ(accuracy, JobAccuracy(*job_, "validation"));

  // A PREDICT job over the stored validation split says the same.
  v1::JobSpec spec;
  spec.set_kind(v1::JOB_KIND_PREDICT);
  spec.set_dataset("datasets/tiny");
  spec.set_base_model(job_->result_model());
  spec.mutable_predict()->add_splits(v1::SPLIT_VALIDATION);
  v1::Job created;
  s = testing::CreateJob(*server_, spec, &created, "predict1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  const v1::Job done = testing::WaitForJob(*server_, "jobs/predict1");
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.failure_reason();
  EXPECT_DOUBLE_EQ(JobAccuracy(done, "validation"), accuracy);

  // Its per-file results, paged, in dataset order, agree with Predict.
  auto jobs = v1::Jobs::NewStub(Channel(*server_));
  std::map<std::string, std::string> labels;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::ListJobPredictionsRequest req;
    req.set_name("jobs/predict1");
    req.set_page_size(5);
    req.set_page_token(token);
    v1::ListJobPredictionsResponse page;
    s = jobs->ListJobPredictions(&ctx, req, &page);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_THAT(page.classes(), ::testing::ElementsAre("cat", "dog"));
    for (const v1::FilePrediction& f : page.predictions()) {
      EXPECT_EQ(f.split(), v1::SPLIT_VALIDATION);
      labels[f.path()] = f.label();
    }
    token = page.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, static_cast<int>((validation.size() + 4) / 5));
  ASSERT_EQ(labels.size(), validation.size());
  for (int i = 0; i < response.predictions_size(); ++i) {
    EXPECT_EQ(labels[response.predictions(i).id()],
              response.predictions(i).label());
  }
  // A training job has no per-file predictions.
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ListJobPredictionsRequest req;
  req.set_name("jobs/train1");
  v1::ListJobPredictionsResponse page;
  EXPECT_EQ(jobs->ListJobPredictions(&ctx, req, &page).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(InferenceRpcTest, BadImagesFailAloneAndTheServerKeepsServing) {
  std::string truncated_jpeg = testing::EncodeTestImage(64, 64, ".jpg", 3);
  truncated_jpeg.resize(truncated_jpeg.size() / 2);
  std::string truncated_png = testing::EncodeTestImage(64, 64, ".png", 3);
  truncated_png.resize(truncated_png.size() - 20);
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"good", (*images_)[0].bytes},
      {"random", std::string("\x13\x37 definitely not an image", 26)},
      {"truncated.jpg", truncated_jpeg},
      {"truncated.png", truncated_png},
      {"bomb.png", testing::PngHeader(60000, 60000)},
      {"wide.jpg", testing::JpegHeader(65000, 1)},
      {"empty", ""},
      {"good2", (*images_)[1].bytes},
  };
  v1::PredictRequest request;
  request.set_model(job_->result_model());
  for (const auto& [id, bytes] : inputs) {
    v1::Image* i = request.add_images();
    i->set_id(id);
    i->set_data(bytes);
  }
  v1::PredictResponse response;
  grpc::Status s = Predict(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.predictions_size(), static_cast<int>(inputs.size()));
  for (int i = 0; i < response.predictions_size(); ++i) {
    const v1::ImagePrediction& p = response.predictions(i);
    EXPECT_EQ(p.id(), inputs[i].first);
    if (p.id() == "good" || p.id() == "good2") {
      EXPECT_EQ(p.status().code(), 0) << p.status().message();
      EXPECT_FALSE(p.label().empty());
    } else {
      EXPECT_EQ(p.status().code(), grpc::StatusCode::INVALID_ARGUMENT)
          << p.id();
      EXPECT_FALSE(p.status().message().empty()) << p.id();
      EXPECT_TRUE(p.label().empty()) << p.id();
    }
  }
  // Request-level problems.
  v1::PredictRequest empty;
  empty.set_model(job_->result_model());
  s = Predict(empty, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("images"));
  v1::PredictRequest unknown = request;
  unknown.set_model("models/nosuch");
  EXPECT_EQ(Predict(unknown, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  unknown.set_model("aliases/nosuch");
  EXPECT_EQ(Predict(unknown, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  unknown.set_model("catdog");
  s = Predict(unknown, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("model"));
  ExpectServing();
}

TEST_F(InferenceRpcTest, AnAliasIsServingOnceItsModelIsWarmAndPredictsByAlias) {
  auto health = grpc::health::v1::Health::NewStub(Channel(*server_));
  grpc::ClientContext watch_ctx;
  SetDeadline(watch_ctx, 120);
  grpc::health::v1::HealthCheckRequest watch_req;
  watch_req.set_service("aliases/catdog");
  auto watch = health->Watch(&watch_ctx, watch_req);
  grpc::health::v1::HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_NE(update.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto models = v1::Models::NewStub(Channel(*server_));
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::SetAliasRequest req;
    req.set_alias("aliases/catdog");
    req.set_model(job_->result_model());
    v1::Alias alias;
    grpc::Status s = models->SetAlias(&ctx, req, &alias);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // The status moves to SERVING by itself: the alias change warms the model.
  bool serving = false;
  while (!serving && watch->Read(&update)) {
    serving = update.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }
  EXPECT_TRUE(serving);

  v1::PredictRequest request;
  request.set_model("aliases/catdog");
  request.set_horizontal_flip_tta(true);
  v1::Image* image = request.add_images();
  image->set_id("a");
  image->set_data((*images_)[2].bytes);
  v1::PredictResponse response;
  grpc::Status s = Predict(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.model(), job_->result_model());
  ASSERT_EQ(response.predictions_size(), 1);
  EXPECT_EQ(response.predictions(0).status().code(), 0);

  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::DeleteAliasRequest req;
    req.set_alias("aliases/catdog");
    google::protobuf::Empty empty;
    ASSERT_TRUE(models->DeleteAlias(&ctx, req, &empty).ok());
  }
  bool not_serving = false;
  while (!not_serving && watch->Read(&update)) {
    not_serving =
        update.status() != grpc::health::v1::HealthCheckResponse::SERVING;
  }
  EXPECT_TRUE(not_serving);
  watch_ctx.TryCancel();
  (void)watch->Finish();
}

TEST_F(InferenceRpcTest, PredictStreamAnswersEveryRequestOnce) {
  auto stub = v1::Inference::NewStub(Channel(*server_));
  grpc::ClientContext ctx;
  SetDeadline(ctx, 120);
  auto stream = stub->PredictStream(&ctx);
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    v1::PredictStreamRequest r;
    r.set_request_id(absl::StrCat("r", i));
    r.set_model(i == 7 ? "models/nosuch" : job_->result_model());
    r.mutable_image()->set_id(absl::StrCat("img", i));
    r.mutable_image()->set_data(
        i == 11 ? "garbage" : (*images_)[i % images_->size()].bytes);
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  std::map<std::string, v1::PredictStreamResponse> answers;
  v1::PredictStreamResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(answers.count(response.request_id()), 0u)
        << response.request_id();
    answers[response.request_id()] = response;
  }
  grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(answers.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    const v1::PredictStreamResponse& a = answers[absl::StrCat("r", i)];
    EXPECT_EQ(a.prediction().id(), absl::StrCat("img", i));
    if (i == 7) {
      EXPECT_EQ(a.prediction().status().code(), grpc::StatusCode::NOT_FOUND);
    } else if (i == 11) {
      EXPECT_EQ(a.prediction().status().code(),
                grpc::StatusCode::INVALID_ARGUMENT);
    } else {
      EXPECT_EQ(a.prediction().status().code(), 0)
          << a.prediction().status().message();
      EXPECT_EQ(a.model(), job_->result_model());
      EXPECT_FALSE(a.prediction().label().empty());
    }
  }
  ExpectServing();
}

// Watchers that never read and an upload stalled in the middle of a file
// hold streams open on the same server while a job trains; Predict is
// answered all the same (its decoding has threads of its own, the engine's
// executor takes the watchers' reads and the upload's steps), and the
// stalled upload leaves nothing behind once cancelled.
TEST_F(InferenceRpcTest, StalledWatchersAndUploadsDoNotHoldUpPredict) {
  v1::Job slow;
  grpc::Status s = testing::CreateJob(
      *server_, testing::SmallSpec("tiny", 1000), &slow, "slow1");
  ASSERT_TRUE(s.ok()) << s.error_message();

  auto jobs = v1::Jobs::NewStub(Channel(*server_));
  constexpr int kWatchers = 16;
  std::vector<std::unique_ptr<grpc::ClientContext>> watch_ctx;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::JobEvent>>> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    watch_ctx.push_back(std::make_unique<grpc::ClientContext>());
    v1::WatchJobRequest request;
    request.set_name(i % 2 == 0 ? "jobs/slow1" : "jobs/train1");
    request.set_follow(i % 2 == 0);
    watchers.push_back(jobs->WatchJob(watch_ctx.back().get(), request));
  }
  // The first event of one watcher: the streams are open (none is read
  // further).
  v1::JobEvent first;
  ASSERT_TRUE(watchers[0]->Read(&first));

  auto datasets = v1::Datasets::NewStub(Channel(*server_));
  grpc::ClientContext upload_ctx;
  v1::UploadDatasetResponse upload_response;
  auto upload = datasets->UploadDataset(&upload_ctx, &upload_response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id("stalled");
  ASSERT_TRUE(upload->Write(header));
  v1::UploadDatasetRequest chunk;
  const std::string& bytes = (*images_)[0].bytes;
  chunk.mutable_chunk()->set_path("train/cat.1.png");
  chunk.mutable_chunk()->set_size(static_cast<int64_t>(bytes.size()));
  chunk.mutable_chunk()->set_data(bytes.substr(0, bytes.size() / 2));
  ASSERT_TRUE(upload->Write(chunk));  // and the rest never comes

  for (int round = 0; round < 3; ++round) {
    v1::PredictRequest request;
    request.set_model(job_->result_model());
    for (const LabelledImage& image : Validation()) {
      v1::Image* i = request.add_images();
      i->set_id(image.path);
      i->set_data(image.bytes);
    }
    v1::PredictResponse response;
    s = Predict(request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(response.predictions_size(), request.images_size());
    for (const v1::ImagePrediction& p : response.predictions()) {
      EXPECT_EQ(p.status().code(), 0) << p.status().message();
    }
  }

  upload_ctx.TryCancel();
  EXPECT_EQ(upload->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (int i = 0; i < kWatchers; ++i) watch_ctx[i]->TryCancel();
  for (auto& w : watchers) (void)w->Finish();
  grpc::ClientContext cancel_ctx;
  SetDeadline(cancel_ctx);
  v1::CancelJobRequest cancel;
  cancel.set_name("jobs/slow1");
  v1::Job cancelled;
  ASSERT_TRUE(jobs->CancelJob(&cancel_ctx, cancel, &cancelled).ok());
  EXPECT_EQ(testing::WaitForJob(*server_, "jobs/slow1").state(),
            v1::JOB_STATE_CANCELLED);
  grpc::ClientContext get_ctx;
  SetDeadline(get_ctx);
  v1::GetDatasetRequest get;
  get.set_name("datasets/stalled");
  v1::Dataset dataset;
  EXPECT_EQ(datasets->GetDataset(&get_ctx, get, &dataset).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ExpectServing();
}

}  // namespace
}  // namespace transferd
