// GET /api/v1/jobs/{id}/events: a job's stored event log as Server-Sent
// Events (text/event-stream), fed by the same reads as gRPC's WatchJob
// (EngineApi::ReadEvents) and woken by the same notifier (EngineApi::Watch).
//
//   id: <sequence>            the event's sequence number; a reconnecting
//   event: job_event          EventSource sends it back as Last-Event-ID and
//   data: <transferd.v1.JobEvent as JSON>   the stream resumes after it
//
//   event: end                the job finished and every event was sent
//   event: error              the stream failed (data: the JSON error body)
//   : keep-alive              a comment every 15 s while nothing happens
//
// A slow or stalled browser costs the trainer nothing: the trainer only
// stores events and signals a condition variable; each stream reads at most
// 64 stored events at a time on its own HTTP thread and writes them with the
// listener's write timeout, after which the connection is dropped. The number
// of open streams is bounded (RESOURCE_EXHAUSTED beyond, HTTP 429), so
// streams cannot take every HTTP thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace httplib {
class DataSink;
struct Request;
struct Response;
}  // namespace httplib

namespace transferd::core::api {
class EngineApi;
}  // namespace transferd::core::api

namespace transferd::http {

struct Stream;

class EventStreams {
 public:
  EventStreams(core::api::EngineApi& api, int max_streams)
      : api_(api), max_streams_(max_streams) {}

  // Answers the request: an error, or a stream of the events of job
  // `job_id` (an existing job's id) after ?after=N or the Last-Event-ID
  // header (the header wins); ?follow=false ends the stream once it caught
  // up instead of waiting for the job to finish.
  void Serve(const std::string& job_id, const httplib::Request& req,
             httplib::Response& res);

  // Ends every open stream (each sends nothing more and closes); called
  // before the listener stops, which waits for its handlers.
  void Stop();

  int open_streams() const;

 private:
  // One turn of a stream's content provider: sends what was stored since
  // the last turn, or waits for the next wake (or sends a keep-alive).
  // False: the connection failed.
  bool Next(Stream& stream, httplib::DataSink& sink);

  core::api::EngineApi& api_;
  const int max_streams_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Stream>> streams_;
  int open_ = 0;
  bool stopping_ = false;
};

}  // namespace transferd::http
