"""The expert PyTorch pipeline of the real-data acceptance run
(bench/run_acceptance.sh): the same recipe as bench/acceptance_baseline.py
(MobileNet alpha 0.25 at 224 px with the Keras weights, Keras' augmentation,
Flatten -> Dense(256) -> Dropout(0.5) -> Dense(1) with Glorot init, RMSprop
2e-5 for the frozen stage and 1e-5 from conv_dw_12 on, batch 20), written with
everything PyTorch offers on a CPU:

  - decoded images kept in memory: each JPEG decoded once, at reduced size
    (PIL's draft() lets libjpeg scale by 1/2, 1/4, 1/8 in the DCT), resized to
    224 and kept as uint8; decoding in a process pool at low priority (nice);
  - augmentation of the in-memory uint8 pixels by PIL (bilinear, edges
    repeated: bench/keras_augment.py's warp_pil) in two DataLoader worker
    processes at low priority (nice 10), overlapping the training steps;
  - channels-last tensors and weights;
  - bf16 autocast for the base where the CPU has native bf16 (AVX512-BF16 or
    AMX), the head in fp32;
  - BatchNorm folded into the convolutions of every frozen part
    (torch.nn.utils.fusion.fuse_conv_bn_eval);
  - validation features computed once in the frozen stage (the base does not
    change), and in fine-tuning the frozen bottom's validation activations
    computed once; the training images' frozen bottom runs without autograd;
  - intra-op threads set to the cores; run it with tcmalloc preloaded
    (run_acceptance.sh does), as PyTorch's CPU tuning guides advise.

With --backbone vgg16 the same pipeline runs the Keras book's own recipe
(bench/run_vgg16_stages.sh): VGG16 (Keras' layers, 'caffe' preprocessing) at
150 px, the same head over its 512 x 4 x 4 Flatten, RMSprop 2e-5 for the
frozen stage and 1e-5 from block5_conv1 on; WEIGHTS is a Keras VGG16 no-top
.h5 file or none (random initialisation: Glorot-uniform kernels, zero biases,
as Keras'). VGG16 has no BatchNorm, so there is nothing to fold; the rest
(decoding, augmentation, channels-last, bf16, cached validation features and
activations, foreach RMSprop) is the same.

With a test/ folder, the model of the best validation epoch is scored on it.
Prints one JSON line per epoch (with its stage and where its time went) and a
summary line, in the format of acceptance_baseline.py.
Run with Debian's interpreter: /usr/bin/python3 bench/acceptance_expert.py DATA WEIGHTS.h5
  /usr/bin/python3 bench/acceptance_expert.py DATA --backbone vgg16 [none|VGG16.h5]
"""
import json
import multiprocessing
import os
import time
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import DataLoader, Dataset

from acceptance_baseline import keras_head, load_keras, mobilenet_v1, recipe_parser, tune_start
from keras_augment import draw, warp_pil

CL = torch.channels_last


def native_bf16():
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def decode(path, size):
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # libjpeg's DCT scaling, never below size
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


def load_split(folder, size, pool):
    """N x S x S x 3 uint8 pixels and N x 1 labels."""
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    labels = [1.0 if os.path.basename(f).startswith("dog") else 0.0 for f in files]
    pixels = np.stack(pool.map(partial(decode, size=size), files, chunksize=16))
    return pixels, torch.tensor(labels).unsqueeze(1)


def low_priority(_):
    os.nice(10)


class Augmented(Dataset):
    """The training pixels, each warped afresh (Keras' augmentation)."""

    def __init__(self, pixels, labels, resample, fill):
        self.pixels, self.labels = pixels, labels
        self.resample, self.fill = resample, fill

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        m, flip = draw(self.pixels.shape[1], None)
        return (torch.from_numpy(warp_pil(self.pixels[i], m, flip, self.resample, self.fill)),
                self.labels[i])


CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def preprocess(nhwc_uint8, mode="tf"):
    """Keras preprocessing into an NCHW channels-last float tensor: 'tf'
    (x / 127.5 - 1; MobileNet) or 'caffe' (RGB to BGR, ImageNet mean
    subtracted; VGG16)."""
    x = torch.as_tensor(nhwc_uint8).permute(0, 3, 1, 2)
    if mode == "caffe":
        return x.flip(1).float().sub_(CAFFE_MEAN_BGR).contiguous(memory_format=CL)
    return x.float().div_(127.5).sub_(1.0).contiguous(memory_format=CL)


