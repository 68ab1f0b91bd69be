// JobStore on a real SQLite store: rows as inserted, events numbered per job
// (also across a reopen), state changes setting start and end times from the
// clock, the FIFO pick, pages of jobs and of a PREDICT job's rows.
#include "server/core/jobs/job_store.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/store.h"
#include "tests/support/subprocess.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using Time = std::chrono::system_clock::time_point;

Time At(int64_t second) {
  return FromUnixMillis(1'700'000'000'000 + second * 1000);
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Store::Options so;
    so.path = fs::path(temp_.path()) / "jobs.db";
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    jobs_ = Open();
  }

  std::unique_ptr<JobStore> Open() {
    auto jobs = std::make_unique<JobStore>(store_.get(),
                                           [this] { return At(now_.load()); });
    EXPECT_TRUE(jobs->Load().ok());
    return jobs;
  }

  static NewJob Job(const std::string& id, JobKind kind = JobKind::kTrain) {
    NewJob job;
    job.id = id;
    job.kind = kind;
    job.dataset_id = "ds";
    job.spec_blob = std::string("\x01\x00\xff", 3);
    train::StageConfig a, b;
    a.epochs = 2;
    b.epochs = 3;
    job.config.stages = {a, b};
    job.config.predict_classes = {"cat", "dog"};
    return job;
  }

  std::vector<std::string> Ids(std::optional<JobState> state, int page_size,
                               std::string* token) {
    auto list = jobs_->List(page_size, *token, state, std::nullopt, token);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> out;
    if (list.ok()) {
      for (const JobRecord& r : *list) out.push_back(r.id);
    }
    return out;
  }

  transferd::testing::TempDir temp_;
  std::unique_ptr<Store> store_;
  std::atomic<int64_t> now_{0};
  std::unique_ptr<JobStore> jobs_;
};

TEST_F(JobStoreTest, InsertedJobReadsBack) {
  now_ = 5;
  ASSERT_TRUE(jobs_->Insert(Job("j-a")).ok());
  absl::StatusOr<JobRecord> job = jobs_->Get("j-a");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->dataset_id, "ds");
  EXPECT_EQ(job->spec_blob, std::string("\x01\x00\xff", 3));
  EXPECT_EQ(job->create_time, At(5));
  EXPECT_EQ(job->start_time, Time());
  EXPECT_EQ(job->progress.stages, 2);
  EXPECT_EQ(job->progress.epochs, 5);
  EXPECT_EQ(job->config.stages.size(), 2u);
  EXPECT_EQ(job->last_event_sequence, 1);
  auto first = jobs_->Events("j-a", 0, 10);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0].sequence, 1);
  EXPECT_EQ((*first)[0].type, JobEvent::Type::kStateChanged);
  EXPECT_EQ((*first)[0].state, JobState::kQueued);
  EXPECT_EQ((*first)[0].message, "queued");
  EXPECT_EQ((*first)[0].time, At(5));

  absl::Status again = jobs_->Insert(Job("j-a"));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(again.message(), "job \"j-a\" already exists");
  EXPECT_EQ(jobs_->Get("j-b").status().message(), "job \"j-b\" not found");
}

