#include "server/core/model_archive.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/hash.h"
#include "server/core/train/train_json.h"
#include "server/core/util/catalog_util.h"
#include "server/core/util/status_macros.h"

namespace transferd::core {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

constexpr int64_t kBlock = 512;
constexpr const char* kModelJson = "model.json";
constexpr const char* kWeights = "weights.safetensors";
constexpr size_t kCopyBuffer = 1 << 20;

int64_t Padded(int64_t size) { return (size + kBlock - 1) / kBlock * kBlock; }

// ---- ustar headers ----------------------------------------------------------

using Header = std::array<char, kBlock>;

// `width - 1` zero-padded octal digits and a NUL.
void PutOctal(char* field, size_t width, uint64_t value) {
  for (size_t i = width - 1; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  field[width - 1] = '\0';
}

Header MakeHeader(const std::string& name, uint64_t size, int64_t mtime) {
  Header h{};
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 99));
  PutOctal(h.data() + 100, 8, 0644);  // mode
  PutOctal(h.data() + 108, 8, 0);     // uid
  PutOctal(h.data() + 116, 8, 0);     // gid
  if (size < (uint64_t{1} << 33)) {
    PutOctal(h.data() + 124, 12, size);
  } else {
    // GNU base-256 (tar and Python's tarfile read it): beyond ustar's 8 GiB.
    h[124] = static_cast<char>(0x80);
    for (int i = 11; i >= 1; --i, size >>= 8)
      h[124 + i] = static_cast<char>(size & 0xff);
  }
  PutOctal(h.data() + 136, 12,
           static_cast<uint64_t>(std::max<int64_t>(mtime, 0)));
  std::memset(h.data() + 148, ' ', 8);  // checksum counts as spaces
  h[156] = '0';                         // regular file
  std::memcpy(h.data() + 257, "ustar", 6);
  std::memcpy(h.data() + 263, "00", 2);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(h.data() + 148, 8, "%06o", sum & 0777777);
  h[155] = ' ';
  return h;
}

// An octal field: optional leading spaces, digits, then NULs or spaces.
std::optional<uint64_t> ParseOctal(const char* field, size_t width) {
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  uint64_t value = 0;
  size_t digits = 0;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (value > (std::numeric_limits<uint64_t>::max() >> 3))
      return std::nullopt;
    value = value * 8 + static_cast<uint64_t>(field[i] - '0');
  }
  if (digits == 0) return std::nullopt;
  for (; i < width; ++i) {
    if (field[i] != '\0' && field[i] != ' ') return std::nullopt;
  }
  return value;
}

std::optional<uint64_t> ParseSize(const char* field) {
  if (static_cast<unsigned char>(field[0]) == 0x80) {
    uint64_t value = 0;
    for (int i = 1; i < 12; ++i) {
      if (value >> 56 != 0) return std::nullopt;
      value = (value << 8) | static_cast<unsigned char>(field[i]);
    }
    return value;
  }
  return ParseOctal(field, 12);
}

bool AllZero(const char* data, size_t size) {
  return std::all_of(data, data + size, [](char c) { return c == '\0'; });
}

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("not a valid model archive: ", what));
}

// ---- model.json -------------------------------------------------------------

json MetadataJson(const ModelInfo& m, int64_t weights_bytes,
                  const std::string& weights_sha256) {
  json preprocessing = {{"mode", m.preprocessing.mode},
                        {"bgr", m.preprocessing.bgr},
                        {"scale", m.preprocessing.scale},
                        {"mean", m.preprocessing.mean},
                        {"std", m.preprocessing.std},
                        {"input_size", m.preprocessing.input_size}};
  return {{"format", kModelArchiveFormat},
          {"format_version", kModelArchiveFormatVersion},
          {"id", m.id},
          {"display_name", m.display_name},
          {"create_time_ms", UnixMillis(m.create_time)},
          {"source_job", m.source_job},
          {"parent", m.parent},
          {"model", json::parse(train::ModelConfigToJson(m.model))},
          {"classes", m.classes},
          {"preprocessing", preprocessing},
          {"history", json::parse(train::HistoryToJson(m.history))},
          {"best_epoch", m.best_epoch},
          {"evaluations", json::parse(train::EvaluationsToJson(m.evaluations))},
          {"parameters", m.parameters},
          {"spec_blob", absl::Base64Escape(m.spec_blob)},
          {"weights",
           {{"file", kWeights},
            {"bytes", weights_bytes},
            {"sha256", weights_sha256}}}};
}