def fused(modules):
    """Conv2d + BatchNorm2d pairs folded into one Conv2d (inference only)."""
    out, modules = [], list(modules)
    i = 0
    while i < len(modules):
        m = modules[i]
        if (isinstance(m, nn.Conv2d) and i + 1 < len(modules)
                and isinstance(modules[i + 1], nn.BatchNorm2d)):
            out.append(fuse_conv_bn_eval(m.eval(), modules[i + 1].eval()))
            i += 2
        else:
            out.append(m)
            i += 1
    seq = nn.Sequential(*out).eval().to(memory_format=CL)
    for p in seq.parameters():
        p.requires_grad_(False)
    return seq


class Clamp6(nn.Module):
    """ReLU6 as clamp: LibTorch 1.13 has no bf16 backward for hardtanh."""

    def forward(self, x):
        return x.clamp(0, 6)


def vgg16():
    """Keras VGG16 (include_top=False): 3x3 convolutions ('same') with ReLU,
    2x2 max pooling after each block; returns (model, [(keras name, module)],
    channels). Glorot-uniform kernels and zero biases, as Keras initialises
    them."""
    seq, names, c = [], [], 3
    for block, (width, convs) in enumerate(
            [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            conv = nn.Conv2d(c, width, 3, padding=1)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            seq += [conv, nn.ReLU(inplace=True)]
            names.append((f"block{block}_conv{i}", conv))
            c = width
        seq.append(nn.MaxPool2d(2))
    return nn.Sequential(*seq), names, c


# Each backbone: its default input size and where its fine-tuning starts.
BACKBONES = {"mobilenet": 224, "vgg16": 150}


def build_backbone(name, weights):
    """The conv base in channels-last, loaded from a Keras .h5 file unless
    `weights` is 'none'; returns (base, channels, index in base where
    fine-tuning starts, preprocessing mode)."""
    if name == "vgg16":
        base, names, channels = vgg16()
        tune_from = next(i for i, m in enumerate(base) if m is dict(names)["block5_conv1"])
        mode = "caffe"
    else:
        base, names, channels = mobilenet_v1(0.25)
        tune_from = tune_start(base, names)
        mode = "tf"
    if weights != "none":
        load_keras(names, weights)
    for i, m in enumerate(base):
        if isinstance(m, nn.ReLU6):
            base[i] = Clamp6()
    return base.to(memory_format=CL), channels, tune_from, mode


class Timer:
    def __init__(self):
        self.parts = {}

    def add(self, name, t0):
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0
        return time.perf_counter()


def main():
    ap = recipe_parser(BACKBONES)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--interpolation", choices=["bilinear", "nearest"], default="bilinear",
                    help="augmentation's sampling (Keras: bilinear)")
    ap.add_argument("--fill", choices=["nearest", "constant"], default="nearest",
                    help="augmentation's edges: repeated (Keras' 'nearest') or black")
    ap.add_argument("--head-init", choices=["glorot", "torch"], default="glorot",
                    help="the head's Dense layers: Keras' Glorot-uniform or nn.Linear's default")
    ap.add_argument("--workers", type=int, default=2,
                    help="augmentation worker processes (0: in the training loop)")
    args = ap.parse_args()
    if args.weights is None:
        if args.backbone == "mobilenet":
            ap.error("mobilenet needs WEIGHTS: a Keras .h5 file, or none")
        args.weights = "none"
    if args.size is None:
        args.size = BACKBONES[args.backbone]
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16())

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    start = time.perf_counter()
    with multiprocessing.Pool(os.cpu_count() or 2, initializer=os.nice, initargs=(10,)) as pool:
        train_x, train_y = load_split(os.path.join(args.data, "train"), args.size, pool)
        val_x, val_y = load_split(os.path.join(args.data, "validation"), args.size, pool)
        test_dir = os.path.join(args.data, "test")
        test = load_split(test_dir, args.size, pool) if os.path.isdir(test_dir) else None
    decode_seconds = time.perf_counter() - start

    workers = dict(num_workers=args.workers, worker_init_fn=low_priority,
                   persistent_workers=True, prefetch_factor=4) if args.workers > 0 else {}
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[args.interpolation]
    train = DataLoader(Augmented(train_x, train_y, resample, args.fill), batch_size=20, shuffle=True,
                       generator=torch.Generator().manual_seed(args.seed + 1), **workers)

    base, channels, tune_from, mode = build_backbone(args.backbone, args.weights)
    feat = args.size // 32
    head = keras_head(channels, feat, args.head_init)
    loss_fn = nn.BCEWithLogitsLoss()

    def frozen_forward(frozen, x_uint8, batch=50):
        """The frozen part over stored images, without autograd."""
        outs = []
        with torch.no_grad(), autocast():
            for b in range(0, len(x_uint8), batch):
                outs.append(frozen(preprocess(x_uint8[b:b + batch], mode)))
        return torch.cat(outs)

    def accuracy(top, acts, y, batch=50):
        head.eval()
        if top is not None:
            top.eval()
        correct = 0
        with torch.no_grad():
            for b in range(0, len(acts), batch):
                a = acts[b:b + batch]
                if top is not None:
                    with autocast():
                        a = top(a)
                correct += ((head(a.float()) > 0).float() == y[b:b + batch]).sum().item()
        return correct / len(acts)

    best, val_acc, test_acc, epoch = -1.0, 0.0, None, 0
    n = len(train_x)
    for stage, (frozen_upto, lr, epochs) in enumerate(
            [(len(base), 2e-5, args.frozen_epochs), (tune_from, 1e-5, args.tune_epochs)]):
        if epochs == 0:
            continue
        bottom = fused(base[:frozen_upto])
        top = base[frozen_upto:] if frozen_upto < len(base) else None
        params = list(head.parameters())
        if top is not None:
            for p in top.parameters():
                p.requires_grad_(True)
            params += list(top.parameters())
        # Keras RMSprop: rho 0.9, epsilon 1e-7; foreach: one multi-tensor
        # update (LibTorch 1.13 has no fused CPU RMSprop).
        optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, foreach=True)
        t0 = time.perf_counter()
        val_acts = frozen_forward(bottom, val_x)
        test_acts = frozen_forward(bottom, test[0]) if test is not None else None
        cache_seconds = time.perf_counter() - t0
        for _ in range(epochs):
            epoch += 1
            timer = Timer()
            t_epoch = time.perf_counter()
            head.train()
            if top is not None:
                top.train()
                if args.bn_inference:
                    for m in top:
                        if isinstance(m, nn.BatchNorm2d):
                            m.eval()
            loss_sum, correct = 0.0, 0
            t = time.perf_counter()
            for xb, y in train:
                t = timer.add("data wait", t)
                x = preprocess(xb, mode)
                with torch.no_grad(), autocast():
                    a = bottom(x)
                if top is not None:
                    with autocast():
                        a = top(a)
                logits = head(a.float())
                loss = loss_fn(logits, y)
                t = timer.add("forward", t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t = timer.add("backward", t)
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += ((logits.detach() > 0).float() == y).sum().item()
                t = timer.add("optimizer", t)
            t = time.perf_counter()
            val_acc = accuracy(top, val_acts, val_y)
            if val_acc > best:
                best = val_acc
                if test_acts is not None:
                    test_acc = accuracy(top, test_acts, test[1])
            timer.add("validation", t)
            line = {"stage": stage, "epoch": epoch, "loss": loss_sum / n, "accuracy": correct / n,
                    "val_accuracy": val_acc, "seconds": time.perf_counter() - t_epoch,
                    "parts": {k: round(v, 3) for k, v in timer.parts.items()}}
            if epoch == 1:
                line["decode_seconds"] = round(decode_seconds, 3)
            if _ == 0:
                line["stage_cache_seconds"] = round(cache_seconds, 3)
            print(json.dumps(line), flush=True)
    wall = time.perf_counter() - start
    print(json.dumps({"summary": True, "epochs": epoch, "best_val_accuracy": best,
                      "last_val_accuracy": val_acc, "test_accuracy": test_acc,
                      "wall_seconds": wall, "images_per_second": epoch * n / wall,
                      "precision": "bf16" if bf16 else "fp32", "backbone": args.backbone,
                      "size": args.size, "train_images": n}), flush=True)


if __name__ == "__main__":
    main()
