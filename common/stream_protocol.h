// Conventions of transferd's client-streaming uploads (Datasets.UploadDataset,
// Models.ImportModel) shared by the server and the client.
#pragma once

namespace transferd::common {

// Initial metadata the server sends once it has checked an upload's first
// message (the header: caller's role, id, quota). A client waits for the
// server's initial metadata after writing the header: with this key the
// upload was accepted and the data follows; without it the server has
// already ended the call, and Finish() says why, before any file is sent.
inline constexpr char kUploadAcceptedMetadata[] = "x-transferd-upload";
inline constexpr char kUploadAcceptedValue[] = "accepted";

}  // namespace transferd::common
