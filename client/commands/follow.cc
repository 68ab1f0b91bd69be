// Following a job to its end: WatchPrinter prints its events the way Keras'
// fit() prints progress, FollowJob turns how it ended into an exit code.
#include "client/commands/follow.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands/output.h"

namespace transferd::client::commands {

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

int TotalEpochs(const v1::Job& job) {
  if (job.progress().epochs() > 0) return job.progress().epochs();
  int total = 0;
  for (const v1::StageSpec& s : job.resolved_spec().stages()) {
    total += s.epochs();
  }
  return total;
}

namespace {

// Keras' ETA format: "41s", "3:05", "1:02:03".
std::string KerasEta(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  }
  if (s >= 60) return absl::StrFormat("%d:%02d", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

// Prints a job's events the way Keras' fit() prints progress: "Epoch 3/30",
// then on a terminal a bar redrawn in place, and a summary line per epoch.
// Off a terminal only whole lines (no \r): per epoch its header and
// summary, plus stage, state, checkpoint, log and evaluation lines. With
// --json each event is one line of protobuf JSON.
class WatchPrinter {
 public:
  WatchPrinter(bool tty, bool json, const v1::Job& job)
      : tty_(tty), json_(json), job_(job), total_epochs_(TotalEpochs(job)) {}

  void Event(const v1::JobEvent& e) {
    reconnecting_ = false;
    if (json_) {
      std::cout << OneLineJson(e) << '\n' << std::flush;
      if (e.has_state_changed()) NoteState(e.state_changed());
      return;
    }
    switch (e.event_case()) {
      case v1::JobEvent::kStep:
        Step(e.step());
        break;
      case v1::JobEvent::kEpochEnd:
        EpochEnd(e.epoch_end());
        break;
      case v1::JobEvent::kStageStarted:
        Stage(e.stage_started());
        break;
      case v1::JobEvent::kStateChanged:
        State(e.state_changed());
        break;
      case v1::JobEvent::kCheckpointSaved: {
        const v1::CheckpointSaved& c = e.checkpoint_saved();
        Line(absl::StrFormat("checkpoint: epoch %d, %s", c.epoch(),
                             HumanBytes(c.bytes())),
             /*dim=*/true);
        break;
      }
      case v1::JobEvent::kEvaluation:
        Evaluation(e.evaluation());
        break;
      case v1::JobEvent::kLog:
        Line(absl::StrCat(e.log().level().empty() ? "info" : e.log().level(),
                          ": ", e.log().message()),
             e.log().level() != "warning");
        break;
      default:
        break;
    }
    std::cout << std::flush;
  }

  // The stream broke; told once per outage, on stderr.
  void Reconnecting(const absl::Status& why, int64_t after) {
    if (reconnecting_) return;
    reconnecting_ = true;
    CloseBar();
    std::cout << std::flush;
    std::fprintf(
        stderr,
        "transferctl: connection lost (%s); reconnecting, resuming after "
        "event %lld\n",
        std::string(why.message()).c_str(), static_cast<long long>(after));
  }

  // Ends a bar being drawn, so what follows starts on its own line.
  void CloseBar() {
    if (bar_open_) {
      std::cout << "\r\033[K";
      bar_open_ = false;
    }
  }

  std::optional<v1::JobState> final_state() const { return final_state_; }
  const std::string& final_message() const { return final_message_; }

 private:
  void Line(const std::string& text, bool dim = false) {
    CloseBar();
    if (tty_ && dim) {
      std::cout << "\033[2m" << text << "\033[0m\n";
    } else {
      std::cout << text << '\n';
    }
  }

  void EpochHeader(int epoch) {
    if (header_epoch_ == epoch) return;
    header_epoch_ = epoch;
    if (job_.resolved_spec().kind() == v1::JOB_KIND_PREDICT) {
      Line("Predicting");
      return;
    }
    Line(total_epochs_ > 0
             ? absl::StrFormat("Epoch %d/%d", epoch, total_epochs_)
             : absl::StrFormat("Epoch %d", epoch));
  }

  void Step(const v1::StepProgress& s) {
    steps_ = s.steps();
    if (!tty_) return;  // pipes get the epoch's summary line only
    EpochHeader(s.epoch());
    const int width = static_cast<int>(absl::StrCat(s.steps()).size());
    std::cout << absl::StrFormat(
        "\r%*d/%d %s - ETA: %s - loss: %.4f - accuracy: %.4f\033[K", width,
        s.step(), s.steps(), Bar(s.step(), s.steps()),
        KerasEta(s.eta_seconds()), s.loss(), s.accuracy());
    bar_open_ = true;
  }

  static std::string Bar(int64_t step, int64_t steps) {
    constexpr int64_t kWidth = 30;
    const int64_t filled =
        steps > 0 ? std::min<int64_t>(kWidth, kWidth * step / steps) : 0;
    std::string bar = "[";
    if (filled > 0) {
      bar += std::string(static_cast<size_t>(filled - 1), '=');
      bar += step < steps ? '>' : '=';
    }
    bar += std::string(static_cast<size_t>(kWidth - filled), '.');
    bar += ']';
    return bar;
  }

  void EpochEnd(const v1::EpochMetrics& m) {
    EpochHeader(m.epoch());
    std::string line;
    if (steps_ > 0) line = absl::StrFormat("%d/%d - ", steps_, steps_);
    absl::StrAppend(&line,
                    absl::StrFormat("%ds - loss: %.4f - accuracy: %.4f",
                                    static_cast<int64_t>(m.seconds() + 0.5),
                                    m.loss(), m.accuracy()));
    if (m.has_val_loss()) {
      absl::StrAppend(&line,
                      absl::StrFormat(" - val_loss: %.4f", m.val_loss()));
    }
    if (m.has_val_accuracy()) {
      absl::StrAppend(
          &line, absl::StrFormat(" - val_accuracy: %.4f", m.val_accuracy()));
    }
    Line(line);
    steps_ = 0;
  }

  void Stage(const v1::StageStarted& s) {
    const int stages = job_.resolved_spec().stages_size();
    std::string head =
        stages > 0 ? absl::StrFormat("Stage %d/%d", s.stage() + 1, stages)
                   : absl::StrFormat("Stage %d", s.stage() + 1);
    if (!s.name().empty()) absl::StrAppend(&head, " \"", s.name(), "\"");
    absl::StrAppend(&head, ": ", TrainableText(s.trainable()),
                    s.uses_feature_cache() ? "; backbone features cached"
                                           : "; no feature cache");
    Line(head);
    const v1::StageSpec* spec = s.has_spec() ? &s.spec() : nullptr;
    if (spec == nullptr && s.stage() >= 0 && s.stage() < stages) {
      spec = &job_.resolved_spec().stages(s.stage());
    }
    if (spec != nullptr) Line("  " + StageText(*spec));
  }

  void NoteState(const v1::StateChanged& s) {
    if (IsTerminal(s.state())) {
      final_state_ = s.state();
      final_message_ = s.message();
    }
  }

  void State(const v1::StateChanged& s) {
    NoteState(s);
    std::string line = "state: " + StateText(s.state());
    if (!s.message().empty()) absl::StrAppend(&line, " (", s.message(), ")");
    Line(line);
  }

  void Evaluation(const v1::Evaluation& e) {
    std::string line = absl::StrFormat(
        "evaluation %s: %d examples - loss: %.4f - accuracy: %.4f", e.split(),
        e.examples(), e.loss(), e.accuracy());
    if (e.roc_auc() > 0) {
      absl::StrAppend(&line, absl::StrFormat(" - roc_auc: %.4f", e.roc_auc()));
    }
    Line(line);
  }

  const bool tty_;
  const bool json_;
  const v1::Job job_;
  const int total_epochs_;
  int header_epoch_ = 0;
  int64_t steps_ = 0;
  bool bar_open_ = false;
  bool reconnecting_ = false;
  std::optional<v1::JobState> final_state_;
  std::string final_message_;
};

// Set by the first Ctrl-C of a watch: the watch ends, the job keeps running.
// The handler then restores the default, so a second Ctrl-C kills.
std::atomic<bool> g_detach{false};
void OnWatchInterrupt(int) {
  g_detach.store(true);
  std::signal(SIGINT, SIG_DFL);
}

// The exit code of `job` once its event stream has ended, from its state as
// the server now reports it, else from the last state event seen (`state`,
// `message`); prints the model it made or why it failed.
int EndedExitCode(const Globals& g, Client& client, const v1::Job& job,
                  std::optional<v1::JobState> state, std::string message) {
  absl::StatusOr<v1::Job> now = client.GetJob(job.name());
  if (now.ok()) {
    if (!state.has_value() || IsTerminal(now->state())) state = now->state();
    if (!now->failure_reason().empty()) message = now->failure_reason();
  }
  if (!state.has_value()) {
    if (!now.ok()) return Fail(now.status());
    return kOk;
  }
  switch (*state) {
    case v1::JOB_STATE_SUCCEEDED:
      if (!g.json && now.ok() && !now->result_model().empty()) {
        std::cout << "model: " << now->result_model() << "\n";
      }
      return kOk;
    case v1::JOB_STATE_FAILED:
      std::fprintf(stderr, "transferctl: %s failed: %s\n", job.name().c_str(),
                   message.empty() ? "no reason given" : message.c_str());
      return kServerError;
    case v1::JOB_STATE_CANCELLED:
      std::fprintf(stderr, "transferctl: %s was cancelled\n",
                   job.name().c_str());
      return kServerError;
    default:
      return kOk;
  }
}

}  // namespace

int FollowJob(const Globals& g, Client& client, const v1::Job& job,
              int64_t after) {
  const bool tty = !g.json && isatty(STDOUT_FILENO) == 1;
  WatchPrinter printer(tty, g.json, job);
  transferd::client::WatchOptions options;
  options.cancel = &g_detach;
  options.on_reconnect = [&](const absl::Status& why, int64_t seq) {
    printer.Reconnecting(why, seq);
  };
  g_detach.store(false);
  std::signal(SIGINT, OnWatchInterrupt);
  absl::Status status = client.WatchJob(
      job.name(), after, /*follow=*/true,
      [&](const v1::JobEvent& e) { printer.Event(e); }, options);
  std::signal(SIGINT, SIG_DFL);
  printer.CloseBar();
  std::cout << std::flush;
  if (g_detach.load()) {
    // On a terminal the line holding "^C" is ended first.
    std::fprintf(
        stderr,
        "%sdetached; the job keeps running: transferctl jobs watch %s\n",
        isatty(STDERR_FILENO) == 1 ? "\n" : "", job.name().c_str());
    return kOk;
  }
  if (!status.ok()) {
    if (transferd::client::IsUnreachable(status)) {
      std::fprintf(stderr,
                   "transferctl: %s\nthe job may still be running: transferctl "
                   "jobs watch %s\n",
                   std::string(status.message()).c_str(), job.name().c_str());
      return kUnreachable;
    }
    return Fail(status);
  }
  // The stream ended after the terminal state event; the job as it ended
  // says which model it made.
  return EndedExitCode(g, client, job, printer.final_state(),
                       printer.final_message());
}

}  // namespace transferd::client::commands
