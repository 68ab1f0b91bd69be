#!/usr/bin/env bash
# Images/s per stage of the Keras book's own recipe: VGG16 at 150 px,
# Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(1), a frozen base with
# keras-book augmentation (RMSprop 2e-5), then block5_conv1 onwards trainable
# (RMSprop 1e-5), batch 20 -- as a transferd job (`transferctl train --recipe
# keras-book --weights none`), then the same recipe in the expert PyTorch
# pipeline (bench/acceptance_expert.py --backbone vgg16, tcmalloc preloaded),
# in the same run, on the same images, with the same epochs and seed. The
# backbone is randomly initialised on both sides (the speed does not depend on
# the weights; the accuracies printed mean nothing).
#
# Prints each side's per-epoch breakdown (data wait, forward, backward,
# optimizer, validation), then a markdown table of images/s per stage: the
# first epoch of each stage on its own row (transferd decodes the JPEGs inside
# its first epoch; the expert decodes before training and computes its cached
# validation features/activations before each stage's first epoch, both given
# under the table) and the stage's later epochs (the steady state) on another,
# plus the whole run's wall time; ratio = transferd's images/s / the expert's.
#
#   bench/run_vgg16_stages.sh [DATA_DIR]        # ../shared/data/cats_and_dogs
#   FROZEN_EPOCHS=3 TUNE_EPOCHS=3 ...  # epochs of each stage (defaults 3 and 3;
#                                      # each >= 1, >= 2 for a steady-state row)
#   IMAGES_PER_CLASS=40 ...  # train/ images per class (default: all, 1000);
#                            # validation/ gets half as many (default: all, 500)
#   SEED=1 ...               # both sides' seed (default 1)
#   PRECISION=fp32 ...       # fp32 or bf16 on both sides (default auto: bf16
#                            # where the CPU has native bf16, as both pick)
#   SIZE=150 ...             # input size in pixels (default 150)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/../shared/data/cats_and_dogs}
bin=${BUILD_DIR:-$root/build}/bin
frozen=${FROZEN_EPOCHS:-3}
tune=${TUNE_EPOCHS:-3}
per_class=${IMAGES_PER_CLASS:-}
seed=${SEED:-1}
precision=${PRECISION:-auto}
size=${SIZE:-150}

[[ -d "$data/train" && -d "$data/validation" ]] || { echo "no train/ and validation/ under $data" >&2; exit 2; }
(( frozen >= 1 && tune >= 1 )) || { echo "FROZEN_EPOCHS and TUNE_EPOCHS must be >= 1" >&2; exit 2; }
case $precision in
  auto) precision_flag=() ;;
  fp32|bf16) precision_flag=(--precision "$precision") ;;
  *) echo "PRECISION is auto, fp32 or bf16" >&2; exit 2 ;;
esac

# $work: a scratch folder; start_transferd: a server on loopback (serve.sh).
source "$root/bench/serve.sh"

# The images both sides see, as links (nothing copied).
link_split() {  # SPLIT LAST: per class, the sorted files 1..LAST
  mkdir -p "$work/subset/$1"
  for cls in cat dog; do
    find "$data/$1" -name "$cls.*.jpg" | sort -V | sed -n "1,$2p" |
      xargs -I{} ln -s {} "$work/subset/$1/"
  done
}
if [[ -n "$per_class" ]]; then
  link_split train "$per_class"
  link_split validation $(( (per_class + 1) / 2 ))
else
  link_split train '$'
  link_split validation '$'
fi
data=$work/subset
train_images=$(find -L "$data/train" -name '*.jpg' | wc -l)
val_images=$(find -L "$data/validation" -name '*.jpg' | wc -l)
echo "VGG16 at $size px, $frozen frozen + $tune fine-tune epochs, seed $seed, precision $precision;" \
  "$train_images training and $val_images validation images"

start_transferd

"$bin/transferctl" datasets upload "$data" --id cats-and-dogs | tail -n 4

echo
echo "== transferd: transferctl train --recipe keras-book --weights none"
start=$(date +%s.%N)
"$bin/transferctl" train cats-and-dogs --recipe keras-book --weights none \
  --input-size "$size" --epochs "$frozen" --fine-tune-epochs "$tune" --seed "$seed" \
  "${precision_flag[@]}" --id "vgg16-$seed"
end=$(date +%s.%N)
echo "$start $end" >"$work/cpp.wall"
"$bin/transferctl" --json jobs show "vgg16-$seed" >"$work/job.json"
# Where each epoch's time went (the trainer's log line per epoch).
grep -oE 'epoch [0-9]+: .* checkpoint [0-9.]+s' "$work/server.log" || true

# The expert pipeline gets tcmalloc preloaded (transferd links it).
echo
echo "== PyTorch expert: acceptance_expert.py --backbone vgg16, weights none"
tcmalloc=$(ldconfig -p | awk '/libtcmalloc_minimal\.so\.4 /{path = $NF} END {print path}')
start=$(date +%s.%N)
LD_PRELOAD=$tcmalloc /usr/bin/python3 "$root/bench/acceptance_expert.py" "$data" none \
  --backbone vgg16 --size "$size" --frozen-epochs "$frozen" --tune-epochs "$tune" \
  --seed "$seed" --precision "$precision" | tee "$work/expert.log"
