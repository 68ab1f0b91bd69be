// transferd.v1.Cluster: workers joining this coordinator, their rank
// reports, and the dataset contents their ranks fetch. Adapts
// core::ClusterRegistry (who is connected, which ranks run where) and the
// dataset catalog's content store to the protos; a heartbeat thread writes
// to every membership stream, so a worker that vanished is noticed when a
// write fails, if its connection's end was not noticed first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "transferd/v1/cluster.grpc.pb.h"

namespace transferd::core {
class Engine;
}  // namespace transferd::core
namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api
namespace transferd::auth {
class Authorizer;
}  // namespace transferd::auth

namespace transferd::rpc {

class ClusterService final : public transferd::v1::Cluster::CallbackService {
 public:
  ClusterService(core::api::EngineApi& api, core::Engine& engine,
                 const auth::Authorizer& auth,
                 std::chrono::milliseconds heartbeat);
  ~ClusterService() override;

  grpc::ServerWriteReactor<transferd::v1::ClusterMessage>* Join(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::JoinClusterRequest* request) override;
  grpc::ServerUnaryReactor* ReportRank(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::RankReport* request,
      transferd::v1::RankReportResponse* response) override;
  grpc::ServerWriteReactor<transferd::v1::ContentChunk>* FetchContent(
      grpc::CallbackServerContext* ctx,
      const transferd::v1::FetchContentRequest* request) override;

  class Member;  // one worker's membership stream

 private:
  void Heartbeats();
  void Remove(Member* member);

  core::api::EngineApi& api_;
  core::Engine& engine_;
  const auth::Authorizer& auth_;
  const std::chrono::milliseconds heartbeat_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::shared_ptr<Member>> members_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace transferd::rpc
