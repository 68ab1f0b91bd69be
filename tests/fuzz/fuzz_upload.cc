// libFuzzer target: the upload-chunk parser (DatasetUpload::Add/Commit) over
// a real data directory and SQLite store. The input is read as a sequence of
// chunks; whatever arrives, an upload that is abandoned or fails leaves
// nothing in tmp/, and a committed one is a dataset that can be deleted
// again, leaving datasets/ empty.
//
// Input format, repeated: flags (bit 0: a file's first chunk with a path,
// bit 1: last chunk of the file, bit 2: commit now), then when bit 0 is set a
// path length byte and the path, a declared-size byte (255: the length of
// this chunk's data, else byte * 97), and always a data length byte and the
// data.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "server/core/datasets.h"
#include "server/core/util/data_dir.h"
#include "server/core/util/store.h"

namespace fs = std::filesystem;
using namespace transferd::core;  // NOLINT: a fuzz target

namespace {

struct World {
  fs::path root;
  std::unique_ptr<DataDir> dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<DatasetCatalog> catalog;
};

World& TheWorld() {
  static World* world = [] {
    auto* w = new World;
    char tmpl[] = "/tmp/fuzz-upload-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    w->root = tmpl;
    DataDir::Options d;
    d.root = w->root / "data";
    auto dir = DataDir::Open(d);
    if (!dir.ok()) std::abort();
    w->dir = std::move(*dir);
    Store::Options s;
    s.path = w->dir->root() / "transferd.db";
    auto store = Store::Open(s);
    if (!store.ok()) std::abort();
    w->store = std::move(*store);
    DatasetLimits limits;
    limits.max_file_bytes = 64 * 1024;
    limits.max_files = 64;
    limits.max_dataset_bytes = 1 << 20;
    limits.min_free_disk_bytes = 0;
    limits.image.max_pixels = 1 << 16;
    auto catalog = DatasetCatalog::Open(*w->store, *w->dir, limits);
    if (!catalog.ok()) std::abort();
    w->catalog = std::move(*catalog);
    return w;
  }();
  return *world;
}

bool Empty(const fs::path& p) { return !fs::exists(p) || fs::is_empty(p); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto take = [&](size_t n) {
    n = std::min(n, in.size());
    std::string_view out = in.substr(0, n);
    in.remove_prefix(n);
    return out;
  };
  auto byte = [&]() -> int {
    return in.empty() ? -1 : static_cast<uint8_t>(take(1)[0]);
  };

  UploadSpec spec;
  spec.id = "fuzz";
  auto upload = w.catalog->BeginUpload(spec);
  if (!upload.ok()) std::abort();  // the previous run left the id taken
  bool committed = false;
  while (!in.empty()) {
    const int flags = byte();
    UploadChunk chunk;
    int declared = 0;
    if (flags & 1) {
      const int n = byte();
      if (n < 0) break;
      chunk.path = take(static_cast<size_t>(n));
      declared = byte();
      if (declared < 0) break;
    }
    const int n = byte();
    if (n < 0) break;
    chunk.data = take(static_cast<size_t>(n));
    if (flags & 1) {
      chunk.size = declared == 255 ? static_cast<int64_t>(chunk.data.size())
                                   : int64_t{declared} * 97;
    }
    chunk.last = (flags & 2) != 0;
    if (!(*upload)->Add(chunk).ok()) break;
    if (flags & 4) {
      auto result = (*upload)->Commit();
      committed = result.ok();
      break;
    }
  }
  upload->reset();  // abandoned unless committed: must leave nothing behind
  if (!Empty(w.dir->root() / "tmp")) std::abort();
  if (committed) {
    if (!w.catalog->Delete("fuzz").ok()) std::abort();
  }
  if (!Empty(w.dir->root() / "datasets")) std::abort();
  return 0;
}
