#include "server/rpc/oip_conversions.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/core/api/engine_api.h"
#include "server/core/util/build_info.h"

namespace transferd::rpc::oip {
namespace {

using Tensor = inference::ModelInferRequest::InferInputTensor;

absl::Status Invalid(const std::string& tensor, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(tensor, ": ", what));
}

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// The number of elements of `shape`; INVALID_ARGUMENT for a negative
// dimension or an overflowing product.
absl::StatusOr<int64_t> Elements(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) {
      return Invalid(t.name(), absl::StrCat("shape ", ShapeText(t.shape()),
                                            " is not a valid tensor shape"));
    }
    n *= d;
  }
  return n;
}

// The encoded files of an "images" tensor: BYTES, shape [N] or [N,1].
absl::Status ReadImages(const Tensor& t, const std::string* raw,
                        InferCall* call) {
  if (t.datatype() != "BYTES") {
    return Invalid(t.name(), absl::StrCat("datatype ", t.datatype(),
                                          "; images are BYTES (encoded "
                                          "JPEG or PNG files)"));
  }
  const bool shape_ok =
      (t.shape_size() == 1) || (t.shape_size() == 2 && t.shape(1) == 1);
  if (!shape_ok) {
    return Invalid(t.name(), absl::StrCat("shape ", ShapeText(t.shape()),
                                          "; images take [N] or [N,1]"));
  }
  absl::StatusOr<int64_t> n = Elements(t);
  if (!n.ok()) return n.status();
  if (raw != nullptr) {
    absl::StatusOr<std::vector<std::string>> elements =
        SplitBytes(*raw, *n, t.name());
    if (!elements.ok()) return elements.status();
    call->images = *std::move(elements);
    return absl::OkStatus();
  }
  if (t.contents().bytes_contents_size() != *n) {
    return Invalid(t.name(), absl::StrCat(t.contents().bytes_contents_size(),
                                          " elements in bytes_contents for "
                                          "shape ",
                                          ShapeText(t.shape())));
  }
  call->images.assign(t.contents().bytes_contents().begin(),
                      t.contents().bytes_contents().end());
  return absl::OkStatus();
}

