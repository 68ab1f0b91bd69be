// Shares the compute device between its two users: the job worker (training
// steps, predict-job batches) and the predictor (interactive Predict
// batches). One holds the device at a time, for one step or one batch.
//
// Interactive batches go first, within a share of the device time: while
// background work waits for (or holds) the device, interactive turns may take
// at most `interactive_share` of the time both sides use, plus a burst. The
// arbiter keeps that as a credit in seconds: background device time adds
// share x t, interactive device time taken while background waits removes
// (1 - share) x t, and the credit never exceeds the burst. An interactive
// turn goes first while the credit is positive; when it is spent, background
// goes first until its own device time has earned the credit back. So a
// steady stream of Predict batches cannot take more than the share from a
// job, and a job cannot delay Predict batches that stay within it. With no
// background work, interactive turns take the whole device and spend nothing.
//
// A background turn also gives way inside its work: the thread that holds it
// calls DeviceArbiter::YieldPoint() where the work can pause (between a
// backbone's blocks, in the forward and in the backward), and an interactive
// batch that waits (with credit) runs there, so that a Predict waits for one
// block of a training step rather than the whole step. Work handed over with
// RunInteractive runs there on the holder's own thread, with its OpenMP team
// already awake: no hand-off of the device to another thread and back, and no
// second team whose workers compete with the first's still-spinning ones for
// the cores. Interactive Turns get the device handed over instead.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <utility>

namespace transferd::core {

class DeviceArbiter {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Priority { kInteractive, kBackground };

  struct Options {
    // Most of the device time interactive turns take while background work
    // waits for the device, in (0, 1).
    double interactive_share = 0.10;
    // Interactive device time that may run ahead of the share: the credit's
    // cap, and what it starts at.
    std::chrono::microseconds burst{50000};
    // Where turns read the time (tests set a clock of their own).
    std::function<Clock::time_point()> now = [] { return Clock::now(); };
  };

  DeviceArbiter() : DeviceArbiter(Options()) {}
  explicit DeviceArbiter(Options options)
      : options_(std::move(options)),
        credit_(std::chrono::duration<double>(options_.burst).count()) {}

  // Holds the device until destroyed.
  class Turn {
   public:
    Turn(DeviceArbiter* arbiter, Priority priority)
        : arbiter_(arbiter), outer_(yielding_) {
      if (arbiter_ == nullptr) return;
      arbiter_->Acquire(priority);
      if (priority == Priority::kBackground) yielding_ = arbiter_;
    }
    ~Turn() {
      if (arbiter_ == nullptr) return;
      yielding_ = outer_;
      arbiter_->Release();
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    DeviceArbiter* arbiter_;
    DeviceArbiter* outer_;  // this thread's yielding turn before this one
  };

  // On a thread that holds a background turn: when interactive work waits
  // and has credit, lets it have the device now and takes the turn back after
  // it. Anywhere else (no turn, an interactive turn, another thread):
  // nothing.
  static void YieldPoint() {
    if (yielding_ != nullptr && yielding_->yielding_enabled_) {
      yielding_->Yield();
    }
  }
  // Whether this thread holds a background turn that YieldPoint can yield
  // (a backward hook is only worth registering then).
  static bool CanYield() {
    return yielding_ != nullptr && yielding_->yielding_enabled_;
  }

  // Told how long each turn waited (metrics); set before the device is
  // shared.
  void SetWaitObserver(
      std::function<void(bool interactive, double seconds)> observer) {
    observer_ = std::move(observer);
  }

  // Whether background turns give way at YieldPoint (default on); set before
  // the device is shared.
  void SetYielding(bool on) { yielding_enabled_ = on; }

  // The share and burst of Options; set before the device is shared.
  void SetInteractiveShare(double share, std::chrono::microseconds burst) {
    std::lock_guard<std::mutex> lock(mu_);
    options_.interactive_share = share;
    options_.burst = burst;
    credit_ = std::chrono::duration<double>(burst).count();
  }

  // Runs `work` as an interactive turn and returns when it has run: on this
  // thread once the device is free for it, or earlier on the thread that
  // holds a background turn, at its next yield point. Whatever `work`
  // throws is rethrown here. It must not depend on thread-local state it
  // does not set itself (grad mode, autocast).
  void RunInteractive(const std::function<void()>& work) {
    const auto start = std::chrono::steady_clock::now();
    Task task;
    task.work = &work;
    std::unique_lock<std::mutex> lock(mu_);
    tasks_.push_back(&task);
    ++interactive_waiting_;
    cv_.wait(lock, [&] { return task.taken || InteractiveMayGo(); });
    if (task.taken) {
      cv_.wait(lock, [&] { return task.done; });
      lock.unlock();
      if (observer_) {
        observer_(true,
                  std::chrono::duration<double>(task.started - start).count());
      }
      if (task.error) std::rethrow_exception(task.error);
      return;
    }
    tasks_.erase(std::find(tasks_.begin(), tasks_.end(), &task));
    --interactive_waiting_;
    ++interactive_turns_;
    Grant(Priority::kInteractive);
    lock.unlock();
    if (observer_) {
      observer_(true, std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count());
    }
    struct ReleaseOnExit {
      DeviceArbiter* arbiter;
      ~ReleaseOnExit() { arbiter->Release(); }
    } release{this};
    work();
  }

