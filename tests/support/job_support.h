// What the integration tests of jobs, models and inference share: a small
// labelled image set made on the fly, its upload, the smallest network that
// learns it, and a job run to its end.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "tests/support/transferd_server.h"
#include "transferd/v1/jobs.pb.h"

namespace transferd::testing {

struct LabelledImage {
  std::string path;   // "validation/dog.13.png"
  std::string bytes;  // PNG
  std::string label;  // "cat" or "dog"
  std::string split;  // "train" or "validation"
};

// `per_class` 40x40 PNGs per class in train/ and half as many in validation/
// (none when !with_validation); cats reddish, dogs bluish, deterministic.
std::vector<LabelledImage> TinyDataset(int per_class,
                                       bool with_validation = true);

std::shared_ptr<grpc::Channel> Channel(const TransferdServer& server);
void SetDeadline(grpc::ClientContext& ctx, int seconds = 60);

// Uploads `images` as dataset `id` (split by folder); fails the test on error.
void UploadImages(const TransferdServer& server, const std::string& id,
                  const std::vector<LabelledImage>& images);

// MobileNet alpha 0.25 at 32 px, random weights, GAP + Dense(8), one frozen
// stage of Adam 1e-2, batch 4: learns TinyDataset in a few seconds.
transferd::v1::JobSpec SmallSpec(const std::string& dataset, int epochs);

grpc::Status CreateJob(const TransferdServer& server,
                       const transferd::v1::JobSpec& spec,
                       transferd::v1::Job* job, const std::string& id = "");

// Follows the job's events until it ends, then returns it (GetJob).
transferd::v1::Job WaitForJob(const TransferdServer& server,
                              const std::string& name);

}  // namespace transferd::testing