// The pixels of a "pixels" tensor: UINT8 [N,S,S,3].
absl::Status ReadPixels(const Tensor& t, const std::string* raw,
                        InferCall* call) {
  if (t.datatype() != "UINT8") {
    return Invalid(t.name(),
                   absl::StrCat("datatype ", t.datatype(),
                                "; pixels are UINT8 [N,height,width,3]"));
  }
  if (t.shape_size() != 4 || t.shape(3) != 3 || t.shape(1) != t.shape(2) ||
      t.shape(1) <= 0) {
    return Invalid(t.name(),
                   absl::StrCat("shape ", ShapeText(t.shape()),
                                "; pixels take [N,S,S,3], S the model's "
                                "input size (ModelMetadata)"));
  }
  absl::StatusOr<int64_t> n = Elements(t);
  if (!n.ok()) return n.status();
  const int64_t per_image = t.shape(1) * t.shape(2) * 3;
  call->pixel_size = static_cast<int>(t.shape(1));
  if (raw != nullptr) {
    if (static_cast<int64_t>(raw->size()) != *n) {
      return Invalid(
          t.name(), absl::StrCat(raw->size(), " bytes of raw data for shape ",
                                 ShapeText(t.shape()), " (", *n, " expected)"));
    }
    for (int64_t i = 0; i < t.shape(0); ++i) {
      call->images.emplace_back(raw->data() + i * per_image,
                                static_cast<size_t>(per_image));
    }
    return absl::OkStatus();
  }
  const auto& values = t.contents().uint_contents();
  if (values.size() != *n) {
    return Invalid(t.name(), absl::StrCat(values.size(),
                                          " elements in uint_contents for "
                                          "shape ",
                                          ShapeText(t.shape())));
  }
  for (int64_t i = 0; i < t.shape(0); ++i) {
    std::string image(static_cast<size_t>(per_image), '\0');
    for (int64_t j = 0; j < per_image; ++j) {
      const uint32_t v = values[static_cast<int>(i * per_image + j)];
      if (v > 255) {
        return Invalid(t.name(), absl::StrCat("value ", v, " is not a UINT8"));
      }
      image[static_cast<size_t>(j)] = static_cast<char>(v);
    }
    call->images.push_back(std::move(image));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Classification(
    const inference::ModelInferRequest::InferRequestedOutputTensor& o) {
  auto it = o.parameters().find("classification");
  if (it == o.parameters().end()) return 0;
  const inference::InferParameter& p = it->second;
  int64_t k = 0;
  if (p.has_int64_param()) {
    k = p.int64_param();
  } else if (p.has_uint64_param()) {
    k = static_cast<int64_t>(std::min<uint64_t>(p.uint64_param(), 1u << 30));
  } else {
    return Invalid(o.name(), "the classification parameter must be an integer");
  }
  if (k < 1 || k > (1 << 20)) {
    return Invalid(o.name(),
                   absl::StrCat("classification ", k, " must be at least 1"));
  }
  return static_cast<int>(k);
}

// One output's data.
struct OutputData {
  std::string datatype;
  std::vector<int64_t> shape;
  std::vector<float> floats;
  std::vector<std::string> strings;
};

}  // namespace

void ModelMetadataToProto(const std::string& name, const core::ModelInfo& model,
                          inference::ModelMetadataResponse* out) {
  out->set_name(name);
  out->add_versions(model.id);
  out->set_platform("transferd_libtorch");
  const int64_t s = model.preprocessing.input_size;
  const int64_t classes = static_cast<int64_t>(model.classes.size());
  auto tensor = [](auto* t, const char* name, const char* type,
                   std::vector<int64_t> shape) {
    t->set_name(name);
    t->set_datatype(type);
    for (int64_t d : shape) t->add_shape(d);
  };
  tensor(out->add_inputs(), kImages, "BYTES", {-1});
  tensor(out->add_inputs(), kPixels, "UINT8", {-1, s, s, 3});
  tensor(out->add_outputs(), kProbabilities, "FP32", {-1, classes});
  tensor(out->add_outputs(), kLabels, "BYTES", {-1});
}

absl::StatusOr<InferCall> ParseInferRequest(
    const inference::ModelInferRequest& request) {
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs: ", request.inputs_size(),
        " input tensors; the model takes one: \"images\" (BYTES [N]) or "
        "\"pixels\" (UINT8 [N,S,S,3])"));
  }
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents: ", request.raw_input_contents_size(),
                     " entries for ", request.inputs_size(), " inputs"));
  }
  const Tensor& t = request.inputs(0);
  const std::string* data = raw ? &request.raw_input_contents(0) : nullptr;
  InferCall call;
  absl::Status read;
  if (t.name() == kImages) {
    read = ReadImages(t, data, &call);
  } else if (t.name() == kPixels) {
    read = ReadPixels(t, data, &call);
  } else {
    read = Invalid(absl::StrCat("input \"", t.name(), "\""),
                   "unknown input; the model takes \"images\" (BYTES [N]) or "
                   "\"pixels\" (UINT8 [N,S,S,3])");
  }
  if (!read.ok()) return read;
  if (call.images.empty()) {
    return Invalid(t.name(), "at least one image is required");
  }
  if (request.outputs_size() == 0) {
    call.outputs = {{kProbabilities, 0}, {kLabels, 0}};
  }
  for (const auto& o : request.outputs()) {
    if (o.name() != kProbabilities && o.name() != kLabels) {
      return Invalid(absl::StrCat("output \"", o.name(), "\""),
                     "unknown output; the model returns \"probabilities\" "
                     "and \"labels\"");
    }
    absl::StatusOr<int> k = Classification(o);
    if (!k.ok()) return k.status();
    call.outputs.push_back({o.name(), *k});
  }
  return call;
}

