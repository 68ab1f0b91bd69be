// Shares the compute device between its two users: the job worker (training
// steps, predict-job batches) and the predictor (interactive Predict
// batches). One holds the device at a time, for one step or one batch;
// interactive batches go first, so a predict request waits for at most the
// training step in progress, yet a steady stream of them cannot stop a job:
// after kMaxInteractiveStreak interactive turns in a row while background
// work waits, background gets one turn.
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
    Turn(DeviceArbiter* arbiter, Priority priority) : arbiter_(arbiter) {
      if (arbiter_ != nullptr) arbiter_->Acquire(priority);
    }
    ~Turn() {
      if (arbiter_ != nullptr) arbiter_->Release();
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    DeviceArbiter* arbiter_;
  };

  // Told how long each turn waited (metrics); set before the device is
  // shared.
  void SetWaitObserver(
      std::function<void(bool interactive, double seconds)> observer) {
    observer_ = std::move(observer);
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

 private:
  std::function<void(bool, double)> observer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  int interactive_waiting_ = 0;
  int background_waiting_ = 0;
  int streak_ = 0;
  int64_t interactive_turns_ = 0;
  int64_t background_turns_ = 0;
};

}  // namespace transferd::core
