// Constructors of the individual architectures (used by CreateBackbone).
#pragma once

#include "server/core/models/backbone.h"

namespace transferd::core::models {

Backbone MakeVgg(const BackboneSpec& spec, int depth);  // 16 or 19
Backbone MakeResNet50(const BackboneSpec& spec);
Backbone MakeMobileNet(const BackboneSpec& spec);
Backbone MakeMobileNetV2(const BackboneSpec& spec);

}  // namespace transferd::core::models
