#include "server/core/models/preprocessing.h"

namespace transferd::core::models {

Preprocessing Preprocessing::Caffe() {
  Preprocessing p;
  p.mode = Mode::kCaffe;
  p.bgr = true;
  p.scale = 1.0f;
  p.mean = {103.939f, 116.779f, 123.68f};  // B, G, R
  p.std = {1.0f, 1.0f, 1.0f};
  return p;
}

Preprocessing Preprocessing::Tf() {
  Preprocessing p;
  p.mode = Mode::kTf;
  p.bgr = false;
  p.scale = 1.0f / 127.5f;
  p.mean = {1.0f, 1.0f, 1.0f};
  p.std = {1.0f, 1.0f, 1.0f};
  return p;
}

Preprocessing Preprocessing::Torch() {
  Preprocessing p;
  p.mode = Mode::kTorch;
  p.bgr = false;
  p.scale = 1.0f / 255.0f;
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  return p;
}

const char* Preprocessing::ModeName(Mode mode) {
  switch (mode) {
    case Mode::kCaffe: return "caffe";
    case Mode::kTf: return "tf";
    case Mode::kTorch: return "torch";
  }
  return "?";
}

}  // namespace transferd::core::models
