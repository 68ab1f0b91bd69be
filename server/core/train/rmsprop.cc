#include "server/core/train/rmsprop.h"

#include <cmath>
#include <memory>

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>
#include <torch/types.h>
#include <torch/utils.h>

namespace transferd::core::train {

namespace {

bool Fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         t.scalar_type() == torch::kFloat32 && t.layout() == torch::kStrided &&
         t.is_contiguous();
}

// square_avg = rho * square_avg + (1 - rho) * g^2;
// p -= lr * g / (sqrt(square_avg) + eps), in the order RMSprop's ops apply it.
void Update(float* __restrict p, const float* __restrict g,
            float* __restrict sq, int64_t n, float rho, float one_minus_rho,
            float eps, float neg_lr) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float s = sq[i] * rho + one_minus_rho * gi * gi;
    sq[i] = s;
    p[i] = p[i] + neg_lr * (gi / (std::sqrt(s) + eps));
  }
}

}  // namespace

torch::Tensor FusedRMSprop::step(LossClosure closure) {
  for (const auto& group : param_groups_) {
    const auto& o =
        static_cast<const torch::optim::RMSpropOptions&>(group.options());
    if (o.momentum() != 0 || o.centered() || o.weight_decay() != 0) {
      return torch::optim::RMSprop::step(std::move(closure));
    }
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!Fusable(p) || !Fusable(p.grad()))
        return torch::optim::RMSprop::step(std::move(closure));
      auto it = state_.find(c10::guts::to_string(p.unsafeGetTensorImpl()));
      if (it != state_.end() &&
          !Fusable(static_cast<torch::optim::RMSpropParamState&>(*it->second)
                       .square_avg())) {
        return torch::optim::RMSprop::step(std::move(closure));
      }
    }
  }

  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o =
        static_cast<const torch::optim::RMSpropOptions&>(group.options());
    const float rho = static_cast<float>(o.alpha());
    const float one_minus_rho = static_cast<float>(1 - o.alpha());
    const float eps = static_cast<float>(o.eps());
    const float neg_lr = static_cast<float>(-o.lr());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      if (state_.find(key) == state_.end()) {
        auto state = std::make_unique<torch::optim::RMSpropParamState>();
        state->step(0);
        state->square_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        state_[key] = std::move(state);
      }
      auto& state = static_cast<torch::optim::RMSpropParamState&>(*state_[key]);
      state.step(state.step() + 1);
      // Written through raw pointers: bump the version counter as an in-place
      // op would, so that caches keyed on it (ConvBn's fold) see the change.
      p.unsafeGetTensorImpl()->bump_version();
      float* pp = p.data_ptr<float>();
      const float* gp = p.grad().data_ptr<float>();
      float* sp = state.square_avg().data_ptr<float>();
      at::parallel_for(0, p.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
        Update(pp + begin, gp + begin, sp + begin, end - begin, rho,
               one_minus_rho, eps, neg_lr);
      });
    }
  }
  return loss;
}

}  // namespace transferd::core::train
