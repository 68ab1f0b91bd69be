#include "server/core/train/train_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace transferd::core::train {
namespace {

constexpr char kMagic[8] = {'T', 'D', 'S', 'E', 'C', 'T', '0', '1'};
constexpr char kEndMagic[8] = {'T', 'D', 'S', 'E', 'N', 'D', '0', '1'};
constexpr size_t kTrailer = 8 + 64 + 8;

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

absl::Status Errno(const std::string& what, const std::filesystem::path& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path.string(), ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const std::string& data,
                      const std::filesystem::path& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t MixSeed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<int64_t> EpochOrder(size_t n, uint64_t seed, int64_t epoch,
                                bool shuffle) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) {
    std::mt19937_64 rng(MixSeed(seed ^ MixSeed(static_cast<uint64_t>(epoch))));
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

uint64_t EpochTorchSeed(uint64_t seed, int64_t epoch) {
  return MixSeed(MixSeed(seed) ^ MixSeed(0x7472616e73666572ULL +
                                         static_cast<uint64_t>(epoch))) >>
         1;
}

absl::StatusOr<int64_t> WriteSectionFile(
    const std::filesystem::path& path,
    const std::vector<std::pair<std::string, std::string>>& sections) {
  std::string data(kMagic, sizeof(kMagic));
  for (const auto& [name, bytes] : sections) {
    PutU64(data, name.size());
    data += name;
    PutU64(data, bytes.size());
    data += bytes;
  }
  common::Sha256 sha;
  sha.Update(data.data(), data.size());
  const uint64_t payload = data.size();
  PutU64(data, payload);
  data += sha.HexDigest();
  data.append(kEndMagic, sizeof(kEndMagic));

  static std::atomic<uint64_t> counter{0};
  const std::filesystem::path tmp =
      path.parent_path() / absl::StrCat(".", path.filename().string(), ".tmp-",
                                        ::getpid(), "-", counter.fetch_add(1));
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  absl::Status s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Errno("cannot fsync", tmp);
  if (::close(fd) != 0 && s.ok()) s = Errno("cannot close", tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = Errno("cannot rename to", path);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  const std::filesystem::path dir =
      path.has_parent_path() ? path.parent_path() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return static_cast<int64_t>(data.size());
}

absl::StatusOr<std::map<std::string, std::string>> ReadSectionFile(
    const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  auto loss = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path.string(), ": ", why));
  };
  if (data.size() < sizeof(kMagic) + kTrailer ||
      std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return loss("not a transferd section file, or truncated");
  }
  const char* trailer = data.data() + data.size() - kTrailer;
  if (std::memcmp(trailer + 8 + 64, kEndMagic, sizeof(kEndMagic)) != 0) {
    return loss("truncated (no end marker)");
  }
  const uint64_t payload = GetU64(trailer);
  if (payload != data.size() - kTrailer)
    return loss("length does not match the trailer");
  common::Sha256 sha;
  sha.Update(data.data(), payload);
  if (sha.HexDigest() != std::string(trailer + 8, 64))
    return loss("checksum mismatch");
  std::map<std::string, std::string> out;
  size_t pos = sizeof(kMagic);
  while (pos < payload) {
    if (payload - pos < 8) return loss("malformed section header");
    const uint64_t name_len = GetU64(data.data() + pos);
    pos += 8;
    if (name_len > payload - pos || payload - pos - name_len < 8)
      return loss("malformed section");
    std::string name = data.substr(pos, name_len);
    pos += name_len;
    const uint64_t len = GetU64(data.data() + pos);
    pos += 8;
    if (len > payload - pos) return loss("malformed section length");
    out[std::move(name)] = data.substr(pos, len);
    pos += len;
  }
  return out;
}

double RocAuc(const std::vector<double>& scores,
              const std::vector<int64_t>& labels) {
  const size_t n = scores.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double rank_sum = 0;
  int64_t positives = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[idx[j]] == scores[idx[i]]) ++j;
    const double avg_rank =
        (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;
    for (size_t k = i; k < j; ++k) {
      if (labels[idx[k]] == 1) {
        rank_sum += avg_rank;
        ++positives;
      }
    }
    i = j;
  }
  const int64_t negatives = static_cast<int64_t>(n) - positives;
  if (positives == 0 || negatives == 0) return -1;
  const double p = static_cast<double>(positives);
  return (rank_sum - p * (p + 1) / 2) / (p * static_cast<double>(negatives));
}

std::vector<double> ClassLossWeights(const std::string& mode,
                                     const std::vector<int64_t>& counts) {
  if (mode != "balanced" && mode != "balanced-sqrt") return {};
  const double power = mode == "balanced" ? 1.0 : 0.5;
  std::vector<double> w(counts.size(), 0.0);
  double total = 0, weighted = 0;
  for (size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] <= 0) continue;
    const auto n = static_cast<double>(counts[c]);
    w[c] = std::pow(n, -power);
    total += n;
    weighted += n * w[c];
  }
  if (weighted <= 0) return {};
  for (double& v : w) v *= total / weighted;
  return w;
}

}  // namespace transferd::core::train
