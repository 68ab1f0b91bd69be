#!/usr/bin/env bash
# Served Predict against the offline forward of the same model, measured in
# the same run (bench/predict_bench.cc, bench/README.md).
#
#   bench/run_predict_bench.sh [--window-seconds 10] [--models mobilenet,vgg16]
#                              [--concurrency 1,8,32] [--server-args "ARGS"] [...]
#
# Builds first (scripts/build; BUILD_DIR and BUILD_JOBS are honoured), then
# runs bench/predict_bench with the arguments given; every predict_bench flag
# passes through (--warmup-seconds, --offline-seconds, --channels, --threads,
# --precision, --image-size, --server-env, --transferd, --keep). Run it on an
# otherwise idle machine: the load generator, the server and the offline
# baseline share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
scripts/build >/dev/null
exec "$BUILD_DIR/bin/predict_bench" "$@"
