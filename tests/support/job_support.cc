#include "tests/support/job_support.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/test_images.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace transferd::testing {

namespace v1 = transferd::v1;

std::vector<LabelledImage> TinyDataset(int per_class, bool with_validation) {
  std::vector<LabelledImage> out;
  int seed = 0;
  for (const char* split : {"train", "validation"}) {
    if (std::string(split) == "validation" && !with_validation) break;
    const int n = std::string(split) == "train" ? per_class : per_class / 2;
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < n; ++i, ++seed) {
        out.push_back(
            {absl::StrCat(split, "/", label, ".", seed, ".png"),
             EncodeTestImage(40, 40, ".png", seed * 2 + (label[0] == 'd')),
             label, split});
      }
    }
  }
  return out;
}

std::shared_ptr<grpc::Channel> Channel(const TransferdServer& server) {
  return grpc::CreateChannel(server.address(),
                             grpc::InsecureChannelCredentials());
}

void SetDeadline(grpc::ClientContext& ctx, int seconds) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(seconds));
}

void UploadImages(const TransferdServer& server, const std::string& id,
                  const std::vector<LabelledImage>& images) {
  auto stub = v1::Datasets::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::UploadDatasetResponse response;
  auto writer = stub->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id(id);
  ASSERT_TRUE(writer->Write(header));
  for (const LabelledImage& image : images) {
    v1::UploadDatasetRequest r;
    r.mutable_chunk()->set_path(image.path);
    r.mutable_chunk()->set_data(image.bytes);
    r.mutable_chunk()->set_last(true);
    ASSERT_TRUE(writer->Write(r));
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
}

v1::JobSpec SmallSpec(const std::string& dataset, int epochs) {
  v1::JobSpec spec;
  spec.set_kind(v1::JOB_KIND_TRAIN);
  spec.set_dataset("datasets/" + dataset);
  spec.set_seed(7);
  v1::ModelSpec* m = spec.mutable_model();
  m->set_backbone("mobilenet");
  m->set_alpha(0.25);
  m->set_weights("none");
  m->set_input_size(32);
  m->set_precision(v1::PRECISION_FP32);
  m->mutable_head()->set_pooling(v1::POOLING_GLOBAL_AVERAGE);
  m->mutable_head()->set_hidden_units(8);
  m->mutable_head()->set_dropout(0);
  v1::StageSpec* s = spec.add_stages();
  s->set_name("frozen");
  s->set_trainable_from("none");
  s->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_ADAM);
  s->mutable_optimizer()->set_learning_rate(1e-2);
  s->set_epochs(epochs);
  s->set_batch_size(4);
  return spec;
}

grpc::Status CreateJob(const TransferdServer& server, const v1::JobSpec& spec,
                       v1::Job* job, const std::string& id) {
  auto stub = v1::Jobs::NewStub(Channel(server));
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::CreateJobRequest req;
  req.set_job_id(id);
  *req.mutable_spec() = spec;
  return stub->CreateJob(&ctx, req, job);
}

v1::Job WaitForJob(const TransferdServer& server, const std::string& name) {
  auto stub = v1::Jobs::NewStub(Channel(server));
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, 600);
    v1::WatchJobRequest req;
    req.set_name(name);
    req.set_follow(true);
    auto reader = stub->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
    }
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::GetJobRequest req;
  req.set_name(name);
  v1::Job job;
  grpc::Status s = stub->GetJob(&ctx, req, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job;
}

}  // namespace transferd::testing
