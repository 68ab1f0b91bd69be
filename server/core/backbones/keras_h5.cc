#include "server/core/backbones/keras_h5.h"

#include <algorithm>
#include <mutex>

#include <hdf5.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace transferd::core::backbones {
namespace {

// libhdf5 (serial build) is not thread-safe: one reader at a time.
std::mutex& Hdf5Mutex() {
  static std::mutex mu;
  return mu;
}

// Reads a string-array attribute (fixed or variable length). Attributes of
// another type (Keras writes an empty float array for weightless layers)
// read as empty.
absl::StatusOr<std::vector<std::string>> ReadStringsAttr(hid_t obj,
                                                         const char* name) {
  std::vector<std::string> out;
  if (H5Aexists(obj, name) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("missing attribute ", name));
  }
  hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
  if (attr < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open attribute ", name));
  hid_t type = H5Aget_type(attr);
  hid_t space = H5Aget_space(attr);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  absl::Status status;
  if (H5Tget_class(type) == H5T_STRING && n > 0) {
    if (H5Tis_variable_str(type) > 0) {
      std::vector<char*> ptrs(n, nullptr);
      hid_t mem = H5Tcopy(H5T_C_S1);
      H5Tset_size(mem, H5T_VARIABLE);
      if (H5Aread(attr, mem, ptrs.data()) < 0) {
        status = absl::InvalidArgumentError(
            absl::StrCat("cannot read attribute ", name));
      } else {
        for (char* p : ptrs) out.emplace_back(p != nullptr ? p : "");
        H5Dvlen_reclaim(mem, space, H5P_DEFAULT, ptrs.data());
      }
      H5Tclose(mem);
    } else {
      // Read with the stored type itself: h5py writes NULLPAD strings that
      // fill their whole width, which a NULLTERM memory type would truncate.
      const size_t size = H5Tget_size(type);
      std::string buf(size * static_cast<size_t>(n), '\0');
      if (H5Aread(attr, type, buf.data()) < 0) {
        status = absl::InvalidArgumentError(
            absl::StrCat("cannot read attribute ", name));
      } else {
        for (hssize_t i = 0; i < n; ++i) {
          std::string s = buf.substr(static_cast<size_t>(i) * size, size);
          s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
          out.push_back(std::move(s));
        }
      }
    }
  }
  H5Sclose(space);
  H5Tclose(type);
  H5Aclose(attr);
  if (!status.ok()) return status;
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KerasH5File>> KerasH5File::Open(
    const std::filesystem::path& path) {
  std::lock_guard<std::mutex> lock(Hdf5Mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as Status
  const std::string where = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("weights file ", where, " not found"));
  }
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        " is not an HDF5 file (or is truncated); expected a Keras .h5 "
        "weights file"));
  }
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": cannot open the HDF5 file (truncated?)"));
  }
  // Whole-model files keep the weights under /model_weights.
  hid_t root = H5Lexists(file, "model_weights", H5P_DEFAULT) > 0
                   ? H5Gopen2(file, "model_weights", H5P_DEFAULT)
                   : H5Gopen2(file, "/", H5P_DEFAULT);
  std::unique_ptr<KerasH5File> f(new KerasH5File(where, file, root));
  if (root < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": cannot open the root group"));
  }
  auto names = ReadStringsAttr(root, "layer_names");
  if (!names.ok() || names->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": no layer_names attribute; not a Keras weights file"));
  }
  f->layer_names_ = std::move(*names);
  return f;
}

KerasH5File::~KerasH5File() {
  std::lock_guard<std::mutex> lock(Hdf5Mutex());
  if (root_ >= 0) H5Gclose(root_);
  if (file_ >= 0) H5Fclose(file_);
}

bool KerasH5File::HasLayer(const std::string& name) const {
  return std::find(layer_names_.begin(), layer_names_.end(), name) !=
         layer_names_.end();
}

absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>>
KerasH5File::LayerWeights(const std::string& layer) const {
  std::lock_guard<std::mutex> lock(Hdf5Mutex());
  if (!HasLayer(layer)) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no layer \"", layer, "\""));
  }
  hid_t group = H5Gopen2(root_, layer.c_str(), H5P_DEFAULT);
  if (group < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": layer \"", layer, "\" has no group (truncated file?)"));
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  absl::Status status;
  auto names = ReadStringsAttr(group, "weight_names");
  if (!names.ok()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        path_, ": layer \"", layer, "\": ", names.status().message()));
  } else {
    for (const std::string& wname : *names) {
      hid_t ds = H5Dopen2(group, wname.c_str(), H5P_DEFAULT);
      if (ds < 0) {
        status = absl::InvalidArgumentError(absl::StrCat(
            path_, ": layer \"", layer, "\": dataset ", wname, " is missing"));
        break;
      }
      hid_t space = H5Dget_space(ds);
      hid_t type = H5Dget_type(ds);
      const int rank = H5Sget_simple_extent_ndims(space);
      std::vector<hsize_t> dims(std::max(rank, 0));
      if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
      std::vector<int64_t> shape(dims.begin(), dims.end());
      if (H5Tget_class(type) != H5T_FLOAT || rank < 0) {
        status = absl::InvalidArgumentError(
            absl::StrCat(path_, ": layer \"", layer, "\": ", wname,
                         " is not a float array"));
      } else {
        torch::Tensor t = torch::empty(shape, torch::kFloat32);
        if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                    t.data_ptr<float>()) < 0) {
          status = absl::InvalidArgumentError(
              absl::StrCat(path_, ": layer \"", layer, "\": cannot read ",
                           wname, " (truncated or corrupt file?)"));
        } else {
          out.emplace_back(wname, std::move(t));
        }
      }
      H5Tclose(type);
      H5Sclose(space);
      H5Dclose(ds);
      if (!status.ok()) break;
    }
  }
  H5Gclose(group);
  if (!status.ok()) return status;
  return out;
}

}  // namespace transferd::core::backbones
