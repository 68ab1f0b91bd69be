// JobStore (job_store.h): the jobs, job_events and job_predictions tables.
#include "server/core/jobs/job_store.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/core/train/train_json.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/status_macros.h"
#include "server/core/util/store.h"

namespace transferd::core {
namespace {

using json = nlohmann::json;

json ProgressJson(const JobProgress& p) {
  return {{"stage", p.stage},
          {"stages", p.stages},
          {"epoch", p.epoch},
          {"epochs", p.epochs},
          {"step", p.step},
          {"steps", p.steps},
          {"eta_seconds", p.eta_seconds}};
}

JobProgress ProgressFrom(const json& j) {
  JobProgress p;
  p.stage = j.at("stage").get<int>();
  p.stages = j.at("stages").get<int>();
  p.epoch = j.at("epoch").get<int>();
  p.epochs = j.at("epochs").get<int>();
  p.step = j.at("step").get<int64_t>();
  p.steps = j.at("steps").get<int64_t>();
  p.eta_seconds = j.at("eta_seconds").get<double>();
  return p;
}

std::string EventToJson(const JobEvent& e) {
  json j = {{"type", static_cast<int>(e.type)}};
  switch (e.type) {
    case JobEvent::Type::kStateChanged:
      j["state"] = static_cast<int>(e.state);
      j["message"] = e.message;
      break;
    case JobEvent::Type::kLog:
      j["level"] = e.level;
      j["message"] = e.message;
      break;
    case JobEvent::Type::kStageStarted:
      j["stage"] = e.stage;
      j["stage_name"] = e.stage_name;
      j["trainable"] = json::parse(train::SummaryToJson(e.trainable));
      j["uses_feature_cache"] = e.uses_feature_cache;
      break;
    case JobEvent::Type::kStep: {
      const train::StepReport& s = e.step;
      j["step"] = {{"stage", s.stage},
                   {"epoch", s.epoch},
                   {"step", s.step},
                   {"steps", s.steps},
                   {"loss", s.loss},
                   {"accuracy", s.accuracy},
                   {"images_per_second", s.images_per_second},
                   {"eta_seconds", s.eta_seconds}};
      break;
    }
    case JobEvent::Type::kEpochEnd:
      j["epoch"] = json::parse(train::HistoryToJson({e.epoch}))[0];
      break;
    case JobEvent::Type::kCheckpointSaved:
      j["checkpoint_epoch"] = e.checkpoint_epoch;
      j["checkpoint_bytes"] = e.checkpoint_bytes;
      break;
    case JobEvent::Type::kEvaluation:
      j["evaluation"] =
          json::parse(train::EvaluationsToJson({e.evaluation}))[0];
      break;
  }
  if (!e.trace_id.empty()) j["trace_id"] = e.trace_id;
  return j.dump();
}

absl::StatusOr<JobEvent> EventFromJson(const std::string& text) {
  try {
    const json j = json::parse(text);
    JobEvent e;
    e.type = static_cast<JobEvent::Type>(j.at("type").get<int>());
    e.trace_id = j.value("trace_id", "");
    switch (e.type) {
      case JobEvent::Type::kStateChanged:
        e.state = static_cast<JobState>(j.at("state").get<int>());
        e.message = j.at("message").get<std::string>();
        break;
      case JobEvent::Type::kLog:
        e.level = j.at("level").get<std::string>();
        e.message = j.at("message").get<std::string>();
        break;
      case JobEvent::Type::kStageStarted: {
        e.stage = j.at("stage").get<int>();
        e.stage_name = j.at("stage_name").get<std::string>();
        TRANSFERD_ASSIGN_OR_RETURN(
            e.trainable, train::SummaryFromJson(j.at("trainable").dump()));
        e.uses_feature_cache = j.at("uses_feature_cache").get<bool>();
        break;
      }
      case JobEvent::Type::kStep: {
        const json& s = j.at("step");
        e.step.stage = s.at("stage").get<int>();
        e.step.epoch = s.at("epoch").get<int>();
        e.step.step = s.at("step").get<int64_t>();
        e.step.steps = s.at("steps").get<int64_t>();
        e.step.loss = s.at("loss").get<double>();
        e.step.accuracy = s.at("accuracy").get<double>();
        e.step.images_per_second = s.at("images_per_second").get<double>();
        e.step.eta_seconds = s.at("eta_seconds").get<double>();
        break;
      }
      case JobEvent::Type::kEpochEnd: {
        TRANSFERD_ASSIGN_OR_RETURN(
            auto history,
            train::HistoryFromJson(json::array({j.at("epoch")}).dump()));
        e.epoch = history.at(0);
        break;
      }
      case JobEvent::Type::kCheckpointSaved:
        e.checkpoint_epoch = j.at("checkpoint_epoch").get<int>();
        e.checkpoint_bytes = j.at("checkpoint_bytes").get<int64_t>();
        break;
      case JobEvent::Type::kEvaluation: {
        TRANSFERD_ASSIGN_OR_RETURN(
            auto evals, train::EvaluationsFromJson(
                            json::array({j.at("evaluation")}).dump()));
        e.evaluation = evals.at(0);
        break;
      }
    }
    return e;
  } catch (const std::exception& ex) {
    return absl::DataLossError(
        absl::StrCat("stored job event is malformed: ", ex.what()));
  }
}

constexpr const char* kJobColumns =
    "id, kind, state, failure_reason, dataset_id, base_model, spec_blob, "
    "resolved_blob, config, "
    "create_time_ms, start_time_ms, end_time_ms, progress, history, trainable, "
    "evaluations, "
    "result_model, last_event_sequence, resumes, trace_id";

absl::StatusOr<JobRecord> ReadJob(const Statement& q) {
  JobRecord r;
  r.id = q.ColumnText(0);
  r.kind = static_cast<JobKind>(q.ColumnInt(1));
  r.state = static_cast<JobState>(q.ColumnInt(2));
  r.failure_reason = q.ColumnText(3);
  r.dataset_id = q.ColumnText(4);
  r.base_model = q.ColumnText(5);
  r.spec_blob = q.ColumnText(6);
  r.resolved_blob = q.ColumnText(7);
  TRANSFERD_ASSIGN_OR_RETURN(r.config, train::ConfigFromJson(q.ColumnText(8)));
  r.create_time = FromUnixMillis(q.ColumnInt(9));
  r.start_time = FromUnixMillis(q.ColumnInt(10));
  r.end_time = FromUnixMillis(q.ColumnInt(11));
  try {
    r.progress = ProgressFrom(json::parse(q.ColumnText(12)));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("job ", r.id, ": stored progress is malformed"));
  }
  TRANSFERD_ASSIGN_OR_RETURN(r.history,
                             train::HistoryFromJson(q.ColumnText(13)));
  TRANSFERD_ASSIGN_OR_RETURN(r.trainable,
                             train::SummaryFromJson(q.ColumnText(14)));
  TRANSFERD_ASSIGN_OR_RETURN(r.evaluations,
                             train::EvaluationsFromJson(q.ColumnText(15)));
  r.result_model = q.ColumnText(16);
  r.last_event_sequence = q.ColumnInt(17);
  r.resumes = static_cast<int>(q.ColumnInt(18));
  r.trace_id = q.ColumnText(19);
  return r;
}

absl::StatusOr<std::optional<JobRecord>> SelectJob(StoreTxn& txn,
                                                   const std::string& id) {
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement q, txn.Prepare(absl::StrCat("SELECT ", kJobColumns,
                                            " FROM jobs WHERE id = ?")));
  q.Bind(1, id);
  TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::nullopt;
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord r, ReadJob(q));
  return std::optional<JobRecord>(std::move(r));
}