absl::Status Field(const std::string& name, absl::string_view problem) {
  return Bad(absl::StrCat("model.json: ", name, ": ", problem));
}

// model.json's format and version, and the model's identity.
absl::Status ParseIdentity(const json& j, ModelInfo* m) {
  if (!j.contains("format") || j.at("format") != kModelArchiveFormat) {
    return Field("format",
                 absl::StrCat("expected \"", kModelArchiveFormat, "\""));
  }
  const int version = j.at("format_version").get<int>();
  if (version < 1 || version > kModelArchiveFormatVersion) {
    return Field(
        "format_version",
        absl::StrCat(version, " is not supported (this server reads up to ",
                     kModelArchiveFormatVersion, ")"));
  }
  m->id = j.at("id").get<std::string>();
  m->display_name = j.value("display_name", std::string());
  if (m->display_name.size() > 1024)
    return Field("display_name", "longer than 1024 bytes");
  m->create_time = FromUnixMillis(j.value("create_time_ms", int64_t{0}));
  m->source_job = j.value("source_job", std::string());
  m->parent = j.value("parent", std::string());
  if (!m->parent.empty() &&
      (!absl::StartsWith(m->parent, "models/") ||
       !ValidateResourceId("parent", m->parent.substr(7)).ok())) {
    return Field("parent", "expected \"models/{id}\" or empty");
  }
  return absl::OkStatus();
}

// "model": the network's configuration.
absl::Status ParseModelConfig(const json& j, ModelInfo* m) {
  absl::StatusOr<train::ModelConfig> model =
      train::ModelConfigFromJson(j.at("model").dump());
  if (!model.ok()) return Field("model", model.status().message());
  m->model = *std::move(model);
  const int pooling = static_cast<int>(m->model.head.pooling);
  if (pooling != static_cast<int>(train::Pooling::kFlatten) &&
      pooling != static_cast<int>(train::Pooling::kGlobalAverage)) {
    return Field("model.head.pooling", absl::StrCat("unknown value ", pooling));
  }
  m->model.init_weights_file.clear();
  return absl::OkStatus();
}

// "classes": at least 2 distinct names.
absl::Status ParseClasses(const json& j, ModelInfo* m) {
  m->classes = j.at("classes").get<std::vector<std::string>>();
  if (m->classes.size() < 2)
    return Field("classes", "a classifier needs at least 2 classes");
  if (m->classes.size() > 100000)
    return Field("classes", "more than 100000 classes");
  std::set<std::string> seen;
  for (const std::string& c : m->classes) {
    if (c.empty() || c.size() > 256)
      return Field("classes", "names must have 1 to 256 bytes");
    if (!seen.insert(c).second)
      return Field("classes", absl::StrCat("\"", c, "\" repeats"));
  }
  return absl::OkStatus();
}

