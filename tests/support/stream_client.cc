// A client that opens one long stream against transferd and keeps it busy
// until it is killed: the "crashing client" of tests/integration/abuse_test.cc.
// It prints "streaming" once the stream carries data, so the test kills it
// mid-stream, not before it started.
//
//   transferd_stream_client ADDRESS predict MODEL   PredictStream, one image
//   after another transferd_stream_client ADDRESS watch JOB       WatchJob of a
//   running job transferd_stream_client ADDRESS upload ID       UploadDataset,
//   a file that never ends
#include <cstdio>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "tests/support/test_images.h"
#include "transferd/v1/datasets.grpc.pb.h"
#include "transferd/v1/inference.grpc.pb.h"
#include "transferd/v1/jobs.grpc.pb.h"

namespace v1 = transferd::v1;

namespace {

void Streaming() {
  std::printf("streaming\n");
  std::fflush(stdout);
}

int Predict(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& model) {
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->PredictStream(&ctx);
  const std::string image =
      transferd::testing::EncodeTestImage(40, 40, ".png", 5);
  v1::PredictStreamResponse answer;
  for (int i = 0;; ++i) {
    v1::PredictStreamRequest request;
    request.set_request_id(std::to_string(i));
    request.set_model(model);
    request.mutable_image()->set_data(image);
    if (!stream->Write(request) || !stream->Read(&answer)) break;
    if (i == 0) Streaming();
  }
  std::fprintf(stderr, "stream ended: %s\n",
               stream->Finish().error_message().c_str());
  return 1;
}

int Watch(const std::shared_ptr<grpc::Channel>& channel,
          const std::string& job) {
  auto stub = v1::Jobs::NewStub(channel);
  grpc::ClientContext ctx;
  v1::WatchJobRequest request;
  request.set_name(job);
  request.set_follow(true);
  auto reader = stub->WatchJob(&ctx, request);
  v1::JobEvent event;
  bool first = true;
  while (reader->Read(&event)) {
    if (first) Streaming();
    first = false;
  }
  std::fprintf(stderr, "watch ended: %s\n",
               reader->Finish().error_message().c_str());
  return 1;
}

int Upload(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& id) {
  auto stub = v1::Datasets::NewStub(channel);
  grpc::ClientContext ctx;
  v1::UploadDatasetResponse response;
  auto writer = stub->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id(id);
  if (!writer->Write(header)) return 1;
  v1::UploadDatasetRequest first;
  first.mutable_chunk()->set_path("train/cat.1.jpg");
  first.mutable_chunk()->set_size(
      30 << 20);  // under --max-file-bytes: ~10 s at this pace
  first.mutable_chunk()->set_data(std::string(64 * 1024, 'x'));
  if (!writer->Write(first)) return 1;
  Streaming();
  v1::UploadDatasetRequest more;
  more.mutable_chunk()->set_data(std::string(64 * 1024, 'y'));
  while (writer->Write(more)) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(20));  // a slow client
  }
  std::fprintf(stderr, "upload ended: %s\n",
               writer->Finish().error_message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ADDRESS predict|watch|upload NAME\n",
                 argv[0]);
    return 2;
  }
  auto channel =
      grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  const std::string mode = argv[2];
  if (mode == "predict") return Predict(channel, argv[3]);
  if (mode == "watch") return Watch(channel, argv[3]);
  if (mode == "upload") return Upload(channel, argv[3]);
  return 2;
}
