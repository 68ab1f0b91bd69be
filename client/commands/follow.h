// Following a job to its end (train, finetune, jobs watch, predict
// --dataset): its events printed like Keras' fit(), its exit code.
#pragma once

#include <cstdint>

#include "client/client.h"
#include "client/commands/common.h"

namespace transferd::client::commands {

// SUCCEEDED, FAILED or CANCELLED.
bool IsTerminal(v1::JobState state);

// The job's epochs over all its stages: its progress's count once it has
// one, else the sum over its resolved spec's stages.
int TotalEpochs(const v1::Job& job);

// Follows `job` from after event `after` to its end, printing its events
// the way Keras' fit() prints progress (with --json, one line of protobuf
// JSON each). Ctrl-C detaches. Exit code: 0 SUCCEEDED (or detached with
// Ctrl-C), 1 FAILED or CANCELLED, else as Fail().
int FollowJob(const Globals& g, Client& client, const v1::Job& job,
              int64_t after);

}  // namespace transferd::client::commands