// "preprocessing", checked against the model's input size.
absl::Status ParsePreprocessing(const json& j, ModelInfo* m) {
  const json& p = j.at("preprocessing");
  m->preprocessing.mode = p.at("mode").get<std::string>();
  m->preprocessing.bgr = p.at("bgr").get<bool>();
  m->preprocessing.scale = p.at("scale").get<float>();
  m->preprocessing.mean = p.at("mean").get<std::vector<float>>();
  m->preprocessing.std = p.at("std").get<std::vector<float>>();
  m->preprocessing.input_size = p.at("input_size").get<int>();
  const PreprocessingInfo& pp = m->preprocessing;
  if (pp.mode != "caffe" && pp.mode != "tf" && pp.mode != "torch") {
    return Field("preprocessing.mode", "expected caffe, tf or torch");
  }
  if (!(std::isfinite(pp.scale) && pp.scale > 0)) {
    return Field("preprocessing.scale", "must be a positive number");
  }
  if (pp.mean.size() != 3 || pp.std.size() != 3) {
    return Field("preprocessing", "mean and std need 3 values each");
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(pp.mean[c]) ||
        !(std::isfinite(pp.std[c]) && pp.std[c] > 0)) {
      return Field("preprocessing", "mean must be finite and std positive");
    }
  }
  if (pp.input_size != m->model.input_size) {
    return Field("preprocessing.input_size",
                 absl::StrCat(pp.input_size, " differs from model.input_size ",
                              m->model.input_size));
  }
  return absl::OkStatus();
}

// "history", "best_epoch" and "evaluations" (needs the classes).
absl::Status ParseReports(const json& j, ModelInfo* m) {
  absl::StatusOr<std::vector<train::EpochReport>> history =
      train::HistoryFromJson(j.value("history", json::array()).dump());
  if (!history.ok()) return Field("history", history.status().message());
  m->history = *std::move(history);
  m->best_epoch = j.value("best_epoch", 0);
  absl::StatusOr<std::vector<train::EvaluationReport>> evaluations =
      train::EvaluationsFromJson(j.value("evaluations", json::array()).dump());
  if (!evaluations.ok())
    return Field("evaluations", evaluations.status().message());
  m->evaluations = *std::move(evaluations);
  for (const train::EvaluationReport& e : m->evaluations) {
    if (!e.confusion.empty() &&
        static_cast<size_t>(e.num_classes) != m->classes.size())
      return Field("evaluations",
                   "a confusion matrix is not classes x classes");
  }
  return absl::OkStatus();
}

// "parameters", "spec_blob" and "weights" (checked against the weights'
// size in the archive).
absl::Status ParseRest(const json& j, int64_t weights_bytes,
                       std::string* weights_sha256, ModelInfo* m) {
  m->parameters = j.value("parameters", int64_t{0});
  const std::string spec = j.value("spec_blob", std::string());
  if (!absl::Base64Unescape(spec, &m->spec_blob))
    return Field("spec_blob", "is not base64");
  if (j.contains("weights")) {
    const json& w = j.at("weights");
    if (w.contains("bytes") && w.at("bytes").get<int64_t>() != weights_bytes) {
      return Field("weights.bytes",
                   absl::StrCat(w.at("bytes").get<int64_t>(), " but ", kWeights,
                                " has ", weights_bytes));
    }
    *weights_sha256 = w.value("sha256", std::string());
  }
  return absl::OkStatus();
}

