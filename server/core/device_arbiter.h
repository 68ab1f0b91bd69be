// Shares the compute device between its two users: the job worker (training
// steps, predict-job batches) and the predictor (interactive Predict
// batches). One holds the device at a time, for one step or one batch;
// interactive batches go first, so a predict request waits for at most the
// training step in progress, yet a steady stream of them cannot stop a job:
// after kMaxInteractiveStreak interactive turns in a row while background
// work waits, background gets one turn.
//
// A background turn can also give way inside its work: the thread that holds
// it calls DeviceArbiter::YieldPoint() where the work can pause (between a
// backbone's blocks, in the forward and in the backward), and an interactive
// batch that waits then runs there, so that a Predict waits for one block of
// a training step rather than the whole step.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

namespace transferd::core {

class DeviceArbiter {
 public:
  enum class Priority { kInteractive, kBackground };
  static constexpr int kMaxInteractiveStreak = 4;

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

  // On a thread that holds a background turn: when interactive work waits,
  // lets it have the device now and takes the turn back after it (as a
  // background turn: up to kMaxInteractiveStreak interactive turns first).
  // Anywhere else (no turn, an interactive turn, another thread): nothing.
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

 private:
  void AcquireTurn(Priority priority) {
    std::unique_lock<std::mutex> lock(mu_);
    if (priority == Priority::kInteractive) {
      ++interactive_waiting_;
      cv_.wait(lock, [&] {
        return !busy_ &&
               (background_waiting_ == 0 || streak_ < kMaxInteractiveStreak);
      });
      --interactive_waiting_;
      if (background_waiting_ > 0) ++streak_;
      ++interactive_turns_;
    } else {
      ++background_waiting_;
      cv_.wait(lock, [&] {
        return !busy_ &&
               (interactive_waiting_ == 0 || streak_ >= kMaxInteractiveStreak);
      });
      --background_waiting_;
      streak_ = 0;
      ++background_turns_;
    }
    busy_ = true;
  }

 public:
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
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
  // Interactive turns taken inside a background turn through YieldPoint.
  int64_t yields() const {
    std::lock_guard<std::mutex> lock(mu_);
    return yields_;
  }

 private:
  void Yield() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (interactive_waiting_ == 0) return;
      ++yields_;
      busy_ = false;
    }
    cv_.notify_all();
    AcquireTurn(Priority::kBackground);
  }

  // The arbiter whose background turn this thread holds, if any.
  static inline thread_local DeviceArbiter* yielding_ = nullptr;

  std::function<void(bool, double)> observer_;
  bool yielding_enabled_ = true;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  int interactive_waiting_ = 0;
  int background_waiting_ = 0;
  int streak_ = 0;
  int64_t interactive_turns_ = 0;
  int64_t background_turns_ = 0;
  int64_t yields_ = 0;
};

}  // namespace transferd::core
