#!/usr/bin/env bash
# Data-parallel scaling on this machine: the fine-tune stage of the
# acceptance recipe (keras-book: VGG16 at 150 px, block5 onwards trainable,
# Flatten -> Dense(256) -> Dropout(0.5), RMSprop 1e-5, batch 20 per rank,
# the book's augmentation) on the shared cats-and-dogs images, run by
# bench/dist_train three ways in the same run:
#
#   1 process  x 1 thread   the baseline
#   2 processes x 1 thread  two ranks over c10d Gloo on loopback (torchrun's
#                           environment), gradients averaged every step
#   1 process  x 2 threads  the same two cores used by intra-op threads
#
# Each run trains EPOCHS epochs (the first decodes the JPEGs into the
# decoded-image cache; the table reports the last epoch, the steady state)
# without validation. Prints a markdown table: images/s over the whole world,
# scaling efficiency (images/s / (cores used x the baseline's)), and the time
# rank 0 spent in allreduce per step (waiting for the slower rank included).
#
#   bench/run_dist_bench.sh [DATA_DIR]     # ../shared/data/cats_and_dogs
#   IMAGES_PER_CLASS=100 EPOCHS=2 PRECISION=bf16 SIZE=150 ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/../shared/data/cats_and_dogs}
bin=${BUILD_DIR:-$root/build}/bin
per_class=${IMAGES_PER_CLASS:-100}
epochs=${EPOCHS:-2}
precision=${PRECISION:-bf16}
size=${SIZE:-150}
[[ -d "$data/train" ]] || { echo "no train/ under $data" >&2; exit 2; }
[[ -x "$bin/dist_train" ]] || { echo "build dist_train first (scripts/build)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--data "$data" --recipe fine-tune --batch 20 --epochs "$epochs"
        --images "$per_class" --precision "$precision" --size "$size"
        --no-validation)

# run NAME THREADS: one process alone.
run_solo() {
  env -u WORLD_SIZE "$bin/dist_train" "${common[@]}" --threads "$2" \
    --work "$work/$1" 2>"$work/$1.log" | tail -n 1 >"$work/$1.json"
}

# run_pair NAME: two ranks of one thread each.
run_pair() {
  local port=$(( 29500 + RANDOM % 1000 ))
  MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 RANK=1 \
    "$bin/dist_train" "${common[@]}" --threads 1 --work "$work/$1-1" \
    >"$work/$1-1.out" 2>"$work/$1-1.log" &
  local other=$!
  MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 RANK=0 \
    "$bin/dist_train" "${common[@]}" --threads 1 --work "$work/$1-0" \
    2>"$work/$1-0.log" | tail -n 1 >"$work/$1.json"
  wait "$other"
}

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; precision $precision, ${size} px, $((2 * per_class)) training images, $epochs epochs" >&2
run_solo one-thread 1
run_pair two-ranks
run_solo two-threads 2

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
rows = [("1 process x 1 thread", "one-thread", 1),
        ("2 processes x 1 thread", "two-ranks", 2),
        ("1 process x 2 threads", "two-threads", 2)]  # cores used
res = {k: json.load(open(f"{work}/{k}.json")) for _, k, _ in rows}
base = res["one-thread"]["epochs"][-1]["images_per_second"]
print("| configuration | images/s (last epoch) | scaling efficiency | allreduce per step (rank 0) |")
print("|---|---|---|---|")
for label, key, cores in rows:
    r = res[key]
    ips = r["epochs"][-1]["images_per_second"]
    eff = ips / (cores * base)
    steps = max(1, r["steps"])
    ar = "-" if r["world_size"] == 1 else f'{1000 * r["allreduce_seconds"] / steps:.0f} ms'
    print(f"| {label} | {ips:.2f} | {eff:.2f} | {ar} |")
print()
print(f'{res["one-thread"]["train_images"]} training images, {len(res["one-thread"]["epochs"])} epochs; '
      f'efficiency = images/s / (cores x {base:.2f}); allreduce per step averages all '
      f'steps of the run, including the first epoch\'s (decoding) imbalance.')
PY