// Stores `event` as event `seq` of job `id`; a state change also updates
// the job's state, failure reason and start / end times.
absl::Status WriteEvent(StoreTxn& txn, const std::string& id, int64_t seq,
                        const JobEvent& event) {
  const std::string body = EventToJson(event);
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement q,
      txn.Prepare("INSERT INTO job_events (job_id, seq, time_ms, body) "
                  "VALUES (?, ?, ?, ?)"));
  q.Bind(1, id).Bind(2, seq).Bind(3, UnixMillis(event.time)).Bind(4, body);
  TRANSFERD_RETURN_IF_ERROR(q.Run());
  TRANSFERD_ASSIGN_OR_RETURN(
      Statement u,
      txn.Prepare("UPDATE jobs SET last_event_sequence = ? WHERE id = ?"));
  u.Bind(1, seq).Bind(2, id);
  TRANSFERD_RETURN_IF_ERROR(u.Run());
  if (event.type == JobEvent::Type::kStateChanged) {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement s,
        txn.Prepare(
            "UPDATE jobs SET state = ?, failure_reason = ?, "
            "start_time_ms = CASE WHEN ?1 = 2 AND start_time_ms = 0 THEN ?3 "
            "ELSE start_time_ms END, end_time_ms = CASE WHEN ?1 >= 3 THEN ?3 "
            "ELSE end_time_ms END WHERE id = ?4"));
    s.Bind(1, static_cast<int64_t>(event.state))
        .Bind(2,
              event.state == JobState::kFailed ? event.message : std::string())
        .Bind(3, UnixMillis(event.time))
        .Bind(4, id);
    TRANSFERD_RETURN_IF_ERROR(s.Run());
  }
  return absl::OkStatus();
}

}  // namespace

