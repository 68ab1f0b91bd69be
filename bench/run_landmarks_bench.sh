#!/usr/bin/env bash
# The 1,049-class exercise at bench scale (bench/README.md, "Many classes"):
# a generated long-tail set (bench/make_landmarks.cc: 1,049 classes, 1 to 200
# small JPEGs each, about 20,000 in all, labels in CSV files, an unlabelled
# test folder), through the real transferd and transferctl:
#
#   1. upload with CSV labels into a fresh server: files/s, and the server's
#      peak RSS while it runs;
#   2. the same upload into a second fresh server, interrupted (Ctrl-C) once
#      half the files are staged, the server restarted, then resumed:
#      files/s of the resumed run and how many files it sent;
#   3. a second dataset of the same folder: what a de-duplicated upload costs;
#   4. one epoch of each stage of the `landmarks` recipe at a small size
#      (MobileNetV2 0.35 at 96 px, random weights: speed, not accuracy);
#   5. a PREDICT job over the unlabelled test folder: images/s;
#   6. the JSON sizes of GetJob, ListJobs and ListModels (HTTP API) with
#      1,049 classes.
#
#   bench/run_landmarks_bench.sh [--images 20000] [--classes 1049] [--size 64]
#                                [--input-size 96] [--keep]
#
# Builds first (scripts/build). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
images=20000 classes=1049 size=64 input=96 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --images) images=$2; shift 2 ;;
    --classes) classes=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --input-size) input=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run_landmarks_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD_TARGETS="transferd transferctl make_landmarks" scripts/build >/dev/null
bin=$(cd "$BUILD_DIR/bin" && pwd)
work=$(mktemp -d)
server_pid=""
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# The developer's TRANSFERD_* settings must not change what is measured.
for v in $(env | grep -o '^TRANSFERD_[A-Z_]*' || true); do unset "$v"; done
export XDG_CACHE_HOME="$work/cache"

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server DATA_DIR: a server on fresh ports; sets server_pid, addr, http.
start_server() {
  local port; port=$(free_port); http=$(free_port)
  addr="127.0.0.1:$port"
  "$bin/transferd" --listen "$addr" --http-listen "127.0.0.1:$http" \
    --data-dir "$1" --log-level warn >>"$work/server.log" 2>&1 &
  server_pid=$!
  "$bin/transferctl" --server "$addr" server health --wait 60 >/dev/null
}
stop_server() {
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
}
ctl() { "$bin/transferctl" --server "$addr" "$@"; }
rate() { python3 -c "print(f'{$1 / max($2, 1e-9):.1f}')"; }

echo "generating the set ..." >&2
gen=$("$bin/make_landmarks" "$work/set" --classes "$classes" --images "$images" \
  --size "$size")
echo "$gen" >&2
files=$(find "$work/set/train" -name '*.jpg' | wc -l)
tests=$(find "$work/set/test" -name '*.jpg' | wc -l)
labels="csv:$work/set/train.csv,names=$work/set/category.csv"
split="counts-up-to:180,10,10"

# 1. First upload, with the server's RSS sampled every 0.2 s.
start_server "$work/data1"
( while kill -0 "$server_pid" 2>/dev/null; do
    awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null
    sleep 0.2
  done >"$work/rss.log" ) &
sampler_pid=$!
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
t0=$(now)
ctl datasets upload "$work/set/train" --id lm --labels "$labels" \
  --split "$split" >"$work/upload1.txt" 2>"$work/upload1.err"
t1=$(now)
kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
first_s=$(python3 -c "print($t1 - $t0)")
rss_peak=$(sort -n "$work/rss.log" | tail -1)

# 3. A second dataset of the same files: nothing to send.
t0=$(now)
ctl datasets upload "$work/set/train" --id lm-again --labels "$labels" \
  --split "$split" >/dev/null 2>"$work/upload3.err"
t1=$(now)
dedup_s=$(python3 -c "print($t1 - $t0)")
dedup_held=$(grep -o '([0-9]* already on the server)' "$work/upload3.err" | tail -1 | tr -dc 0-9)
stop_server

# 2. Interrupted at half (the Ctrl-C of --cancel-after-files), server
#    restarted, resumed.
start_server "$work/data2"
half=$((files / 2))
ctl datasets upload "$work/set/train" --id lm --labels "$labels" \
  --split "$split" --cancel-after-files "$half" >/dev/null \
  2>"$work/upload2a.err" || true
staged_at_interrupt=$(find "$work/data2/staging" -type f | wc -l)
stop_server
start_server "$work/data2"
t0=$(now)
ctl datasets upload "$work/set/train" --id lm --labels "$labels" \
  --split "$split" >/dev/null 2>"$work/upload2b.err"
