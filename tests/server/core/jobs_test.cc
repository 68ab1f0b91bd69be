// The job queue in-process, on a real store, dataset catalog and model
// registry, with fake runners and a fake clock: FIFO order one job at a time,
// cancellation of queued and running jobs, numbered events and woken
// watchers, resumption of a job a stopped queue left RUNNING, and times from
// the clock. Threads are synchronised with condition variables, never sleeps.
#include "server/core/jobs.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/core/datasets.h"
#include "server/core/jobs/job_store.h"
#include "server/core/registry.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/store.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_images.h"

namespace transferd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Time = std::chrono::system_clock::time_point;

// How long a test waits for something that should happen at once before it
// fails (a guard against hanging, never a means of synchronisation).
constexpr std::chrono::seconds kTimeout{30};

Time At(int64_t second) {
  return FromUnixMillis(1'700'000'000'000 + second * 1000);
}

// A runner that records what it runs. On entry it appends a log event and
// saves run state; a held job then stays in Run() until released, or until
// the queue's cancel check (polled, as the trainer polls it between batches)
// says stop, when it returns CANCELLED.
class FakeRunner : public JobRunner {
 public:
  struct Seen {
    JobState state = JobState::kQueued;  // as handed over
    int resumes = 0;
    bool cancelled = false;
  };

  void Hold(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    held_.insert(id);
  }
  void Release(const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_.erase(id);
    }
    cv_.notify_all();
  }
  void FailWith(const std::string& id, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    failures_[id] = std::move(status);
  }
  // Waits until job `id` entered Run() (its log event and run state stored).
  bool WaitStarted(const std::string& id) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kTimeout, [&] { return seen_.count(id) > 0; });
  }
  std::vector<std::string> log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  int max_running() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_running_;
  }
  Seen seen(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.at(id);
  }

  absl::Status Run(JobRecord& job, JobContext& ctx) override {
    JobEvent e;
    e.type = JobEvent::Type::kLog;
    e.level = "info";
    e.message = "running " + job.id;
    const absl::Status appended = ctx.Append(e);
    job.progress.step = 7;
    const absl::Status saved = ctx.SaveRunState(job);
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(appended.ok()) << appended;
    EXPECT_TRUE(saved.ok()) << saved;
    log_.push_back("begin " + job.id);
    max_running_ = std::max(max_running_, ++running_);
    Seen& seen = seen_[job.id];
    seen.state = job.state;
    seen.resumes = job.resumes;
    cv_.notify_all();
    while (held_.count(job.id) > 0 && !seen.cancelled) {
      if (ctx.Cancelled()) {
        seen.cancelled = true;
      } else {
        cv_.wait_for(lock, std::chrono::milliseconds(2));
      }
    }
    --running_;
    log_.push_back("end " + job.id);
    if (seen.cancelled) return absl::CancelledError("fake run cancelled");
    const auto failure = failures_.find(job.id);
    return failure == failures_.end() ? absl::OkStatus() : failure->second;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> held_;
  std::map<std::string, absl::Status> failures_;
  std::map<std::string, Seen> seen_;
  std::vector<std::string> log_;
  int running_ = 0, max_running_ = 0;
};

class JobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DataDir::Options o;
    o.root = fs::path(temp_.path()) / "data";
    auto dir = DataDir::Open(o);
    ASSERT_TRUE(dir.ok()) << dir.status();
    data_dir_ = std::move(*dir);
    Store::Options so;
    so.path = data_dir_->database_path();
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    DatasetLimits limits;
    limits.min_free_disk_bytes = 0;
    auto catalog = DatasetCatalog::Open(*store_, *data_dir_, limits);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    datasets_ = std::move(*catalog);
    auto registry = ModelRegistry::Open(*store_, *data_dir_);
    ASSERT_TRUE(registry.ok()) << registry.status();
    models_ = std::move(*registry);
    UploadDataset();
  }

  // Dataset "ds": two cats and two dogs, all in the training split.
  void UploadDataset() {
    UploadSpec spec;
    spec.id = "ds";
    auto upload = datasets_->BeginUpload(spec);
    ASSERT_TRUE(upload.ok()) << upload.status();
    int seed = 0;
    for (const char* label : {"cat", "dog"}) {
      for (int i = 0; i < 2; ++i, ++seed) {
        const std::string path =
            absl::StrCat("train/", label, ".", seed, ".png");
        const std::string bytes =
            transferd::testing::EncodeTestImage(32, 32, ".png", seed);
        UploadChunk c;
        c.path = path;
        c.size = static_cast<int64_t>(bytes.size());
        c.data = bytes;
        c.last = true;
        ASSERT_TRUE((*upload)->Add(c).ok());
      }
    }
    auto result = (*upload)->Commit();
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->accepted_files, 4);
  }

  std::unique_ptr<JobQueue> OpenQueue(std::shared_ptr<FakeRunner> runner) {
    JobQueue::Env env;
    env.store = store_.get();
    env.data_dir = data_dir_.get();
    env.datasets = datasets_.get();
    env.models = models_.get();
    env.runners[JobKind::kTrain] = std::move(runner);
    env.clock = [this] { return At(now_.load()); };
    auto queue = JobQueue::Open(std::move(env));
    EXPECT_TRUE(queue.ok()) << queue.status();
    return queue.ok() ? std::move(*queue) : nullptr;
  }

  // A valid TRAIN job on "ds": the smallest classifier, one stage.
  static NewJob TrainJob(const std::string& id) {
    NewJob job;
    job.id = id;
    job.kind = JobKind::kTrain;
    job.dataset_id = "ds";
    train::ModelConfig& m = job.config.model;
    m.backbone = "mobilenet";
    m.alpha = 0.25;
    m.weights = "none";
    m.input_size = 32;
    m.head.pooling = train::Pooling::kGlobalAverage;
    m.head.hidden_units = 8;
    m.head.dropout = 0;
    train::StageConfig stage;
    stage.name = "head";
    stage.epochs = 2;
    stage.batch_size = 2;
    job.config.stages = {stage};
    job.config.selection_metric = "accuracy";  // "ds" has no validation split
    return job;
  }

  static void Create(JobQueue& queue, const std::string& id) {
    absl::StatusOr<JobRecord> job = queue.Create(TrainJob(id));
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state, JobState::kQueued);
  }

  // Waits, on the queue's wake-ups, until job `id` is in `state`.
  static JobRecord WaitForState(JobQueue& queue, const std::string& id,
                                JobState state) {
    std::mutex mu;
    std::condition_variable cv;
    const int64_t handle = queue.Subscribe(id, [&] {
      std::lock_guard<std::mutex> lock(mu);
      cv.notify_all();
    });
    absl::StatusOr<JobRecord> job;
    bool reached;
    {
      std::unique_lock<std::mutex> lock(mu);
      reached = cv.wait_for(lock, kTimeout, [&] {
        job = queue.Get(id);
        return job.ok() && job->state == state;
      });
    }
    queue.Unsubscribe(handle);
    EXPECT_TRUE(reached) << "job " << id << " never reached "
                         << JobStateName(state) << "; it is "
                         << (job.ok() ? JobStateName(job->state)
                                      : "unreadable");
    return job.ok() ? *job : JobRecord();
  }

  static std::vector<std::string> Messages(JobQueue& queue,
                                           const std::string& id) {
    auto events = queue.Events(id, 0, 100);
    EXPECT_TRUE(events.ok()) << events.status();
    std::vector<std::string> out;
    if (!events.ok()) return out;
    for (const JobEvent& e : *events) out.push_back(e.message);
    return out;
  }

  transferd::testing::TempDir temp_;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DatasetCatalog> datasets_;
  std::unique_ptr<ModelRegistry> models_;
  std::atomic<int64_t> now_{0};  // seconds after At(0)
};

TEST_F(JobsTest, RunsJobsOneAtATimeInCreationOrder) {
  auto runner = std::make_shared<FakeRunner>();
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  // Ids out of alphabetical order: creation order is what counts.
  for (const char* id : {"j-c", "j-a", "j-b"}) Create(*queue, id);
  queue->Start();
  for (const char* id : {"j-c", "j-a", "j-b"}) {
    const JobRecord job = WaitForState(*queue, id, JobState::kSucceeded);
    EXPECT_EQ(job.progress.step, 7);  // the runner's saved run state
  }
  EXPECT_THAT(runner->log(), ElementsAre("begin j-c", "end j-c", "begin j-a",
                                         "end j-a", "begin j-b", "end j-b"));
  EXPECT_EQ(runner->max_running(), 1);
  EXPECT_EQ(runner->seen("j-a").state, JobState::kQueued);
  EXPECT_EQ(runner->seen("j-a").resumes, 0);
}

