// spdlog set-up for transferd: human text (default) or JSON lines, to stderr.
#pragma once

#include "server/app/config.h"

namespace transferd::app {

// Installs the default logger. Safe to call once, before threads log.
void SetUpLogging(const LogOptions& options);

}  // namespace transferd::app