JobStore::JobStore(Store* store, Clock clock)
    : store_(store), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return std::chrono::system_clock::now(); };
}

absl::StatusOr<std::vector<std::string>> JobStore::Load() {
  std::vector<std::string> interrupted;
  std::lock_guard<std::mutex> lock(seq_mu_);
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement s,
            txn.Prepare("SELECT id, last_event_sequence, trace_id FROM jobs"));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, s.Step());
          if (!row) break;
          last_seq_[s.ColumnText(0)] = s.ColumnInt(1);
          if (std::string trace = s.ColumnText(2); !trace.empty()) {
            trace_[s.ColumnText(0)] = std::move(trace);
          }
        }
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement r,
            txn.Prepare("SELECT id FROM jobs WHERE state = ? ORDER BY ord"));
        r.Bind(1, static_cast<int64_t>(JobState::kRunning));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, r.Step());
          if (!row) break;
          interrupted.push_back(r.ColumnText(0));
        }
        return absl::OkStatus();
      }));
  return interrupted;
}

std::string JobStore::UserOf(const char* column, const std::string& value) {
  std::string user;
  absl::Status s = store_->Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare(absl::StrCat(
                         "SELECT id FROM jobs WHERE ", column,
                         " = ? AND state IN (?, ?) ORDER BY ord LIMIT 1")));
    q.Bind(1, value)
        .Bind(2, static_cast<int64_t>(JobState::kQueued))
        .Bind(3, static_cast<int64_t>(JobState::kRunning));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) user = absl::StrCat("jobs/", q.ColumnText(0));
    return absl::OkStatus();
  });
  if (!s.ok()) return "a job (the job table could not be read)";
  return user;
}

absl::Status JobStore::Insert(const NewJob& job) {
  JobRecord record;
  record.id = job.id;
  record.kind = job.kind;
  record.state = JobState::kQueued;
  record.dataset_id = job.dataset_id;
  record.base_model = job.base_model;
  record.spec_blob = job.spec_blob;
  record.resolved_blob = job.resolved_blob;
  record.config = job.config;
  record.trace_id = job.trace_id;
  record.create_time = clock_();
  record.progress.stages = static_cast<int>(job.config.stages.size());
  for (const train::StageConfig& s : job.config.stages)
    record.progress.epochs += s.epochs;
  JobEvent queued;
  queued.type = JobEvent::Type::kStateChanged;
  queued.state = JobState::kQueued;
  queued.message = "queued";
  queued.time = record.create_time;
  queued.trace_id = record.trace_id;
  // The job and its first event are one write, under the sequence lock: a
  // worker that sees the job finds "queued" already there as event 1.
  std::lock_guard<std::mutex> lock(seq_mu_);
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(std::optional<JobRecord> existing,
                                   SelectJob(txn, record.id));
        if (existing.has_value()) {
          return absl::AlreadyExistsError(
              absl::StrCat("job \"", record.id, "\" already exists"));
        }
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare(absl::StrCat(
                "INSERT INTO jobs (ord, ", kJobColumns,
                ") VALUES ((SELECT COALESCE(MAX(ord), 0) + 1 FROM jobs),"
                "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")));
        q.Bind(1, record.id)
            .Bind(2, static_cast<int64_t>(record.kind))
            .Bind(3, static_cast<int64_t>(record.state))
            .Bind(4, std::string_view(""))
            .Bind(5, record.dataset_id)
            .Bind(6, record.base_model)
            .BindBlob(7, record.spec_blob)
            .BindBlob(8, record.resolved_blob)
            .Bind(9, train::ConfigToJson(record.config))
            .Bind(10, UnixMillis(record.create_time))
            .Bind(11, int64_t{0})
            .Bind(12, int64_t{0})
            .Bind(13, ProgressJson(record.progress).dump())
            .Bind(14, std::string_view("[]"))
            .Bind(15, train::SummaryToJson({}))
            .Bind(16, std::string_view("[]"))
            .Bind(17, std::string_view(""))
            .Bind(18, int64_t{0})
            .Bind(19, int64_t{0})
            .Bind(20, record.trace_id);
        TRANSFERD_RETURN_IF_ERROR(q.Run());
        return WriteEvent(txn, record.id, 1, queued);
      }));
  last_seq_[record.id] = 1;
  if (!record.trace_id.empty()) trace_[record.id] = record.trace_id;
  return absl::OkStatus();
}

