// Services of the transferd.v1 contract whose engine parts have not landed
// yet. Every RPC answers UNIMPLEMENTED with a message naming it, so clients
// written against the full contract get a precise answer today. Each class
// is replaced by a real service as its issue lands.
#pragma once

#include "transferd/v1/inference.grpc.pb.h"

namespace transferd::rpc {

namespace v1 = ::transferd::v1;

// UNIMPLEMENTED naming "transferd.v1.<method>".
grpc::Status Unimplemented(const char* method);
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                      const char* method);

// Reactors that finish at once with UNIMPLEMENTED. Finish may be called
// before gRPC binds the reactor; the operation is queued until then.
template <class Request>
class FinishedReader final : public grpc::ServerReadReactor<Request> {
 public:
  explicit FinishedReader(const char* method) { this->Finish(Unimplemented(method)); }
  void OnDone() override { delete this; }
};

template <class Response>
class FinishedWriter final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit FinishedWriter(const char* method) { this->Finish(Unimplemented(method)); }
  void OnDone() override { delete this; }
};

template <class Request, class Response>
class FinishedBidi final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit FinishedBidi(const char* method) { this->Finish(Unimplemented(method)); }
  void OnDone() override { delete this; }
};

class UnimplementedInferenceService final
    : public v1::Inference::CallbackService {
 public:
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext*,
                                    const v1::PredictRequest*,
                                    v1::PredictResponse*) override;
  grpc::ServerBidiReactor<v1::PredictStreamRequest, v1::PredictStreamResponse>*
  PredictStream(grpc::CallbackServerContext*) override;
};

}  // namespace transferd::rpc
