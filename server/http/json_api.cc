#include "server/http/json_api.h"

#include <atomic>
#include <future>
#include <memory>
#include <utility>
#include <vector>

#include <google/protobuf/empty.pb.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"
#include "server/core/api/engine_api.h"
#include "server/core/engine.h"
#include "server/core/util/status_macros.h"
#include "server/http/event_stream.h"
#include "server/http/http_util.h"
#include "server/rpc/conversions.h"

namespace transferd::http {
namespace {

namespace v1 = transferd::v1;
using auth::Role;
using core::api::EngineApi;

// What every handler holds.
struct Context {
  EngineApi& api;
  const auth::Authorizer& auth;
  JsonApiOptions options;
  EventStreams& streams;
};

// OK when the caller's token has `role`; otherwise answers the error and
// returns false. (The listener already checked a viewer token.)
bool Allowed(const Context& c, const httplib::Request& req,
             httplib::Response& res, Role role) {
  absl::Status s = CheckRole(c.auth, req, role);
  if (s.ok()) return true;
  SetError(res, s);
  return false;
}

// A JSON body: application/json (which a cross-site form cannot send
// without the CORS preflight that this server never grants).
absl::Status ParseBody(const httplib::Request& req,
                       google::protobuf::Message* message) {
  const std::string type =
      absl::AsciiStrToLower(req.get_header_value("Content-Type"));
  if (!absl::StartsWith(type, "application/json")) {
    return absl::InvalidArgumentError(
        "the body must be JSON, sent with Content-Type: application/json");
  }
  return FromJson(req.body, message);
}

absl::StatusOr<core::api::PageRequest> PageOf(const httplib::Request& req) {
  core::api::PageRequest page;
  if (req.has_param("page_size")) {
    const std::string size = req.get_param_value("page_size");
    if (!absl::SimpleAtoi(size, &page.page_size) || page.page_size < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_size must be a number >= 0, not \"", size.substr(0, 20), "\""));
    }
  }
  page.page_token = req.get_param_value("page_token");
  return page;
}

// Answers `result`: its message as JSON, or its error.
template <typename T, typename Fill>
void Reply(httplib::Response& res, const absl::StatusOr<T>& result, Fill fill) {
  if (!result.ok()) return SetError(res, result.status());
  fill(*result);
}

void ReplyEmpty(httplib::Response& res, const absl::Status& status) {
  if (!status.ok()) return SetError(res, status);
  SetJson(res, google::protobuf::Empty());
}

// A listing: ?page_size=&page_token= in; `fetch` reads the page, `add`
// converts each item into the response.
template <typename Response, typename Item, typename Fetch, typename Add>
void Listing(const httplib::Request& req, httplib::Response& res, Fetch fetch,
             Add add) {
  absl::StatusOr<core::api::PageRequest> page = PageOf(req);
  if (!page.ok()) return SetError(res, page.status());
  absl::StatusOr<core::api::Page<Item>> result = fetch(*page);
  if (!result.ok()) return SetError(res, result.status());
  Response out;
  for (const Item& item : result->items) add(item, &out);
  out.set_next_page_token(result->next_page_token);
  SetJson(res, out);
}

// ---- Server ----------------------------------------------------------------

void ServerInfo(const Context& c, httplib::Response& res) {
  v1::ServerInfo info;
  info.ParseFromString(c.options.server_info_base);
  rpc::ServerInfoToProto(c.api.Info(), &info);
  SetJson(res, info);
}

// ---- Jobs ------------------------------------------------------------------

absl::StatusOr<core::api::JobQuery> JobQueryOf(const httplib::Request& req) {
  core::api::JobQuery query;
  absl::StatusOr<core::api::PageRequest> page = PageOf(req);
  if (!page.ok()) return page.status();
  query.page = *page;
  if (req.has_param("state")) {
    v1::JobState state;
    const std::string text = req.get_param_value("state");
    if (!v1::JobState_Parse(text, &state)) {
      return absl::InvalidArgumentError(
          absl::StrCat("state: unknown job state \"", text.substr(0, 40),
                       "\" (JOB_STATE_QUEUED, JOB_STATE_RUNNING, ...)"));
    }
    absl::StatusOr<core::JobState> s = rpc::StateFromProto(state, "state");
    if (!s.ok()) return s.status();
    query.state = *s;
  }
  if (req.has_param("kind")) {
    v1::JobKind kind;
    const std::string text = req.get_param_value("kind");
    if (!v1::JobKind_Parse(text, &kind)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kind: unknown job kind \"", text.substr(0, 40),
                       "\" (JOB_KIND_TRAIN, JOB_KIND_FINE_TUNE, ...)"));
    }
    absl::StatusOr<core::JobKind> k = rpc::KindFromProto(kind, "kind");
    if (!k.ok()) return k.status();
    query.kind = *k;
  }
  return query;
}