TEST_F(JobStoreTest, EventsAreNumberedAndStateChangesSetTimes) {
  now_ = 1;
  ASSERT_TRUE(jobs_->Insert(Job("j-a")).ok());  // event 1: queued
  ASSERT_TRUE(jobs_->Insert(Job("j-b")).ok());
  now_ = 2;
  ASSERT_TRUE(jobs_->SetState("j-a", JobState::kRunning, "started").ok());
  JobEvent log;
  log.type = JobEvent::Type::kLog;
  log.level = "warning";
  log.message = "hot";
  ASSERT_TRUE(jobs_->Append("j-a", log).ok());
  now_ = 3;
  ASSERT_TRUE(jobs_->SetState("j-a", JobState::kFailed, "boom").ok());

  auto events = jobs_->Events("j-a", 0, 10);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<int64_t> seqs;
  std::vector<Time> times;
  for (const JobEvent& e : *events) {
    seqs.push_back(e.sequence);
    times.push_back(e.time);
  }
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(times, ElementsAre(At(1), At(2), At(2), At(3)));
  EXPECT_EQ((*events)[2].level, "warning");
  EXPECT_EQ((*events)[2].message, "hot");
  JobRecord a = *jobs_->Get("j-a");
  EXPECT_EQ(a.state, JobState::kFailed);
  EXPECT_EQ(a.failure_reason, "boom");
  EXPECT_EQ(a.start_time, At(2));
  EXPECT_EQ(a.end_time, At(3));
  EXPECT_EQ(a.last_event_sequence, 4);
  EXPECT_EQ(jobs_->Get("j-b")->last_event_sequence, 1);

  // A store opened later goes on from the stored numbers.
  jobs_ = Open();
  ASSERT_TRUE(jobs_->Append("j-a", log).ok());
  ASSERT_TRUE(jobs_->Append("j-b", log).ok());
  EXPECT_EQ(jobs_->Get("j-a")->last_event_sequence, 5);
  EXPECT_EQ(jobs_->Events("j-b", 1, 10)->at(0).sequence, 2);
}

// A worker that starts a job the moment it is visible (as JobQueue's does)
// still finds "queued" as its event 1: job and first event are one write, and
// events from two threads commit in sequence order.
TEST_F(JobStoreTest, AWorkerStartingAJobAtOnceComesAfterItsQueuedEvent) {
  constexpr int kJobs = 60;
  std::atomic<bool> done{false};
  std::atomic<int> started{0};
  std::string worker_error;
  std::thread worker([&] {
    while (started.load() < kJobs) {
      std::optional<std::string> id = jobs_->NextQueued();
      if (!id.has_value()) {
        if (done.load() && !jobs_->NextQueued().has_value()) return;
        continue;  // polls, like a worker woken for every insert
      }
      for (JobState state : {JobState::kRunning, JobState::kSucceeded}) {
        absl::Status s = jobs_->SetState(*id, state, JobStateName(state));
        if (!s.ok()) {
          worker_error = s.ToString();
          return;
        }
      }
      started.fetch_add(1);
    }
  });
  for (int i = 0; i < kJobs; ++i) {
    absl::Status inserted = jobs_->Insert(Job(absl::StrCat("j-", i)));
    EXPECT_TRUE(inserted.ok()) << inserted;
    if (!inserted.ok()) break;  // the worker then stops when done is set
  }
  done = true;
  worker.join();
  ASSERT_EQ(worker_error, "");
  ASSERT_EQ(started.load(), kJobs);
  for (int i = 0; i < kJobs; ++i) {
    const std::string id = absl::StrCat("j-", i);
    auto events = jobs_->Events(id, 0, 10);
    ASSERT_TRUE(events.ok()) << events.status();
    std::vector<std::pair<int64_t, JobState>> got;
    for (const JobEvent& e : *events) got.emplace_back(e.sequence, e.state);
    EXPECT_THAT(got, ElementsAre(std::pair(1, JobState::kQueued),
                                 std::pair(2, JobState::kRunning),
                                 std::pair(3, JobState::kSucceeded)))
        << id;
    EXPECT_EQ(jobs_->Get(id)->state, JobState::kSucceeded) << id;
  }
}

