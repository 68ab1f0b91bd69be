// Models.WatchAliases: every open watch gets the whole alias table when it
// starts, again after each change, and every `heartbeat` while nothing
// changes. One thread reads the table (on a change, a new watcher or a
// heartbeat) and offers the snapshot to every watcher; a watcher whose
// client reads slowly keeps only the newest snapshot it has not written, so
// a slow reader costs one message of memory and still ends up current.
// When the engine begins shutting down the streams end with UNAVAILABLE.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <grpcpp/support/server_callback.h>

#include "transferd/v1/models.pb.h"

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api

namespace transferd::rpc {

class AliasWatchHub {
 public:
  AliasWatchHub(core::api::EngineApi& api, std::chrono::milliseconds heartbeat);
  ~AliasWatchHub();
  AliasWatchHub(const AliasWatchHub&) = delete;
  AliasWatchHub& operator=(const AliasWatchHub&) = delete;

  // A new watch (the caller passed the method's gate).
  grpc::ServerWriteReactor<transferd::v1::AliasSnapshot>* Watch();

  class Watcher;  // the stream of one watch

 private:
  void Run();
  void Remove(Watcher* watcher);

  // What the registry's alias listener touches (it may outlive the hub).
  struct Shared {
    std::mutex mu;  // guards this and the hub's fields below
    std::condition_variable cv;
    bool changed = true;  // an alias changed, or a watcher is new
    int64_t generation = 0;
  };

  core::api::EngineApi& api_;
  const std::chrono::milliseconds heartbeat_;
  std::shared_ptr<Shared> s_;
  std::set<std::shared_ptr<Watcher>> watchers_;
  bool listening_ = false;  // the registry's alias listener is set
  bool closed_ = false;     // shutting down: new watches end at once
  bool stop_ = false;       // the destructor runs
  std::thread thread_;
};

}  // namespace transferd::rpc
