// A fixed pool of threads that runs closures in submission order: the
// engine's place for slow work that front ends must not do on their own
// threads (gRPC callback threads, HTTP handlers): decoding uploads and
// images to predict, SQLite reads for watchers, writing and checking model
// archives. Front ends start the work here and only write its result.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace transferd::core {

class Executor {
 public:
  struct Options {
    int threads = 2;
    std::string name = "executor";  // thread names: "<name>-<i>", 15 bytes max
  };
  explicit Executor(Options options);
  // Runs what was scheduled before it, then joins the threads.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `work`; a closure scheduled after shutdown began runs on the
  // calling thread (nothing is dropped, nothing runs twice).
  void Schedule(std::function<void()> work);

  // Closures queued and not yet started.
  size_t queued() const;

 private:
  void Loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace transferd::core