TEST_F(JobsTest, CreateChecksTheDataset) {
  auto queue = OpenQueue(std::make_shared<FakeRunner>());
  ASSERT_NE(queue, nullptr);
  NewJob job = TrainJob("j-x");
  job.dataset_id = "missing";
  absl::StatusOr<JobRecord> created = queue->Create(job);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(created.status().message(), HasSubstr("spec.dataset: "));
  EXPECT_EQ(queue->Get("j-x").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobsTest, CancelledQueuedJobNeverRuns) {
  auto runner = std::make_shared<FakeRunner>();
  runner->Hold("j-first");
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  queue->Start();
  Create(*queue, "j-first");
  ASSERT_TRUE(runner->WaitStarted("j-first"));
  Create(*queue, "j-second");
  Create(*queue, "j-third");

  absl::StatusOr<JobRecord> cancelled = queue->Cancel("j-second");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  runner->Release("j-first");
  WaitForState(*queue, "j-third", JobState::kSucceeded);

  EXPECT_THAT(runner->log(), ElementsAre("begin j-first", "end j-first",
                                         "begin j-third", "end j-third"));
  EXPECT_EQ(queue->Get("j-second")->state, JobState::kCancelled);
  EXPECT_THAT(Messages(*queue, "j-second"),
              ElementsAre("queued", "cancelled while queued"));
  absl::StatusOr<JobRecord> again = queue->Cancel("j-second");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.status().message(),
            "job \"j-second\" has already finished (CANCELLED)");
}

TEST_F(JobsTest, CancelStopsTheRunningJob) {
  auto runner = std::make_shared<FakeRunner>();
  runner->Hold("j-a");
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  Create(*queue, "j-a");
  Create(*queue, "j-b");
  queue->Start();
  ASSERT_TRUE(runner->WaitStarted("j-a"));

  absl::StatusOr<JobRecord> cancelling = queue->Cancel("j-a");
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  EXPECT_EQ(cancelling->state, JobState::kRunning);  // ends within one batch
  const JobRecord job = WaitForState(*queue, "j-a", JobState::kCancelled);
  EXPECT_TRUE(runner->seen("j-a").cancelled);
  EXPECT_EQ(job.failure_reason, "");
  EXPECT_THAT(Messages(*queue, "j-a"),
              ElementsAre("queued", "started", "running j-a", "cancelled"));
  // The cancel was for j-a only: the next job runs to its end.
  WaitForState(*queue, "j-b", JobState::kSucceeded);
  EXPECT_FALSE(runner->seen("j-b").cancelled);
}

TEST_F(JobsTest, FailedRunFailsTheJobWithItsMessage) {
  auto runner = std::make_shared<FakeRunner>();
  runner->FailWith("j-a", absl::InternalError("disk on fire"));
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  Create(*queue, "j-a");
  Create(*queue, "j-b");
  queue->Start();
  const JobRecord failed = WaitForState(*queue, "j-a", JobState::kFailed);
  EXPECT_EQ(failed.failure_reason, "disk on fire");
  WaitForState(*queue, "j-b", JobState::kSucceeded);
}

TEST_F(JobsTest, EventsAreNumberedInOrderAndWakeSubscribers) {
  auto runner = std::make_shared<FakeRunner>();
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  Create(*queue, "j-a");
  std::mutex mu;
  std::condition_variable cv;
  int wakes = 0;
  const int64_t handle = queue->Subscribe("j-a", [&] {
    std::lock_guard<std::mutex> lock(mu);
    ++wakes;
    cv.notify_all();
  });
  queue->Start();
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, kTimeout, [&] { return wakes > 0; }));
  }
  const JobRecord job = WaitForState(*queue, "j-a", JobState::kSucceeded);
  queue->Unsubscribe(handle);

  auto events = queue->Events("j-a", 0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 4u);
  const std::vector<JobEvent>& e = *events;
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(e[i].sequence, static_cast<int64_t>(i) + 1);
  }
  EXPECT_EQ(e[0].type, JobEvent::Type::kStateChanged);
  EXPECT_EQ(e[0].state, JobState::kQueued);
  EXPECT_EQ(e[1].state, JobState::kRunning);
  EXPECT_EQ(e[1].message, "started");
  EXPECT_EQ(e[2].type, JobEvent::Type::kLog);
  EXPECT_EQ(e[2].level, "info");
  EXPECT_EQ(e[2].message, "running j-a");
  EXPECT_EQ(e[3].state, JobState::kSucceeded);
  EXPECT_EQ(e[3].message, "succeeded");
  EXPECT_EQ(job.last_event_sequence, 4);

  auto page = queue->Events("j-a", 1, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].sequence, 2);
  EXPECT_EQ((*page)[1].sequence, 3);
}