void ListJobs(const Context& c, const httplib::Request& req,
              httplib::Response& res) {
  absl::StatusOr<core::api::JobQuery> query = JobQueryOf(req);
  if (!query.ok()) return SetError(res, query.status());
  Reply(res, c.api.ListJobs(*query),
        [&](const core::api::Page<core::api::JobView>& p) {
          v1::ListJobsResponse out;
          for (const core::api::JobView& j : p.items) {
            v1::Job* job = out.add_jobs();
            rpc::ToListingProto(j, job);  // as ListJobs on gRPC
          }
          out.set_next_page_token(p.next_page_token);
          SetJson(res, out);
        });
}

void CreateJob(const Context& c, const httplib::Request& req,
               httplib::Response& res) {
  auto request = std::make_shared<v1::CreateJobRequest>();
  if (absl::Status s = ParseBody(req, request.get()); !s.ok()) {
    return SetError(res, s);
  }
  absl::StatusOr<core::train::JobRequest> job_request =
      rpc::JobRequestFromProto(request->spec());
  if (!job_request.ok()) return SetError(res, job_request.status());
  core::api::JobSubmission submission;
  submission.job_id = request->job_id();
  submission.request = *std::move(job_request);
  submission.spec_blob = request->spec().SerializeAsString();
  submission.encode_resolved = [request](
                                   const core::train::ResolvedJob& resolved,
                                   const std::string& base_model) {
    return rpc::ToResolvedSpec(request->spec(), resolved, base_model)
        .SerializeAsString();
  };
  Reply(res, c.api.CreateJob(submission), [&](const core::api::JobView& j) {
    v1::Job out;
    rpc::ToProto(j, &out);
    SetJson(res, out);
  });
}

void AnswerJob(httplib::Response& res,
               const absl::StatusOr<core::api::JobView>& job) {
  Reply(res, job, [&](const core::api::JobView& j) {
    v1::Job out;
    rpc::ToProto(j, &out);
    SetJson(res, out);
  });
}

void ListJobPredictions(const Context& c, const std::string& name,
                        const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<core::api::PageRequest> page = PageOf(req);
  if (!page.ok()) return SetError(res, page.status());
  Reply(res, c.api.ListJobPredictions(name, *page),
        [&](const core::PredictionsPage& p) {
          v1::ListJobPredictionsResponse out;
          for (const std::string& cls : p.classes) out.add_classes(cls);
          for (const core::FilePredictionRecord& r : p.predictions) {
            rpc::ToProto(r, p.classes, out.add_predictions());
          }
          out.set_next_page_token(p.next_page_token);
          SetJson(res, out);
        });
}

// ---- Aliases ---------------------------------------------------------------

void SetAlias(const Context& c, const std::string& alias,
              const httplib::Request& req, httplib::Response& res) {
  v1::SetAliasRequest body;
  if (absl::Status s = ParseBody(req, &body); !s.ok()) return SetError(res, s);
  const std::string name = absl::StrCat("aliases/", alias);
  if (!body.alias().empty() && body.alias() != name) {
    return SetError(res, absl::InvalidArgumentError(absl::StrCat(
                             "alias: the body names \"", body.alias(),
                             "\" but the path ", name)));
  }
  Reply(res, c.api.SetAlias(name, body.model()), [&](const core::AliasInfo& a) {
    v1::Alias out;
    rpc::ToProto(a, &out);
    SetJson(res, out);
  });
}

// ---- Predict ---------------------------------------------------------------