absl::StatusOr<JobRecord> JobStore::Get(const std::string& id) {
  TRANSFERD_RETURN_IF_ERROR(ValidateResourceId("job id", id));
  std::optional<JobRecord> found;
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(found, SelectJob(txn, id));
        return absl::OkStatus();
      }));
  if (!found.has_value())
    return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return *std::move(found);
}

absl::StatusOr<std::vector<JobRecord>> JobStore::List(
    int page_size, const std::string& page_token, std::optional<JobState> state,
    std::optional<JobKind> kind, std::string* next_page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(page_size, ClampPageSize(page_size));
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t offset, ParsePageToken(page_token));
  std::vector<JobRecord> out;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(store_->Transaction([&](StoreTxn& txn)
                                                    -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(absl::StrCat(
            "SELECT ", kJobColumns,
            " FROM jobs WHERE (?1 = 0 OR state = ?1) AND (?2 = 0 OR kind = ?2)"
            " ORDER BY ord DESC LIMIT ?3 OFFSET ?4")));
    q.Bind(1, state ? static_cast<int64_t>(*state) : int64_t{0})
        .Bind(2, kind ? static_cast<int64_t>(*kind) : int64_t{0})
        .Bind(3, static_cast<int64_t>(page_size) + 1)
        .Bind(4, offset);
    TRANSFERD_ASSIGN_OR_RETURN(
        more, ReadPage(q, page_size, [&](const Statement& row) {
          TRANSFERD_ASSIGN_OR_RETURN(JobRecord r, ReadJob(row));
          out.push_back(std::move(r));
          return absl::OkStatus();
        }));
    return absl::OkStatus();
  }));
  if (next_page_token != nullptr)
    *next_page_token = more ? std::to_string(offset + page_size) : "";
  return out;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::Events(const std::string& id,
                                                       int64_t after,
                                                       int limit) {
  std::vector<JobEvent> out;
  TRANSFERD_RETURN_IF_ERROR(store_->Transaction([&](StoreTxn& txn)
                                                    -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "SELECT seq, time_ms, body FROM job_events WHERE job_id = ? AND "
            "seq > ? ORDER BY seq LIMIT ?"));
    q.Bind(1, id).Bind(2, after).Bind(3, static_cast<int64_t>(limit));
    while (true) {
      TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      TRANSFERD_ASSIGN_OR_RETURN(JobEvent e, EventFromJson(q.ColumnText(2)));
      e.sequence = q.ColumnInt(0);
      e.time = FromUnixMillis(q.ColumnInt(1));
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status JobStore::Append(const std::string& id, JobEvent event) {
  // Held across the write: events commit in sequence order, a failed write
  // takes no number, and no event can slip in before a job's first one.
  std::lock_guard<std::mutex> lock(seq_mu_);
  const int64_t seq = last_seq_[id] + 1;
  if (auto trace = trace_.find(id); trace != trace_.end()) {
    event.trace_id = trace->second;
  }
  event.time = clock_();
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        return WriteEvent(txn, id, seq, event);
      }));
  last_seq_[id] = seq;
  return absl::OkStatus();
}

