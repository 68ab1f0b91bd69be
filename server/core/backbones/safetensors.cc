#include "server/core/backbones/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace transferd::core::backbones {
namespace {

struct DType {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};

constexpr DType kDTypes[] = {
    {"F32", torch::kFloat32, 4},   {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"F64", torch::kFloat64, 8},
    {"I64", torch::kInt64, 8},     {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},
    {"U8", torch::kUInt8, 1},      {"BOOL", torch::kBool, 1},
};

const DType* FindDType(const std::string& name) {
  for (const DType& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DType* FindDType(torch::ScalarType type) {
  for (const DType& d : kDTypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

constexpr uint64_t kMaxHeaderBytes = 100 * 1024 * 1024;

// One tensor's header entry.
struct Entry {
  std::string name;
  const DType* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Checks the header entry `t` of tensor `key` against the `data_size` bytes
// of the data section.
absl::StatusOr<Entry> ParseEntry(const std::string& where,
                                 const std::string& key,
                                 const nlohmann::json& t, uint64_t data_size) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": tensor \"", key, "\": ", why));
  };
  if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
      !t.contains("data_offsets") || !t["dtype"].is_string() ||
      !t["shape"].is_array() || !t["data_offsets"].is_array() ||
      t["data_offsets"].size() != 2) {
    return bad("needs dtype, shape and data_offsets [begin, end]");
  }
  Entry e;
  e.name = key;
  e.dtype = FindDType(t["dtype"].get<std::string>());
  if (e.dtype == nullptr) return bad("unsupported dtype " + t["dtype"].dump());
  int64_t numel = 1;
  for (const auto& d : t["shape"]) {
    if (!d.is_number_unsigned())
      return bad("shape must hold non-negative integers");
    const int64_t dim = d.get<int64_t>();
    if (dim > 0 && numel > (int64_t{1} << 40) / dim)
      return bad("shape too large");
    numel *= dim;
    e.shape.push_back(dim);
  }
  const auto& off = t["data_offsets"];
  if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    return bad("data_offsets must be non-negative integers");
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                            "] outside the ", data_size,
                            " data bytes (truncated file?)"));
  }
  if (e.end - e.begin != static_cast<uint64_t>(numel * e.dtype->size)) {
    return bad(absl::StrCat(
        "holds ", e.end - e.begin, " bytes but ", t["dtype"].get<std::string>(),
        " ", t["shape"].dump(), " needs ", numel * e.dtype->size));
  }
  return e;
}

// The tensors' byte ranges may not overlap.
absl::Status CheckNoOverlap(
    const std::string& where,
    std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensors overlap in the data section"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NamedTensors> ReadSafetensors(
    const std::filesystem::path& path) {
  const std::string where = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", where));
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": not a safetensors file (", file_size, " bytes)"));
  }
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": header length ", header_len, " exceeds the file (", file_size,
        " bytes): truncated or not a safetensors file"));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json json = nlohmann::json::parse(header, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header is not a JSON object"));
  }
  const uint64_t data_size = file_size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<Entry> entries;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    absl::StatusOr<Entry> e =
        ParseEntry(where, it.key(), it.value(), data_size);
    if (!e.ok()) return e.status();
    ranges.emplace_back(e->begin, e->end);
    entries.push_back(*std::move(e));
  }
  if (absl::Status overlap = CheckNoOverlap(where, ranges); !overlap.ok()) {
    return overlap;
  }
  NamedTensors out;
  const std::streamoff data_start = static_cast<std::streamoff>(8 + header_len);
  for (const Entry& e : entries) {
    torch::Tensor t =
        torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    in.seekg(data_start + static_cast<std::streamoff>(e.begin));
    in.read(static_cast<char*>(t.data_ptr()),
            static_cast<std::streamsize>(e.end - e.begin));
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": cannot read tensor \"", e.name, "\""));
    }
    out.emplace(e.name, std::move(t));
  }
  return out;
}

absl::Status WriteSafetensors(
    const std::filesystem::path& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const DType* dtype = FindDType(tensor.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\": dtype not supported by safetensors"));
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtype->size;
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  unsigned char len_bytes[8];
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i)
    len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));

  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const torch::Tensor& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.flush();
    if (!out) {
      return absl::InternalError(absl::StrCat("cannot write ", tmp.string()));
    }
  }
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace transferd::core::backbones
