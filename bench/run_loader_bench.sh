#!/usr/bin/env bash
# Loader images/s at 150 px on the 2000 training JPEGs, C++ (bench/loader_bench)
# next to a torchvision DataLoader (bench/loader_bench.py) in the same run.
#
#   bench/run_loader_bench.sh [DIR]   (default: $TRANSFERD_TEST_DATA/train)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${TRANSFERD_TEST_DATA:?set TRANSFERD_TEST_DATA or pass a folder}/train}
BIN=${BUILD_DIR:-build}/bin
[[ -x "$BIN/loader_bench" ]] || scripts/build >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN/loader_bench" "$dir" >>"$out"
/usr/bin/python3 bench/loader_bench.py "$dir" >>"$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["augment"], r["workers"])
py = {key(r): r["images_per_second"] for r in rows if r["impl"] == "python"}
print(f'{"augmentation":<13} {"threads/workers":>15} {"C++ img/s":>10} {"Python img/s":>13} {"C++/Py":>7}')
for r in rows:
    if r["impl"] != "c++":
        continue
    p = py.get(key(r))
    print(f'{"keras-book" if r["augment"] else "none":<13} {r["workers"]:>15} {r["images_per_second"]:>10.1f} {p:>13.1f} {r["images_per_second"] / p:>7.2f}')
PY
