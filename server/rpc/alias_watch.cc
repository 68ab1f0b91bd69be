#include "server/rpc/alias_watch.h"

#include <optional>
#include <utility>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "server/core/api/engine_api.h"
#include "server/rpc/conversions.h"

namespace transferd::rpc {

namespace v1 = transferd::v1;

// One watch's stream. gRPC may run a reaction inline from StartWrite or
// Finish, so neither is called with mu_ held.
class AliasWatchHub::Watcher final
    : public grpc::ServerWriteReactor<v1::AliasSnapshot> {
 public:
  explicit Watcher(AliasWatchHub& hub) : hub_(hub) {}

  // The newest snapshot: written now, or after the write in flight.
  void Offer(const std::shared_ptr<const v1::AliasSnapshot>& snapshot) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finish_called_ || finish_wanted_) return;
      if (writing_) {
        pending_ = snapshot;
        return;
      }
      writing_ = true;
      current_ = *snapshot;
    }
    StartWrite(&current_);
  }

  void Close(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finish_called_) return;
      if (writing_) {
        finish_wanted_ = true;
        finish_status_ = status;
        return;
      }
      finish_called_ = true;
    }
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    bool write = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (finish_called_) return;
      if (!ok) {
        finish_called_ = true;
        finish =
            grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      } else if (finish_wanted_) {
        finish_called_ = true;
        finish = finish_status_;
      } else if (pending_ != nullptr) {
        current_ = *pending_;
        pending_.reset();
        writing_ = true;
        write = true;
      }
    }
    if (write) StartWrite(&current_);
    if (finish.has_value()) Finish(*finish);
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  // The hub's reference goes; the object with it, now or once the hub's
  // thread lets go of its copy.
  void OnDone() override { hub_.Remove(this); }

 private:
  AliasWatchHub& hub_;
  std::mutex mu_;
  v1::AliasSnapshot current_;  // the write in flight
  std::shared_ptr<const v1::AliasSnapshot> pending_;
  bool writing_ = false;
  bool finish_wanted_ = false;
  bool finish_called_ = false;
  grpc::Status finish_status_;
};

AliasWatchHub::AliasWatchHub(core::api::EngineApi& api,
                             std::chrono::milliseconds heartbeat)
    : api_(api), heartbeat_(heartbeat), s_(std::make_shared<Shared>()) {
  thread_ = std::thread([this] { Run(); });
}

AliasWatchHub::~AliasWatchHub() {
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    stop_ = true;
  }
  s_->cv.notify_all();
  thread_.join();
}

grpc::ServerWriteReactor<v1::AliasSnapshot>* AliasWatchHub::Watch() {
  auto watcher = std::make_shared<Watcher>(*this);
  bool closed;
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    closed = closed_;
    watchers_.insert(watcher);
    s_->changed = true;
  }
  if (closed) {
    watcher->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "the server is shutting down"));
  } else {
    s_->cv.notify_all();
  }
  return watcher.get();
}

void AliasWatchHub::Remove(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(s_->mu);
  for (auto it = watchers_.begin(); it != watchers_.end(); ++it) {
    if (it->get() == watcher) {
      watchers_.erase(it);
      return;
    }
  }
}

void AliasWatchHub::Run() {
  // Shutdown is noticed within this much; changes wake the thread at once.
  constexpr std::chrono::milliseconds kTick{200};
  auto last_read = std::chrono::steady_clock::time_point();
  std::unique_lock<std::mutex> lock(s_->mu);
  while (!stop_) {
    // Until the engine is ready (and the listener set) only the tick wakes
    // the thread: nothing to read yet, and no watcher can have come in.
    s_->cv.wait_for(lock, kTick,
                    [&] { return stop_ || (listening_ && s_->changed); });
    if (stop_) break;
    const bool shutting_down = api_.shutting_down();
    if (shutting_down || closed_) {
      closed_ = true;
      std::vector<std::shared_ptr<Watcher>> all(watchers_.begin(),
                                                watchers_.end());
      s_->changed = false;
      lock.unlock();
      for (const auto& w : all) {
        w->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down"));
      }
      lock.lock();
      continue;
    }
    if (!api_.ready()) continue;
    if (!listening_) {
      listening_ = true;
      lock.unlock();
      // The registry keeps its listeners as long as the engine lives, which
      // may be longer than this hub: the listener holds the shared state.
      api_.AddAliasListener([s = s_](const std::string&, const std::string&) {
        {
          std::lock_guard<std::mutex> l(s->mu);
          ++s->generation;
          s->changed = true;
        }
        s->cv.notify_all();
      });
      lock.lock();
      s_->changed = true;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!s_->changed && now - last_read < heartbeat_) continue;
    if (watchers_.empty()) {
      s_->changed = false;
      continue;
    }
    s_->changed = false;
    last_read = now;
    const int64_t generation = s_->generation;
    lock.unlock();

    auto snapshot = std::make_shared<v1::AliasSnapshot>();
    snapshot->set_generation(generation);
    snapshot->set_heartbeat_seconds(static_cast<int32_t>(
        std::chrono::duration_cast<std::chrono::seconds>(heartbeat_).count()));
    *snapshot->mutable_read_time() =
        google::protobuf::util::TimeUtil::GetCurrentTime();
    bool ok = true;
    std::string token;
    do {
      absl::StatusOr<core::api::Page<core::AliasInfo>> page =
          api_.ListAliases({1000, token});
      if (!page.ok()) {
        spdlog::warn("alias watch: aliases not read: {}",
                     std::string(page.status().message()));
        ok = false;
        break;
      }
      for (const core::AliasInfo& a : page->items) {
        ToProto(a, snapshot->add_aliases());
      }
      token = page->next_page_token;
    } while (!token.empty());

    lock.lock();
    if (!ok) {
      last_read = {};  // read again at the next tick
      continue;
    }
    std::vector<std::shared_ptr<Watcher>> all(watchers_.begin(),
                                              watchers_.end());
    lock.unlock();
    const std::shared_ptr<const v1::AliasSnapshot> shared = snapshot;
    for (const auto& w : all) w->Offer(shared);
    all.clear();  // a watcher that ended meanwhile goes here, unlocked
    lock.lock();
  }
  // The server is gone by now (the hub outlives it): nothing to finish.
}

}  // namespace transferd::rpc