absl::Status InferResponseFromOutcome(const InferCall& call,
                                      const core::PredictOutcome& outcome,
                                      bool raw,
                                      inference::ModelInferResponse* out) {
  const int64_t n = static_cast<int64_t>(outcome.images.size());
  const int64_t c = static_cast<int64_t>(outcome.classes.size());
  const char* input = call.pixel_size > 0 ? kPixels : kImages;
  for (int64_t i = 0; i < n; ++i) {
    const absl::Status& s = outcome.images[static_cast<size_t>(i)].status;
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat(input, "[", i, "]: ", s.message()));
    }
  }
  for (const InferCall::Output& o : call.outputs) {
    OutputData data;
    if (o.classification > 0) {
      if (o.classification > c) {
        return Invalid(
            o.name, absl::StrCat("classification ", o.classification, " > the ",
                                 c, " classes of the model"));
      }
      data.datatype = "BYTES";
      data.shape = {n, o.classification};
      for (const core::ImageResult& r : outcome.images) {
        std::vector<int> order(static_cast<size_t>(c));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
          return r.probabilities[a] > r.probabilities[b];
        });
        for (int k = 0; k < o.classification; ++k) {
          const int cls = order[static_cast<size_t>(k)];
          data.strings.push_back(
              absl::StrFormat("%f:%d:%s", r.probabilities[cls], cls,
                              outcome.classes[static_cast<size_t>(cls)]));
        }
      }
    } else if (o.name == kProbabilities) {
      data.datatype = "FP32";
      data.shape = {n, c};
      for (const core::ImageResult& r : outcome.images) {
        data.floats.insert(data.floats.end(), r.probabilities.begin(),
                           r.probabilities.end());
      }
    } else {
      data.datatype = "BYTES";
      data.shape = {n};
      for (const core::ImageResult& r : outcome.images) {
        data.strings.push_back(outcome.classes[static_cast<size_t>(r.label)]);
      }
    }
    auto* t = out->add_outputs();
    t->set_name(o.name);
    t->set_datatype(data.datatype);
    for (int64_t d : data.shape) t->add_shape(d);
    if (raw) {
      std::string* bytes = out->add_raw_output_contents();
      if (data.datatype == "FP32") {
        bytes->resize(data.floats.size() * sizeof(float));
        std::memcpy(bytes->data(), data.floats.data(), bytes->size());
      } else {
        for (const std::string& s : data.strings) {
          AppendBytesElement(s, bytes);
        }
      }
    } else if (data.datatype == "FP32") {
      t->mutable_contents()->mutable_fp32_contents()->Add(data.floats.begin(),
                                                          data.floats.end());
    } else {
      for (std::string& s : data.strings) {
        t->mutable_contents()->add_bytes_contents(std::move(s));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SplitBytes(std::string_view raw,
                                                    int64_t count,
                                                    std::string_view tensor) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < raw.size()) {
    if (raw.size() - at < 4) break;
    uint32_t length = 0;
    for (int b = 3; b >= 0; --b) {
      length = (length << 8) |
               static_cast<uint8_t>(raw[at + static_cast<size_t>(b)]);
    }
    at += 4;
    if (length > raw.size() - at) {
      return Invalid(
          std::string(tensor),
          absl::StrCat("raw BYTES element ", out.size(), " claims ", length,
                       " bytes; only ", raw.size() - at, " remain"));
    }
    out.emplace_back(raw.substr(at, length));
    at += length;
  }
  if (at != raw.size() || static_cast<int64_t>(out.size()) != count) {
    return Invalid(std::string(tensor),
                   absl::StrCat("raw BYTES data holds ", out.size(),
                                " whole elements; the shape says ", count,
                                " (each element: a 4-byte little-endian "
                                "length, then its bytes)"));
  }
  return out;
}

void AppendBytesElement(std::string_view element, std::string* raw) {
  const auto length = static_cast<uint32_t>(element.size());
  for (int b = 0; b < 4; ++b) {
    raw->push_back(static_cast<char>((length >> (8 * b)) & 0xff));
  }
  raw->append(element);
}

void ServerMetadata(inference::ServerMetadataResponse* out) {
  out->set_name("transferd");
  out->set_version(core::GetBuildInfo().version);
  for (const char* e : kExtensions) out->add_extensions(e);
}

absl::StatusOr<bool> ModelReady(core::api::EngineApi& api,
                                const std::string& name,
                                const std::string& version) {
  absl::StatusOr<std::string> id = api.ResolveServingName(name, version);
  if (!id.ok()) return id.status();
  if (api.ModelReady(*id)) return true;
  api.WarmModel(*id);
  return false;
}

absl::Status ModelMetadata(core::api::EngineApi& api, const std::string& name,
                           const std::string& version,
                           inference::ModelMetadataResponse* out) {
  absl::StatusOr<std::string> id = api.ResolveServingName(name, version);
  if (!id.ok()) return id.status();
  absl::StatusOr<core::ModelInfo> model =
      api.GetModel(absl::StrCat("models/", *id));
  if (!model.ok()) return model.status();
  ModelMetadataToProto(name, *model, out);
  return absl::OkStatus();
}

void ModelInfer(
    core::api::EngineApi& api, const inference::ModelInferRequest& request,
    std::chrono::steady_clock::time_point deadline,
    std::shared_ptr<std::atomic<bool>> cancelled, bool raw_outputs,
    std::function<void(absl::Status, inference::ModelInferResponse)> done) {
  absl::StatusOr<InferCall> parsed = ParseInferRequest(request);
  if (!parsed.ok()) return done(parsed.status(), {});
  absl::StatusOr<std::string> id =
      api.ResolveServingName(request.model_name(), request.model_version());
  if (!id.ok()) return done(id.status(), {});
  auto call = std::make_shared<InferCall>(*std::move(parsed));
  core::PredictCall predict;
  predict.images = std::move(call->images);
  predict.pixel_size = call->pixel_size;
  predict.deadline = deadline;
  predict.cancelled = std::move(cancelled);
  predict.done = [call, raw_outputs, &request, done = std::move(done)](
                     absl::Status status, core::PredictOutcome outcome) {
    inference::ModelInferResponse response;
    if (status.ok()) {
      response.set_model_name(request.model_name());
      response.set_model_version(outcome.model_id);
      response.set_id(request.id());
      status = InferResponseFromOutcome(*call, outcome, raw_outputs, &response);
    }
    done(std::move(status), std::move(response));
  };
  api.Predict(absl::StrCat("models/", *id), std::move(predict));
}

}  // namespace transferd::rpc::oip