end=$(date +%s.%N)
echo "$start $end" >"$work/expert.wall"

/usr/bin/python3 - "$work" "$frozen" "$tune" "$train_images" <<'EOF'
import json, re, sys
work, frozen, tune, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

SETUP = {"decode_seconds": "decoding", "stage_cache_seconds": "the stage's caches"}


def wall(name):
    start, end = map(float, open(f"{work}/{name}.wall").read().split())
    return end - start

job = json.load(open(f"{work}/job.json"))
# The resolved spec always names the precision the job ran with.
cpp_precision = job["resolved_spec"]["model"]["precision"].replace("PRECISION_", "").lower()
cpp = [(h.get("stage", 0), h["seconds"]) for h in job.get("history", [])]
lines = [json.loads(l) for l in open(f"{work}/expert.log") if l.startswith("{")]
expert = [(l["stage"], l["seconds"]) for l in lines if "epoch" in l and "summary" not in l]
summary = lines[-1] if lines and lines[-1].get("summary") else {}

print()
print("PyTorch expert, where each epoch's time went:")
for l in lines:
    if "parts" not in l:
        continue
    p = l["parts"]
    extra = "".join(f"; {what} {l[k]:.1f}s before it" for k, what in SETUP.items() if k in l)
    print(f"epoch {l['epoch']}: {l['seconds']:.1f}s = " +
          " + ".join(f"{k} {p.get(k, 0.0):.1f}s"
                     for k in ("data wait", "forward", "backward", "optimizer", "validation")) +
          extra)

def rate(epochs, stage, which):
    """(epochs timed, seconds per epoch, images/s) of a stage's first epoch
    or of its later ones."""
    secs = [s for st, s in epochs if st == stage]
    secs = secs[:1] if which == "first" else secs[1:]
    if not secs:
        return None
    per = sum(secs) / len(secs)
    return len(secs), per, n / per

def fmt(r):
    return ("-", "-") if r is None else (f"{r[1]:.1f}", f"{r[2]:.1f}")

rows = []
for stage, name, epochs in ((0, "frozen base", frozen), (1, "fine-tune from block5_conv1", tune)):
    first = 1 if stage == 0 else frozen + 1
    for which, label in (("first", f"epoch {first} (first of the stage)"),
                         ("later", f"epochs {first + 1}-{first + epochs - 1} (steady)"
                          if epochs > 2 else f"epoch {first + 1} (steady)")):
        if which == "later" and epochs < 2:
            continue
        a, b = rate(cpp, stage, which), rate(expert, stage, which)
        ratio = "-" if a is None or b is None else f"{a[2] / b[2]:.2f}x"
        rows.append((f"{name}, {label}", *fmt(a), *fmt(b), ratio))
total = (frozen + tune) * n
cw, ew = wall("cpp"), wall("expert")
rows.append(("whole run, wall (decoding, caches, setup included)", f"{cw:.1f}",
             f"{total / cw:.1f}", f"{ew:.1f}", f"{total / ew:.1f}",
             f"{(total / cw) / (total / ew):.2f}x"))

print()
print(f"VGG16 keras-book recipe, {n} training images per epoch, "
      f"transferd precision {cpp_precision} / expert {summary.get('precision', '?')}:")
print()
print("| stage, epochs | transferd s/epoch | transferd images/s | expert s/epoch | "
      "expert images/s | transferd / expert |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print("s/epoch: mean over the epochs of the row, validation included (whole run: seconds).")
print("transferd decodes the JPEGs inside its first epoch (data wait); the expert "
      "decodes before training and caches before each stage's first epoch, outside "
      "its epoch seconds: " +
      ", ".join(f"{what} {l[k]:.1f}s (before epoch {l['epoch']})"
                for l in lines for k, what in SETUP.items() if k in l) +
      "; transferd's per-stage caches are outside its epoch seconds too (not logged; "
      "in the wall row).")
checkpoints = [float(x) for x in re.findall(r"epoch \d+: .*checkpoint ([0-9.]+)s",
                                             open(f"{work}/server.log").read())]
print(f"transferd writes the best weights and a checkpoint after each epoch, outside its "
      f"epoch seconds: {sum(checkpoints):.1f}s over {len(checkpoints)} epochs "
      "(the expert writes nothing).")
print(f"transferd job {job.get('state')}: best val_accuracy "
      f"{max((h.get('val_accuracy', 0.0) for h in job.get('history', [])), default=0.0):.4f}; "
      f"expert: {summary.get('best_val_accuracy', 0.0):.4f} (random weights: speed only)")
if job.get("state") != "JOB_STATE_SUCCEEDED" or len(expert) != frozen + tune:
    sys.exit("a run did not finish")
EOF
