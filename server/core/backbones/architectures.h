// Constructors of the individual architectures (used by CreateBackbone).
#pragma once

#include "server/core/backbones/backbone.h"

namespace transferd::core::backbones {

Backbone MakeVgg(const BackboneSpec& spec, int depth);  // 16 or 19
Backbone MakeResNet50(const BackboneSpec& spec);
Backbone MakeMobileNet(const BackboneSpec& spec);
Backbone MakeMobileNetV2(const BackboneSpec& spec);

}  // namespace transferd::core::backbones