// The helpers above throw on missing or mistyped fields; that becomes a
// Status here.
absl::StatusOr<ModelInfo> ParseMetadata(const std::string& text,
                                        int64_t weights_bytes,
                                        std::string* weights_sha256) {
  json j;
  try {
    j = json::parse(text);
    (void)j.dump();  // throws on invalid UTF-8 in any string
  } catch (const std::exception& e) {
    return Bad(absl::StrCat("model.json is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return Bad("model.json is not a JSON object");
  ModelInfo m;
  try {
    TRANSFERD_RETURN_IF_ERROR(ParseIdentity(j, &m));
    TRANSFERD_RETURN_IF_ERROR(ParseModelConfig(j, &m));
    TRANSFERD_RETURN_IF_ERROR(ParseClasses(j, &m));
    TRANSFERD_RETURN_IF_ERROR(ParsePreprocessing(j, &m));
    TRANSFERD_RETURN_IF_ERROR(ParseReports(j, &m));
    TRANSFERD_RETURN_IF_ERROR(ParseRest(j, weights_bytes, weights_sha256, &m));
  } catch (const std::exception& e) {
    return Bad(absl::StrCat("model.json: ", e.what()));
  }
  return m;
}

struct Member {
  int64_t offset = -1;  // of the data
  int64_t size = 0;
};

// The first pass over the weights: their size and SHA-256. Leaves `weights`
// rewound for the second.
absl::Status HashWeights(const ModelInfo& model, std::ifstream& weights,
                         std::vector<char>& buffer, common::Sha256* hash,
                         int64_t* weights_bytes) {
  while (weights) {
    weights.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = weights.gcount();
    if (n <= 0) break;
    hash->Update(buffer.data(), static_cast<size_t>(n));
    *weights_bytes += n;
  }
  if (weights.bad()) {
    return absl::InternalError(
        absl::StrCat("cannot read ", model.weights_file.string()));
  }
  weights.clear();
  weights.seekg(0);
  return absl::OkStatus();
}

// Checks the header block `h` found at offset `pos`: checksum, ustar magic,
// no path prefix, a regular file, an expected name. Returns the name.
absl::StatusOr<std::string> CheckMemberHeader(const Header& h, int64_t pos) {
  unsigned sum = 0;
  int signed_sum = 0;
  for (int i = 0; i < kBlock; ++i) {
    const char c = (i >= 148 && i < 156) ? ' ' : h[i];
    sum += static_cast<unsigned char>(c);
    signed_sum += static_cast<signed char>(c);
  }
  const std::optional<uint64_t> stored = ParseOctal(h.data() + 148, 8);
  if (!stored.has_value() ||
      (*stored != sum && static_cast<int64_t>(*stored) != signed_sum)) {
    return Bad(absl::StrCat(
        "the block at offset ", pos,
        " is not a tar header (bad checksum); not a tar archive?"));
  }
  static constexpr char kPosixMagic[8] = {'u', 's',  't', 'a',
                                          'r', '\0', '0', '0'};
  static constexpr char kGnuMagic[8] = {'u', 's', 't', 'a',
                                        'r', ' ', ' ', '\0'};
  const bool posix = std::memcmp(h.data() + 257, kPosixMagic, 8) == 0;
  const bool gnu = std::memcmp(h.data() + 257, kGnuMagic, 8) == 0;
  if (!posix && !gnu)
    return Bad(absl::StrCat("the header at offset ", pos, " is not ustar"));
  const char* name_end =
      static_cast<const char*>(std::memchr(h.data(), '\0', 100));
  std::string name(h.data(), name_end != nullptr ? name_end - h.data() : 100);
  std::string shown;
  for (char c : name.substr(0, 100)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (posix && h[345] != '\0') {
    return Bad(absl::StrCat("member \"", shown, "\" has a path prefix"));
  }
  const char type = h[156];
  if (type != '0' && type != '\0') {
    return Bad(
        absl::StrCat("member \"", shown, "\" is not a regular file (type '",
                     std::string(1, (type >= 0x20 && type < 0x7f) ? type : '?'),
                     "'); links, folders and tar extensions are not accepted"));
  }
  if (name != kModelJson && name != kWeights) {
    return Bad(absl::StrCat("unexpected member \"", shown,
                            "\"; an archive holds only ", kModelJson, " and ",
                            kWeights));
  }
  return name;
}

// Reads the member headers up to the end-of-archive block into `members`.
// Returns the offset just past that block.
absl::StatusOr<int64_t> ReadMemberTable(
    std::ifstream& in, int64_t file_size,
    std::map<std::string, Member>* members) {
  int64_t pos = 0;
  bool ended = false;
  Header h;
  while (pos + kBlock <= file_size) {
    in.seekg(pos);
    if (!in.read(h.data(), kBlock))
      return absl::InternalError("cannot read the archive");
    if (AllZero(h.data(), kBlock)) {
      ended = true;
      pos += kBlock;
      break;
    }
    TRANSFERD_ASSIGN_OR_RETURN(std::string name, CheckMemberHeader(h, pos));
    if (members->count(name) > 0)
      return Bad(absl::StrCat("member \"", name, "\" repeats"));
    const std::optional<uint64_t> size = ParseSize(h.data() + 124);
    if (!size.has_value())
      return Bad(absl::StrCat("member \"", name, "\" has an invalid size"));
    const int64_t data = pos + kBlock;
    if (*size > static_cast<uint64_t>(file_size) ||
        data + Padded(static_cast<int64_t>(*size)) > file_size) {
      return Bad(absl::StrCat(
          "member \"", name, "\" needs ", *size, " bytes at offset ", data,
          " but the archive ends at ", file_size, " (truncated?)"));
    }
    (*members)[name] = Member{data, static_cast<int64_t>(*size)};
    pos = data + Padded(static_cast<int64_t>(*size));
  }
  if (!ended) return Bad("no end-of-archive blocks (truncated?)");
  return pos;
}

// Only zero padding may follow the end-of-archive block (which ends at
// `pos`).
absl::Status CheckTrailingZeros(std::ifstream& in, int64_t pos,
                                int64_t file_size, std::vector<char>& buffer) {
  in.seekg(pos);
  while (pos < file_size) {
    const int64_t n = std::min<int64_t>(kCopyBuffer, file_size - pos);
    if (!in.read(buffer.data(), n))
      return absl::InternalError("cannot read the archive");
    if (!AllZero(buffer.data(), static_cast<size_t>(n))) {
      return Bad("data follows the end-of-archive blocks");
    }
    pos += n;
  }
  return absl::OkStatus();
}

// The text of the model.json member `meta`.
absl::StatusOr<std::string> ReadModelJson(std::ifstream& in,
                                          const Member& meta) {
  if (meta.size > kMaxModelJsonBytes) {
    return Bad(absl::StrCat(kModelJson, " is larger than ", kMaxModelJsonBytes,
                            " bytes"));
  }
  std::string text(static_cast<size_t>(meta.size), '\0');
  in.clear();
  in.seekg(meta.offset);
  if (!in.read(text.data(), meta.size))
    return absl::InternalError("cannot read the archive");
  return text;
}

// Copies the weights member out to `weights_out`, checking its SHA-256
// against `expected_sha256` when that is set; removes `weights_out` on
// failure.
absl::Status CopyWeightsOut(std::ifstream& in, const Member& weights,
                            const fs::path& weights_out,
                            const std::string& expected_sha256,
                            std::vector<char>& buffer) {
  std::ofstream out(weights_out, std::ios::binary | std::ios::trunc);
  auto remove_out = [&] {
    out.close();
    std::error_code rm;
    fs::remove(weights_out, rm);
  };
  if (!out)
    return absl::InternalError(
        absl::StrCat("cannot create ", weights_out.string()));
  common::Sha256 hash;
  in.seekg(weights.offset);
  for (int64_t done = 0; done < weights.size;) {
    const int64_t n = std::min<int64_t>(kCopyBuffer, weights.size - done);
    if (!in.read(buffer.data(), n) || !out.write(buffer.data(), n)) {
      remove_out();
      return absl::InternalError(
          absl::StrCat("cannot copy ", kWeights, " out of the archive"));
    }
    hash.Update(buffer.data(), static_cast<size_t>(n));
    done += n;
  }
  out.close();
  if (!out) {
    remove_out();
    return absl::InternalError(
        absl::StrCat("cannot write ", weights_out.string()));
  }
  if (!expected_sha256.empty() && hash.HexDigest() != expected_sha256) {
    remove_out();
    return Bad(absl::StrCat(kWeights, " has SHA-256 ", hash.HexDigest(),
                            ", model.json says ",
                            expected_sha256.substr(0, 64)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> WriteModelArchive(const ModelInfo& model,
                                          const fs::path& path) {
  std::ifstream weights(model.weights_file, std::ios::binary);
  if (!weights) {
    return absl::NotFoundError(absl::StrCat(
        "model \"", model.id, "\": cannot open ", model.weights_file.string()));
  }
  // One open file for both passes: a model deleted meanwhile stays readable.
  std::vector<char> buffer(kCopyBuffer);
  common::Sha256 hash;
  int64_t weights_bytes = 0;
  TRANSFERD_RETURN_IF_ERROR(
      HashWeights(model, weights, buffer, &hash, &weights_bytes));

  std::string metadata;
  try {
    metadata =
        MetadataJson(model, weights_bytes, hash.HexDigest()).dump(2) + "\n";
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("model \"", model.id, "\": metadata: ", e.what()));
  }
  const int64_t mtime = UnixMillis(model.create_time) / 1000;

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  auto fail = [&](const std::string& what) {
    out.close();
    std::error_code ec;
    fs::remove(path, ec);
    return absl::InternalError(
        absl::StrCat("cannot write ", path.string(), ": ", what));
  };
  if (!out) return fail("cannot create it");
  static const char kZeros[kBlock] = {};
  const Header json_header = MakeHeader(kModelJson, metadata.size(), mtime);
  out.write(json_header.data(), kBlock);
  out.write(metadata.data(), static_cast<std::streamsize>(metadata.size()));
  out.write(kZeros, static_cast<std::streamsize>(
                        Padded(static_cast<int64_t>(metadata.size())) -
                        static_cast<int64_t>(metadata.size())));
  const Header weights_header =
      MakeHeader(kWeights, static_cast<uint64_t>(weights_bytes), mtime);
  out.write(weights_header.data(), kBlock);
  int64_t copied = 0;
  while (copied < weights_bytes && out) {
    weights.read(buffer.data(), static_cast<std::streamsize>(std::min<int64_t>(
                                    kCopyBuffer, weights_bytes - copied)));
    const std::streamsize n = weights.gcount();
    if (n <= 0) break;
    out.write(buffer.data(), n);
    copied += n;
  }
  if (copied != weights_bytes)
    return fail("the weights changed while being read");
  out.write(kZeros, static_cast<std::streamsize>(Padded(weights_bytes) -
                                                 weights_bytes));
  out.write(kZeros, kBlock);  // end of archive: two zero blocks
  out.write(kZeros, kBlock);
  out.flush();
  if (!out) return fail("write failed");
  out.close();
  if (!out) return fail("close failed");
  return kBlock + Padded(static_cast<int64_t>(metadata.size())) + kBlock +
         Padded(weights_bytes) + 2 * kBlock;
}

absl::StatusOr<ModelInfo> ReadModelArchive(const fs::path& archive,
                                           const fs::path& weights_out) {
  std::ifstream in(archive, std::ios::binary);
  if (!in)
    return absl::InternalError(absl::StrCat("cannot open ", archive.string()));
  std::error_code ec;
  const auto file_size = static_cast<int64_t>(fs::file_size(archive, ec));
  if (ec)
    return absl::InternalError(absl::StrCat("cannot stat ", archive.string()));
  if (file_size < 2 * kBlock || file_size % kBlock != 0) {
    return Bad(absl::StrCat(
        "a tar archive is a whole number of 512-byte blocks (at least 2); ",
        "this one has ", file_size, " bytes"));
  }

  std::map<std::string, Member> members;
  TRANSFERD_ASSIGN_OR_RETURN(const int64_t pos,
                             ReadMemberTable(in, file_size, &members));
  std::vector<char> buffer(kCopyBuffer);
  TRANSFERD_RETURN_IF_ERROR(CheckTrailingZeros(in, pos, file_size, buffer));
  for (const char* required : {kModelJson, kWeights}) {
    if (members.count(required) == 0)
      return Bad(absl::StrCat("no ", required, " in it"));
  }

  const Member& meta = members[kModelJson];
  TRANSFERD_ASSIGN_OR_RETURN(const std::string text, ReadModelJson(in, meta));
  const Member& weights = members[kWeights];
  std::string expected_sha256;
  TRANSFERD_ASSIGN_OR_RETURN(
      ModelInfo info, ParseMetadata(text, weights.size, &expected_sha256));

  TRANSFERD_RETURN_IF_ERROR(
      CopyWeightsOut(in, weights, weights_out, expected_sha256, buffer));
  return info;
}

}  // namespace transferd::core
