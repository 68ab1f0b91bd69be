#include "server/http/event_stream.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/core/api/engine_api.h"
#include "server/http/http_util.h"
#include "server/rpc/conversions.h"

namespace transferd::http {

namespace v1 = transferd::v1;

// One open stream, shared by its content provider, its watch callback and
// EventStreams::Stop.
struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;  // events were stored since the last read
  bool stop = false;   // the listener is stopping
  std::string job_id;
  int64_t after = 0;  // the last sequence sent
  bool follow = true;
  int64_t watch = 0;
};

namespace {

constexpr int kEventsPerRead = 64;
constexpr auto kKeepAlive = std::chrono::seconds(15);

// The resume point: Last-Event-ID (what EventSource sends on reconnecting),
// else ?after=, else 0.
absl::StatusOr<int64_t> ResumeAfter(const httplib::Request& req) {
  const bool header = req.has_header("Last-Event-ID");
  if (!header && !req.has_param("after")) return 0;
  const std::string text = header ? req.get_header_value("Last-Event-ID")
                                  : req.get_param_value("after");
  int64_t after = 0;
  if (!absl::SimpleAtoi(text, &after) || after < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(header ? "Last-Event-ID" : "after",
                     " must be an event sequence number >= 0, not \"",
                     text.substr(0, 40), "\""));
  }
  return after;
}

std::string ErrorEvent(const absl::Status& status) {
  httplib::Response body;
  SetError(body, status);
  return absl::StrCat("event: error\ndata: ", body.body, "\n\n");
}

}  // namespace

void EventStreams::Serve(const std::string& job_id, const httplib::Request& req,
                         httplib::Response& res) {
  absl::StatusOr<int64_t> after = ResumeAfter(req);
  if (!after.ok()) return SetError(res, after.status());
  bool follow = true;
  if (req.has_param("follow")) {
    const std::string f = req.get_param_value("follow");
    if (f != "true" && f != "false") {
      return SetError(
          res, absl::InvalidArgumentError("follow must be true or false"));
    }
    follow = f == "true";
  }
  auto stream = std::make_shared<Stream>();
  stream->job_id = job_id;
  stream->after = *after;
  stream->follow = follow;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return SetError(res, absl::UnavailableError("the server is stopping"));
    }
    if (open_ >= max_streams_) {
      return SetError(res,
                      absl::ResourceExhaustedError(absl::StrCat(
                          "too many open event streams (", max_streams_,
                          "); close another dashboard tab or retry later")));
    }
    ++open_;
    streams_.push_back(stream);
  }
  // Runs on the job queue's notifier: never blocks on the stream.
  stream->watch = api_.Watch(job_id, [weak = std::weak_ptr<Stream>(stream)] {
    if (std::shared_ptr<Stream> s = weak.lock()) {
      std::lock_guard<std::mutex> lock(s->mu);
      s->woken = true;
      s->cv.notify_all();
    }
  });
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, stream](size_t /*offset*/, httplib::DataSink& sink) {
        return Next(*stream, sink);
      },
      [this, stream](bool /*success*/) {
        api_.Unwatch(stream->watch);
        std::lock_guard<std::mutex> lock(mu_);
        streams_.erase(std::find(streams_.begin(), streams_.end(), stream));
        --open_;
      });
}

bool EventStreams::Next(Stream& stream, httplib::DataSink& sink) {
  {
    std::lock_guard<std::mutex> lock(stream.mu);
    if (stream.stop) {
      sink.done();
      return true;
    }
    stream.woken = false;
  }
  core::api::EventRead read = api_.ReadEvents(stream.job_id, stream.after,
                                              kEventsPerRead, stream.follow);
  if (!read.status.ok()) {
    const std::string error = ErrorEvent(read.status);
    sink.write(error.data(), error.size());
    sink.done();
    return true;
  }
  std::string out;
  for (const core::JobEvent& e : read.events) {
    v1::JobEvent event;
    rpc::ToProto(e, &event);
    absl::StrAppend(&out, "id: ", e.sequence,
                    "\nevent: job_event\ndata: ", ToJson(event), "\n\n");
    stream.after = e.sequence;
  }
  if (read.end) absl::StrAppend(&out, "event: end\ndata: {}\n\n");
  if (!out.empty() && !sink.write(out.data(), out.size())) return false;
  if (read.end) {
    sink.done();
    return true;
  }
  if (!read.events.empty()) return true;
  if (api_.jobs_stopping()) {
    sink.done();
    return true;
  }
  std::unique_lock<std::mutex> lock(stream.mu);
  if (stream.cv.wait_for(lock, kKeepAlive,
                         [&] { return stream.woken || stream.stop; })) {
    return true;
  }
  lock.unlock();
  static constexpr char kComment[] = ": keep-alive\n\n";
  return sink.write(kComment, sizeof(kComment) - 1);
}

void EventStreams::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  for (const std::shared_ptr<Stream>& s : streams_) {
    std::lock_guard<std::mutex> stream_lock(s->mu);
    s->stop = true;
    s->cv.notify_all();
  }
}

int EventStreams::open_streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

}  // namespace transferd::http
