// The dashboard's files (server/http/dashboard/), compiled into the binary at
// build time (cmake/embed_assets.cmake): the page works offline, with no CDN.
#pragma once

#include <string_view>
#include <vector>

namespace transferd::http {

struct Asset {
  std::string_view path;          // URL path: "/", "/assets/app.js"
  std::string_view content_type;  // with charset for text
  std::string_view body;
};

const std::vector<Asset>& DashboardAssets();

}  // namespace transferd::http
