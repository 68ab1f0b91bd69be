// A generated stand-in for the 1,049-landmark contest (bench/README.md,
// "Many classes"): small JPEGs of 1,049 classes with a long tail of 1 to 200
// images per class (a convex curve summing to about --images), laid out
// as the contest ships them: train/<shard>/<shard>/<id>.jpg, train.csv
// (id,landmark_id), category.csv (landmark_id,landmark_name) and an
// unlabelled test/ folder. Each class has its own colour field and stripe
// direction plus per-image noise, so a small network can tell some apart.
// Deterministic for a seed. The data is generated, never checked in.
//
//   make_landmarks OUT_DIR [--classes 1049] [--images 20000] [--test 1000]
//                  [--size 64] [--seed 1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace fs = std::filesystem;

namespace {

struct Options {
  fs::path out;
  int classes = 1049;
  int images = 20000;
  int test = 1000;
  int size = 64;
  unsigned seed = 1;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "make_landmarks: %s\nusage: make_landmarks OUT_DIR [--classes "
               "N] [--images N] [--test N] [--size PX] [--seed S]\n",
               why);
  std::exit(2);
}

// Images per class: 1 + 199 * (1 - rank / (classes - 1))^p, from 200 for
// the largest class down to 1 for the smallest, with `p` chosen so that the
// sum is close to `total` (p = 10 for 1,049 classes and 20,000 images: a
// head of a few large classes and a long tail of small ones).
std::vector<int> ClassSizes(int classes, int total) {
  auto sizes = [&](double p) {
    std::vector<int> n(static_cast<size_t>(classes));
    for (int c = 0; c < classes; ++c) {
      const double x = 1.0 - static_cast<double>(c) / (classes - 1);
      n[c] = static_cast<int>(std::lround(1 + 199 * std::pow(x, p)));
    }
    return n;
  };
  auto sum = [](const std::vector<int>& n) {
    long s = 0;
    for (int v : n) s += v;
    return s;
  };
  double lo = 0.0, hi = 1000.0;  // p = 0: 200 each; large p: about 1 each
  for (int i = 0; i < 80; ++i) {
    const double mid = (lo + hi) / 2;
    (sum(sizes(mid)) > total ? lo : hi) = mid;
  }
  return sizes((lo + hi) / 2);
}

// One image of class `c`: its colour field and stripes, jittered by `rng`.
cv::Mat Image(int c, int size, std::mt19937& rng) {
  std::uniform_int_distribution<int> jitter(-25, 25);
  const cv::Scalar base((c * 37) % 256, (c * 91) % 256, (c * 53) % 256);
  cv::Mat m(size, size, CV_8UC3,
            base + cv::Scalar(jitter(rng), jitter(rng), jitter(rng)));
  const double angle = (c % 12) * M_PI / 12;
  const int period = 6 + c % 9;
  for (int k = -2 * size; k < 2 * size; k += period) {
    const cv::Point a(static_cast<int>(size / 2 + k * std::cos(angle) -
                                       size * std::sin(angle)),
                      static_cast<int>(size / 2 + k * std::sin(angle) +
                                       size * std::cos(angle)));
    const cv::Point b(static_cast<int>(size / 2 + k * std::cos(angle) +
                                       size * std::sin(angle)),
                      static_cast<int>(size / 2 + k * std::sin(angle) -
                                       size * std::cos(angle)));
    cv::line(m, a, b, cv::Scalar(255, 255, 255) - base, 2);
  }
  cv::Mat noise(size, size, CV_8UC3);
  cv::randu(noise, 0, 40);
  m += noise;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) Usage(("missing value after " + a).c_str());
      return std::atoi(argv[++i]);
    };
    if (a == "--classes")
      o.classes = value();
    else if (a == "--images")
      o.images = value();
    else if (a == "--test")
      o.test = value();
    else if (a == "--size")
      o.size = value();
    else if (a == "--seed")
      o.seed = static_cast<unsigned>(value());
    else if (!a.empty() && a[0] == '-')
      Usage(("unknown argument " + a).c_str());
    else
      o.out = a;
  }
  if (o.out.empty()) Usage("OUT_DIR is required");
  if (o.classes < 2 || o.images < o.classes || o.size < 32) Usage("bad sizes");
  const std::vector<int> sizes = ClassSizes(o.classes, o.images);
  std::mt19937 rng(o.seed);
  fs::create_directories(o.out / "test");
  std::ofstream labels(o.out / "train.csv");
  std::ofstream names(o.out / "category.csv");
  labels << "id,landmark_id\n";
  names << "landmark_id,landmark_name\n";
  const std::vector<int> jpeg = {cv::IMWRITE_JPEG_QUALITY, 90};
  long written = 0;
  char id[32];
  for (int c = 0; c < o.classes; ++c) {
    names << c << ",landmark-" << c << "\n";
    for (int k = 0; k < sizes[c]; ++k, ++written) {
      std::snprintf(id, sizeof(id), "%08lx",
                    (written * 2654435761UL) % 0x100000000UL);
      const fs::path dir =
          o.out / "train" / std::string(1, id[0]) / std::string(1, id[1]);
      fs::create_directories(dir);
      cv::imwrite((dir / (std::string(id) + ".jpg")).string(),
                  Image(c, o.size, rng), jpeg);
      labels << id << "," << c << "\n";
    }
  }
  for (int t = 0; t < o.test; ++t) {
    std::snprintf(id, sizeof(id), "test%05d", t);
    cv::imwrite((o.out / "test" / (std::string(id) + ".jpg")).string(),
                Image(static_cast<int>(rng() % o.classes), o.size, rng), jpeg);
  }
  std::printf(
      "%s: %ld training images over %d classes (%d to %d each), %d "
      "test images\n",
      o.out.c_str(), written, o.classes, sizes.back(), sizes.front(), o.test);
  return 0;
}