// The images of a Predict request: multipart file parts, or a PredictRequest
// in JSON. `ids` gets each image's id.
absl::Status PredictImages(const std::string& model_name,
                           const httplib::Request& req, core::PredictCall* call,
                           std::vector<std::string>* ids, int* top_k) {
  if (req.is_multipart_form_data()) {
    for (const auto& [field, part] : req.files) {
      if (field == "top_k") {
        if (!absl::SimpleAtoi(part.content, top_k)) {
          return absl::InvalidArgumentError("top_k must be an integer");
        }
        TRANSFERD_RETURN_IF_ERROR(rpc::CheckTopK(*top_k));
        continue;
      }
      if (field == "horizontal_flip_tta") {
        if (part.content != "true" && part.content != "false") {
          return absl::InvalidArgumentError(
              "horizontal_flip_tta must be true or false");
        }
        call->flip_tta = part.content == "true";
        continue;
      }
      if (part.filename.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("multipart field \"", field.substr(0, 40),
                         "\" is not a file (send images as file parts)"));
      }
      ids->push_back(part.filename);
      call->images.push_back(part.content);
    }
    return absl::OkStatus();
  }
  v1::PredictRequest body;
  if (absl::Status s = ParseBody(req, &body); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.message(), " (or multipart/form-data with the images as files)"));
  }
  if (!body.model().empty() && body.model() != model_name) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: the body names \"", body.model(),
                     "\" but the path ", model_name));
  }
  call->flip_tta = body.horizontal_flip_tta();
  TRANSFERD_RETURN_IF_ERROR(rpc::CheckTopK(body.top_k()));
  *top_k = body.top_k();
  for (v1::Image& image : *body.mutable_images()) {
    ids->push_back(image.id());
    call->images.push_back(std::move(*image.mutable_data()));
  }
  return absl::OkStatus();
}

void Predict(const Context& c, const std::string& model_name,
             const httplib::Request& req, httplib::Response& res) {
  core::PredictCall call;
  std::vector<std::string> ids;
  int top_k = 0;
  if (absl::Status s = PredictImages(model_name, req, &call, &ids, &top_k);
      !s.ok()) {
    return SetError(res, s);
  }
  call.deadline = std::chrono::steady_clock::now() + c.options.max_request_time;
  call.cancelled = std::make_shared<std::atomic<bool>>(false);
  struct Answer {
    absl::Status status;
    core::PredictOutcome outcome;
  };
  auto answer = std::make_shared<std::promise<Answer>>();
  std::future<Answer> done = answer->get_future();
  call.done = [answer](absl::Status status, core::PredictOutcome out) {
    answer->set_value({std::move(status), std::move(out)});
  };
  c.api.Predict(model_name, std::move(call));
  // The predictor answers by the deadline at the latest.
  Answer a = done.get();
  if (!a.status.ok()) return SetError(res, a.status);
  v1::PredictResponse out;
  out.set_model(absl::StrCat("models/", a.outcome.model_id));
  for (size_t i = 0; i < ids.size() && i < a.outcome.images.size(); ++i) {
    rpc::PredictionToProto(ids[i], a.outcome.images[i], a.outcome.classes,
                           out.add_predictions(), top_k);
  }
  SetJson(res, out);
}

// The id a route captured, as a resource name.
std::string Name(const char* collection, const httplib::Request& req) {
  return absl::StrCat(collection, "/", req.matches[1].str());
}

using Req = const httplib::Request&;
using Res = httplib::Response&;
using Handler = void (*)(const Context&, Req, Res);

// A route's handler: the role check, then `handler`.
httplib::Server::Handler With(const std::shared_ptr<Context>& c, Role role,
                              Handler handler) {
  return [c, role, handler](Req req, Res res) {
    if (Allowed(*c, req, res, role)) handler(*c, req, res);
  };
}

// A resource id in a route's path.
constexpr char kId[] = "([^/:]+)";

void AddServerAndDatasetRoutes(httplib::Server& s,
                               const std::shared_ptr<Context>& c) {
  auto with = [&c](Role role, Handler handler) {
    return With(c, role, handler);
  };
  const std::string id = kId;
  s.Get("/api/v1/server",
        with(Role::kViewer,
             [](const Context& c, Req, Res res) { ServerInfo(c, res); }));

  s.Get("/api/v1/datasets",
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          Listing<v1::ListDatasetsResponse, core::DatasetInfo>(
              req, res,
              [&](const core::api::PageRequest& p) {
                return c.api.ListDatasets(p);
              },
              [](const core::DatasetInfo& d, v1::ListDatasetsResponse* out) {
                rpc::ToProto(d, out->add_datasets());
              });
        }));
  s.Get(absl::StrCat("/api/v1/datasets/", id),
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          Reply(res, c.api.GetDataset(Name("datasets", req)),
                [&](const core::DatasetInfo& d) {
                  v1::Dataset out;
                  rpc::ToProto(d, &out);
                  SetJson(res, out);
                });
        }));
  s.Delete(absl::StrCat("/api/v1/datasets/", id),
           with(Role::kAdmin, [](const Context& c, Req req, Res res) {
             ReplyEmpty(res, c.api.DeleteDataset(Name("datasets", req)));
           }));
}

