#!/usr/bin/env bash
# Conv-base forward throughput, C++ (bench/backbone_bench) next to Python torch
# (bench/backbone_bench.py), measured in the same run on the same machine.
#
#   bench/run_backbone_bench.sh [--seconds S] [--threads N] [--batch B] [--no-bf16]
#
# With TRANSFERD_TEST_WEIGHTS pointing at ../shared/weights/keras, MobileNet
# runs with its real ImageNet weights.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD_DIR:-build}/bin
[[ -x "$BIN/backbone_bench" ]] || scripts/build >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN/backbone_bench" --json "$@" >>"$out"
# Both sides on the same allocator: backbone_bench links tcmalloc (CMake
# TRANSFERD_TCMALLOC), Python gets it preloaded, as PyTorch's CPU tuning
# guides advise; with glibc's malloc large batches page-fault every forward.
tcmalloc=$(ldconfig -p | awk '/libtcmalloc_minimal\.so\.4 /{path = $NF} END {print path}')
echo "allocator: C++ $(ldd "$BIN/backbone_bench" | grep -q tcmalloc && echo tcmalloc || echo glibc), Python ${tcmalloc:+tcmalloc (LD_PRELOAD $tcmalloc)}${tcmalloc:-glibc}"
LD_PRELOAD=$tcmalloc /usr/bin/python3 bench/backbone_bench.py "$@" >>"$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
py = {(r["model"], r["variant"]): r["images_per_second"] for r in rows if r["impl"] == "python"}
print(f'{"model":<10} {"variant":<34} {"C++ img/s":>10} {"Python img/s":>13} {"C++/Py":>7} {"max|diff|":>15} {"mean|diff|":>16} {"mean|fp32|":>11}')
for r in rows:
    if r["impl"] != "c++":
        continue
    p = py.get((r["model"], r["variant"]))
    ratio = r["images_per_second"] / p if p else float("nan")
    print(f'{r["model"]:<10} {r["variant"]:<34} {r["images_per_second"]:>10.2f} {p or 0:>13.2f} {ratio:>7.2f} {r["max_abs_diff"]:>15.4g} {r["mean_abs_diff"]:>16.4g} {r["mean_abs_output"]:>11.4g}')
best_py = {}
for (m, v), ips in py.items():
    best_py[m] = max(best_py.get(m, 0), ips)
for m, ips in best_py.items():
    best_cpp = max(r["images_per_second"] for r in rows if r["impl"] == "c++" and r["model"] == m)
    print(f'{m}: best C++ {best_cpp:.2f} img/s vs best Python {ips:.2f} img/s ({best_cpp / ips:.2f}x)')
PY