TEST_F(JobStoreTest, NextQueuedTakesRunningJobsFirstThenTheOldest) {
  EXPECT_FALSE(jobs_->NextQueued().has_value());
  for (const char* id : {"j-c", "j-a", "j-b"}) {
    ASSERT_TRUE(jobs_->Insert(Job(id)).ok());
  }
  EXPECT_EQ(jobs_->NextQueued(), "j-c");
  ASSERT_TRUE(jobs_->SetState("j-b", JobState::kRunning, "started").ok());
  EXPECT_EQ(jobs_->NextQueued(), "j-b");
  EXPECT_THAT(*Open()->Load(), ElementsAre("j-b"));
  EXPECT_EQ(jobs_->UserOf("dataset_id", "ds"), "jobs/j-c");
  EXPECT_EQ(jobs_->UserOf("dataset_id", "other"), "");
  ASSERT_TRUE(jobs_->SetState("j-b", JobState::kSucceeded, "succeeded").ok());
  ASSERT_TRUE(jobs_->SetState("j-c", JobState::kCancelled, "cancelled").ok());
  EXPECT_EQ(jobs_->NextQueued(), "j-a");
  ASSERT_TRUE(jobs_->SetState("j-a", JobState::kFailed, "boom").ok());
  EXPECT_FALSE(jobs_->NextQueued().has_value());
  EXPECT_EQ(jobs_->UserOf("dataset_id", "ds"), "");
}

TEST_F(JobStoreTest, ListsNewestFirstInPages) {
  for (const char* id : {"j-c", "j-a", "j-b"}) {
    ASSERT_TRUE(jobs_->Insert(Job(id)).ok());
  }
  ASSERT_TRUE(jobs_->SetState("j-a", JobState::kRunning, "started").ok());
  std::string token;
  EXPECT_THAT(Ids(std::nullopt, 2, &token), ElementsAre("j-b", "j-a"));
  EXPECT_EQ(token, "2");
  EXPECT_THAT(Ids(std::nullopt, 2, &token), ElementsAre("j-c"));
  EXPECT_EQ(token, "");
  EXPECT_THAT(Ids(JobState::kQueued, 0, &token), ElementsAre("j-b", "j-c"));
}

TEST_F(JobStoreTest, PredictionRowsReadBackInPages) {
  ASSERT_TRUE(jobs_->Insert(Job("j-p", JobKind::kPredict)).ok());
  ASSERT_TRUE(jobs_->Insert(Job("j-t")).ok());
  EXPECT_EQ(*jobs_->NextPredictionIndex("j-p"), 0);
  std::vector<FilePredictionRecord> rows(3);
  for (int i = 0; i < 3; ++i) {
    rows[i].client_path = "f" + std::to_string(i) + ".jpg";
    rows[i].split = i == 2 ? common::Split::kTest : common::Split::kTrain;
    rows[i].true_label = "cat";
    rows[i].label = i == 1 ? "dog" : "cat";
    rows[i].probabilities = {0.25f + 0.5f * (i != 1), 0.75f - 0.5f * (i != 1)};
  }
  rows[1].status_code = 3;
  rows[1].status_message = "corrupt";
  rows[1].probabilities.clear();
  rows[1].label.clear();
  ASSERT_TRUE(
      jobs_
          ->PutPredictions("j-p", 0, rows,
                           {common::Split::kTrain, common::Split::kTrain,
                            common::Split::kTest})
          .ok());
  EXPECT_EQ(*jobs_->NextPredictionIndex("j-p"), 3);

  absl::StatusOr<PredictionsPage> page = jobs_->Predictions("j-p", 2, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(page->classes, ElementsAre("cat", "dog"));
  ASSERT_EQ(page->predictions.size(), 2u);
  EXPECT_EQ(page->next_page_token, "2");
  EXPECT_EQ(page->predictions[0].client_path, "f0.jpg");
  EXPECT_EQ(page->predictions[0].split, common::Split::kTrain);
  EXPECT_THAT(page->predictions[0].probabilities, ElementsAre(0.75f, 0.25f));
  EXPECT_EQ(page->predictions[1].status_code, 3);
  EXPECT_EQ(page->predictions[1].status_message, "corrupt");
  page = jobs_->Predictions("j-p", 2, page->next_page_token);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->predictions.size(), 1u);
  EXPECT_EQ(page->predictions[0].split, common::Split::kTest);
  EXPECT_EQ(page->next_page_token, "");

  absl::StatusOr<PredictionsPage> other = jobs_->Predictions("j-t", 0, "");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace transferd::core
