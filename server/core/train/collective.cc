#include "server/core/train/collective.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#if TRANSFERD_WITH_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if TRANSFERD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace transferd::core::train {
namespace {

using Clock = std::chrono::steady_clock;

class Solo final : public Collective {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "solo"; }
  absl::Status AllReduceSum(std::vector<torch::Tensor>&) override {
    return absl::OkStatus();
  }
  absl::Status Broadcast(std::vector<torch::Tensor>&, int) override {
    return absl::OkStatus();
  }
};

#if TRANSFERD_WITH_C10D
class ProcessGroupCollective final : public Collective {
 public:
  ProcessGroupCollective(c10::intrusive_ptr<c10d::Store> store,
                         c10::intrusive_ptr<c10d::ProcessGroup> group,
                         std::string backend)
      : store_(std::move(store)),
        group_(std::move(group)),
        backend_(std::move(backend)) {}

  int rank() const override { return group_->getRank(); }
  int world_size() const override { return group_->getSize(); }
  std::string backend() const override { return backend_; }

  absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    return Run("allreduce", [&] {
      // One collective per tensor: Gloo and NCCL take a single tensor per
      // process in each call (the list is one per device).
      for (torch::Tensor& t : tensors) {
        std::vector<at::Tensor> one{t};
        group_->allreduce(one)->wait();
      }
    });
  }

  absl::Status Broadcast(std::vector<torch::Tensor>& tensors,
                         int root) override {
    return Run("broadcast", [&] {
      c10d::BroadcastOptions options;
      options.rootRank = root;
      for (torch::Tensor& t : tensors) {
        std::vector<at::Tensor> one{t};
        group_->broadcast(one, options)->wait();
      }
    });
  }

 private:
  template <typename Fn>
  absl::Status Run(const char* what, Fn&& fn) {
    if (failed_) {
      return absl::UnavailableError(
          absl::StrCat(what, ": the process group failed before"));
    }
    const auto start = Clock::now();
    try {
      fn();
    } catch (const std::exception& e) {
      failed_ = true;
      seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
      // c10d's messages carry a source location and a backtrace; the first
      // line says what happened.
      std::string message = e.what();
      message = message.substr(0, message.find('\n'));
      return absl::UnavailableError(absl::StrCat(what, " across ", world_size(),
                                                 " ranks failed (rank ", rank(),
                                                 "): ", message));
    }
    seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
    return absl::OkStatus();
  }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::string backend_;
  bool failed_ = false;
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}
#endif

absl::StatusOr<int> IntFromEnv(const char* name, int min, int max) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    return absl::InvalidArgumentError(absl::StrCat(name, " is not set"));
  }
  int n = 0;
  if (!absl::SimpleAtoi(value, &n) || n < min || n > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, "=", value, " is not an integer in [", min, ", ", max, "]"));
  }
  return n;
}

}  // namespace

std::shared_ptr<Collective> SoloCollective() {
  return std::make_shared<Solo>();
}

bool HasDistributedBackend() { return TRANSFERD_WITH_C10D != 0; }

absl::StatusOr<RendezvousOptions> RendezvousFromEnv() {
  if (std::getenv("WORLD_SIZE") == nullptr) {
    return absl::NotFoundError("WORLD_SIZE is not set");
  }
  RendezvousOptions o;
  absl::StatusOr<int> world = IntFromEnv("WORLD_SIZE", 1, 65536);
  if (!world.ok()) return world.status();
  absl::StatusOr<int> rank = IntFromEnv("RANK", 0, *world - 1);
  if (!rank.ok()) return rank.status();
  absl::StatusOr<int> port = IntFromEnv("MASTER_PORT", 1, 65535);
  if (!port.ok()) return port.status();
  const char* addr = std::getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') {
    return absl::InvalidArgumentError("MASTER_ADDR is not set");
  }
  o.world_size = *world;
  o.rank = *rank;
  o.master_port = *port;
  o.master_addr = addr;
  if (const char* run = std::getenv("TORCHELASTIC_RUN_ID");
      run != nullptr && *run != '\0') {
    o.run_id = run;
  }
  return o;
}

absl::StatusOr<std::shared_ptr<Collective>> JoinProcessGroup(
    const RendezvousOptions& options, const torch::Device& device) {
  if (options.world_size < 1 || options.rank < 0 ||
      options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is not in a world of size ",
                     options.world_size));
  }
  if (options.world_size == 1) return SoloCollective();
#if TRANSFERD_WITH_C10D
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(options.master_port);
    store_options.isServer = options.rank == 0;
    store_options.numWorkers = options.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = options.timeout;
    auto tcp =
        c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
    auto store = c10::make_intrusive<c10d::PrefixStore>(options.run_id, tcp);
    c10::intrusive_ptr<c10d::ProcessGroup> group;
    std::string backend = "gloo";
#if TRANSFERD_WITH_NCCL
    if (device.is_cuda()) {
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = options.timeout;
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          store, options.rank, options.world_size, nccl);
      backend = "nccl";
    }
#endif
    if (!group) {
      auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
      // GLOO_SOCKET_IFNAME picks the interface (as in PyTorch); a loopback
      // master means every rank is on this machine; otherwise the address
      // the host name resolves to.
      if (!options.local_addr.empty()) {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
            options.local_addr));
      } else if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
                 ifname != nullptr && *ifname != '\0') {
        gloo->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (IsLoopback(options.master_addr)) {
        gloo->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      gloo->threads = 2;
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(
          store, options.rank, options.world_size, gloo);
    }
    return std::shared_ptr<Collective>(
        std::make_shared<ProcessGroupCollective>(tcp, group, backend));
  } catch (const std::exception& e) {
    std::string message = e.what();
    message = message.substr(0, message.find('\n'));
    return absl::UnavailableError(
        absl::StrCat("rank ", options.rank, " of ", options.world_size,
                     " could not meet the others at ", options.master_addr, ":",
                     options.master_port, ": ", message));
  }
#else
  (void)device;
  return absl::UnimplementedError(
      "this build of transferd has no torch c10d (Gloo) backend");
#endif
}

}  // namespace transferd::core::train
