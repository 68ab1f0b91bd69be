// One training example as the loader sees it: a stored image file and the
// index of its class. Kept apart from loader.h so that code listing examples
// (the dataset catalog) does not pull in LibTorch headers.
#pragma once

#include <cstdint>
#include <string>

namespace transferd::core::data {

struct Example {
  std::string path;  // image file on the server
  int64_t label = 0;
};

}  // namespace transferd::core::data