absl::Status JobStore::SetState(const std::string& id, JobState state,
                                const std::string& message) {
  JobEvent e;
  e.type = JobEvent::Type::kStateChanged;
  e.state = state;
  e.message = message;
  return Append(id, std::move(e));
}

absl::Status JobStore::SaveRunState(const JobRecord& job) {
  return store_->Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "UPDATE jobs SET progress = ?, history = ?, trainable = ?, "
            "evaluations = ?, result_model = ?, resumes = ? WHERE id = ?"));
    q.Bind(1, ProgressJson(job.progress).dump())
        .Bind(2, train::HistoryToJson(job.history))
        .Bind(3, train::SummaryToJson(job.trainable))
        .Bind(4, train::EvaluationsToJson(job.evaluations))
        .Bind(5, job.result_model)
        .Bind(6, static_cast<int64_t>(job.resumes))
        .Bind(7, job.id);
    return q.Run();
  });
}

std::optional<std::string> JobStore::NextQueued() {
  std::optional<std::string> next;
  absl::Status s = store_->Transaction([&](StoreTxn& txn) -> absl::Status {
    // Interrupted (RUNNING) jobs first, then the queue in creation order.
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q, txn.Prepare("SELECT id FROM jobs WHERE state IN (?, ?) "
                                 "ORDER BY state DESC, ord LIMIT 1"));
    q.Bind(1, static_cast<int64_t>(JobState::kQueued))
        .Bind(2, static_cast<int64_t>(JobState::kRunning));
    TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) next = q.ColumnText(0);
    return absl::OkStatus();
  });
  if (!s.ok()) spdlog::error("job queue: {}", std::string(s.message()));
  return next;
}

absl::StatusOr<std::map<JobState, int64_t>> JobStore::CountByState() {
  std::map<JobState, int64_t> counts;
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
        while (true) {
          TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          const int64_t state = q.ColumnInt(0);
          if (state < static_cast<int64_t>(JobState::kQueued) ||
              state > static_cast<int64_t>(JobState::kCancelled)) {
            continue;
          }
          counts[static_cast<JobState>(state)] = q.ColumnInt(1);
        }
        return absl::OkStatus();
      }));
  return counts;
}

namespace {

// A row's scores column: {"p": every probability (small models only),
// "top": [[class, probability], ...], "tp": the true class's probability}.
// Rows stored before top_k existed hold the bare array of probabilities.
std::string ScoresJson(const FilePredictionRecord& r) {
  nlohmann::json top = nlohmann::json::array();
  for (const train::ClassProbability& c : r.top)
    top.push_back({c.index, c.probability});
  nlohmann::json out = {{"top", std::move(top)}, {"tp", r.true_probability}};
  if (!r.probabilities.empty()) out["p"] = r.probabilities;
  return out.dump();
}

// ScoresJson's inverse into `r`; false when malformed. `top_k` and
// `classes` rebuild `top` and `true_probability` of old rows.
bool ParseScores(const std::string& text, int top_k,
                 const std::vector<std::string>& classes,
                 FilePredictionRecord& r) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.is_array()) {
      r.probabilities = j.get<std::vector<float>>();
      r.top = train::TopClasses(r.probabilities.data(),
                                static_cast<int>(r.probabilities.size()),
                                r.status_code == 0 ? top_k : 0);
      const auto t = std::find(classes.begin(), classes.end(), r.true_label);
      const auto ti = t - classes.begin();
      if (t != classes.end() &&
          ti < static_cast<int64_t>(r.probabilities.size()))
        r.true_probability = r.probabilities[static_cast<size_t>(ti)];
      return true;
    }
    if (j.contains("p")) r.probabilities = j.at("p").get<std::vector<float>>();
    for (const nlohmann::json& c : j.at("top")) {
      const int32_t index = c.at(0).get<int32_t>();
      if (index < 0 || index >= static_cast<int32_t>(classes.size()))
        return false;
      r.top.push_back({index, c.at(1).get<float>()});
    }
    r.true_probability = j.at("tp").get<float>();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

