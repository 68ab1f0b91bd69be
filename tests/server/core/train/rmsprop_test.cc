// FusedRMSprop against torch::optim::RMSprop: the same trajectory up to float
// rounding, RMSprop's own step where the fused loop does not apply, version
// counters bumped, and state that loads into either optimizer.
#include "server/core/train/rmsprop.h"

#include <sstream>
#include <vector>

#include <c10/util/string_utils.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace transferd::core::train {
namespace {

std::vector<torch::Tensor> Params(int64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({256, 1000}).requires_grad_(),
          torch::randn({256}).requires_grad_(),
          torch::randn({1, 256}).requires_grad_()};
}

// A few steps with seeded gradients; returns the parameters (and, in
// `square_avgs`, the optimizer's state).
template <typename Opt>
std::vector<torch::Tensor> Train(
    const torch::optim::RMSpropOptions& options, int steps,
    std::vector<torch::Tensor> params,
    std::vector<torch::Tensor>* square_avgs = nullptr) {
  auto opt = std::make_unique<Opt>(params, options);
  torch::manual_seed(99);
  for (int s = 0; s < steps; ++s) {
    for (auto& p : params) p.mutable_grad() = torch::randn_like(p) * (s + 1);
    opt->step();
  }
  std::vector<torch::Tensor> result;
  for (auto& p : params) {
    result.push_back(p.detach().clone());
    if (square_avgs != nullptr) {
      const auto& state =
          opt->state().at(c10::guts::to_string(p.unsafeGetTensorImpl()));
      square_avgs->push_back(
          static_cast<const torch::optim::RMSpropParamState&>(*state)
              .square_avg()
              .clone());
    }
  }
  return result;
}

double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

TEST(FusedRMSpropTest, FollowsTorchRMSpropUpToRounding) {
  // Keras' defaults (rho 0.9, epsilon 1e-7) at the keras-book rates.
  for (double lr : {2e-5, 1e-3}) {
    const auto options = torch::optim::RMSpropOptions(lr).alpha(0.9).eps(1e-7);
    std::vector<torch::Tensor> fused_avg, plain_avg;
    const auto fused = Train<FusedRMSprop>(options, 30, Params(1), &fused_avg);
    const auto plain =
        Train<torch::optim::RMSprop>(options, 30, Params(1), &plain_avg);
    const auto start = Params(1);
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_FALSE(torch::equal(plain[i], start[i]));  // it did move
      // The statistics agree to float rounding; the parameters to a few
      // roundings of their own magnitude (an update of 1e-5 on a weight of 1
      // is rounded to the weight's float spacing either way).
      EXPECT_LT(RelativeError(fused_avg[i], plain_avg[i]), 1e-6) << i;
      EXPECT_LT(RelativeError(fused[i], plain[i]), 1e-6) << i;
      EXPECT_LT(RelativeError(fused[i] - start[i], plain[i] - start[i]), 1e-3)
          << i;
    }
  }
}

TEST(FusedRMSpropTest, FallsBackToRMSpropsOwnStep) {
  // Momentum, centring and weight decay are RMSprop's code path: bit-identical.
  for (const auto& options :
       {torch::optim::RMSpropOptions(1e-3).momentum(0.9),
        torch::optim::RMSpropOptions(1e-3).centered(true),
        torch::optim::RMSpropOptions(1e-3).weight_decay(1e-2)}) {
    const auto fused = Train<FusedRMSprop>(options, 5, Params(2));
    const auto plain = Train<torch::optim::RMSprop>(options, 5, Params(2));
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_TRUE(torch::equal(fused[i], plain[i]));
  }
  // A non-contiguous parameter too.
  torch::manual_seed(3);
  const torch::Tensor base = torch::randn({8, 6});
  std::vector<torch::Tensor> a = {base.clone().t().requires_grad_()};
  std::vector<torch::Tensor> b = {base.clone().t().requires_grad_()};
  ASSERT_FALSE(a[0].is_contiguous());
  const auto options = torch::optim::RMSpropOptions(1e-3);
  EXPECT_TRUE(torch::equal(Train<FusedRMSprop>(options, 3, a)[0],
                           Train<torch::optim::RMSprop>(options, 3, b)[0]));
}

TEST(FusedRMSpropTest, BumpsTheVersionCounterAndSkipsMissingGradients) {
  std::vector<torch::Tensor> params = Params(4);
  FusedRMSprop opt(params, torch::optim::RMSpropOptions(1e-3));
  params[0].mutable_grad() = torch::ones_like(params[0]);
  const torch::Tensor untouched = params[1].detach().clone();
  const auto version = params[0]._version();
  opt.step();
  EXPECT_GT(params[0]._version(), version);
  EXPECT_TRUE(torch::equal(params[1], untouched));  // no gradient, no update
}

TEST(FusedRMSpropTest, StateRoundTripsThroughTorchRMSprop) {
  const auto options = torch::optim::RMSpropOptions(1e-3).alpha(0.9).eps(1e-7);
  // 10 fused steps, saved, loaded into a plain RMSprop for 10 more, against
  // 20 plain steps.
  std::vector<torch::Tensor> params = Params(5);
  FusedRMSprop fused(params, options);
  torch::manual_seed(7);
  std::vector<torch::Tensor> grads;
  for (int s = 0; s < 20; ++s) {
    for (auto& p : params) grads.push_back(torch::randn_like(p));
  }
  size_t g = 0;
  for (int s = 0; s < 10; ++s) {
    for (auto& p : params) p.mutable_grad() = grads[g++];
    fused.step();
  }
  std::ostringstream saved;
  torch::save(fused, saved);
  torch::optim::RMSprop resumed(params, options);
  std::istringstream in(saved.str());
  torch::load(resumed, in);
  for (int s = 0; s < 10; ++s) {
    for (auto& p : params) p.mutable_grad() = grads[g++];
    resumed.step();
  }

  std::vector<torch::Tensor> reference = Params(5);
  torch::optim::RMSprop plain(reference, options);
  g = 0;
  for (int s = 0; s < 20; ++s) {
    for (auto& p : reference) p.mutable_grad() = grads[g++];
    plain.step();
  }
  const std::vector<torch::Tensor> start = Params(5);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_FALSE(torch::equal(reference[i], start[i]));
    EXPECT_LT(RelativeError(params[i].detach(), reference[i].detach()), 1e-6);
  }
}

}  // namespace
}  // namespace transferd::core::train
