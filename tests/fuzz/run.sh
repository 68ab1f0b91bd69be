#!/usr/bin/env bash
# Builds the libFuzzer + AddressSanitizer targets with clang (Debian's clang
# and libclang-rt-14-dev) and runs each for SECONDS from its checked-in seed
# corpus. Exits non-zero on any crash, sanitizer report, leak or broken
# invariant (the targets abort); the reproducer is left in FUZZ_BUILD_DIR.
#
#   tests/fuzz/run.sh [SECONDS]        default 60 per target
#   FUZZ_BUILD_DIR=/tmp/fuzz tests/fuzz/run.sh 600
#   build/fuzz/fuzz_image CRASH_FILE   replays one input
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
out=${FUZZ_BUILD_DIR:-build/fuzz}
mkdir -p "$out/obj"

cxx=(clang++)
command -v ccache >/dev/null && cxx=(ccache clang++)
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/transferd-ccache}
# As in scripts/build: a clone at another path hits the same cache entries.
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
cflags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -I. $(pkg-config --cflags opencv4 spdlog prometheus-cpp-core))
libs=($(pkg-config --libs opencv4 sqlite3 absl_status absl_statusor absl_strings absl_str_format absl_cord libcrypto spdlog prometheus-cpp-core) -lpthread)

# The project's sources under test: instrumented for coverage and ASan.
# (log.cc and metrics.cc: the upload's structured log line and counters.)
sources=(server/core/data/images.cc common/dataset_layout.cc server/core/datasets.cc
         server/core/util/data_dir.cc server/core/util/store.cc common/hash.cc
         server/core/util/catalog_util.cc server/core/util/log.cc
         server/core/util/metrics.cc)
objects=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(echo "$src" | tr / _).o"
  "${cxx[@]}" "${cflags[@]}" -fsanitize=fuzzer-no-link,address -c "$src" -o "$obj"
  objects+=("$obj")
done

status=0
for target in fuzz_image fuzz_upload; do
  "${cxx[@]}" "${cflags[@]}" -fsanitize=fuzzer,address "tests/fuzz/$target.cc" "${objects[@]}" \
    "${libs[@]}" -o "$out/$target"
  corpus="$out/corpus-$target"
  rm -rf "$corpus" && mkdir -p "$corpus"
  seeds="tests/fuzz/corpus/${target#fuzz_}"
  echo "== $target: ${seconds}s from $(ls "$seeds" | wc -l) seeds"
  # detect_leaks: LeakSanitizer after every run; new inputs go to $corpus,
  # the checked-in seeds stay as they are.
  if ! (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        "./$target" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
        -timeout=20 -print_final_stats=1 "corpus-$target" "$OLDPWD/$seeds" 2>&1 | tail -n 25); then
    echo "fuzz: $target FAILED (reproducer: $out/crash-* / leak-* / timeout-*)" >&2
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "fuzz: no crash, leak or broken invariant"
exit $status