absl::StatusOr<int64_t> JobStore::NextPredictionIndex(const std::string& id) {
  int64_t done = 0;
  TRANSFERD_RETURN_IF_ERROR(
      store_->Transaction([&](StoreTxn& txn) -> absl::Status {
        TRANSFERD_ASSIGN_OR_RETURN(
            Statement q,
            txn.Prepare("SELECT COALESCE(MAX(idx) + 1, 0) FROM job_predictions "
                        "WHERE job_id = ?"));
        q.Bind(1, id);
        TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) done = q.ColumnInt(0);
        return absl::OkStatus();
      }));
  return done;
}

absl::Status JobStore::PutPredictions(
    const std::string& id, int64_t first,
    const std::vector<FilePredictionRecord>& rows,
    const std::vector<common::Split>& splits) {
  const int64_t count = static_cast<int64_t>(rows.size());
  return store_->Transaction([&](StoreTxn& txn) -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "INSERT OR REPLACE INTO job_predictions (job_id, idx, "
            "client_path, split, "
            "true_label, label, probabilities, status_code, status_message) "
            "VALUES (?,?,?,?,?,?,?,?,?)"));
    for (int64_t i = 0; i < count; ++i) {
      const FilePredictionRecord& r = rows[i];
      q.Reset();
      q.Bind(1, id)
          .Bind(2, first + i)
          .Bind(3, r.client_path)
          .Bind(4, static_cast<int64_t>(splits[i]))
          .Bind(5, r.true_label)
          .Bind(6, r.label)
          .Bind(7, ScoresJson(r))
          .Bind(8, static_cast<int64_t>(r.status_code))
          .Bind(9, r.status_message);
      TRANSFERD_RETURN_IF_ERROR(q.Run());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<PredictionsPage> JobStore::Predictions(
    const std::string& id, int page_size, const std::string& page_token) {
  TRANSFERD_ASSIGN_OR_RETURN(JobRecord job, Get(id));
  if (job.kind != JobKind::kPredict) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job \"", id,
        "\" is not a PREDICT job; it has no per-file predictions"));
  }
  if (page_size < 0)
    return absl::InvalidArgumentError("page_size must be >= 0");
  const int limit = page_size == 0 ? 500 : std::min(page_size, 10000);
  TRANSFERD_ASSIGN_OR_RETURN(int64_t after, ParsePageToken(page_token));
  PredictionsPage page;
  page.classes = job.config.predict_classes;
  const int top_k = train::EffectiveTopK(job.config.top_k,
                                         static_cast<int>(page.classes.size()));
  int64_t last = -1;
  bool more = false;
  TRANSFERD_RETURN_IF_ERROR(store_->Transaction([&](StoreTxn& txn)
                                                    -> absl::Status {
    TRANSFERD_ASSIGN_OR_RETURN(
        Statement q,
        txn.Prepare(
            "SELECT idx, client_path, split, true_label, label, probabilities, "
            "status_code, status_message FROM job_predictions WHERE job_id = ? "
            "AND idx >= ? ORDER BY idx LIMIT ?"));
    q.Bind(1, id).Bind(2, after).Bind(3, static_cast<int64_t>(limit) + 1);
    while (true) {
      TRANSFERD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      if (static_cast<int>(page.predictions.size()) == limit) {
        more = true;
        break;
      }
      FilePredictionRecord r;
      last = q.ColumnInt(0);
      r.client_path = q.ColumnText(1);
      const int64_t split = q.ColumnInt(2);
      if (split < static_cast<int64_t>(common::Split::kNone) ||
          split > static_cast<int64_t>(common::Split::kTest)) {
        return absl::DataLossError(absl::StrCat(
            "predictions of job ", id, ": split ", split, " is not a split"));
      }
      r.split = static_cast<common::Split>(split);
      r.true_label = q.ColumnText(3);
      r.label = q.ColumnText(4);
      r.status_code = static_cast<int>(q.ColumnInt(6));
      r.status_message = q.ColumnText(7);
      if (!ParseScores(q.ColumnText(5), top_k, page.classes, r)) {
        return absl::DataLossError(
            absl::StrCat("job ", id, ": stored prediction is malformed"));
      }
      page.predictions.push_back(std::move(r));
    }
    return absl::OkStatus();
  }));
  if (more) page.next_page_token = std::to_string(last + 1);
  return page;
}

}  // namespace transferd::core