  void Acquire(Priority priority) {
    const auto start = std::chrono::steady_clock::now();
    AcquireTurn(priority);
    if (observer_) {
      observer_(priority == Priority::kInteractive,
                std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                              start)
                    .count());
    }
  }

  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      EndHold();
    }
    cv_.notify_all();
  }

  // Threads waiting for a turn now.
  int waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return interactive_waiting_ + background_waiting_;
  }
  int64_t interactive_turns() const {
    std::lock_guard<std::mutex> lock(mu_);
    return interactive_turns_;
  }
  int64_t background_turns() const {
    std::lock_guard<std::mutex> lock(mu_);
    return background_turns_;
  }
  // Interactive turns taken inside a background turn through YieldPoint
  // (handed over, or run there).
  int64_t yields() const {
    std::lock_guard<std::mutex> lock(mu_);
    return yields_;
  }
  // Interactive device time (seconds) taken while background work waited:
  // what the share limits.
  double contended_interactive_seconds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return contended_interactive_seconds_;
  }
  // The credit now (seconds; negative: interactive turns wait for
  // background work to earn it back).
  double credit_seconds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return credit_;
  }

 private:
  void AcquireTurn(Priority priority) {
    std::unique_lock<std::mutex> lock(mu_);
    if (priority == Priority::kInteractive) {
      ++interactive_waiting_;
      cv_.wait(lock, [&] { return InteractiveMayGo(); });
      --interactive_waiting_;
      ++interactive_turns_;
    } else {
      ++background_waiting_;
      cv_.wait(lock, [&] {
        return !busy_ && (interactive_waiting_ == 0 || credit_ <= 0);
      });
      --background_waiting_;
      ++background_turns_;
    }
    Grant(priority);
  }

  // Under mu_: whether a waiting interactive turn may take the device now.
  bool InteractiveMayGo() const {
    return !busy_ && (background_waiting_ == 0 || credit_ > 0);
  }

  // Under mu_: `priority` holds the device from now.
  void Grant(Priority priority) {
    busy_ = true;
    holder_ = priority;
    held_since_ = options_.now();
  }

  // Settles the device time of the hold in progress with the credit (under
  // mu_); the hold goes on from now.
  void Settle() {
    const Clock::time_point now = options_.now();
    const double t = std::chrono::duration<double>(now - held_since_).count();
    held_since_ = now;
    const double share = options_.interactive_share;
    if (holder_ == Priority::kBackground) {
      credit_ = std::min(std::chrono::duration<double>(options_.burst).count(),
                         credit_ + share * t);
    } else if (background_waiting_ > 0 || running_inline_) {
      credit_ -= (1 - share) * t;
      contended_interactive_seconds_ += t;
    }
  }

  void EndHold() {
    Settle();
    busy_ = false;
  }

  void Yield() {
    std::unique_lock<std::mutex> lock(mu_);
    if (interactive_waiting_ == 0) return;
    Settle();
    if (credit_ <= 0) return;
    if (!tasks_.empty()) {
      RunTasksHere(lock);
      return;
    }
    ++yields_;
    busy_ = false;
    lock.unlock();
    cv_.notify_all();
    AcquireTurn(Priority::kBackground);
  }

  // At a yield point (under mu_, background time settled): runs the waiting
  // RunInteractive work on this thread while the credit lasts, each as an
  // interactive turn inside the background one.
  void RunTasksHere(std::unique_lock<std::mutex>& lock) {
    DeviceArbiter* const yielding = yielding_;
    yielding_ = nullptr;  // the work must not yield to itself
    while (!tasks_.empty() && credit_ > 0) {
      Task* task = tasks_.front();
      tasks_.pop_front();
      task->taken = true;
      --interactive_waiting_;
      ++interactive_turns_;
      ++yields_;
      holder_ = Priority::kInteractive;
      running_inline_ = true;
      held_since_ = options_.now();
      task->started = std::chrono::steady_clock::now();
      lock.unlock();
      try {
        (*task->work)();
      } catch (...) {
        task->error = std::current_exception();
      }
      lock.lock();
      Settle();
      running_inline_ = false;
      holder_ = Priority::kBackground;
      task->done = true;
      cv_.notify_all();
    }
    yielding_ = yielding;
  }

  struct Task {
    const std::function<void()>* work = nullptr;
    bool taken = false;  // by a background holder, which runs it
    bool done = false;
    std::chrono::steady_clock::time_point started;
    std::exception_ptr error;
  };

  // The arbiter whose background turn this thread holds, if any.
  static inline thread_local DeviceArbiter* yielding_ = nullptr;

  Options options_;
  std::function<void(bool, double)> observer_;
  bool yielding_enabled_ = true;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  Priority holder_ = Priority::kBackground;
  Clock::time_point held_since_;
  double credit_;  // seconds
  int interactive_waiting_ = 0;
  int background_waiting_ = 0;
  int64_t interactive_turns_ = 0;
  int64_t background_turns_ = 0;
  int64_t yields_ = 0;
  double contended_interactive_seconds_ = 0;
  std::deque<Task*> tasks_;      // RunInteractive work waiting, oldest first
  bool running_inline_ = false;  // a background holder runs a task
};

}  // namespace transferd::core