TEST_F(JobsTest, NewQueueResumesTheJobAStoppedOneLeftRunning) {
  {
    auto runner = std::make_shared<FakeRunner>();
    runner->Hold("j-a");
    auto queue = OpenQueue(runner);
    ASSERT_NE(queue, nullptr);
    Create(*queue, "j-a");
    Create(*queue, "j-b");
    queue->Start();
    ASSERT_TRUE(runner->WaitStarted("j-a"));
    queue.reset();  // Stop(): the running job sees the cancel check
    EXPECT_TRUE(runner->seen("j-a").cancelled);
    EXPECT_THAT(runner->log(), ElementsAre("begin j-a", "end j-a"));
  }
  auto runner = std::make_shared<FakeRunner>();
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  EXPECT_EQ(queue->Get("j-a")->state, JobState::kRunning);
  EXPECT_EQ(queue->Get("j-b")->state, JobState::kQueued);
  queue->Start();
  WaitForState(*queue, "j-b", JobState::kSucceeded);
  const JobRecord a = WaitForState(*queue, "j-a", JobState::kSucceeded);
  EXPECT_THAT(runner->log(),
              ElementsAre("begin j-a", "end j-a", "begin j-b", "end j-b"));
  EXPECT_EQ(runner->seen("j-a").state, JobState::kRunning);
  EXPECT_EQ(runner->seen("j-a").resumes, 1);
  EXPECT_EQ(a.resumes, 1);
  EXPECT_THAT(Messages(*queue, "j-a"),
              ElementsAre("queued", "started", "running j-a",
                          "resumed after a server restart", "running j-a",
                          "succeeded"));
}

TEST_F(JobsTest, JobLeftRunningIsTakenBeforeOlderQueuedOnes) {
  {
    auto queue = OpenQueue(std::make_shared<FakeRunner>());
    ASSERT_NE(queue, nullptr);
    Create(*queue, "j-older");
    Create(*queue, "j-newer");
  }
  {
    // A server that died while it ran j-newer (as an older version might
    // have left things): the row says RUNNING.
    JobStore jobs(store_.get(), nullptr);
    ASSERT_TRUE(jobs.Load().ok());
    ASSERT_TRUE(jobs.SetState("j-newer", JobState::kRunning, "started").ok());
  }
  auto runner = std::make_shared<FakeRunner>();
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  queue->Start();
  WaitForState(*queue, "j-older", JobState::kSucceeded);
  WaitForState(*queue, "j-newer", JobState::kSucceeded);
  EXPECT_THAT(runner->log(), ElementsAre("begin j-newer", "end j-newer",
                                         "begin j-older", "end j-older"));
  EXPECT_EQ(runner->seen("j-newer").resumes, 1);
}

TEST_F(JobsTest, TimesComeFromTheClock) {
  auto runner = std::make_shared<FakeRunner>();
  runner->Hold("j-a");
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  now_ = 10;
  absl::StatusOr<JobRecord> created = queue->Create(TrainJob("j-a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->create_time, At(10));
  EXPECT_EQ(created->start_time, Time());
  EXPECT_EQ(created->end_time, Time());

  now_ = 20;
  queue->Start();
  ASSERT_TRUE(runner->WaitStarted("j-a"));
  const JobRecord running = *queue->Get("j-a");
  EXPECT_EQ(running.state, JobState::kRunning);
  EXPECT_EQ(running.start_time, At(20));
  EXPECT_EQ(running.end_time, Time());

  now_ = 35;
  runner->Release("j-a");
  const JobRecord done = WaitForState(*queue, "j-a", JobState::kSucceeded);
  EXPECT_EQ(done.create_time, At(10));
  EXPECT_EQ(done.start_time, At(20));
  EXPECT_EQ(done.end_time, At(35));
  auto events = queue->Events("j-a", 0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<Time> times;
  for (const JobEvent& e : *events) times.push_back(e.time);
  EXPECT_THAT(times, ElementsAre(At(10), At(20), At(20), At(35)));
}

TEST_F(JobsTest, RunningJobsHoldTheirDataset) {
  auto runner = std::make_shared<FakeRunner>();
  runner->Hold("j-a");
  auto queue = OpenQueue(runner);
  ASSERT_NE(queue, nullptr);
  Create(*queue, "j-a");
  queue->Start();
  ASSERT_TRUE(runner->WaitStarted("j-a"));
  absl::Status deleted = datasets_->Delete("ds");
  EXPECT_EQ(deleted.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(deleted.message(), HasSubstr("jobs/j-a"));
  runner->Release("j-a");
  WaitForState(*queue, "j-a", JobState::kSucceeded);
  EXPECT_TRUE(datasets_->Delete("ds").ok());  // a finished job holds nothing
}

}  // namespace
}  // namespace transferd::core