void AddJobRoutes(httplib::Server& s, const std::shared_ptr<Context>& c) {
  auto with = [&c](Role role, Handler handler) {
    return With(c, role, handler);
  };
  const std::string id = kId;
  s.Get("/api/v1/jobs", with(Role::kViewer, ListJobs));
  s.Post("/api/v1/jobs", with(Role::kTrainer, CreateJob));
  s.Get(absl::StrCat("/api/v1/jobs/", id),
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          AnswerJob(res, c.api.GetJob(Name("jobs", req)));
        }));
  s.Post(absl::StrCat("/api/v1/jobs/", id, ":cancel"),
         with(Role::kTrainer, [](const Context& c, Req req, Res res) {
           AnswerJob(res, c.api.CancelJob(Name("jobs", req)));
         }));
  s.Get(absl::StrCat("/api/v1/jobs/", id, "/events"),
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          absl::StatusOr<std::string> job = c.api.JobId(Name("jobs", req));
          if (!job.ok()) return SetError(res, job.status());
          c.streams.Serve(*job, req, res);
        }));
  s.Get(absl::StrCat("/api/v1/jobs/", id, "/predictions"),
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          ListJobPredictions(c, Name("jobs", req), req, res);
        }));
}

void AddModelRoutes(httplib::Server& s, const std::shared_ptr<Context>& c) {
  auto with = [&c](Role role, Handler handler) {
    return With(c, role, handler);
  };
  const std::string id = kId;
  s.Get("/api/v1/models",
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          Listing<v1::ListModelsResponse, core::ModelInfo>(
              req, res,
              [&](const core::api::PageRequest& p) {
                return c.api.ListModels(p);
              },
              [](const core::ModelInfo& m, v1::ListModelsResponse* out) {
                // As ListModels on gRPC.
                rpc::ToListingProto(m, out->add_models());
              });
        }));
  s.Get(absl::StrCat("/api/v1/models/", id),
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          Reply(res, c.api.GetModel(Name("models", req)),
                [&](const core::ModelInfo& m) {
                  v1::Model out;
                  rpc::ToProto(m, &out);
                  SetJson(res, out);
                });
        }));
  s.Delete(absl::StrCat("/api/v1/models/", id),
           with(Role::kAdmin, [](const Context& c, Req req, Res res) {
             ReplyEmpty(res, c.api.DeleteModel(Name("models", req)));
           }));
  s.Get("/api/v1/aliases",
        with(Role::kViewer, [](const Context& c, Req req, Res res) {
          Listing<v1::ListAliasesResponse, core::AliasInfo>(
              req, res,
              [&](const core::api::PageRequest& p) {
                return c.api.ListAliases(p);
              },
              [](const core::AliasInfo& a, v1::ListAliasesResponse* out) {
                rpc::ToProto(a, out->add_aliases());
              });
        }));
  s.Put(absl::StrCat("/api/v1/aliases/", id),
        with(Role::kAdmin, [](const Context& c, Req req, Res res) {
          SetAlias(c, req.matches[1].str(), req, res);
        }));
  s.Delete(absl::StrCat("/api/v1/aliases/", id),
           with(Role::kAdmin, [](const Context& c, Req req, Res res) {
             ReplyEmpty(res, c.api.DeleteAlias(Name("aliases", req)));
           }));
  s.Post(absl::StrCat("/api/v1/models/", id, ":predict"),
         with(Role::kTrainer, [](const Context& c, Req req, Res res) {
           Predict(c, Name("models", req), req, res);
         }));
  s.Post(absl::StrCat("/api/v1/aliases/", id, ":predict"),
         with(Role::kTrainer, [](const Context& c, Req req, Res res) {
           Predict(c, Name("aliases", req), req, res);
         }));
}

}  // namespace

bool SameOrigin(const std::string& origin, const std::string& host) {
  if (origin.empty()) return true;
  const size_t scheme = origin.find("://");
  if (scheme == std::string::npos || host.empty()) return false;
  return absl::AsciiStrToLower(origin.substr(scheme + 3)) ==
         absl::AsciiStrToLower(host);
}
void AddJsonApiRoutes(httplib::Server& s, EngineApi& api,
                      const auth::Authorizer& auth,
                      const JsonApiOptions& options, EventStreams& streams) {
  auto c = std::make_shared<Context>(Context{api, auth, options, streams});
  AddServerAndDatasetRoutes(s, c);
  AddJobRoutes(s, c);
  AddModelRoutes(s, c);
}

}  // namespace transferd::http
