#include "server/http/oip_rest.h"

#include <httplib.h>

#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"
#include "server/core/api/engine_api.h"
#include "server/http/http_server.h"
#include "server/http/http_util.h"
#include "server/rpc/oip_conversions.h"

namespace transferd::http {
namespace {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 16;

// The protocol's error body: {"error": "message"}.
void Fail(httplib::Response& res, const absl::Status& status) {
  res.status = HttpStatusFor(status.code());
  res.set_content(json{{"error", std::string(status.message())}}.dump(
                      -1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void Reply(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

bool Allowed(const auth::Authorizer& auth, const httplib::Request& req,
             httplib::Response& res, auth::Role role) {
  absl::Status s = CheckRole(auth, req, role);
  if (s.ok()) return true;
  Fail(res, s);
  return false;
}

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

// The elements of a JSON "data" array, nested or flat, in row-major order.
void Flatten(const json& data, std::vector<const json*>* out) {
  if (data.is_array()) {
    for (const json& e : data) Flatten(e, out);
  } else {
    out->push_back(&data);
  }
}

// An input's data as the raw form of its datatype.
absl::StatusOr<std::string> RawFromJson(const std::string& name,
                                        const std::string& datatype,
                                        const json& data) {
  std::vector<const json*> elements;
  Flatten(data, &elements);
  std::string raw;
  for (size_t i = 0; i < elements.size(); ++i) {
    const json& e = *elements[i];
    if (datatype == "BYTES") {
      std::string decoded;
      if (!e.is_string() ||
          !absl::Base64Unescape(e.get<std::string>(), &decoded)) {
        return Invalid(absl::StrCat(
            name, ": element ", i,
            " is not a base64 string (BYTES elements in JSON are base64; "
            "or send them as binary data)"));
      }
      rpc::oip::AppendBytesElement(decoded, &raw);
    } else if (datatype == "UINT8") {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 ||
          e.get<int64_t>() > 255) {
        return Invalid(
            absl::StrCat(name, ": element ", i, " is not a UINT8 (0..255)"));
      }
      raw.push_back(static_cast<char>(e.get<int64_t>()));
    } else {
      return Invalid(absl::StrCat(name, ": datatype ", datatype,
                                  "; the model takes BYTES images or UINT8 "
                                  "pixels"));
    }
  }
  return raw;
}

// A JSON parameter value as an InferParameter.
void ParameterFromJson(const json& value, inference::InferParameter* out) {
  if (value.is_boolean()) {
    out->set_bool_param(value.get<bool>());
  } else if (value.is_number_integer()) {
    out->set_int64_param(value.get<int64_t>());
  } else if (value.is_number()) {
    out->set_double_param(value.get<double>());
  } else if (value.is_string()) {
    out->set_string_param(value.get<std::string>());
  }
}

bool Flag(const json& parameters, const char* name) {
  return parameters.is_object() && parameters.contains(name) &&
         parameters[name].is_boolean() && parameters[name].get<bool>();
}

// One input of the JSON header into `request` (its data in
// raw_input_contents): JSON data, or the next binary_data_size bytes of
// `body` from `*binary_at`.
absl::Status ParseInput(const json& in, const std::string& body,
                        size_t* binary_at,
                        inference::ModelInferRequest* request) {
  auto* t = request->add_inputs();
  if (!in.is_object() || !in.contains("name") || !in["name"].is_string() ||
      !in.contains("datatype") || !in["datatype"].is_string() ||
      !in.contains("shape") || !in["shape"].is_array()) {
    return Invalid("each input needs a name, a datatype and a shape");
  }
  t->set_name(in["name"].get<std::string>());
  t->set_datatype(in["datatype"].get<std::string>());
  for (const json& d : in["shape"]) {
    if (!d.is_number_integer()) {
      return Invalid(t->name() + ": the shape must hold integers");
    }
    t->add_shape(d.get<int64_t>());
  }
  const auto params = in.find("parameters");
  if (params != in.end() && params->is_object() &&
      params->contains("binary_data_size")) {
    const json& size = (*params)["binary_data_size"];
    if (!size.is_number_unsigned() ||
        size.get<uint64_t>() > body.size() - *binary_at) {
      return Invalid(absl::StrCat(
          t->name(), ": binary_data_size must be a size within the ",
          body.size() - *binary_at, " binary bytes left"));
    }
    const size_t n = size.get<size_t>();
    request->add_raw_input_contents(body.substr(*binary_at, n));
    *binary_at += n;
    return absl::OkStatus();
  }
  if (!in.contains("data")) {
    return Invalid(t->name() + ": no data and no binary_data_size");
  }
  absl::StatusOr<std::string> raw =
      RawFromJson(t->name(), t->datatype(), in["data"]);
  if (!raw.ok()) return raw.status();
  request->add_raw_input_contents(*std::move(raw));
  return absl::OkStatus();
}

struct RestRequest {
  inference::ModelInferRequest request;
  // Per output asked for by name: binary answer.
  std::vector<std::pair<std::string, bool>> binary_outputs;
  bool all_binary = false;
};

// The body (JSON, or JSON then binary tensor data) as a ModelInferRequest
// whose inputs are all in raw_input_contents.
absl::StatusOr<RestRequest> ParseBody(const httplib::Request& req) {
  size_t header_length = req.body.size();
  if (req.has_header("Inference-Header-Content-Length")) {
    const std::string text =
        req.get_header_value("Inference-Header-Content-Length");
    if (!absl::SimpleAtoi(text, &header_length) ||
        header_length > req.body.size()) {
      return Invalid(absl::StrCat("Inference-Header-Content-Length ",
                                  text.substr(0, 20), " is not within the ",
                                  req.body.size(), "-byte body"));
    }
  }
  // Tensors nest a few levels ([N,S,S,3] pixels: 7 with the object around
  // them); deeper bodies are refused while parsing, before anything walks
  // them recursively.
  bool too_deep = false;
  const json body = json::parse(
      req.body.substr(0, header_length),
      [&too_deep](int depth, json::parse_event_t, json&) {
        if (depth > kMaxJsonDepth) too_deep = true;
        return depth <= kMaxJsonDepth;
      },
      /*allow_exceptions=*/false);
  if (too_deep) {
    return Invalid(absl::StrCat("the JSON is nested deeper than ",
                                kMaxJsonDepth, " levels"));
  }
  if (!body.is_object() || !body.contains("inputs") ||
      !body["inputs"].is_array()) {
    return Invalid(
        "the body must be a JSON object with an \"inputs\" array (the Open "
        "Inference Protocol's inference request)");
  }
  RestRequest out;
  if (body.contains("id") && body["id"].is_string()) {
    out.request.set_id(body["id"].get<std::string>());
  }
  if (body.contains("parameters")) {
    out.all_binary = Flag(body["parameters"], "binary_data_output");
  }
  size_t binary_at = header_length;
  for (const json& in : body["inputs"]) {
    if (absl::Status s = ParseInput(in, req.body, &binary_at, &out.request);
        !s.ok()) {
      return s;
    }
  }
  if (binary_at != req.body.size()) {
    return Invalid(absl::StrCat(req.body.size() - binary_at,
                                " bytes of binary data are not claimed by "
                                "any input's binary_data_size"));
  }
  const auto outputs = body.find("outputs");
  for (const json& o : outputs != body.end() && outputs->is_array()
                           ? *outputs
                           : json::array()) {
    if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
      return Invalid("each output asked for needs a name");
    }
    auto* r = out.request.add_outputs();
    r->set_name(o["name"].get<std::string>());
    const auto params = o.find("parameters");
    bool binary = false;
    if (params != o.end() && params->is_object()) {
      for (const auto& [key, value] : params->items()) {
        ParameterFromJson(value, &(*r->mutable_parameters())[key]);
      }
      binary = Flag(*params, "binary_data");
    }
    out.binary_outputs.emplace_back(r->name(), binary);
  }
  return out;
}

// The response in JSON, with the outputs asked for in binary after it.
absl::Status Answer(const RestRequest& rest,
                    const inference::ModelInferResponse& response,
                    httplib::Response& res) {
  json body = {{"model_name", response.model_name()},
               {"model_version", response.model_version()},
               {"outputs", json::array()}};
  if (!response.id().empty()) body["id"] = response.id();
  std::string binary;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& t = response.outputs(i);
    const std::string& raw = response.raw_output_contents(i);
    bool as_binary = rest.all_binary;
    for (const auto& [name, binary_flag] : rest.binary_outputs) {
      if (name == t.name()) as_binary = as_binary || binary_flag;
    }
    json out = {{"name", t.name()},
                {"datatype", t.datatype()},
                {"shape", json(std::vector<int64_t>(t.shape().begin(),
                                                    t.shape().end()))}};
    if (as_binary) {
      out["parameters"] = {{"binary_data_size", raw.size()}};
      binary += raw;
    } else if (t.datatype() == "FP32") {
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
      out["data"] = values;
    } else {
      int64_t n = 1;
      for (int64_t d : t.shape()) n *= d;
      absl::StatusOr<std::vector<std::string>> strings =
          rpc::oip::SplitBytes(raw, n, t.name());
      if (!strings.ok()) return strings.status();
      out["data"] = *strings;
    }
    body["outputs"].push_back(std::move(out));
  }
  const std::string text =
      body.dump(-1, ' ', false, json::error_handler_t::replace);
  res.status = 200;
  if (binary.empty()) {
    res.set_content(text, "application/json");
    return absl::OkStatus();
  }
  res.set_header("Inference-Header-Content-Length",
                 std::to_string(text.size()));
  res.set_content(text + binary, "application/octet-stream");
  return absl::OkStatus();
}

struct Names {
  std::string model;
  std::string version;
};

Names NamesOf(const httplib::Request& req) {
  Names n;
  n.model = req.matches[1].str();
  if (req.matches.size() > 2) n.version = req.matches[2].str();
  return n;
}

void Infer(core::api::EngineApi& api, std::chrono::milliseconds cap,
           const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<RestRequest> rest = ParseBody(req);
  if (!rest.ok()) return Fail(res, rest.status());
  const Names names = NamesOf(req);
  rest->request.set_model_name(names.model);
  rest->request.set_model_version(names.version);
  using Result = std::pair<absl::Status, inference::ModelInferResponse>;
  auto answered = std::make_shared<std::promise<Result>>();
  std::future<Result> done = answered->get_future();
  rpc::oip::ModelInfer(
      api, rest->request, std::chrono::steady_clock::now() + cap,
      std::make_shared<std::atomic<bool>>(false), /*raw_outputs=*/true,
      [answered](absl::Status status, inference::ModelInferResponse out) {
        answered->set_value({std::move(status), std::move(out)});
      });
  // The predictor answers by the deadline at the latest.
  Result result = done.get();
  if (!result.first.ok()) return Fail(res, result.first);
  if (absl::Status s = Answer(*rest, result.second, res); !s.ok()) {
    Fail(res, s);
  }
}

}  // namespace

bool IsOipHealthPath(const std::string& path) {
  return path == "/v2/health/live" || path == "/v2/health/ready";
}

void AddOipRoutes(httplib::Server& s, core::api::EngineApi& api,
                  const auth::Authorizer& auth,
                  std::chrono::milliseconds max_request_time) {
  using Req = const httplib::Request&;
  using Res = httplib::Response&;
  auto* a = &api;
  const auth::Authorizer* z = &auth;
  s.Get("/v2/health/live", [](Req, Res res) {
    Reply(res, json{{"live", true}});
  });
  s.Get("/v2/health/ready", [a](Req, Res res) {
    const bool ready = a->ready() && !a->shutting_down();
    Reply(res, json{{"ready", ready}});
    if (!ready) res.status = 400;  // the protocol: 4xx is false
  });
  s.Get("/v2", [z](Req req, Res res) {
    if (!Allowed(*z, req, res, auth::Role::kViewer)) return;
    inference::ServerMetadataResponse m;
    rpc::oip::ServerMetadata(&m);
    Reply(res,
          json{{"name", m.name()},
               {"version", m.version()},
               {"extensions", std::vector<std::string>(m.extensions().begin(),
                                                       m.extensions().end())}});
  });
  const std::string model = "/v2/models/([^/]+)(?:/versions/([^/]+))?";
  s.Get(model, [a, z](Req req, Res res) {
    if (!Allowed(*z, req, res, auth::Role::kViewer)) return;
    const Names n = NamesOf(req);
    inference::ModelMetadataResponse m;
    if (absl::Status st = rpc::oip::ModelMetadata(*a, n.model, n.version, &m);
        !st.ok()) {
      return Fail(res, st);
    }
    auto tensors = [](const auto& list) {
      json out = json::array();
      for (const auto& t : list) {
        out.push_back({{"name", t.name()},
                       {"datatype", t.datatype()},
                       {"shape", std::vector<int64_t>(t.shape().begin(),
                                                      t.shape().end())}});
      }
      return out;
    };
    Reply(res, json{{"name", m.name()},
                    {"versions", std::vector<std::string>(m.versions().begin(),
                                                          m.versions().end())},
                    {"platform", m.platform()},
                    {"inputs", tensors(m.inputs())},
                    {"outputs", tensors(m.outputs())}});
  });
  s.Get(model + "/ready", [a, z](Req req, Res res) {
    if (!Allowed(*z, req, res, auth::Role::kViewer)) return;
    const Names n = NamesOf(req);
    absl::StatusOr<bool> ready = rpc::oip::ModelReady(*a, n.model, n.version);
    if (!ready.ok()) return Fail(res, ready.status());
    Reply(res, json{{"name", n.model}, {"ready", *ready}});
    if (!*ready) res.status = 400;
  });
  s.Post(model + "/infer", [a, z, max_request_time](Req req, Res res) {
    if (!Allowed(*z, req, res, auth::Role::kTrainer)) return;
    Infer(*a, max_request_time, req, res);
  });
}

}  // namespace transferd::http