t1=$(now)
resumed_s=$(python3 -c "print($t1 - $t0)")
resumed_held=$(grep -o '([0-9]* already on the server)' "$work/upload2b.err" | tail -1 | tr -dc 0-9)

# 4. One epoch of each stage of the landmarks recipe, small.
ctl datasets upload "$work/set/test" --id lm-test --labels none >/dev/null 2>&1
ctl train lm --recipe landmarks --id lm-train --alpha 0.35 --weights none \
  --input-size "$input" --epochs 1 --fine-tune-epochs 1 >"$work/train.txt" 2>&1
ctl --json jobs show lm-train >"$work/train.json"
ctl --json datasets show lm >"$work/dataset.json"

# 5. PREDICT over the unlabelled test folder.
ctl predict --model lm-train --dataset lm-test --id lm-predict >/dev/null 2>&1
ctl --json jobs show lm-predict >"$work/predict.json"

# 6. Response sizes: JSON bytes of the HTTP API, read in the report below.
python3 - "$work" <<EOF
import json, sys
from datetime import datetime
work = sys.argv[1]
def secs(job):
    f = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
    return (f(job["end_time"]) - f(job["start_time"])).total_seconds()
train = json.load(open(f"{work}/train.json"))
dataset = json.load(open(f"{work}/dataset.json"))
train_files = sum(int(s["files"]) for s in dataset["splits"] if s["split"] == "SPLIT_TRAIN")
ncls = len(dataset["classes"])
pred = json.load(open(f"{work}/predict.json"))
files, tests = $files, $tests
rows = []
rows.append(("upload, first (files/s)", f"{files / $first_s:.1f}", f"{files} files in {$first_s:.1f} s"))
rows.append(("server peak RSS during upload", f"{$rss_peak / 1024:.0f} MiB", f"{$rss_before / 1024:.0f} MiB before"))
rows.append(("upload, resumed after Ctrl-C at 50% + restart (files/s)", f"{files / $resumed_s:.1f}",
             f"{$resumed_s:.1f} s; {files - int('${resumed_held:-0}' or 0)} files sent, {'${resumed_held:-0}'} already staged ({$staged_at_interrupt} at the interrupt)"))
rows.append(("upload, same files as a second dataset (files/s)", f"{files / $dedup_s:.1f}",
             f"{$dedup_s:.1f} s; {'${dedup_held:-0}'} of {files} already on the server, none sent"))
for h in train.get("history", []):
    stage = "head on cached features" if h.get("stage", 0) == 0 else "fine-tune (augmented)"
    rows.append((f"train epoch {h['epoch']}: {stage} (images/s)", f"{train_files / h['seconds']:.1f}",
                 f"{train_files} images, {h['seconds']:.1f} s with validation, val_acc {h.get('val_accuracy', 0):.3f}"))
ev = [e for e in train.get("evaluations", []) if e["split"] == "validation"]
if ev:
    e = ev[0]
    rows.append(("validation after 2 epochs (random init)", f"{e.get('accuracy', 0):.3f}",
                 f"top-{e.get('top_k', 0)} {e.get('top_k_accuracy', 0):.3f}, macro {e.get('macro_accuracy', 0):.3f}, GAP {e.get('gap', 0):.3f}"))
rows.append(("train job in all (images/s over 2 epochs)", f"{2 * train_files / secs(train):.1f}",
             f"{secs(train):.1f} s: feature extraction, 2 epochs, evaluations"))
rows.append(("PREDICT job, unlabelled test folder (images/s)", f"{tests / secs(pred):.1f}", f"{tests} images in {secs(pred):.1f} s"))
import urllib.request
def get(path):
    return urllib.request.urlopen(f"http://127.0.0.1:$http/api/v1/{path}").read()
for what, path, key in (("GetJob", "jobs/lm-train", None), ("GetModel", "models/lm-train", None),
                        ("ListJobs", "jobs?page_size=50", "jobs"), ("ListModels", "models?page_size=50", "models")):
    body = get(path)
    if key is None:
        rows.append((f"{what} JSON bytes ({ncls} classes)", f"{len(body)}", "evaluations with sparse confusion matrices and top confusions"))
    else:
        n = len(json.loads(body).get(key, []))
        rows.append((f"{what} JSON bytes", f"{len(body)}", f"{n} items, lean: {len(body) // max(n, 1)} bytes each"))
w = max(len(r[0]) for r in rows)
print(f"{'measure':<{w}}  {'value':>10}  detail")
for r in rows:
    print(f"{r[0]:<{w}}  {r[1]:>10}  {r[2]}")
EOF
echo "set: $gen"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
